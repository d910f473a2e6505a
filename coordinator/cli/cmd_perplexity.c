/*
 * cmd_perplexity.c - `baton perplexity`: the method of llama.cpp's perplexity tool, so the
 * numbers compare. The text is tokenized whole (BOS only if the vocabulary adds one), cut
 * into consecutive chunks of --ctx tokens (the tail is dropped); each chunk is evaluated from
 * an empty cache and only its second half is scored: tokens ctx/2+1 .. ctx-1, each predicted
 * from the logits of the position before it (ctx/2 - 1 tokens per chunk, exactly what
 * llama.cpp's tool scores). PPL = exp(mean negative log-likelihood).
 *
 * A client of the engine service like generate and bench: each chunk is one score_prompt
 * request (request.h) whose DONE event carries its prompt_logprobs, run through the pipeline
 * of stages (under mpirun, or stage threads). The main thread runs bt_engine_serve; the sink,
 * on the engine thread, keeps as many chunks in flight as the KV cache holds (a window of
 * n_wave chunks past the last one folded) and folds finished chunks into the sum in chunk
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

/* One chunk in flight: its index and, once DONE, its scored log-probabilities. */
typedef struct ppl_slot {
    struct ppl_run *run;
    int64_t chunk;
    bool done;
    float *lp; /* [ctx] prompt_logprobs of the chunk */
} ppl_slot;

/* Shared between the main thread (before and after bt_engine_serve) and the sink (on the
 * engine thread, while serve runs): never both at once. */
typedef struct ppl_run {
    bt_engine *e;
    const int32_t *toks;
    int ctx;
    int64_t n_chunks, n_wave;
    int64_t submitted, folded;
    ppl_slot *slots; /* [n_wave], chunk c in slots[c % n_wave] */
    double nll;
    int64_t n_scored;
    bt_request_params rp;
    bt_status st;
    bt_error err;
} ppl_run;

static void ppl_sink(const bt_event *ev, void *ctx);

static void fail_run(ppl_run *p, bt_status st, const bt_error *err) {
    if (p->st == BT_OK) {
        p->st = st;
        p->err = *err;
    }
    bt_engine_shutdown(p->e, false, 0);
}

/* Submits chunks while fewer than n_wave are past the fold point. */
static void submit_more(ppl_run *p) {
    while (p->st == BT_OK && p->submitted < p->n_chunks && p->submitted < p->folded + p->n_wave) {
        ppl_slot *s = &p->slots[p->submitted % p->n_wave];
        s->chunk = p->submitted;
        s->done = false;
        bt_error err;
        bt_error_init(&err);
        bt_status st = bt_engine_submit(p->e, p->toks + s->chunk * p->ctx, p->ctx, &p->rp, ppl_sink,
                                        s, NULL, &err);
        if (st != BT_OK) {
            fail_run(p, st, &err);
            return;
        }
        p->submitted++;
    }
}

