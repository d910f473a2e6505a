/*
 * test_attention.c - decode attention over long contexts (worker/attention.h) against a plain
 * double-precision softmax over the dequantized cache, for f16, q8_0 and f32 storage:
 * contexts of one chunk, several chunks and a partial last chunk; the SIMD variant against
 * the scalar reference; the chunked schedule (partials + merge) against whole-row tasks,
 * bit for bit; a row alone against the same row in a batch of mixed lengths, bit for bit;
 * 1 thread against 2 threads of a real pool, bit for bit; for SmolLM2's 9 query heads on 3 KV
 * heads and for 8 on 1 (a task's heads in passes of 3, 3 and 2), 1 to 3 heads per task.
 * All of it again with a sliding window of 300 keys (Gemma 3's local layers): a row sees keys
 * pos - 299 .. pos, the window starting inside a KV block and inside a chunk.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "check.h"
#include "kernels/kernels.h"
#include "threadpool.h"

enum { N_LAYER = 1, MAX_HEAD = 9, MAX_HEAD_KV = 3, D = 64, MAX_TOK = 1100, N_SEQ = 4 };

/* The model shape under test: SmolLM2's (9 query heads on 3 KV heads), then one KV head for 8
 * query heads (a task's heads in passes of 3, 3 and 2). */
static int n_head = 9, n_head_kv = 3;
static int window = 0; /* bt_attn_args.window under test; 0: every key */

/* Row r of an [N_SEQ][MAX_HEAD * D] array holding rows of n_head * D (the kernel's stride). */
#define ROW(arr, r) (&(arr)[0][0] + (size_t)(r) * (size_t)n_head * D)

static uint32_t rng_state = 2024;
static float frand(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)(rng_state >> 8) / (float)(1u << 23) - 1.0f;
}

/* A cache of type `type`, n_kv KV heads of head_dim hd, whose sequence s (of n_seq, up to
 * max_tok positions each) holds len[s] positions of random K and V; the random stream restarts
 * only when `restart` (the same values for every type). */
static bt_kv_cache *fill_cache_shape(bt_type type, const int *len, int n_seq, int max_tok, int n_kv,
                                     int hd, int restart) {
    bt_kv_params p = {.n_layer = N_LAYER,
                      .n_head_kv = n_kv,
                      .head_dim = hd,
                      .n_blocks = n_seq * (max_tok / BT_KV_BLOCK_TOKENS + 1),
                      .max_seqs = n_seq,
                      .max_seq_tokens = max_tok,
                      .type = type};
    bt_kv_cache *kv = NULL;
    bt_error err;
    bt_error_init(&err);
    if (bt_kv_cache_new(&p, &kv, &err) != BT_OK) {
        check_fail(__FILE__, __LINE__, "bt_kv_cache_new: %s", err.msg);
        return NULL;
    }
    if (restart)
        rng_state = 2024;
    static float k[8 * 256], v[8 * 256];
    CHECK(n_kv * hd <= 8 * 256);
    for (int s = 0; s < n_seq; s++) {
        if (bt_kv_seq_reserve(kv, s, len[s], &err) != BT_OK) {
            check_fail(__FILE__, __LINE__, "reserve: %s", err.msg);
            bt_kv_cache_free(kv);
            return NULL;
        }
        const int32_t *table = bt_kv_seq_table(kv, s);
        for (int t = 0; t < len[s]; t++) {
            /* Keys with a spread of scales, so that the softmax has a few dominant terms. */
            float amp = 1.0f + 3.0f * (float)((t * 7) % 11) / 11.0f;
            for (int i = 0; i < n_kv * hd; i++) {
                k[i] = amp * frand();
                v[i] = frand();
            }
            bt_kv_store(kv, 0, table[t / BT_KV_BLOCK_TOKENS], t % BT_KV_BLOCK_TOKENS, k, v);
        }
        bt_kv_seq_set_len(kv, s, len[s]);
    }
    return kv;
}

