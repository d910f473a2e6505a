/*
 * bench_attention.c - decode attention alone: one row at context C over every layer of a
 * SmolLM2-shaped cache (30 layers, 9 query heads on 3 KV heads of 64), as forward.c runs it
 * for one decoding sequence (chunked with partials, the whole GQA group per task) on a pool of
 * T threads. Prints milliseconds per token and the K/V bytes read per second.
 *
 *   bench_attention [-c context] [-t threads] [-n tokens] [-k f16|q8_0|f32] [-l layers]
 *                   [-r rows]
 *
 * -r R runs R rows of the same context at once (R <= BT_ATTN_SPLIT_MAX_ROWS keeps the chunk
 * split; more rows run whole-row tasks, as a decode batch of many sequences does).
 * -p R runs a prompt chunk instead: R rows of one sequence at positions context-R..context-1,
 * whole-row tasks of 16 rows (forward.c's rows per task for a prompt), and prints ns of a core
 * per (query head, key) pair.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attention.h"
#include "threadpool.h"

enum { N_HEAD = 9, N_HEAD_KV = 3, D = 64, MAX_ROWS = 512 };

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void task(void *ctx, int t, int thread) {
    (void)thread;
    bt_attention_task(ctx, t);
}

int main(int argc, char **argv) {
    int ctx = 4096, threads = 2, n_tok = 64, n_layer = 30, rows = 1, prompt = 0;
    bt_type type = BT_TYPE_F16;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-c") == 0)
            ctx = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-t") == 0)
            threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-n") == 0)
            n_tok = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-l") == 0)
            n_layer = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-r") == 0)
            rows = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-p") == 0)
            prompt = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-k") == 0)
            type = strcmp(argv[i + 1], "q8_0") == 0  ? BT_TYPE_Q8_0
                   : strcmp(argv[i + 1], "f32") == 0 ? BT_TYPE_F32
                                                     : BT_TYPE_F16;
        else {
            fprintf(stderr, "bench_attention: unknown flag %s\n", argv[i]);
            return 2;
        }
    }
    if (prompt > 0)
        rows = prompt;
    if (ctx < 1 || rows < 1 || rows > MAX_ROWS || n_tok < 1 || threads < 1 || n_layer < 1 ||
        (prompt > 0 && prompt > ctx)) {
        fprintf(stderr, "bench_attention: bad arguments\n");
        return 2;
    }
    bt_error err;
    bt_error_init(&err);
    int blocks_per_seq = ctx / BT_KV_BLOCK_TOKENS + 1;
    bt_kv_params p = {.n_layer = n_layer,
                      .n_head_kv = N_HEAD_KV,
                      .head_dim = D,
                      .n_blocks = rows * blocks_per_seq,
                      .max_seqs = rows,
                      .max_seq_tokens = ctx + 1,
                      .type = type};
    bt_kv_cache *kv = NULL;
    bt_threadpool *pool = NULL;
    if (bt_kv_cache_new(&p, &kv, &err) != BT_OK ||
        bt_threadpool_new(threads, &pool, &err) != BT_OK) {
        fprintf(stderr, "bench_attention: %s\n", err.msg);
        return 1;
    }
    uint32_t rng = 7;
    float k[N_HEAD_KV * D], v[N_HEAD_KV * D];
    for (int s = 0; s < (prompt > 0 ? 1 : rows); s++) {
        if (bt_kv_seq_reserve(kv, s, ctx, &err) != BT_OK) {
            fprintf(stderr, "bench_attention: %s\n", err.msg);
            return 1;
        }
        const int32_t *table = bt_kv_seq_table(kv, s);
        for (int l = 0; l < n_layer; l++)
            for (int t = 0; t < ctx; t++) {
                for (int i = 0; i < N_HEAD_KV * D; i++) {
                    rng = rng * 1664525u + 1013904223u;
                    k[i] = (float)(rng >> 8) / (float)(1u << 23) - 1.0f;
                    v[i] = 0.5f * k[i] + 0.25f;
                }
                bt_kv_store(kv, l, table[t / BT_KV_BLOCK_TOKENS], t % BT_KV_BLOCK_TOKENS, k, v);
            }
        bt_kv_seq_set_len(kv, s, ctx);
    }
    static float q[MAX_ROWS][N_HEAD * D], out[MAX_ROWS][N_HEAD * D];
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < N_HEAD * D; i++)
            q[r][i] = (float)((i * 37 + r) % 17) / 17.0f - 0.5f;
    int32_t seq[MAX_ROWS], pos[MAX_ROWS];
    for (int r = 0; r < rows; r++) {
        seq[r] = prompt > 0 ? 0 : r;
        pos[r] = prompt > 0 ? ctx - prompt + r : ctx - 1;
    }
    int split = !prompt && rows <= BT_ATTN_SPLIT_MAX_ROWS && threads > 1;
    float *partials =
        split ? malloc(sizeof(float) * bt_attention_partials_floats(rows, ctx, N_HEAD, D)) : NULL;
    bt_attn_args a = {.kv = kv,
                      .n_rows = rows,
                      .seq = seq,
                      .pos = pos,
                      .q = &q[0][0],
                      .out = &out[0][0],
                      .n_head = N_HEAD,
                      .n_head_kv = N_HEAD_KV,
                      .head_dim = D,
                      .heads_per_task = N_HEAD / N_HEAD_KV,
                      .rows_per_task = prompt > 0 ? 16 : 1,
                      .partials = partials};
    if (split)
        a.kv_heads_per_task = bt_attention_split_kv_heads(&a, threads);
    double best = 1e30, sum = 0;
    for (int it = 0; it < n_tok; it++) {
        double t0 = now_s();
        for (int l = 0; l < n_layer; l++) {
            a.layer = l;
            bt_threadpool_run(pool, task, &a, bt_attention_n_tasks(&a));
            bt_attention_merge(&a);
        }
        double dt = now_s() - t0;
        best = dt < best ? dt : best;
        sum += dt;
    }
    double bytes = 2.0 * (double)n_layer * N_HEAD_KV * (double)ctx * (double)rows *
                   (double)bt_kv_row_bytes(type, D);
    if (prompt > 0) {
        double pairs = (double)n_layer * N_HEAD * ((double)ctx - 0.5 * (prompt - 1)) * prompt;
        printf("prompt rows %d at context %d, %d layers, %d threads: %.3f ms mean, %.3f best, "
               "%.2f ns of a core per (query head, key) pair (mean); out[0] %.6f\n",
               prompt, ctx, n_layer, threads, 1e3 * sum / n_tok, 1e3 * best,
               1e9 * threads * (sum / n_tok) / pairs, (double)out[0][0]);
        return 0;
    }
    printf("context %d, %d row(s), %d layers, %d threads: %.3f ms/token mean, %.3f best, "
           "%.1f GB/s of K/V (mean); out[0] %.6f\n",
           ctx, rows, n_layer, threads, 1e3 * sum / n_tok, 1e3 * best, bytes / (sum / n_tok) / 1e9,
           (double)out[0][0]);
    free(partials);
    bt_threadpool_free(pool);
    bt_kv_cache_free(kv);
    return 0;
}
