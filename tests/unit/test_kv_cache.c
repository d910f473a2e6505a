/*
 * test_kv_cache.c - block accounting of the paged KV cache: reserve, commit, truncate, free,
 * limits (nothing changes on a refused reserve), fork with copy-on-write; f16 storage: half
 * the bytes of f32, stores rounded to nearest even (F16C and scalar give the same bits),
 * copy-on-write of f16 blocks. The window pool of the local layers (kv_cache.h): its size
 * (common/kv_plan.h's bound, reached exactly by a worst-case batch), blocks released as the
 * window slides, fork and copy-on-write of window blocks, free, the refused truncate, a
 * randomized schedule of sequences, chunks up to max_step_rows, forks and frees checked
 * against an oracle of the keys every query must still see, and a cache without local
 * layers exactly as before.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kv_cache.h"
#include "kv_plan.h"

static bt_kv_cache *make_typed(int n_blocks, int max_seqs, int max_seq_tokens, bt_type type) {
    bt_kv_params p = {.n_layer = 2,
                      .n_head_kv = 2,
                      .head_dim = 8,
                      .n_blocks = n_blocks,
                      .max_seqs = max_seqs,
                      .max_seq_tokens = max_seq_tokens,
                      .type = type};
    bt_kv_cache *kv = NULL;
    bt_error err;
    bt_error_init(&err);
    CHECK_OK(bt_kv_cache_new(&p, &kv, &err));
    return kv;
}

static bt_kv_cache *make(int n_blocks, int max_seqs, int max_seq_tokens) {
    return make_typed(n_blocks, max_seqs, max_seq_tokens, BT_TYPE_F32);
}

static void test_f16(void) {
    bt_error err;
    bt_error_init(&err);
    bt_kv_cache *k32 = make_typed(8, 4, 100, BT_TYPE_F32);
    bt_kv_cache *k16 = make_typed(8, 4, 100, BT_TYPE_F16);
    if (!k32 || !k16)
        goto out;
    CHECK_EQ_INT(bt_kv_cache_bytes(k16) * 2, bt_kv_cache_bytes(k32));
    CHECK_EQ_INT(bt_kv_cache_bytes(k16), 2 * 2 * 8 * 2 * 16 * 8 * sizeof(bt_half));
    CHECK_EQ_INT(bt_kv_cache_params(k16)->type, BT_TYPE_F16);

    /* Conversions: the same bits as the scalar bt_f32_to_half on normal, subnormal, halfway
     * and out-of-range values (lengths not a multiple of 8 exercise the tails). */
    enum { N = 4099 };
    float *x = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * N);
    bt_half *h = malloc(sizeof(bt_half) * N);
    uint32_t st = 12345;
    for (int i = 0; i < N; i++) {
        st = st * 1664525u + 1013904223u;
        float mag = ldexpf((float)(st >> 8) / (float)(1u << 24), (int)(st % 40) - 28);
        x[i] = (st & 1) ? -mag : mag;
    }
    x[0] = 65520.0f;              /* rounds to inf */
    x[1] = 1.0f + 1.0f / 2048.0f; /* halfway: to even (1.0) */
    x[2] = 5.9604645e-8f;         /* smallest subnormal */
    bt_kv_f32_to_f16(x, h, N);
    int same = 1;
    for (int i = 0; i < N; i++)
        same &= h[i] == bt_f32_to_half(x[i]);
    CHECK(same);
    CHECK_EQ_INT(h[1], 0x3C00);
    bt_kv_f16_to_f32(h, y, N);
    same = 1;
    for (int i = 0; i < N; i++)
        same &= memcmp(&y[i], &(float){bt_half_to_f32(h[i])}, sizeof(float)) == 0;
    CHECK(same);
    free(x);
    free(y);
    free(h);

    /* bt_kv_store writes the rounded values at (layer, block, slot); fork + CoW copies them. */
    float k[16], v[16];
    for (int i = 0; i < 16; i++) {
        k[i] = 0.1f * (float)i + 1e-4f;
        v[i] = -0.3f * (float)i;
    }
    CHECK_OK(bt_kv_seq_reserve(k16, 0, 5, &err));
    int blk = bt_kv_seq_table(k16, 0)[0];
    bt_kv_store(k16, 1, blk, 4, k, v);
    bt_kv_seq_set_len(k16, 0, 5);
    const bt_half *kb = bt_kv_block_k(k16, 1, blk), *vb = bt_kv_block_v(k16, 1, blk);
    /* head 1, slot 4: element [1][4][i] */
    CHECK_EQ_INT(kb[(1 * 16 + 4) * 8 + 3], bt_f32_to_half(k[8 + 3]));
    CHECK_EQ_INT(vb[(0 * 16 + 4) * 8 + 7], bt_f32_to_half(v[7]));
    CHECK_OK(bt_kv_seq_fork(k16, 0, 1, &err));
    CHECK_OK(bt_kv_seq_reserve(k16, 1, 6, &err)); /* copies the shared block */
    int blk1 = bt_kv_seq_table(k16, 1)[0];
    CHECK(blk1 != blk);
    const bt_half *kc = bt_kv_block_k(k16, 1, blk1);
    CHECK(memcmp(kc, kb, 2 * 16 * 8 * sizeof(bt_half)) == 0);

    bt_kv_params bad = {.n_layer = 1,
                        .n_head_kv = 1,
                        .head_dim = 8,
                        .n_blocks = 1,
                        .max_seqs = 1,
                        .max_seq_tokens = 16,
                        .type = BT_TYPE_Q8_0};
    bt_kv_cache *kb_bad = NULL;
    /* q8_0 needs whole 32-value blocks per head row; a type the cache has no storage for is
     * refused. */
    CHECK_EQ_INT(bt_kv_cache_new(&bad, &kb_bad, &err), BT_ERR_UNSUPPORTED);
    CHECK(kb_bad == NULL && strstr(err.msg, "head_dim") != NULL);
    bad.type = BT_TYPE_Q4_0;
    CHECK_EQ_INT(bt_kv_cache_new(&bad, &kb_bad, &err), BT_ERR_INVALID_ARG);
    CHECK(kb_bad == NULL && strstr(err.msg, "q4_0") != NULL);