/* The shape under test (n_head_kv heads of D), N_SEQ sequences, the same values every time. */
static bt_kv_cache *fill_cache(bt_type type, const int *len) {
    return fill_cache_shape(type, len, N_SEQ, MAX_TOK, n_head_kv, D, 1);
}

/* K or V row of (seq, pos, kv head) as the cache holds it, dequantized. */
static void row_f32(const bt_kv_cache *kv, int which, int seq, int pos, int g, float *y) {
    bt_type type = bt_kv_cache_params(kv)->type;
    size_t rb = bt_kv_row_bytes(type, D);
    int32_t b = bt_kv_seq_table(kv, seq)[pos / BT_KV_BLOCK_TOKENS];
    const char *blk = which ? bt_kv_block_v(kv, 0, b) : bt_kv_block_k(kv, 0, b);
    const char *r =
        blk + ((size_t)g * BT_KV_BLOCK_TOKENS + (size_t)(pos % BT_KV_BLOCK_TOKENS)) * rb;
    if (type == BT_TYPE_F32)
        memcpy(y, r, sizeof(float) * D);
    else
        bt_dequant_row(type, r, y, D);
}

/* Plain softmax attention in double over the dequantized cache. */
static void naive(const bt_kv_cache *kv, int seq, int pos, const float *q, float *out) {
    static double s[MAX_TOK];
    float kr[D], vr[D];
    for (int h = 0; h < n_head; h++) {
        int g = h / (n_head / n_head_kv);
        const float *qh = q + h * D;
        double mx = -INFINITY, sum = 0.0, acc[D] = {0};
        int t0 = window > 0 && pos + 1 > window ? pos + 1 - window : 0;
        for (int t = t0; t <= pos; t++) {
            row_f32(kv, 0, seq, t, g, kr);
            double d = 0.0;
            for (int i = 0; i < D; i++)
                d += (double)qh[i] * kr[i];
            s[t] = d / sqrt((double)D);
            mx = s[t] > mx ? s[t] : mx;
        }
        for (int t = t0; t <= pos; t++) {
            row_f32(kv, 1, seq, t, g, vr);
            double p = exp(s[t] - mx);
            sum += p;
            for (int i = 0; i < D; i++)
                acc[i] += p * vr[i];
        }
        for (int i = 0; i < D; i++)
            out[h * D + i] = (float)(acc[i] / sum);
    }
}

typedef void (*task_fn)(const bt_attn_args *a, int task);

static void run_all(bt_attn_args *a, task_fn fn, int reverse) {
    int n = bt_attention_n_tasks(a);
    for (int i = 0; i < n; i++)
        fn(a, reverse ? n - 1 - i : i);
    bt_attention_merge(a);
}

static void pool_task(void *ctx, int task, int thread) {
    (void)thread;
    bt_attention_task(ctx, task);
}

static float max_abs_diff(const float *x, const float *y, int n) {
    float m = 0.0f;
    for (int i = 0; i < n; i++)
        m = fabsf(x[i] - y[i]) > m ? fabsf(x[i] - y[i]) : m;
    return m;
}

