/*
 * test_kv_cache.c - block accounting of the paged KV cache: reserve, commit, truncate, free,
 * limits (nothing changes on a refused reserve), fork with copy-on-write.
 */
#include <string.h>

#include "check.h"
#include "kv_cache.h"

static bt_kv_cache *make(int n_blocks, int max_seqs, int max_seq_tokens)
{
    bt_kv_params p = {.n_layer = 2, .n_head_kv = 2, .head_dim = 8, .n_blocks = n_blocks,
                      .max_seqs = max_seqs, .max_seq_tokens = max_seq_tokens};
    bt_kv_cache *kv = NULL;
    bt_error err;
    bt_error_init(&err);
    CHECK_OK(bt_kv_cache_new(&p, &kv, &err));
    return kv;
}

/* Writes a recognisable value into K of (layer 0, position pos) of seq. */
static float *slot_k(bt_kv_cache *kv, int seq, int pos)
{
    int block = bt_kv_seq_table(kv, seq)[pos / BT_KV_BLOCK_TOKENS];
    return bt_kv_block_k(kv, 0, block) + (pos % BT_KV_BLOCK_TOKENS) * 8;
}

int main(void)
{
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
    CHECK_NEAR(slot_k(kv, 3, 19)[0], 19.0f, 0);       /* copied content */
    CHECK(slot_k(kv, 3, 3) == slot_k(kv, 0, 3));      /* full block still shared */
    slot_k(kv, 3, 20)[0] = 20.0f;
    bt_kv_seq_set_len(kv, 3, 21);
    CHECK_EQ_INT(bt_kv_n_blocks_free(kv), 5);
    bt_kv_seq_free(kv, 0);
    CHECK_EQ_INT(bt_kv_n_blocks_free(kv), 6); /* block 0 still held by seq 3 */
    CHECK_NEAR(slot_k(kv, 3, 3)[0], 3.0f, 0);
    bt_kv_seq_free(kv, 3);
    CHECK_EQ_INT(bt_kv_n_blocks_free(kv), 8);
    bt_kv_cache_free(kv);
    return check_finish();
}