out:
    bt_kv_cache_free(k32);
    bt_kv_cache_free(k16);
}

/* Writes a recognisable value into K of (layer 0, position pos) of seq. */
static float *slot_k(bt_kv_cache *kv, int seq, int pos) {
    int block = bt_kv_seq_table(kv, seq)[pos / BT_KV_BLOCK_TOKENS];
    return (float *)bt_kv_block_k(kv, 0, block) + (pos % BT_KV_BLOCK_TOKENS) * 8;
}

/* ---- the window pool ---- */

/* Three layers: 0 and 2 local (window pool), 1 global; one KV head of 8 f32. */
static const uint8_t win_layers[3] = {1, 0, 1};

static bt_kv_cache *make_window(int n_blocks, int max_seqs, int max_seq_tokens, int window,
                                int max_step_rows) {
    bt_kv_params p = {.n_layer = 3,
                      .n_head_kv = 1,
                      .head_dim = 8,
                      .n_blocks = n_blocks,
                      .max_seqs = max_seqs,
                      .max_seq_tokens = max_seq_tokens,
                      .type = BT_TYPE_F32,
                      .window = window,
                      .window_layers = win_layers,
                      .max_step_rows = max_step_rows};
    bt_kv_cache *kv = NULL;
    bt_error err;
    bt_error_init(&err);
    CHECK_OK(bt_kv_cache_new(&p, &kv, &err));
    return kv;
}

/* K element 0 of (layer, position pos) of seq through the layer's own table; NULL when the
 * entry is released or not allocated. */
static float *win_k(bt_kv_cache *kv, int layer, int seq, int pos) {
    int idx = pos / BT_KV_BLOCK_TOKENS;
    if (idx >= bt_kv_seq_n_blocks(kv, seq))
        return NULL;
    int32_t b = bt_kv_layer_table(kv, layer, seq)[idx];
    if (b < 0)
        return NULL;
    return (float *)bt_kv_block_k(kv, layer, b) + (pos % BT_KV_BLOCK_TOKENS) * 8;
}

static float win_value(int seq, int pos, int layer) {
    return (float)(seq * 100000 + pos * 4 + layer);
}

/* Grows seq to n_tokens, writing win_value into every layer. */
static void win_grow(bt_kv_cache *kv, int seq, int n_tokens) {
    bt_error err;
    bt_error_init(&err);
    int len = bt_kv_seq_len(kv, seq);
    CHECK_OK(bt_kv_seq_reserve(kv, seq, n_tokens, &err));
    for (int p = len; p < n_tokens; p++)
        for (int l = 0; l < 3; l++)
            *win_k(kv, l, seq, p) = win_value(seq, p, l);
    bt_kv_seq_set_len(kv, seq, n_tokens);
}