static void ppl_sink(const bt_event *ev, void *ctx) {
    ppl_slot *s = ctx;
    ppl_run *p = s->run;
    if (ev->kind != BT_EVENT_DONE)
        return;
    if (ev->status != BT_OK || ev->finish != BT_FINISH_LENGTH || !ev->prompt_logprobs) {
        bt_error err;
        bt_error_init(&err);
        bt_status st = ev->status != BT_OK ? ev->status : BT_ERR_INTERNAL;
        bt_error_set(&err, st, "chunk %lld: %s", (long long)s->chunk + 1,
                     ev->message[0] ? ev->message : bt_finish_name(ev->finish));
        fail_run(p, st, &err);
        return;
    }
    memcpy(s->lp, ev->prompt_logprobs, sizeof *s->lp * (size_t)p->ctx);
    s->done = true;
    /* Fold the finished chunks in order: logprobs[k] = log p(token k | tokens [0, k)), the
     * scored tokens ctx/2+1 .. ctx-1. */
    for (ppl_slot *f = &p->slots[p->folded % p->n_wave]; f->done && f->chunk == p->folded;
         f = &p->slots[p->folded % p->n_wave]) {
        for (int k = p->ctx / 2 + 1; k < p->ctx; k++) {
            p->nll -= (double)f->lp[k];
            p->n_scored++;
        }
        fprintf(stderr, "[%lld] %.4f\n", (long long)p->folded + 1,
                exp(p->nll / (double)p->n_scored));
        f->done = false;
        p->folded++;
    }
    submit_more(p);
    if (p->folded == p->n_chunks)
        bt_engine_shutdown(p->e, true, 0);
}

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

    static ppl_run run; /* one per process; large */
    memset(&run, 0, sizeof run);
    bt_session s;
    rc = bt_session_open(&s, "perplexity", &mf, &cf);
    if (rc >= 0) {
        free(text);
        return rc;
    }
    int32_t *toks = NULL;
    size_t n_tok = 0;
    int64_t n_chunks = 0;
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
    /* As llama-perplexity: when the vocabulary adds BOS (Gemma), every chunk starts with it, its
     * first token replaced (chunk 0 already has it from the tokenization). */
    if (bt_vocab_add_bos(s.vocab))
        for (int64_t c = 1; c < n_chunks; c++)
            toks[c * ctx] = bt_vocab_bos(s.vocab);
    fprintf(stderr, "perplexity: %zu tokens, %lld chunks of %d, scoring the second half of each\n",
            n_tok, (long long)n_chunks, ctx);

    /* As many chunks in flight as the KV cache and the sequence slots hold at once. */
    run.e = s.engine;
    run.toks = toks;
    run.ctx = ctx;
    run.n_chunks = n_chunks;
    run.n_wave = cf.kv_tokens / ctx_kv;
    if (run.n_wave > cf.max_seqs)
        run.n_wave = cf.max_seqs;
    if (run.n_wave < 1)
        run.n_wave = 1;
    if (run.n_wave > n_chunks)
        run.n_wave = n_chunks;
    bt_error_init(&run.err);
    run.slots = calloc((size_t)run.n_wave, sizeof *run.slots);
    for (int64_t i = 0; run.slots && i < run.n_wave; i++) {
        run.slots[i].run = &run;
        run.slots[i].chunk = -1;
        if (!(run.slots[i].lp = malloc(sizeof(float) * (size_t)ctx)))
            break;
    }
    if (!run.slots || !run.slots[run.n_wave - 1].lp) {
        st = bt_error_set(&err, BT_ERR_NOMEM, "out of memory");
        goto done;
    }
    run.rp = bt_request_default_params();
    run.rp.score_prompt = true;
    run.rp.score_from = ctx / 2 + 1; /* the first half only gives the scored tokens context */
    run.rp.max_tokens = 0;
    int64_t t0 = bt_now_us();
    submit_more(&run);
    if (run.st == BT_OK)
        st = bt_engine_serve(s.engine, &err);
    if (st == BT_OK && run.st != BT_OK) {
        st = run.st;
        err = run.err;
    }
    if (st == BT_OK && run.folded != n_chunks)
        st = bt_error_set(&err, BT_ERR_INTERNAL, "the engine ended after %lld of %lld chunks",
                          (long long)run.folded, (long long)n_chunks);
    if (st != BT_OK)
        goto done;
    if (print_nll)
        fprintf(stderr, "nll: %a over %lld tokens\n", run.nll, (long long)run.n_scored);
    double secs = (double)(bt_now_us() - t0) / 1e6;
    double ppl = exp(run.nll / (double)run.n_scored);
    printf("perplexity: %.4f over %lld scored tokens (%lld chunks of %d) in %.1f s "
           "(%.1f tok/s)\n",
           ppl, (long long)run.n_scored, (long long)n_chunks, ctx, secs,
           secs > 0 ? (double)(n_chunks * ctx) / secs : 0.0);

done:
    if (st != BT_OK)
        fprintf(stderr, "baton perplexity: %s\n", err.msg[0] ? err.msg : bt_status_str(st));
    for (int64_t i = 0; run.slots && i < run.n_wave; i++)
        free(run.slots[i].lp);
    free(run.slots);
    free(toks);
    free(text);
    return bt_session_close(&s, bt_cmd_exit_status(st));
}