static void test_type(bt_type type, bt_threadpool *p1, bt_threadpool *p2) {
    /* One chunk, several chunks with a partial last one, exactly whole chunks, just past. */
    const int len[N_SEQ] = {200, 1037, 2 * BT_ATTN_CHUNK_KEYS, BT_ATTN_CHUNK_KEYS + 1};
    bt_kv_cache *kv = fill_cache(type, len);
    if (!kv)
        return;
    static float q[N_SEQ][MAX_HEAD * D], ref[N_SEQ][MAX_HEAD * D];
    static float o_simd[N_SEQ][MAX_HEAD * D], o_sref[N_SEQ][MAX_HEAD * D],
        o_part[N_SEQ][MAX_HEAD * D];
    static float o_alone[MAX_HEAD * D], o_pool[N_SEQ][MAX_HEAD * D];
    static float partials[1 << 20];
    CHECK(bt_attention_partials_floats(N_SEQ, MAX_TOK, n_head, D) <= sizeof partials / 4);
    size_t row_bytes = sizeof(float) * (size_t)n_head * D, all_bytes = N_SEQ * row_bytes;
    int32_t seq[N_SEQ] = {0, 1, 2, 3}, pos[N_SEQ];
    for (int r = 0; r < N_SEQ; r++) {
        pos[r] = len[r] - 1;
        for (int i = 0; i < n_head * D; i++)
            ROW(q, r)[i] = 2.0f * frand();
        naive(kv, r, pos[r], ROW(q, r), ROW(ref, r));
    }
    bt_attn_args a = {.kv = kv,
                      .layer = 0,
                      .n_rows = N_SEQ,
                      .seq = seq,
                      .pos = pos,
                      .q = &q[0][0],
                      .out = &o_simd[0][0],
                      .n_head = n_head,
                      .n_head_kv = n_head_kv,
                      .head_dim = D,
                      .heads_per_task = n_head / n_head_kv,
                      .window = window};
    run_all(&a, bt_attention_task, 0);
    a.out = &o_sref[0][0];
    run_all(&a, bt_attention_task_ref, 0);
    for (int r = 0; r < N_SEQ; r++) {
        /* Both against the double softmax; the SIMD one against the scalar reference. */
        CHECK_NEAR(max_abs_diff(ROW(o_simd, r), ROW(ref, r), n_head * D), 0.0, 2e-5);
        CHECK_NEAR(max_abs_diff(ROW(o_sref, r), ROW(ref, r), n_head * D), 0.0, 2e-5);
        CHECK_NEAR(max_abs_diff(ROW(o_simd, r), ROW(o_sref, r), n_head * D), 0.0, 2e-5);
    }

    /* Chunk tasks (reversed order: a schedule) + merge == whole-row tasks, bit for bit; also
     * with one head per task. */
    a.out = &o_part[0][0];
    a.partials = partials;
    run_all(&a, bt_attention_task, 1);
    CHECK(memcmp(o_part, o_simd, all_bytes) == 0);
    for (int hpt = 1; hpt <= 2; hpt++) { /* passes of 1 and 2 heads */
        a.heads_per_task = hpt;
        memset(o_part, 0, sizeof o_part);
        run_all(&a, bt_attention_task, 0);
        CHECK(memcmp(o_part, o_simd, all_bytes) == 0);
    }
    /* Tasks of 1..n_head_kv KV heads each (whole blocks streamed, the next prefetched), with
     * passes of 2 heads and of the whole group. */
    for (int kpt = 1; kpt <= n_head_kv; kpt++)
        for (int h = 0; h < 2; h++) {
            a.kv_heads_per_task = kpt;
            a.heads_per_task = h ? n_head / n_head_kv : 2;
            memset(o_part, 0, sizeof o_part);
            run_all(&a, bt_attention_task, kpt % 2);
            CHECK(memcmp(o_part, o_simd, all_bytes) == 0);
            memset(o_part, 0, sizeof o_part);
            run_all(&a, bt_attention_task_ref, 0);
            CHECK(memcmp(o_part, o_sref, all_bytes) == 0);
        }
    a.kv_heads_per_task = 0;
    a.partials = NULL;
    memset(o_part, 0, sizeof o_part);
    run_all(&a, bt_attention_task, 1);
    CHECK(memcmp(o_part, o_simd, all_bytes) == 0);
    a.heads_per_task = n_head / n_head_kv;

    /* The long row (1037 keys: 5 chunks, the last partial) alone, both schedules. */
    bt_attn_args one = a;
    one.n_rows = 1;
    one.seq = &seq[1];
    one.pos = &pos[1];
    one.q = ROW(q, 1);
    one.out = o_alone;
    run_all(&one, bt_attention_task, 0);
    CHECK(memcmp(o_alone, ROW(o_simd, 1), row_bytes) == 0);
    one.partials = partials;
    memset(o_alone, 0, row_bytes);
    run_all(&one, bt_attention_task, 0);
    CHECK(memcmp(o_alone, ROW(o_simd, 1), row_bytes) == 0);

    /* A real pool: 1 thread and 2 threads, chunked (as forward.c sets it: whole blocks for
     * these rows' 10 chunks), give the same bits as above. */
    bt_threadpool *pools[2] = {p1, p2};
    for (int k = 0; k < 2; k++) {
        a.out = &o_pool[0][0];
        a.partials = partials;
        a.kv_heads_per_task = bt_attention_split_kv_heads(&a, k + 1);
        CHECK(a.kv_heads_per_task == n_head_kv);
        memset(o_pool, 0, sizeof o_pool);
        bt_threadpool_run(pools[k], pool_task, &a, bt_attention_n_tasks(&a));
        bt_attention_merge(&a);
        CHECK(memcmp(o_pool, o_simd, all_bytes) == 0);
    }

    /* Prefill tiling: a prompt's worth of rows of the long sequence at consecutive positions
     * (crossing chunk boundaries at 512 and 768), with a row of another sequence in the middle,
     * in tasks of 1, 3, 8 and 16 rows (on the pool too) and chunked one row at a time: every
     * row the bits of that row alone. */
    enum { NP = 40 };
    static float pq[NP][MAX_HEAD * D], p_alone[NP][MAX_HEAD * D], p_tiled[NP][MAX_HEAD * D];
    int32_t pseq[NP], ppos[NP];
    for (int r = 0; r < NP; r++) {
        pseq[r] = r == NP / 2 ? 3 : 1;
        ppos[r] = r == NP / 2 ? pos[3] : 500 + 7 * r;
        for (int i = 0; i < n_head * D; i++)
            ROW(pq, r)[i] = 2.0f * frand();
    }
    bt_attn_args pa = a;
    pa.n_rows = 1;
    pa.partials = NULL;
    for (int r = 0; r < NP; r++) {
        pa.seq = &pseq[r];
        pa.pos = &ppos[r];
        pa.q = ROW(pq, r);
        pa.out = ROW(p_alone, r);
        run_all(&pa, bt_attention_task, 0);
    }
    pa.n_rows = NP;
    pa.seq = pseq;
    pa.pos = ppos;
    pa.q = &pq[0][0];
    pa.out = &p_tiled[0][0];
    size_t p_bytes = (size_t)NP * row_bytes;
    const int rpts[] = {1, 3, 8, 16, BT_ATTN_MAX_TASK_ROWS + 5};
    for (size_t i = 0; i < sizeof rpts / sizeof rpts[0]; i++) {
        pa.rows_per_task = rpts[i];
        memset(p_tiled, 0, sizeof p_tiled);
        run_all(&pa, bt_attention_task, (int)(i & 1));
        CHECK(memcmp(p_tiled, p_alone, p_bytes) == 0);
        memset(p_tiled, 0, sizeof p_tiled);
        bt_threadpool_run(p2, pool_task, &pa, bt_attention_n_tasks(&pa));
        CHECK(memcmp(p_tiled, p_alone, p_bytes) == 0);
    }
    CHECK_EQ_INT(bt_attention_n_tasks(&pa),
                 3 * n_head_kv *
                     ((n_head / n_head_kv + pa.heads_per_task - 1) / pa.heads_per_task));
    pa.rows_per_task = 8;
    pa.out = ROW(p_tiled, 0);
    memset(p_tiled, 0, sizeof p_tiled);
    run_all(&pa, bt_attention_task_ref, 0);
    for (int r = 0; r < NP; r++) /* the scalar reference takes rows_per_task too */
        CHECK_NEAR(max_abs_diff(ROW(p_tiled, r), ROW(p_alone, r), n_head * D), 0.0, 2e-5);
    bt_kv_cache_free(kv);
}

