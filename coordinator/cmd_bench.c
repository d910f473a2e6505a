/*
 * cmd_bench.c - `baton bench`: prompt-processing and decode speed of one process, measured
 * the way llama-bench measures them so the numbers compare with llama.cpp's:
 *   pp N: N prompt tokens evaluated from an empty cache in batches of --batch, logits for
 *         the last row only;
 *   tg N: N decode steps of one token each from an empty cache, greedy.
 * Each test is repeated --reps times after one warm-up; the median is reported. Prompt tokens
 * are pseudo-random ids of the vocabulary (fixed seed), as llama-bench uses random tokens.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "cmd_common.h"
#include "commands.h"
#include "rng.h"

#define MAX_REPS 100

typedef struct greedy {
    int n_vocab;
    int32_t token;
} greedy;

static void argmax_row(void *ctx, int i, const float *logits) {
    (void)i;
    greedy *g = ctx;
    int32_t best = 0;
    for (int v = 1; v < g->n_vocab; v++)
        if (logits[v] > logits[best])
            best = v;
    g->token = best;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *x, int n) {
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

int bt_cmd_bench(int argc, char **argv) {
    bt_model_flags mf;
    bt_model_flags_init(&mf);
    int64_t pp = 512, tg = 128, reps = 3, batch = 512;
    const bt_cli_opt opts[] = {
        BT_MODEL_FLAG_OPTS(mf),
        {"--pp", BT_CLI_INT, &pp, 0, 1 << 20, "prompt tokens (512; 0 = skip)"},
        {"--tg", BT_CLI_INT, &tg, 0, 1 << 20, "decode steps (128; 0 = skip)"},
        {"--reps", BT_CLI_INT, &reps, 1, MAX_REPS, "repetitions (3)"},
        {"--batch", BT_CLI_INT, &batch, 1, 1 << 16, "prompt rows per forward (512)"},
    };
    const int n_opts = (int)(sizeof opts / sizeof opts[0]);
    int rc = bt_cmd_parse("bench", "[--pp N] [--tg N] [--reps N] [flags]", opts, n_opts,
                          &mf.help, argc, argv);
    if (rc >= 0)
        return rc;

    bt_error err;
    bt_error_init(&err);
    bt_runner r = {0};
    int32_t *toks = NULL;
    bt_runner_params rp = bt_model_flags_runner(&mf);
    if (!mf.ctx)
        rp.n_ctx = (int)(pp > tg + 1 ? pp : tg + 1);
    rp.max_batch = (int)batch;
    bt_status st = bt_runner_open(&rp, &r, &err);
    if (st != BT_OK)
        goto done;
    if (pp > r.n_ctx || tg + 1 > r.n_ctx) {
        st = bt_error_set(&err, BT_ERR_RANGE, "--pp %lld / --tg %lld exceed --ctx %d",
                          (long long)pp, (long long)tg, r.n_ctx);
        goto done;
    }
    toks = malloc(sizeof *toks * (size_t)(pp > 0 ? pp : 1));
    if (!toks) {
        st = bt_error_set(&err, BT_ERR_NOMEM, "out of memory");
        goto done;
    }
    bt_rng rng;
    bt_rng_seed(&rng, 1234);
    for (int64_t i = 0; i < pp; i++)
        toks[i] = (int32_t)(bt_rng_next(&rng) % (uint64_t)r.n_vocab);

    greedy g = {.n_vocab = r.n_vocab};
    double pp_tps[MAX_REPS], tg_tps[MAX_REPS];
    for (int64_t rep = -1; rep < reps; rep++) { /* rep -1 warms caches and pages */
        if (pp > 0) {
            bt_stage_seq_free(r.stage, 0);
            int64_t t0 = bt_now_us();
            if ((st = bt_runner_eval(&r, 0, toks, (int)pp, (int)pp - 1, argmax_row, &g,
                                     &err)) != BT_OK)
                goto done;
            if (rep >= 0)
                pp_tps[rep] = (double)pp * 1e6 / (double)(bt_now_us() - t0);
        }
        if (tg > 0) {
            bt_stage_seq_free(r.stage, 0);
            int32_t tok = bt_vocab_bos(r.vocab) >= 0 ? bt_vocab_bos(r.vocab) : 0;
            int64_t t0 = bt_now_us();
            for (int64_t i = 0; i < tg; i++) {
                if ((st = bt_runner_eval(&r, 0, &tok, 1, 0, argmax_row, &g, &err)) != BT_OK)
                    goto done;
                tok = g.token;
            }
            if (rep >= 0)
                tg_tps[rep] = (double)tg * 1e6 / (double)(bt_now_us() - t0);
        }
    }
    double pp_med = pp > 0 ? median(pp_tps, (int)reps) : 0.0;
    double tg_med = tg > 0 ? median(tg_tps, (int)reps) : 0.0;
    printf("| test  | tokens | threads | tok/s (median of %lld) |\n", (long long)reps);
    printf("|-------|--------|---------|---------|\n");
    if (pp > 0)
        printf("| pp    | %6lld | %7d | %7.1f |\n", (long long)pp, r.n_threads, pp_med);
    if (tg > 0)
        printf("| tg    | %6lld | %7d | %7.1f |\n", (long long)tg, r.n_threads, tg_med);
    printf("{\"engine\":\"baton\",\"pp\":%lld,\"tg\":%lld,\"threads\":%d,\"pp_tps\":%.2f,"
           "\"tg_tps\":%.2f}\n",
           (long long)pp, (long long)tg, r.n_threads, pp_med, tg_med);
done:
    if (st != BT_OK)
        fprintf(stderr, "baton bench: %s\n", err.msg[0] ? err.msg : bt_status_str(st));
    bt_runner_close(&r);
    free(toks);
    return bt_cmd_exit_status(st);
}
