/*
 * pack.c - the packed weight layout (kernels.h, "Packed weights"; the block struct and what
 * each byte holds are in kernels_internal.h): the repacking of a matrix when a stage loads it,
 * and the scalar tile that reads it, which defines the packed numerics for the SIMD tiles.
 *
 * Why a layout of our own: in the file's, each row's block is 22 bytes on its own, so a SIMD
 * tile must gather four rows into a vector per block and keeps four partial sums per output,
 * each with its own convert and multiply-add per token. With 16 rows in the 16 lanes of a
 * vector, one multiply-add per block and token serves 16 outputs, and the per-block work is a
 * few whole-vector loads.
 */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "kernels_internal.h"

_Static_assert(sizeof(bt_block_q5_0x16) == BT_PACK_ROWS * sizeof(bt_block_q5_0),
               "a packed block holds exactly the bytes of its 16 rows' blocks");

static uint32_t qh_bits(const bt_block_q5_0 *b) {
    uint32_t qh;
    memcpy(&qh, b->qh, sizeof qh);
    return qh;
}

static void pack_q5_0_block(const bt_block_q5_0 *const *rows, bt_block_q5_0x16 *out) {
    memset(out, 0, sizeof *out);
    for (int r = 0; r < BT_PACK_ROWS; r++) {
        const bt_block_q5_0 *b = rows[r];
        uint32_t qh = qh_bits(b);
        out->d[r] = b->d;
        for (int j = 0; j < 4; j++)
            memcpy(&out->qs[j][4 * r], b->qs + 4 * j, 4);
        for (int g = 0; g < 8; g++) /* elements 4g..4g+3: qh bits 4g..4g+3, cleared ones set */
            out->nohi[g] |= (uint64_t)(~qh >> 4 * g & 0xF) << 4 * r;
    }
}

void bt_pack_rows(bt_type type, const void *w, size_t row_bytes, int64_t n_rows, int64_t n_cols,
                  void *dst) {
    assert(type == BT_TYPE_Q5_0 && n_rows % BT_PACK_ROWS == 0 && n_cols % BT_QK == 0);
    assert(row_bytes == (size_t)(n_cols / BT_QK) * sizeof(bt_block_q5_0));
    int64_t nb = n_cols / BT_QK;
    const char *wb = w;
    bt_block_q5_0x16 *out = dst;
    for (int64_t g = 0; g < n_rows / BT_PACK_ROWS; g++)
        for (int64_t i = 0; i < nb; i++) {
            const bt_block_q5_0 *rows[BT_PACK_ROWS];
            for (int r = 0; r < BT_PACK_ROWS; r++)
                rows[r] =
                    (const bt_block_q5_0 *)(const void *)(wb + (size_t)(g * BT_PACK_ROWS + r) *
                                                                   row_bytes) +
                    i;
            pack_q5_0_block(rows, out + g * nb + i);
        }
}

/* Element e of row r of a packed block, -16..15. */
static int q5_0x16_at(const bt_block_q5_0x16 *b, int r, int e) {
    int g = e / 4, k = e % 4;
    uint8_t byte = b->qs[g % 4][4 * r + k];
    int nib = g < 4 ? byte & 0x0F : byte >> 4;
    return (b->nohi[g] >> (4 * r + k) & 1) ? nib - 16 : nib;
}

void bt_packed_tile_q5_0_ref(const void *wg, int64_t nb, const bt_q8 *x, const uint8_t *xu,
                             int64_t xs, int n_tok, float *out, int64_t ldo, uint32_t rows) {
    (void)xu;
    const bt_block_q5_0x16 *b = wg;
    for (int r = 0; r < BT_PACK_ROWS; r++) {
        if (!(rows >> r & 1))
            continue;
        for (int t = 0; t < n_tok; t++) {
            const bt_q8 *xt = x + t * xs;
            float acc = 0.0f;
            for (int64_t i = 0; i < nb; i++) {
                int isum = 0;
                for (int e = 0; e < BT_QK; e++)
                    isum += q5_0x16_at(b + i, r, e) * xt[i].qs[e];
                acc = fmaf(bt_half_to_f32(b[i].d[r]) * xt[i].d, (float)isum, acc);
            }
            out[t * ldo + r] = acc;
        }
    }
}
