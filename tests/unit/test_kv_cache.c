/*
 * test_kv_cache.c - block accounting of the paged KV cache: reserve, commit, truncate, free,
 * limits (nothing changes on a refused reserve), fork with copy-on-write; f16 storage: half
 * the bytes of f32, stores rounded to nearest even (F16C and scalar give the same bits),
 * copy-on-write of f16 blocks.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kv_cache.h"

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
    return check_finish();
}
