/*
 * cmd_perplexity.c - `baton perplexity`: the method of llama.cpp's perplexity tool, so the
 * numbers compare. The text is tokenized whole (BOS only if the vocabulary adds one), cut
 * into consecutive chunks of --ctx tokens (the tail is dropped); each chunk is evaluated from
 * an empty cache and only its second half is scored: tokens ctx/2+1 .. ctx-1, each predicted
 * from the logits of the position before it (ctx/2 - 1 tokens per chunk, exactly what
 * llama.cpp's tool scores). PPL = exp(mean negative log-likelihood).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "cmd_common.h"
#include "commands.h"

#define TEXT_MAX_BYTES (256u << 20)

typedef struct nll_acc {
    const int32_t *chunk; /* the chunk's tokens */
    int n_vocab;
    double nll;
    int64_t n;
} nll_acc;

/* Row i's logits predict chunk[i + 1]. */
static void score_row(void *ctx, int i, const float *logits) {
    nll_acc *a = ctx;
    float mx = logits[0];
    for (int v = 1; v < a->n_vocab; v++)
        mx = logits[v] > mx ? logits[v] : mx;
    double sum = 0.0;
    for (int v = 0; v < a->n_vocab; v++)
        sum += exp((double)(logits[v] - mx));
    double logp = (double)(logits[a->chunk[i + 1]] - mx) - log(sum);
    a->nll -= logp;
    a->n++;
}

int bt_cmd_perplexity(int argc, char **argv) {
    bt_model_flags mf;
    bt_model_flags_init(&mf);
    mf.ctx = 512;
    const char *file = NULL;
    int64_t max_chunks = 0;
    const char *numerics = "fast";
    const bt_cli_opt opts[] = {
        BT_MODEL_FLAG_OPTS(mf),
        {"--numerics", BT_CLI_STR, &numerics, 0, 0, "'fast' (default) or 'llamacpp' (exact)"},
        {"--file", BT_CLI_STR, &file, 0, 0, "text file to evaluate"},
        {"--chunks", BT_CLI_INT, &max_chunks, 0, 1 << 30, "evaluate at most N chunks (0 = all)"},
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
    bt_runner r = {0};
    char *text = NULL;
    int32_t *toks = NULL;
    size_t len = 0, n_tok = 0;
    bt_runner_params rp;
    bt_status st = bt_read_text_file(file, TEXT_MAX_BYTES, &text, &len, &err);
    if (st != BT_OK || (st = bt_model_flags_runner(&mf, &rp, &err)) != BT_OK)
        goto done;
    rp.max_logit_rows = rp.max_batch;
    if ((st = bt_numerics_parse(numerics, &rp.numerics, &err)) != BT_OK)
        goto done;
    if ((st = bt_runner_open(&rp, &r, &err)) != BT_OK)
        goto done;

    /* Every token needs at least one byte, so len + 2 ids always suffice. */
    toks = malloc(sizeof *toks * (len + 2));
    if (!toks) {
        st = bt_error_set(&err, BT_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((st = bt_tokenize(r.vocab, text, len, true, false, toks, len + 2, &n_tok, &err)) != BT_OK)
        goto done;
    const int ctx = r.n_ctx;
    int64_t n_chunks = (int64_t)n_tok / ctx;
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

    nll_acc acc = {.n_vocab = r.n_vocab};
    int64_t t0 = bt_now_us();
    for (int64_t c = 0; c < n_chunks; c++) {
        acc.chunk = toks + c * ctx;
        bt_stage_seq_free(r.stage, 0);
        /* Rows ctx/2 .. ctx-2 predict tokens ctx/2+1 .. ctx-1; the last token predicts
         * nothing, so it is not evaluated. */
        if ((st = bt_runner_eval(&r, 0, acc.chunk, ctx - 1, ctx / 2, score_row, &acc, &err)) !=
            BT_OK)
            goto done;
        fprintf(stderr, "[%lld] %.4f\n", (long long)c + 1, exp(acc.nll / (double)acc.n));
    }
    double secs = (double)(bt_now_us() - t0) / 1e6;
    double ppl = exp(acc.nll / (double)acc.n);
    printf("perplexity: %.4f over %lld scored tokens (%lld chunks of %d) in %.1f s "
           "(%.1f tok/s)\n",
           ppl, (long long)acc.n, (long long)n_chunks, ctx, secs,
           secs > 0 ? (double)(n_chunks * ctx) / secs : 0.0);

done:
    if (st != BT_OK)
        fprintf(stderr, "baton perplexity: %s\n", err.msg[0] ? err.msg : bt_status_str(st));
    bt_runner_close(&r);
    free(toks);
    free(text);
    return bt_cmd_exit_status(st);
}
