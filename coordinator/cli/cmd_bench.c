/*
 * cmd_bench.c - `baton bench`: prompt-processing and decode speed through the same engine,
 * stages and transport as `generate`, measured the way llama-bench measures so the numbers
 * compare with llama.cpp's:
 *   pp N: one prompt of N pseudo-random tokens (fixed seed) from an empty cache; the rate is
 *         N / time to first token;
 *   tg N: --concurrency sequences, each decoding N tokens greedily from a one-token prompt,
 *         EOS ignored; the rate is all generated tokens / wall time.
 *   --depth D (llama-bench's -d): every sequence first gets D tokens of context, untimed.
 *         pp N then times N more prompt tokens: a round with the D-token prompt alone and one
 *         with D + N tokens, rate N / (difference of their times to first token). tg N gives
 *         each sequence the D-token prompt (its own tokens; nothing is shared) and N + 1
 *         tokens to generate; the first one ends the prefill, so each sequence is timed from
 *         it: rate = concurrency / mean time per output token ((done - first token) / N).
 * Each test runs once to warm up, then --reps times; the median is reported. The busy
 * fraction of every stage over the decode run (its compute time / wall time) shows the
 * pipeline bubble: 1 - busy. The decode rounds also give each sequence's time to first token
 * and time per output token ((done - first token) / (tokens - 1)), averaged over the
 * sequences of all measured rounds, and the activation bytes the stages sent on, warm-up
 * included (their heartbeats' counters: a stage heartbeats right after each activation
 * frame, so the counts are whole when the last sequence is done).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "cmd_common.h"
#include "commands.h"
#include "request.h"
#include "rng.h"

#define MAX_REPS 100
#define MAX_CONCURRENCY 4096

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *x, int n) {
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

/* The rounds, run one after another by the sink (on the engine thread): each round's
 * requests are submitted together; when the last one's DONE arrives the round is measured
 * and the next one submitted; after the last, the engine is shut down. */
typedef struct bench_run {
    bt_engine *e;
    const int32_t *toks, *bos; /* toks: [concurrency][depth + pp] */
    int64_t pp, tg, depth, concurrency, reps;
    int n_stages;
    int64_t rep;       /* -1 warms caches and pages */
    int phase;         /* PH_DEPTH (depth and pp > 0 only), PH_PP, PH_TG */
    double depth_ttft; /* of this rep's PH_DEPTH round */
    int pending;       /* DONEs the round still waits for */
    int64_t t0;
    double ttft; /* of the round's first request */
    bool first_seen;
    uint64_t busy0[BT_MAX_STAGES];
    double pp_tps[MAX_REPS], tg_tps[MAX_REPS], busy[BT_MAX_STAGES];
    double ttft_sum, tpot_sum; /* over the measured decode rounds' sequences */
    double round_tpot_sum;     /* over the current round's sequences */
    int64_t n_timed;
    bt_status st;
    bt_error err;
} bench_run;

enum { PH_DEPTH, PH_PP, PH_TG, PH_END };

static void bench_sink(const bt_event *ev, void *ctx);

/* Submits the round (rep, phase); false when there is none left. */
static bool next_round(bench_run *b) {
    for (; b->rep < b->reps; b->phase = PH_DEPTH, b->rep++) {
        for (; b->phase < PH_END; b->phase++) {
            int n = b->phase == PH_TG ? (int)b->concurrency : 1;
            if (b->phase == PH_DEPTH && (b->depth == 0 || b->pp == 0))
                continue;
            if ((b->phase == PH_PP && b->pp == 0) || (b->phase == PH_TG && b->tg == 0))
                continue;
            bt_request_params rp = bt_request_default_params();
            rp.max_tokens = b->phase != PH_TG ? 1 : (int32_t)(b->tg + (b->depth > 0));
            rp.ignore_eos = true;
            rp.sampling = bt_sampler_default_params(); /* greedy: speed, not text, is measured */
            const bt_cluster *c = bt_engine_cluster(b->e);
            for (int i = 0; i < b->n_stages; i++)
                b->busy0[i] = bt_cluster_stage(c, i)->busy_us;
            b->pending = n;
            b->first_seen = false;
            b->round_tpot_sum = 0.0;
            b->t0 = bt_now_us();
            for (int i = 0; i < n; i++) {
                const int32_t *prompt = b->toks + (size_t)i * (size_t)(b->depth + b->pp);
                int32_t len = (int32_t)(b->phase == PH_DEPTH ? b->depth
                                        : b->phase == PH_PP  ? b->depth + b->pp
                                                             : b->depth);
                if (b->phase == PH_TG && b->depth == 0) {
                    prompt = b->bos;
                    len = 1;
                }
                bt_status st =
                    bt_engine_submit(b->e, prompt, len, &rp, bench_sink, b, NULL, &b->err);
                if (st != BT_OK) {
                    b->st = st;
                    return false;
                }
            }
            return true;
        }
    }
    return false;
}