/* q8_0 storage: 34 bytes per 32 values; stored rows dequantize to within 0.57 of a step of the
 * input (half a step plus the f16 rounding of the scale; step = max|x| / 127 of the block), and
 * equal the scalar quantizer's blocks. */
static void test_q8_store(void) {
    const int len[N_SEQ] = {20, 1, 1, 1};
    bt_kv_cache *kv = fill_cache(BT_TYPE_Q8_0, len);
    bt_kv_cache *kf = fill_cache(BT_TYPE_F32, len);
    if (!kv || !kf)
        goto out;
    CHECK_EQ_INT(bt_kv_row_bytes(BT_TYPE_Q8_0, D), D / 32 * 34);
    CHECK_EQ_INT(bt_kv_cache_bytes(kv) * 64, bt_kv_cache_bytes(kf) * 17);
    float x[D], y[D];
    bt_block_q8_0 blk[D / 32];
    int ok = 1;
    for (int t = 0; t < 20; t++)
        for (int g = 0; g < n_head_kv; g++)
            for (int which = 0; which < 2; which++) {
                row_f32(kf, which, 0, t, g, x);
                row_f32(kv, which, 0, t, g, y);
                bt_quantize_row_q8_0(x, blk, D);
                for (int b = 0; b < D / 32; b++) {
                    float amax = 0.0f;
                    for (int i = 0; i < 32; i++)
                        amax = fabsf(x[b * 32 + i]) > amax ? fabsf(x[b * 32 + i]) : amax;
                    float d = bt_half_to_f32(blk[b].d);
                    for (int i = 0; i < 32; i++)
                        if (fabsf(y[b * 32 + i] - x[b * 32 + i]) > 0.57f * amax / 127.0f ||
                            y[b * 32 + i] != d * (float)blk[b].qs[i])
                            ok = 0;
                }
            }
    CHECK(ok);
    /* A head size that is not whole q8_0 blocks is refused by name. */
    bt_kv_params p = *bt_kv_cache_params(kv);
    p.head_dim = 48;
    bt_kv_cache *bad = NULL;
    bt_error err;
    bt_error_init(&err);
    CHECK_EQ_INT(bt_kv_cache_new(&p, &bad, &err), BT_ERR_UNSUPPORTED);
    CHECK(strstr(err.msg, "head_dim") != NULL);
out:
    bt_kv_cache_free(kv);
    bt_kv_cache_free(kf);
}

