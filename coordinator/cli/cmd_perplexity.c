/*
 * cmd_perplexity.c - `baton perplexity`: the method of llama.cpp's perplexity tool, so the
 * numbers compare. The text is tokenized whole (BOS only if the vocabulary adds one), cut
 * into consecutive chunks of --ctx tokens (the tail is dropped); each chunk is evaluated from
 * an empty cache and only its second half is scored: tokens ctx/2+1 .. ctx-1, each predicted
 * from the logits of the position before it (ctx/2 - 1 tokens per chunk, exactly what
 * llama.cpp's tool scores). PPL = exp(mean negative log-likelihood).
 *
 * A client of the engine like generate and bench: each chunk is one score_prompt request
 * (request.h), run through the pipeline of stages (under mpirun, or stage threads), several
 * chunks at once (as many as the KV cache holds). The log-likelihoods are summed in chunk
 * and token order, so the result does not depend on how many ran together.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "cmd_common.h"
#include "commands.h"
#include "stage_layout.h"

#define TEXT_MAX_BYTES (256u << 20)

int bt_cmd_perplexity(int argc, char **argv) {
    bt_model_flags mf;
    bt_model_flags_init(&mf);
    mf.ctx = 512;
    bt_cluster_flags cf;
    bt_cluster_flags_init(&cf);
    const char *file = NULL;
    int64_t max_chunks = 0;
    bool print_nll = false;
    const bt_cli_opt opts[] = {
        BT_MODEL_FLAG_OPTS(mf),
        BT_CLUSTER_FLAG_OPTS(cf),
        {"--file", BT_CLI_STR, &file, 0, 0, "text file to evaluate"},
        {"--chunks", BT_CLI_INT, &max_chunks, 0, 1 << 30, "evaluate at most N chunks (0 = all)"},
        {"--print-nll", BT_CLI_FLAG, &print_nll, 0, 0,
         "also print the summed negative log-likelihood, exactly (hex float), to stderr"},
    };
    const int n_opts = (int)(sizeof opts / sizeof opts[0]);
    int rc = bt_cmd_parse("perplexity", "--file F [--ctx N] [flags]", opts, n_opts, &mf.help, argc,
                          argv);
    if (rc >= 0)
        return rc;
    if (!file) {
        fprintf(stderr, "baton perplexity: --file is required\n");
        bt_cli_usage("perplexity", "--file F [--ctx N] [flags]", opts, n_opts);
        return 2;
    }
    bt_error err;
    bt_error_init(&err);
    char *text = NULL;
    size_t len = 0;
    bt_status st = bt_read_text_file(file, TEXT_MAX_BYTES, &text, &len, &err);
    if (st != BT_OK) {
        fprintf(stderr, "baton perplexity: %s\n", err.msg);
        return bt_cmd_exit_status(st);
    }
    /* A chunk's KV is ctx - 1 positions: by default the cache holds 4 chunks, run at once. */
    const int ctx = (int)mf.ctx;
    int64_t ctx_kv =
        ((int64_t)ctx + BT_KV_BLOCK_TOKENS - 1) / BT_KV_BLOCK_TOKENS * BT_KV_BLOCK_TOKENS;
    if (!cf.kv_tokens)
        cf.kv_tokens = ctx_kv * (cf.max_seqs < 4 ? cf.max_seqs : 4);

    bt_session s;
    rc = bt_session_open(&s, "perplexity", &mf, &cf);
    if (rc >= 0) {
        free(text);
        return rc;
    }
    int32_t *toks = NULL;
    bt_request **reqs = NULL;
    size_t n_tok = 0;
    int64_t n_chunks = 0, n_wave = 0;
    /* Every token needs at least one byte, so len + 2 ids always suffice. */
    toks = malloc(sizeof *toks * (len + 2));
    if (!toks) {
        st = bt_error_set(&err, BT_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((st = bt_tokenize(s.vocab, text, len, true, false, toks, len + 2, &n_tok, &err)) != BT_OK)
        goto done;
    n_chunks = (int64_t)n_tok / ctx;
    if (max_chunks > 0 && n_chunks > max_chunks)
        n_chunks = max_chunks;
    if (n_chunks < 1) {
        st =
            bt_error_set(&err, BT_ERR_INVALID_ARG,
                         "'%s' has %zu tokens, fewer than one chunk of --ctx %d", file, n_tok, ctx);
        goto done;
    }
    fprintf(stderr, "perplexity: %zu tokens, %lld chunks of %d, scoring the second half of each\n",
            n_tok, (long long)n_chunks, ctx);

    /* Chunks in waves of as many as the KV cache and the sequence slots hold at once. */
    n_wave = cf.kv_tokens / ctx_kv;
    if (n_wave > cf.max_seqs)
        n_wave = cf.max_seqs;
    if (n_wave < 1)
        n_wave = 1;
    if (n_wave > n_chunks)
        n_wave = n_chunks;
    reqs = calloc((size_t)n_wave, sizeof *reqs);
    if (!reqs) {
        st = bt_error_set(&err, BT_ERR_NOMEM, "out of memory");
        goto done;
    }
    bt_request_params rp = bt_request_default_params();
    rp.score_prompt = true;
    rp.score_from = ctx / 2 + 1; /* the first half only gives the scored tokens context */
    rp.max_tokens = 0;
    double nll = 0.0;
    int64_t n_scored = 0;
    int64_t t0 = bt_now_us();
    for (int64_t c0 = 0; c0 < n_chunks; c0 += n_wave) {
        int64_t n = n_chunks - c0 < n_wave ? n_chunks - c0 : n_wave;
        for (int64_t i = 0; i < n && st == BT_OK; i++) {
            st = bt_request_new(toks + (c0 + i) * ctx, ctx, &rp, bt_engine_n_ctx(s.engine),
                                &reqs[i], &err);
            if (st == BT_OK)
                bt_engine_submit(s.engine, reqs[i]);
        }
        if (st == BT_OK)
            st = bt_engine_run(s.engine, &err);
        for (int64_t i = 0; i < n && st == BT_OK; i++) {
            const bt_request *r = reqs[i];
            if (r->finish != BT_FINISH_LENGTH) {
                st = bt_error_set(&err, r->error.status ? r->error.status : BT_ERR_INTERNAL,
                                  "chunk %lld: %s", (long long)(c0 + i + 1),
                                  r->error.msg[0] ? r->error.msg : bt_finish_name(r->finish));
                break;
            }
            /* logprobs[k] = log p(token k | tokens [0, k)): tokens ctx/2+1 .. ctx-1. */
            for (int k = ctx / 2 + 1; k < ctx; k++) {
                nll -= (double)r->logprobs[k];
                n_scored++;
            }
            fprintf(stderr, "[%lld] %.4f\n", (long long)(c0 + i + 1), exp(nll / (double)n_scored));
        }
        for (int64_t i = 0; i < n; i++) {
            bt_request_free(reqs[i]);
            reqs[i] = NULL;
        }
        if (st != BT_OK)
            goto done;
    }
    if (print_nll)
        fprintf(stderr, "nll: %a over %lld tokens\n", nll, (long long)n_scored);
    double secs = (double)(bt_now_us() - t0) / 1e6;
    double ppl = exp(nll / (double)n_scored);
    printf("perplexity: %.4f over %lld scored tokens (%lld chunks of %d) in %.1f s "
           "(%.1f tok/s)\n",
           ppl, (long long)n_scored, (long long)n_chunks, ctx, secs,
           secs > 0 ? (double)(n_chunks * ctx) / secs : 0.0);

done:
    if (st != BT_OK)
        fprintf(stderr, "baton perplexity: %s\n", err.msg[0] ? err.msg : bt_status_str(st));
    for (int64_t i = 0; reqs && i < n_wave; i++)
        bt_request_free(reqs[i]);
    free(reqs);
    free(toks);
    free(text);
    return bt_session_close(&s, bt_cmd_exit_status(st));
}