static void bench_sink(const bt_event *ev, void *ctx) {
    bench_run *b = ctx;
    if (ev->kind != BT_EVENT_DONE)
        return;
    if (ev->status != BT_OK && b->st == BT_OK) {
        b->st = bt_error_set(&b->err, ev->status, "%s", ev->message);
        bt_engine_shutdown(b->e, false, 0);
    }
    if (!b->first_seen) {
        b->first_seen = true;
        b->ttft = (double)(ev->t_first_token_us - ev->t_submit_us) / 1e6;
    }
    /* Output tokens timed per sequence: all but the first (at --depth, tg of the tg + 1). */
    int64_t n_out = b->depth > 0 ? b->tg : b->tg - 1;
    if (b->rep >= 0 && b->phase == PH_TG && ev->t_first_token_us > 0 && n_out > 0) {
        b->ttft_sum += (double)(ev->t_first_token_us - ev->t_submit_us) / 1e6;
        b->tpot_sum += (double)(ev->t_done_us - ev->t_first_token_us) / 1e6 / (double)n_out;
        b->n_timed++;
        b->round_tpot_sum += (double)(ev->t_done_us - ev->t_first_token_us) / 1e6 / (double)n_out;
    }
    if (--b->pending > 0 || b->st != BT_OK)
        return;
    double secs = (double)(bt_now_us() - b->t0) / 1e6;
    if (b->phase == PH_DEPTH)
        b->depth_ttft = b->ttft;
    if (b->rep >= 0 && b->phase == PH_PP)
        b->pp_tps[b->rep] = (double)b->pp / (b->ttft - (b->depth > 0 ? b->depth_ttft : 0.0));
    if (b->rep >= 0 && b->phase == PH_TG) {
        if (b->depth > 0) /* the prefill is not timed: concurrency / mean time per token */
            b->tg_tps[b->rep] =
                b->round_tpot_sum > 0.0
                    ? (double)b->concurrency * (double)b->concurrency / b->round_tpot_sum
                    : 0.0;
        else
            b->tg_tps[b->rep] = (double)(b->concurrency * b->tg) / secs;
        const bt_cluster *c = bt_engine_cluster(b->e);
        for (int i = 0; i < b->n_stages; i++)
            b->busy[i] += (double)(bt_cluster_stage(c, i)->busy_us - b->busy0[i]) / (secs * 1e6) /
                          (double)b->reps;
    }
    b->phase++;
    if (!next_round(b))
        bt_engine_shutdown(b->e, b->st == BT_OK, 0);
}

#define BENCH_UBATCH 512