/* One shape of the level check: outputs of every row at the AVX2 level and at the AVX-512 level
 * (out[0], out[1]) for whole-row tasks of 1 and 8 rows, and for chunk tasks of the first 4. */
static void levels_shape(bt_type type, int nh, int nkv, int hd, int win) {
    /* QMAX: n_head * head_dim of the largest shape */
    enum { LEN0 = 600, LEN1 = 40, NR = LEN1 + 6, QMAX = 1024 };
    const int len[2] = {LEN0, LEN1};
    bt_kv_cache *kv = fill_cache_shape(type, len, 2, LEN0, nkv, hd, 0);
    if (!kv)
        return;
    static float q[NR * QMAX], out[2][NR * QMAX];
    CHECK(nh * hd <= QMAX);
    static float partials[1 << 20];
    /* Rows at positions 0..39 (every key count of a block, so every split of a block into
     * groups of 8 and 4 keys and single keys), then past chunk ends of the long sequence. */
    int32_t seq[NR], pos[NR];
    const int far[NR - LEN1] = {255, 256, 257, 300, 517, LEN0 - 1};
    for (int r = 0; r < NR; r++) {
        seq[r] = r < LEN1 ? 1 : 0;
        pos[r] = r < LEN1 ? r : far[r - LEN1];
    }
    for (int i = 0; i < NR * nh * hd; i++)
        q[i] = 2.0f * frand();
    bt_attn_args a = {.kv = kv,
                      .layer = 0,
                      .n_rows = NR,
                      .seq = seq,
                      .pos = pos,
                      .q = q,
                      .n_head = nh,
                      .n_head_kv = nkv,
                      .head_dim = hd,
                      .heads_per_task = nh / nkv,
                      .window = win};
    size_t bytes = sizeof(float) * (size_t)NR * (size_t)nh * (size_t)hd;
    const bt_kernel_level levels[2] = {BT_KERNELS_AVX2, BT_KERNELS_AVX512};
    for (int mode = 0; mode < 3; mode++) {
        for (int lv = 0; lv < 2; lv++) {
            bt_kernels_force(levels[lv]);
            memset(out[lv], 0, bytes);
            a.out = out[lv];
            a.rows_per_task = mode == 1 ? 8 : 1;
            a.partials = mode == 2 ? partials : NULL;
            a.n_rows = mode == 2 ? BT_ATTN_SPLIT_MAX_ROWS : NR;
            a.seq = mode == 2 ? seq + LEN1 : seq;
            a.pos = mode == 2 ? pos + LEN1 : pos;
            a.q = mode == 2 ? q + (size_t)LEN1 * nh * hd : q;
            run_all(&a, bt_attention_task, 0);
        }
        if (memcmp(out[0], out[1], bytes) != 0)
            check_fail(__FILE__, __LINE__,
                       "avx512 attention != avx2: type %s, %d heads on %d, head_dim %d, window %d, "
                       "mode %d",
                       bt_type_name((uint32_t)type), nh, nkv, hd, win, mode);
        else
            CHECK(1);
    }
    bt_kv_cache_free(kv);
}

