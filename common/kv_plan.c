/* kv_plan.c - block counts and bytes of a stage's KV cache (see kv_plan.h). */
#include "kv_plan.h"

#include <stdlib.h>
#include <string.h>

bool bt_kv_window_off(void) {
    const char *v = getenv("BATON_KV_WINDOW");
    return v && strcmp(v, "off") == 0;
}

int bt_kv_window_blocks(int n_blocks, int window, int max_seqs, int max_batch) {
    const int B = BT_KV_BLOCK_TOKENS;
    int64_t q = ((int64_t)window + B - 3) / B, c = ((int64_t)window + B - 3) % B;
    int64_t first = B - c; /* rows that give a sequence its first extra block */
    int64_t k = (int64_t)max_batch / first;
    k = k < max_seqs ? k : max_seqs;
    int64_t bound = (int64_t)max_seqs * (q + 1) + k + ((int64_t)max_batch - k * first) / B;
    return bound < n_blocks ? (int)bound : n_blocks;
}

void bt_kv_plan_stage(const bt_hparams *hp, int layer_begin, int layer_end, int kv_tokens,
                      int max_seqs, int max_batch, bt_type kv_type, bt_kv_plan *out) {
    out->n_global_layers = out->n_window_layers = 0;
    bool off = bt_kv_window_off();
    for (int il = layer_begin; il < layer_end; il++) {
        if (!off && bt_hparams_is_swa(hp, il))
            out->n_window_layers++;
        else
            out->n_global_layers++;
    }
    out->n_blocks = (kv_tokens + BT_KV_BLOCK_TOKENS - 1) / BT_KV_BLOCK_TOKENS;
    out->n_window_blocks =
        out->n_window_layers > 0
            ? bt_kv_window_blocks(out->n_blocks, hp->sliding_window, max_seqs, max_batch)
            : 0;
    uint64_t per_block_layer =
        bt_kv_bytes_per_token_layer(bt_hparams_kv_dim(hp), kv_type) * (uint64_t)BT_KV_BLOCK_TOKENS;
    out->global_bytes = per_block_layer * (uint64_t)out->n_blocks * (uint64_t)out->n_global_layers;
    out->window_bytes =
        per_block_layer * (uint64_t)out->n_window_blocks * (uint64_t)out->n_window_layers;
    out->full_bytes = per_block_layer * (uint64_t)out->n_blocks *
                      (uint64_t)(out->n_global_layers + out->n_window_layers);
}