int bt_cmd_bench(int argc, char **argv) {
    bt_model_flags mf;
    bt_model_flags_init(&mf);
    bt_cluster_flags cf;
    bt_cluster_flags_init(&cf);
    int64_t pp = 512, tg = 128, reps = 3, concurrency = 1, depth = 0;
    const bt_cli_opt opts[] = {
        BT_MODEL_FLAG_OPTS(mf),
        BT_CLUSTER_FLAG_OPTS(cf),
        {"--pp", BT_CLI_INT, &pp, 0, 1 << 20, "prompt tokens (512; 0 = skip)"},
        {"--tg", BT_CLI_INT, &tg, 0, 1 << 20, "decode steps per sequence (128; 0 = skip)"},
        {"--concurrency", BT_CLI_INT, &concurrency, 1, MAX_CONCURRENCY,
         "sequences decoding at once (1)"},
        {"--reps", BT_CLI_INT, &reps, 1, MAX_REPS, "repetitions (3)"},
        {"--depth", BT_CLI_INT, &depth, 0, 1 << 20,
         "tokens of context each sequence has before pp and tg are timed (0)"},
    };
    const int n_opts = (int)(sizeof opts / sizeof opts[0]);
    int rc = bt_cmd_parse("bench", "[--pp N] [--tg N] [--depth N] [--concurrency N] [flags]", opts,
                          n_opts, &mf.help, argc, argv);
    if (rc >= 0)
        return rc;
    if (concurrency > cf.max_seqs)
        cf.max_seqs = concurrency;
    /* llama-bench evaluates a prompt in micro-batches of 512 tokens (-ub 512) */
    if (!cf.prefill_chunk && pp > 0)
        cf.prefill_chunk = pp < BENCH_UBATCH ? pp : BENCH_UBATCH;
    if (cf.prefill_chunk > cf.max_batch)
        cf.max_batch = cf.prefill_chunk;
    /* Longest sequence: depth + pp prompt tokens, or the depth prompt and tg (+1) tokens. */
    int64_t need = depth + (pp > tg + 1 ? pp : tg + 1) + 1;
    if (!mf.ctx)
        mf.ctx = need;
    else if (mf.ctx < need) {
        fprintf(stderr,
                "baton bench: --ctx %lld is shorter than --depth %lld + max(--pp %lld, --tg %lld "
                "+ 1) + 1 = %lld tokens\n",
                (long long)mf.ctx, (long long)depth, (long long)pp, (long long)tg, (long long)need);
        return 2;
    }
    if (!cf.kv_tokens) /* every sequence fits: the numbers measure decoding, not preemption */
        cf.kv_tokens = mf.ctx * (concurrency > 1 ? concurrency : 1) + 16 * concurrency;

    bt_session s;
    rc = bt_session_open(&s, "bench", &mf, &cf);
    if (rc >= 0)
        return rc;
    bt_error err;
    bt_error_init(&err);
    bt_status st = BT_OK;
    int n_stages = bt_cluster_n_stages(bt_engine_cluster(s.engine));
    if (n_stages > BT_MAX_STAGES)
        n_stages = BT_MAX_STAGES;
    /* One prompt per sequence (depth + pp tokens; the tg rounds use the first depth), so that
     * no two sequences share a prefix; the first equals the plain pp prompt of old. */
    size_t n_toks = (size_t)(depth + pp) * (size_t)concurrency;
    int32_t *toks = malloc(sizeof *toks * (n_toks > 0 ? n_toks : 1));
    if (!toks) {
        st = bt_error_set(&err, BT_ERR_NOMEM, "out of memory for %zu prompt tokens", n_toks);
        goto done;
    }
    bt_rng rng;
    bt_rng_seed(&rng, 1234);
    for (size_t i = 0; i < n_toks; i++)
        toks[i] = (int32_t)(bt_rng_next(&rng) % (uint64_t)bt_vocab_n_tokens(s.vocab));
    int32_t bos = bt_vocab_bos(s.vocab) >= 0 ? bt_vocab_bos(s.vocab) : 0;

    static bench_run run; /* large; one per process */
    memset(&run, 0, sizeof run);
    run.e = s.engine;
    run.toks = toks;
    run.bos = &bos;
    run.pp = pp;
    run.tg = tg;
    run.depth = depth;
    run.concurrency = concurrency;
    run.reps = reps;
    run.n_stages = n_stages;
    run.rep = -1;
    bt_error_init(&run.err);
    if (next_round(&run))
        st = bt_engine_serve(s.engine, &err);
    if (st == BT_OK && run.st != BT_OK) {
        st = run.st;
        err = run.err;
    }
    if (st != BT_OK)
        goto done;
    double *pp_tps = run.pp_tps, *tg_tps = run.tg_tps, *busy = run.busy;
    const bt_cluster *cl = bt_engine_cluster(s.engine);
    int remote = 0;
    bt_codec_kind codec = bt_cluster_codec(cl, &remote);
    uint64_t act_bytes = 0; /* every stage's activations sent on, warm-up round included */
    for (int i = 0; i < n_stages; i++)
        act_bytes += bt_cluster_stage(cl, i)->act_bytes_sent;
    /* What each stage holds (its handshake) and its peak RSS (its last heartbeat): the RSS
     * shows that a stage touched only its own tensors. */
    fprintf(stderr, "stage rank  layers   host              weights MiB   KV MiB  peak RSS MiB\n");
    for (int i = 0; i < n_stages; i++) {
        const bt_stage_report *r = bt_cluster_stage(bt_engine_cluster(s.engine), i);
        char rss[32] = "n/a"; /* known once the stage has sent an idle heartbeat */
        if (r->peak_rss_bytes)
            snprintf(rss, sizeof rss, "%.1f", (double)r->peak_rss_bytes / 1048576.0);
        fprintf(stderr, "%10d  %2d-%-4d  %-16s %12.1f %8.1f %13s\n", r->rank, r->layer_begin,
                r->layer_end - 1, r->host, (double)r->weight_bytes / 1048576.0,
                (double)r->kv_bytes / 1048576.0, rss);
    }
    double pp_med = pp > 0 ? median(pp_tps, (int)reps) : 0.0;
    double tg_med = tg > 0 ? median(tg_tps, (int)reps) : 0.0;
    printf("| test | tokens | sequences | stages | threads/stage | tok/s (median of %lld) |\n",
           (long long)reps);
    printf("|------|--------|-----------|--------|---------------|------|\n");
    if (pp > 0)
        printf("| pp   | %6lld | %9d | %6d | %13d | %7.1f |\n", (long long)pp, 1, n_stages,
               s.n_threads, pp_med);
    if (tg > 0)
        printf("| tg   | %6lld | %9lld | %6d | %13d | %7.1f |\n", (long long)tg,
               (long long)concurrency, n_stages, s.n_threads, tg_med);
    double busy_mean = 0.0;
    double n_timed = run.n_timed > 0 ? (double)run.n_timed : 1.0;
    printf("{\"engine\":\"baton\",\"pp\":%lld,\"tg\":%lld,\"depth\":%lld,\"concurrency\":%lld,"
           "\"stages\":%d,"
           "\"threads\":%d,\"codec\":\"%s\",\"zstd\":%lld,\"remote_stages\":%s,"
           "\"numerics\":\"%s\",\"pp_tps\":%.2f,\"tg_tps\":%.2f,\"tg_ttft_s\":%.4f,"
           "\"tg_tpot_s\":%.5f,\"act_bytes\":%llu,\"stage_busy\":[",
           (long long)pp, (long long)tg, (long long)depth, (long long)concurrency, n_stages,
           s.n_threads, bt_codec_kind_name(codec), (long long)cf.act_zstd,
           remote ? "true" : "false", cf.numerics, pp_med, tg_med, run.ttft_sum / n_timed,
           run.tpot_sum / n_timed, (unsigned long long)act_bytes);
    for (int i = 0; i < n_stages; i++) {
        printf(i ? ",%.3f" : "%.3f", busy[i]);
        busy_mean += busy[i] / n_stages;
    }
    bt_engine_metrics m;
    bt_engine_get_metrics(s.engine, &m);
    printf("],\"bubble\":%.3f,\"preemptions\":%llu}\n", tg > 0 ? 1.0 - busy_mean : 0.0,
           (unsigned long long)m.preemptions_total);
done:
    if (st != BT_OK)
        fprintf(stderr, "baton bench: %s\n", err.msg[0] ? err.msg : bt_status_str(st));
    free(toks);
    return bt_session_close(&s, bt_cmd_exit_status(st));
}