/* The AVX-512 variant against the AVX2 one, bit for bit (the level changes only the speed):
 * f16, q8_0 and f32 caches; head sizes 32 to 256 (the last pass over a head's values 32 wide
 * at 96); groups of 1 to 8 query heads (passes of 3, 3 and 2); with and without a window. A
 * CPU without the AVX-512 kernel level skips the check, and says so. */
static void test_levels_equal(void) {
    bt_kernel_level was = bt_kernels_level();
    if (bt_kernels_force(BT_KERNELS_AVX512), bt_kernels_level() != BT_KERNELS_AVX512) {
        printf("avx512 attention equals avx2: this CPU lacks the avx512 kernel level: skipped\n");
        return;
    }
    const struct {
        int nh, nkv, hd;
    } shapes[] = {{9, 3, 64}, {8, 1, 128}, {4, 1, 256}, {4, 2, 96}, {3, 1, 32}};
    const bt_type types[] = {BT_TYPE_F16, BT_TYPE_Q8_0, BT_TYPE_F32};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (size_t t = 0; t < sizeof types / sizeof types[0]; t++)
            for (int w = 0; w < 2; w++)
                levels_shape(types[t], shapes[s].nh, shapes[s].nkv, shapes[s].hd, w ? 100 : 0);
    bt_kernels_force(was);
}

int main(void) {
    bt_threadpool *p1 = NULL, *p2 = NULL;
    bt_error err;
    bt_error_init(&err);
    CHECK_OK(bt_threadpool_new(1, &p1, &err));
    CHECK_OK(bt_threadpool_new(2, &p2, &err));
    if (p1 && p2) {
        for (int w = 0; w < 2; w++)
            for (int shape = 0; shape < 2; shape++) {
                window = w ? 300 : 0;
                n_head = shape ? 8 : 9;
                n_head_kv = shape ? 1 : 3;
                test_type(BT_TYPE_F16, p1, p2);
                test_type(BT_TYPE_Q8_0, p1, p2);
                test_type(BT_TYPE_F32, p1, p2);
            }
        window = 0;
        n_head = 9;
        n_head_kv = 3;
    }
    test_q8_store();
    test_levels_equal();
    bt_threadpool_free(p1);
    bt_threadpool_free(p2);
    return check_finish();
}