static int blocks_of(int n) {
    return (n + BT_KV_BLOCK_TOKENS - 1) / BT_KV_BLOCK_TOKENS;
}

/* The window entries a sequence of length len holds: the blocks meeting [len - W + 1, len). */
static int window_held(int len, int window) {
    int first = len - window + 1;
    return blocks_of(len) - (first > 0 ? first / BT_KV_BLOCK_TOKENS : 0);
}

static void test_window_basics(void) {
    bt_error err;
    bt_error_init(&err);
    const int W = 40;
    /* The bound by hand for window 40, 2 sequences, 20 rows a step: q = 53 / 16 = 3, c = 5, the
     * first extra block after 11 rows: 2 x 4 + 1 + (20 - 11) / 16 = 9. */
    CHECK_EQ_INT(bt_kv_window_blocks(100, W, 2, 20), 9);
    CHECK_EQ_INT(bt_kv_window_blocks(7, W, 2, 20), 7); /* never more than the global pool */
    /* Gemma 3 270M at --max-seqs 1 --max-batch 512: 65 blocks (1040 positions), as llama.cpp's
     * window + ubatch (1024) rounded to blocks. */
    CHECK_EQ_INT(bt_kv_window_blocks(512, 512, 1, 512), 65);

    bt_kv_cache *kv = make_window(100, 2, 400, W, 20);
    if (!kv)
        return;
    CHECK_EQ_INT(bt_kv_n_window_blocks(kv), 9);
    CHECK_EQ_INT(bt_kv_n_window_layers(kv), 2);
    CHECK(bt_kv_layer_is_window(kv, 0) && !bt_kv_layer_is_window(kv, 1));
    size_t blk = 16 * 8 * sizeof(float);
    CHECK_EQ_INT(bt_kv_global_bytes(kv), 2 * 1 * 100 * blk);
    CHECK_EQ_INT(bt_kv_window_bytes(kv), 2 * 2 * 9 * blk);
    CHECK_EQ_INT(bt_kv_cache_bytes(kv), bt_kv_global_bytes(kv) + bt_kv_window_bytes(kv));
    /* The planner's numbers are the cache's, to the byte. */
    bt_hparams hp;
    memset(&hp, 0, sizeof hp);
    hp.n_layer = 3;
    hp.n_head = hp.n_head_kv = 1;
    hp.head_dim = 8;
    hp.sliding_window = W;
    hp.swa_pattern = 2; /* layers 0 and 2 local, 1 global: win_layers */
    bt_kv_plan plan;
    bt_kv_plan_stage(&hp, 0, 3, 100 * 16, 2, 20, BT_TYPE_F32, &plan);
    CHECK_EQ_INT(plan.n_window_layers, 2);
    CHECK_EQ_INT(plan.n_window_blocks, 9);
    CHECK_EQ_INT(bt_kv_plan_bytes(&plan), bt_kv_cache_bytes(kv));
    CHECK_EQ_INT(plan.full_bytes, 2 * 3 * 100 * blk);

    /* The window slides: after each commit the window pool holds exactly the blocks meeting
     * [len - 39, len); the global pool every block. Token by token, then in chunks. */
    int bad = 0;
    for (int len = 1; len <= 120; len++) {
        win_grow(kv, 0, len);
        bad += bt_kv_window_blocks_free(kv) != 9 - window_held(len, W);
        bad += bt_kv_n_blocks_free(kv) != 100 - blocks_of(len);
        int first = len - W + 1 > 0 ? len - W + 1 : 0;
        bad += bt_kv_seq_window_lo(kv, 0) != first / 16;
        for (int p = first; p < len; p++)
            bad += !win_k(kv, 0, 0, p) || *win_k(kv, 0, 0, p) != win_value(0, p, 0) ||
                   *win_k(kv, 1, 0, p) != win_value(0, p, 1) ||
                   *win_k(kv, 2, 0, p) != win_value(0, p, 2);
        for (int p = 0; p < first / 16 * 16; p++) /* released below the window's block */
            bad += win_k(kv, 0, 0, p) != NULL || *win_k(kv, 1, 0, p) != win_value(0, p, 1);
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(bt_kv_seq_window_lo(kv, 0), (120 - 39) / 16); /* 5 */
    CHECK_EQ_INT(bt_kv_seq_window_table(kv, 0)[4], -1);

    /* Truncate: to a length whose window reaches released positions is refused, nothing
     * changed; to one whose window is still held works; to 0 always. */
    CHECK_EQ_INT(bt_kv_seq_truncate(kv, 0, 100, &err), BT_ERR_RANGE);
    CHECK(strstr(err.msg, "window of 40") != NULL && strstr(err.msg, "released") != NULL);
    CHECK_EQ_INT(bt_kv_seq_len(kv, 0), 120);
    CHECK_EQ_INT(bt_kv_window_blocks_free(kv), 9 - window_held(120, W));
    CHECK_OK(bt_kv_seq_truncate(kv, 0, 119, &err)); /* first key 80: block 5, held */
    CHECK_EQ_INT(bt_kv_seq_len(kv, 0), 119);
    CHECK_OK(bt_kv_seq_truncate(kv, 0, 0, &err));
    CHECK_EQ_INT(bt_kv_window_blocks_free(kv), 9);
    CHECK_EQ_INT(bt_kv_n_blocks_free(kv), 100);
    CHECK_EQ_INT(bt_kv_seq_window_lo(kv, 0), 0);
    win_grow(kv, 0, 30);
    CHECK_OK(bt_kv_seq_truncate(kv, 0, 17, &err)); /* nothing released yet: any length */
    CHECK_EQ_INT(bt_kv_window_blocks_free(kv), 9 - 2);
    bt_kv_seq_free(kv, 0);

    /* Fork shares the window blocks (the released entries stay released); a write into the
     * shared partial block copies it in both pools; sliding past a shared block drops one
     * reference; free releases both tables. */
    win_grow(kv, 0, 70); /* lo = 31 / 16 = 1; entries 1..4 held */
    CHECK_EQ_INT(bt_kv_window_blocks_free(kv), 9 - 4);
    CHECK_OK(bt_kv_seq_fork(kv, 0, 1, &err));
    CHECK_EQ_INT(bt_kv_window_blocks_free(kv), 9 - 4);
    CHECK_EQ_INT(bt_kv_seq_window_lo(kv, 1), 1);
    CHECK_EQ_INT(bt_kv_seq_window_table(kv, 1)[0], -1);
    int32_t w4 = bt_kv_seq_window_table(kv, 0)[4], g4 = bt_kv_seq_table(kv, 0)[4];
    int32_t w1 = bt_kv_seq_window_table(kv, 0)[1];
    CHECK_EQ_INT(bt_kv_seq_window_table(kv, 1)[4], w4);
    CHECK_EQ_INT(bt_kv_window_block_refs(kv, w4), 2);
    const int32_t one[1] = {1}, to71[1] = {71};
    CHECK_EQ_INT(bt_kv_batch_window_blocks_needed(kv, 1, one, to71), 1); /* the copy */
    CHECK_OK(bt_kv_seq_reserve(kv, 1, 71, &err));
    CHECK(bt_kv_seq_window_table(kv, 1)[4] != w4 && bt_kv_seq_table(kv, 1)[4] != g4);
    CHECK_EQ_INT(bt_kv_window_block_refs(kv, w4), 1);
    CHECK_NEAR(*win_k(kv, 0, 1, 69), win_value(0, 69, 0), 0); /* copied content */
    CHECK_NEAR(*win_k(kv, 2, 1, 64), win_value(0, 64, 2), 0);
    CHECK(win_k(kv, 0, 1, 50) == win_k(kv, 0, 0, 50)); /* full blocks still shared */
    *win_k(kv, 0, 1, 70) = -1.0f;
    bt_kv_seq_set_len(kv, 1, 71);
    CHECK_EQ_INT(bt_kv_window_blocks_free(kv), 9 - 5);
    win_grow(kv, 1, 80); /* lo 41 / 16 = 2: seq 1 drops its reference to entry 1 */
    CHECK_EQ_INT(bt_kv_seq_window_lo(kv, 1), 2);
    CHECK_EQ_INT(bt_kv_window_block_refs(kv, w1), 1);
    CHECK_EQ_INT(bt_kv_window_blocks_free(kv), 9 - 5);
    CHECK_NEAR(*win_k(kv, 0, 0, 20), win_value(0, 20, 0), 0); /* seq 0 still sees it */
    CHECK_NEAR(*win_k(kv, 0, 0, 69), win_value(0, 69, 0), 0);
    bt_kv_seq_free(kv, 0);
    CHECK_EQ_INT(bt_kv_window_blocks_free(kv), 9 - window_held(80, W));
    bt_kv_seq_free(kv, 1);
    CHECK_EQ_INT(bt_kv_window_blocks_free(kv), 9);
    CHECK_EQ_INT(bt_kv_n_blocks_free(kv), 100);

    /* The worst batch the bound is made for takes the whole pool: both sequences at 54 (first
     * key 15, the last slot of block 0), 11 and 9 rows. */
    win_grow(kv, 0, 20);
    win_grow(kv, 0, 40);
    win_grow(kv, 0, 54);
    win_grow(kv, 1, 20);
    win_grow(kv, 1, 40);
    win_grow(kv, 1, 54);
    CHECK_EQ_INT(bt_kv_window_blocks_free(kv), 9 - 2 * 4);
    const int32_t both[2] = {0, 1}, grow[2] = {54 + 11, 54 + 9};
    CHECK_EQ_INT(bt_kv_batch_window_blocks_needed(kv, 2, both, grow), 1);
    CHECK_OK(bt_kv_seq_reserve(kv, 0, grow[0], &err));
    CHECK_OK(bt_kv_seq_reserve(kv, 1, grow[1], &err));
    CHECK_EQ_INT(bt_kv_window_blocks_free(kv), 0);
    bt_kv_seq_set_len(kv, 0, grow[0]);
    bt_kv_seq_set_len(kv, 1, grow[1]);
    /* Used beyond its sizing (a third sequence id does not exist; 21 rows more than a step
     * may have): refused, not overrun. */
    CHECK_EQ_INT(bt_kv_seq_reserve(kv, 0, 65 + 60, &err), BT_ERR_LIMIT);
    CHECK(strstr(err.msg, "window blocks") != NULL);
    bt_kv_cache_free(kv);
}

/* Random schedule: max_seqs sequences, steps of up to max_step_rows rows spread over random
 * sequences in random chunks, random forks into free ids and frees. Before each step's
 * compute (after reserve) every key each of its rows sees must be present with its value in
 * every layer; after each commit the window pool holds exactly the blocks the oracle says. */
static void test_window_random(int window, int max_seqs, int max_step_rows, uint32_t seed) {
    bt_error err;
    bt_error_init(&err);
    const int max_tokens = 400, n_blocks = max_seqs * blocks_of(max_tokens);
    bt_kv_cache *kv = make_window(n_blocks, max_seqs, max_tokens, window, max_step_rows);
    if (!kv)
        return;
    int n_win = bt_kv_n_window_blocks(kv);
    CHECK_EQ_INT(n_win, bt_kv_window_blocks(n_blocks, window, max_seqs, max_step_rows));
    /* Values: value_of[s][p] is what position p of seq s holds (a fork copies the source's
     * values, later writes are the sequence's own). */
    static float value_of[16][400];
    int32_t seq[64], grow[64];
    int bad_keys = 0, bad_held = 0, refused = 0, min_free = n_win, n_forks = 0;
    uint32_t r = seed;
#define RND(n) ((r = r * 1664525u + 1013904223u), (int)((r >> 8) % (uint32_t)(n)))
    for (int step = 0; step < 3000; step++) {
        int ev = RND(20);
        if (ev == 0) { /* free one */
            bt_kv_seq_free(kv, RND(max_seqs));
            continue;
        }
        if (ev == 1) { /* fork a live sequence into an empty one */
            int src = RND(max_seqs), dst = RND(max_seqs);
            if (src != dst && bt_kv_seq_len(kv, src) > 0 && bt_kv_seq_n_blocks(kv, dst) == 0) {
                CHECK_OK(bt_kv_seq_fork(kv, src, dst, &err));
                memcpy(value_of[dst], value_of[src], sizeof value_of[0]);
                n_forks++;
            }
            continue;
        }
        /* A step: rows totalling at most max_step_rows over distinct sequences, chunks of 1 to
         * the rows left (decode rows and prefill chunks). */
        int rows_left = 1 + RND(max_step_rows), n = 0;
        for (int s = RND(max_seqs), tries = 0; tries < max_seqs && rows_left > 0;
             tries++, s = (s + 1) % max_seqs) {
            if (RND(3) == 0)
                continue;
            int len = bt_kv_seq_len(kv, s);
            int rows = 1 + RND(rows_left);
            if (len + rows > max_tokens) {
                bt_kv_seq_free(kv, s); /* done: a new sequence takes the id */
                len = 0;
            }
            seq[n] = s;
            grow[n] = len + rows;
            rows_left -= rows;
            n++;
        }
        if (n == 0)
            continue;
        int need_w = bt_kv_batch_window_blocks_needed(kv, n, seq, grow);
        refused += need_w > bt_kv_window_blocks_free(kv); /* the stage asserts this */
        for (int i = 0; i < n; i++)
            if (bt_kv_seq_reserve(kv, seq[i], grow[i], &err) != BT_OK)
                refused++;
        if (refused)
            break;
        min_free =
            bt_kv_window_blocks_free(kv) < min_free ? bt_kv_window_blocks_free(kv) : min_free;
        for (int i = 0; i < n; i++) {
            int s = seq[i], len = bt_kv_seq_len(kv, s);
            for (int p = len; p < grow[i]; p++) {
                value_of[s][p] = win_value(s, p, 0) + (float)step * 0.5f;
                for (int l = 0; l < 3; l++)
                    *win_k(kv, l, s, p) = value_of[s][p] + (float)l;
            }
            /* Every key a row of this step sees: [p - window + 1, p] for p in [len, grow). */
            int first = len - window + 1 > 0 ? len - window + 1 : 0;
            for (int p = first; p < grow[i]; p++)
                for (int l = 0; l < 3; l++) {
                    const float *k = win_k(kv, l, s, p);
                    bad_keys += !k || *k != value_of[s][p] + (float)l;
                }
        }
        for (int i = 0; i < n; i++)
            bt_kv_seq_set_len(kv, seq[i], grow[i]);
        /* The window entries each sequence holds are exactly those meeting its window. */
        for (int s = 0; s < max_seqs; s++) {
            int len = bt_kv_seq_len(kv, s), held = 0;
            for (int b = 0; b < bt_kv_seq_n_blocks(kv, s); b++)
                held += bt_kv_seq_window_table(kv, s)[b] >= 0;
            bad_held += len > 0 && held != window_held(len, window);
        }
    }
#undef RND
    CHECK_EQ_INT(refused, 0);
    CHECK_EQ_INT(bad_keys, 0);
    CHECK_EQ_INT(bad_held, 0);
    CHECK(n_forks > 0);
    printf("window %d, %d seqs, %d rows a step: window pool %d blocks (global %d), least free "
           "%d, %d forks\n",
           window, max_seqs, max_step_rows, n_win, n_blocks, min_free, n_forks);
    for (int s = 0; s < max_seqs; s++)
        bt_kv_seq_free(kv, s);
    CHECK_EQ_INT(bt_kv_window_blocks_free(kv), n_win);
    CHECK_EQ_INT(bt_kv_n_blocks_free(kv), n_blocks);
    bt_kv_cache_free(kv);
}

/* Without local layers (no window, or a window with no layer flagged) the cache is the one
 * before the window pool: no window blocks, the same bytes, the same tables. */
static void test_no_window(void) {
    bt_error err;
    bt_error_init(&err);
    static const uint8_t none[3] = {0, 0, 0};
    bt_kv_params p = {.n_layer = 3,
                      .n_head_kv = 1,
                      .head_dim = 8,
                      .n_blocks = 10,
                      .max_seqs = 2,
                      .max_seq_tokens = 160,
                      .type = BT_TYPE_F16};
    for (int c = 0; c < 2; c++) {
        if (c == 1) {
            p.window = 16;
            p.window_layers = none;
            p.max_step_rows = 8;
        }
        bt_kv_cache *kv = NULL;
        CHECK_OK(bt_kv_cache_new(&p, &kv, &err));
        if (!kv)
            continue;
        CHECK_EQ_INT(bt_kv_n_window_blocks(kv), 0);
        CHECK_EQ_INT(bt_kv_window_bytes(kv), 0);
        CHECK_EQ_INT(bt_kv_cache_bytes(kv), 2 * 3 * 10 * 16 * 8 * sizeof(bt_half));
        CHECK_EQ_INT(bt_kv_cache_params(kv)->window, 0);
        CHECK_OK(bt_kv_seq_reserve(kv, 0, 100, &err));
        bt_kv_seq_set_len(kv, 0, 100);
        CHECK(bt_kv_layer_table(kv, 0, 0) == bt_kv_seq_table(kv, 0));
        CHECK_EQ_INT(bt_kv_seq_window_lo(kv, 0), 0);
        CHECK_OK(bt_kv_seq_truncate(kv, 0, 3, &err)); /* any length */
        CHECK_EQ_INT(bt_kv_n_blocks_free(kv), 9);
        bt_kv_cache_free(kv);
    }
    /* A window pool needs the rows a step may write. */
    static const uint8_t some[3] = {1, 0, 0};
    p.window_layers = some;
    p.max_step_rows = 0;
    bt_kv_cache *kv = NULL;
    CHECK_EQ_INT(bt_kv_cache_new(&p, &kv, &err), BT_ERR_INVALID_ARG);
    CHECK(kv == NULL && strstr(err.msg, "max_step_rows") != NULL);
}

int main(void) {
    bt_error err;
    bt_error_init(&err);
    bt_kv_params bad = {0};
    bt_kv_cache *kv = NULL;
    CHECK_EQ_INT(bt_kv_cache_new(&bad, &kv, &err), BT_ERR_INVALID_ARG);
    bt_kv_cache_free(NULL);

    kv = make(8, 4, 100);
    CHECK_EQ_INT(bt_kv_n_blocks_free(kv), 8);
    CHECK_EQ_INT(bt_kv_cache_bytes(kv), 2 * 2 * 8 * 2 * 16 * 8 * sizeof(float));

    /* 1 token -> 1 block; 16 -> still 1; 17 -> 2. */
    CHECK_EQ_INT(bt_kv_seq_blocks_needed(kv, 0, 1), 1);
    CHECK_OK(bt_kv_seq_reserve(kv, 0, 1, &err));
    bt_kv_seq_set_len(kv, 0, 1);
    CHECK_EQ_INT(bt_kv_n_blocks_free(kv), 7);
    CHECK_EQ_INT(bt_kv_seq_blocks_needed(kv, 0, 16), 0);
    CHECK_EQ_INT(bt_kv_seq_blocks_needed(kv, 0, 17), 1);
    CHECK_OK(bt_kv_seq_reserve(kv, 0, 40, &err));
    bt_kv_seq_set_len(kv, 0, 40);
    CHECK_EQ_INT(bt_kv_seq_n_blocks(kv, 0), 3);
    CHECK_EQ_INT(bt_kv_n_blocks_free(kv), 5);
    CHECK_EQ_INT(bt_kv_seq_len(kv, 0), 40);

    /* Per-sequence limit and pool limit refuse without change. */
    CHECK_EQ_INT(bt_kv_seq_reserve(kv, 0, 101, &err), BT_ERR_LIMIT);
    CHECK_OK(bt_kv_seq_reserve(kv, 1, 80, &err)); /* 5 blocks */
    bt_kv_seq_set_len(kv, 1, 80);
    CHECK_EQ_INT(bt_kv_n_blocks_free(kv), 0);
    CHECK_EQ_INT(bt_kv_seq_reserve(kv, 2, 1, &err), BT_ERR_LIMIT);
    CHECK_EQ_INT(bt_kv_seq_n_blocks(kv, 2), 0);
    CHECK_EQ_INT(bt_kv_seq_len(kv, 2), 0);
    CHECK_OK(bt_kv_seq_reserve(kv, 0, 48, &err)); /* fits in block 3 */

    /* Truncate releases whole blocks past the kept length. */
    CHECK_EQ_INT(bt_kv_seq_truncate(kv, 1, 81, &err), BT_ERR_RANGE);
    CHECK_OK(bt_kv_seq_truncate(kv, 1, 33, &err));
    CHECK_EQ_INT(bt_kv_seq_n_blocks(kv, 1), 3);
    CHECK_EQ_INT(bt_kv_n_blocks_free(kv), 2);
    CHECK_OK(bt_kv_seq_truncate(kv, 1, 32, &err));
    CHECK_EQ_INT(bt_kv_n_blocks_free(kv), 3);
    bt_kv_seq_free(kv, 1);
    CHECK_EQ_INT(bt_kv_n_blocks_free(kv), 5);
    CHECK_EQ_INT(bt_kv_seq_len(kv, 1), 0);
    bt_kv_seq_free(kv, 1); /* idempotent */
    CHECK_EQ_INT(bt_kv_n_blocks_free(kv), 5);

    /* Fork shares blocks; writing into the shared partial block copies it first. */
    bt_kv_seq_free(kv, 0);
    CHECK_OK(bt_kv_seq_reserve(kv, 0, 20, &err));
    bt_kv_seq_set_len(kv, 0, 20);
    slot_k(kv, 0, 3)[0] = 3.0f;
    slot_k(kv, 0, 19)[0] = 19.0f;
    CHECK_EQ_INT(bt_kv_n_blocks_free(kv), 6);
    CHECK_EQ_INT(bt_kv_seq_fork(kv, 0, 0, &err), BT_ERR_INVALID_ARG);
    CHECK_OK(bt_kv_seq_fork(kv, 0, 3, &err));
    CHECK_EQ_INT(bt_kv_seq_len(kv, 3), 20);
    CHECK_EQ_INT(bt_kv_n_blocks_free(kv), 6);
    int b1 = bt_kv_seq_table(kv, 0)[1];
    CHECK_EQ_INT(bt_kv_block_refs(kv, b1), 2);
    CHECK_EQ_INT(bt_kv_seq_blocks_needed(kv, 3, 21), 1); /* copy of the shared block */
    CHECK_OK(bt_kv_seq_reserve(kv, 3, 21, &err));
    CHECK(bt_kv_seq_table(kv, 3)[1] != b1);
    CHECK_EQ_INT(bt_kv_block_refs(kv, b1), 1);
    CHECK_NEAR(slot_k(kv, 3, 19)[0], 19.0f, 0);  /* copied content */
    CHECK(slot_k(kv, 3, 3) == slot_k(kv, 0, 3)); /* full block still shared */
    slot_k(kv, 3, 20)[0] = 20.0f;
    bt_kv_seq_set_len(kv, 3, 21);
    CHECK_EQ_INT(bt_kv_n_blocks_free(kv), 5);
    bt_kv_seq_free(kv, 0);
    CHECK_EQ_INT(bt_kv_n_blocks_free(kv), 6); /* block 0 still held by seq 3 */
    CHECK_NEAR(slot_k(kv, 3, 3)[0], 3.0f, 0);
    bt_kv_seq_free(kv, 3);
    CHECK_EQ_INT(bt_kv_n_blocks_free(kv), 8);

    /* Several holders of a shared partial block write it in one batch: all but the last copy
     * it, and the batch count says so (the sum of per-sequence counts says one more). */
    CHECK_OK(bt_kv_seq_reserve(kv, 0, 20, &err));
    bt_kv_seq_set_len(kv, 0, 20);
    CHECK_OK(bt_kv_seq_fork(kv, 0, 1, &err));
    CHECK_OK(bt_kv_seq_fork(kv, 0, 2, &err));
    CHECK_EQ_INT(bt_kv_n_blocks_free(kv), 6);
    const int32_t seqs[3] = {0, 1, 2}, grow[3] = {21, 21, 40};
    CHECK_EQ_INT(bt_kv_batch_blocks_needed(kv, 3, seqs, grow), 2 + 1); /* 2 copies, 1 new */
    CHECK_EQ_INT(bt_kv_seq_blocks_needed(kv, 0, 21) + bt_kv_seq_blocks_needed(kv, 1, 21) +
                     bt_kv_seq_blocks_needed(kv, 2, 40),
                 4);
    for (int i = 0; i < 3; i++)
        CHECK_OK(bt_kv_seq_reserve(kv, seqs[i], grow[i], &err));
    CHECK_EQ_INT(bt_kv_n_blocks_free(kv), 6 - 3);
    for (int i = 0; i < 3; i++)
        bt_kv_seq_free(kv, i);
    CHECK_EQ_INT(bt_kv_n_blocks_free(kv), 8);
    bt_kv_cache_free(kv);
    test_f16();
    test_window_basics();
    test_window_random(40, 4, 24, 1);
    test_window_random(17, 3, 50, 2); /* chunks longer than the window */
    test_window_random(64, 16, 8, 3); /* many sequences, few rows: the pool at its minimum */
    test_window_random(1, 2, 5, 4);   /* a window of one key */
    test_no_window();
    return check_finish();
}
