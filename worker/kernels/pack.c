/*
 * pack.c - the packed weight layout (kernels.h, "Packed weights"; the block struct and what
 * each byte holds are in kernels_internal.h): the repacking of a matrix when a stage loads it,
 * and its inverse for one row (the scalar packed tile in kernels_scalar.c and the embedding
 * rows of a packed tied head read rows through it).
 *
 * Why a layout of our own: in the file's, each row's block stands alone (22 bytes for Q5_0),
 * so a SIMD tile must gather four rows into a vector per block and keeps four partial sums per
 * output, each with its own convert and multiply-add per token. With 16 rows in the 16 lanes
 * of a vector, one multiply-add per block and token serves 16 outputs, and the per-block work
 * is a few whole-vector loads. Each packed block holds exactly its 16 rows' bytes, so a packed
 * matrix has the file's size.
 */
#include <assert.h>
#include <string.h>

#include "kernels_internal.h"

/* The n 4-byte words of a row's src into lane r (bytes 4r..4r+3) of n consecutive 64-byte
 * rows at `lanes`, in order: the packed layout of every array below. get_lanes is its inverse. */
static void put_lanes(void *lanes, int n, int r, const void *src) {
    for (int k = 0; k < n; k++)
        memcpy((uint8_t *)lanes + 64 * k + 4 * r, (const uint8_t *)src + 4 * k, 4);
}

static void get_lanes(void *dst, const void *lanes, int n, int r) {
    for (int k = 0; k < n; k++)
        memcpy((uint8_t *)dst + 4 * k, (const uint8_t *)lanes + 64 * k + 4 * r, 4);
}

/* A row's 32 fifth bits (a Q5_0 or Q5_1 block's qh) as row r's 4 bytes of a bit plane: byte
 * 4r + k holds in bit g the bit of element 4g + k. get_plane is its inverse. */
static void put_plane(uint8_t plane[64], int r, uint32_t bits) {
    for (int k = 0; k < 4; k++) {
        uint8_t v = 0;
        for (int g = 0; g < 8; g++)
            v |= (uint8_t)((bits >> (4 * g + k) & 1) << g);
        plane[4 * r + k] = v;
    }
}

static uint32_t get_plane(const uint8_t plane[64], int r) {
    uint32_t bits = 0;
    for (int e = 0; e < 32; e++)
        bits |= (uint32_t)(plane[4 * r + e % 4] >> e / 4 & 1) << e;
    return bits;
}

static uint32_t qh_word(const uint8_t qh[4]) {
    uint32_t w;
    memcpy(&w, qh, sizeof w);
    return w;
}

static void pack_q5_0_block(const bt_block_q5_0 *const *rows, bt_block_q5_0x16 *out) {
    for (int r = 0; r < BT_PACK_ROWS; r++) {
        const bt_block_q5_0 *b = rows[r];
        out->d[r] = b->d;
        put_lanes(out->qs, 4, r, b->qs);
        put_plane(out->nohi, r, ~qh_word(b->qh)); /* set where the file's bit is clear */
    }
}

static void pack_q4_1_block(const bt_block_q4_1 *const *rows, bt_block_q4_1x16 *out) {
    for (int r = 0; r < BT_PACK_ROWS; r++) {
        const bt_block_q4_1 *b = rows[r];
        out->d[r] = b->d;
        out->m[r] = b->m;
        put_lanes(out->qs, 4, r, b->qs);
    }
}

static void pack_q4_0_block(const bt_block_q4_0 *const *rows, bt_block_q4_0x16 *out) {
    for (int r = 0; r < BT_PACK_ROWS; r++) {
        out->d[r] = rows[r]->d;
        put_lanes(out->qs, 4, r, rows[r]->qs);
    }
}

static void pack_q5_1_block(const bt_block_q5_1 *const *rows, bt_block_q5_1x16 *out) {
    for (int r = 0; r < BT_PACK_ROWS; r++) {
        const bt_block_q5_1 *b = rows[r];
        out->d[r] = b->d;
        out->m[r] = b->m;
        put_lanes(out->qs, 4, r, b->qs);
        put_plane(out->hi, r, qh_word(b->qh));
    }
}

static void pack_q8_0_block(const bt_block_q8_0 *const *rows, bt_block_q8_0x16 *out) {
    for (int r = 0; r < BT_PACK_ROWS; r++) {
        out->d[r] = rows[r]->d;
        put_lanes(out->qs, 8, r, rows[r]->qs);
    }
}

/* Row r of a packed Q4_K block, or of the Q4_K part of a packed Q5_K one. */
static void pack_k4_row(bt_block_q4_kx16 *out, int r, bt_half d, bt_half dmin,
                        const uint8_t *scales, const uint8_t *qs) {
    out->d[r] = d;
    out->dmin[r] = dmin;
    for (int w = 0; w < 3; w++)
        memcpy(&out->sm[w][r], scales + 4 * w, 4);
    put_lanes(out->qs, 32, r, qs);
}

static void pack_q4_k_block(const bt_block_q4_k *const *rows, bt_block_q4_kx16 *out) {
    for (int r = 0; r < BT_PACK_ROWS; r++)
        pack_k4_row(out, r, rows[r]->d, rows[r]->dmin, rows[r]->scales, rows[r]->qs);
}

static void pack_q5_k_block(const bt_block_q5_k *const *rows, bt_block_q5_kx16 *out) {
    for (int r = 0; r < BT_PACK_ROWS; r++) {
        const bt_block_q5_k *b = rows[r];
        pack_k4_row(&out->lo, r, b->d, b->dmin, b->scales, b->qs);
        put_lanes(out->qh, 8, r, b->qh);
    }
}

static void pack_q6_k_block(const bt_block_q6_k *const *rows, bt_block_q6_kx16 *out) {
    for (int r = 0; r < BT_PACK_ROWS; r++) {
        const bt_block_q6_k *b = rows[r];
        out->d[r] = b->d;
        put_lanes(out->sc, 4, r, b->scales);
        put_lanes(out->ql, 32, r, b->ql);
        put_lanes(out->qh, 16, r, b->qh);
    }
}

_Static_assert(sizeof(bt_block_q4_1x16) == BT_PACK_ROWS * sizeof(bt_block_q4_1), "Q4_1 x16");
_Static_assert(sizeof(bt_block_q5_0x16) == BT_PACK_ROWS * sizeof(bt_block_q5_0), "Q5_0 x16");
_Static_assert(sizeof(bt_block_q4_0x16) == BT_PACK_ROWS * sizeof(bt_block_q4_0), "Q4_0 x16");
_Static_assert(sizeof(bt_block_q5_kx16) == BT_PACK_ROWS * sizeof(bt_block_q5_k), "Q5_K x16");
_Static_assert(sizeof(bt_block_q5_1x16) == BT_PACK_ROWS * sizeof(bt_block_q5_1), "Q5_1 x16");
_Static_assert(sizeof(bt_block_q8_0x16) == BT_PACK_ROWS * sizeof(bt_block_q8_0), "Q8_0 x16");
_Static_assert(sizeof(bt_block_q4_kx16) == BT_PACK_ROWS * sizeof(bt_block_q4_k), "Q4_K x16");
_Static_assert(sizeof(bt_block_q6_kx16) == BT_PACK_ROWS * sizeof(bt_block_q6_k), "Q6_K x16");

bool bt_pack_has_layout(bt_type type) {
    return type == BT_TYPE_Q4_0 || type == BT_TYPE_Q4_1 || type == BT_TYPE_Q5_0 ||
           type == BT_TYPE_Q5_1 || type == BT_TYPE_Q8_0 || type == BT_TYPE_Q4_K ||
           type == BT_TYPE_Q5_K || type == BT_TYPE_Q6_K;
}

void bt_pack_rows(bt_type type, const void *w, size_t row_bytes, int64_t n_rows, int64_t n_cols,
                  void *dst) {
    const bt_type_traits *tr = bt_type_traits_of(type);
    assert(bt_pack_has_layout(type) && n_rows % BT_PACK_ROWS == 0);
    assert(n_cols % tr->block_elems == 0 &&
           row_bytes == (size_t)(n_cols / tr->block_elems) * tr->block_bytes);
    int64_t nb = n_cols / tr->block_elems;
    const char *wb = w;
    char *out = dst;
    for (int64_t g = 0; g < n_rows / BT_PACK_ROWS; g++)
        for (int64_t i = 0; i < nb; i++, out += BT_PACK_ROWS * tr->block_bytes) {
            const void *rows[BT_PACK_ROWS];
            for (int r = 0; r < BT_PACK_ROWS; r++)
                rows[r] =
                    wb + (size_t)(g * BT_PACK_ROWS + r) * row_bytes + (size_t)i * tr->block_bytes;
            if (type == BT_TYPE_Q4_0)
                pack_q4_0_block((const bt_block_q4_0 *const *)rows, (bt_block_q4_0x16 *)out);
            else if (type == BT_TYPE_Q4_1)
                pack_q4_1_block((const bt_block_q4_1 *const *)rows, (bt_block_q4_1x16 *)out);
            else if (type == BT_TYPE_Q5_0)
                pack_q5_0_block((const bt_block_q5_0 *const *)rows, (bt_block_q5_0x16 *)out);
            else if (type == BT_TYPE_Q5_1)
                pack_q5_1_block((const bt_block_q5_1 *const *)rows, (bt_block_q5_1x16 *)out);
            else if (type == BT_TYPE_Q8_0)
                pack_q8_0_block((const bt_block_q8_0 *const *)rows, (bt_block_q8_0x16 *)out);
            else if (type == BT_TYPE_Q4_K)
                pack_q4_k_block((const bt_block_q4_k *const *)rows, (bt_block_q4_kx16 *)out);
            else if (type == BT_TYPE_Q5_K)
                pack_q5_k_block((const bt_block_q5_k *const *)rows, (bt_block_q5_kx16 *)out);
            else
                pack_q6_k_block((const bt_block_q6_k *const *)rows, (bt_block_q6_kx16 *)out);
        }
}

/* The inverse of pack_k4_row. */
static void unpack_k4(const bt_block_q4_kx16 *b, int r, bt_half *d, bt_half *dmin, uint8_t *scales,
                      uint8_t *qs) {
    *d = b->d[r];
    *dmin = b->dmin[r];
    for (int w = 0; w < 3; w++)
        memcpy(scales + 4 * w, &b->sm[w][r], 4);
    get_lanes(qs, b->qs, 32, r);
}

void bt_pack_unpack_row(bt_type type, const void *pb, int r, void *out) {
    if (type == BT_TYPE_Q4_0) {
        const bt_block_q4_0x16 *b = pb;
        bt_block_q4_0 *o = out;
        o->d = b->d[r];
        get_lanes(o->qs, b->qs, 4, r);
    } else if (type == BT_TYPE_Q4_1) {
        const bt_block_q4_1x16 *b = pb;
        bt_block_q4_1 *o = out;
        o->d = b->d[r];
        o->m = b->m[r];
        get_lanes(o->qs, b->qs, 4, r);
    } else if (type == BT_TYPE_Q5_0) {
        const bt_block_q5_0x16 *b = pb;
        bt_block_q5_0 *o = out;
        uint32_t qh = ~get_plane(b->nohi, r);
        o->d = b->d[r];
        get_lanes(o->qs, b->qs, 4, r);
        memcpy(o->qh, &qh, 4);
    } else if (type == BT_TYPE_Q5_1) {
        const bt_block_q5_1x16 *b = pb;
        bt_block_q5_1 *o = out;
        uint32_t qh = get_plane(b->hi, r);
        o->d = b->d[r];
        o->m = b->m[r];
        get_lanes(o->qs, b->qs, 4, r);
        memcpy(o->qh, &qh, 4);
    } else if (type == BT_TYPE_Q8_0) {
        const bt_block_q8_0x16 *b = pb;
        bt_block_q8_0 *o = out;
        o->d = b->d[r];
        get_lanes(o->qs, b->qs, 8, r);
    } else if (type == BT_TYPE_Q4_K) {
        bt_block_q4_k *o = out;
        unpack_k4(pb, r, &o->d, &o->dmin, o->scales, o->qs);
    } else if (type == BT_TYPE_Q5_K) {
        const bt_block_q5_kx16 *b = pb;
        bt_block_q5_k *o = out;
        unpack_k4(&b->lo, r, &o->d, &o->dmin, o->scales, o->qs);
        get_lanes(o->qh, b->qh, 8, r);
    } else {
        const bt_block_q6_kx16 *b = pb;
        bt_block_q6_k *o = out;
        o->d = b->d[r];
        get_lanes(o->scales, b->sc, 4, r);
        get_lanes(o->ql, b->ql, 32, r);
        get_lanes(o->qh, b->qh, 16, r);
    }
}

void bt_dequant_rows_packed(bt_type type, const void *wp, size_t row_bytes, int64_t n_cols,
                            int64_t r0, int64_t r1, float *dst) {
    const bt_type_traits *tr = bt_type_traits_of(type);
    assert(bt_pack_has_layout(type) && n_cols % tr->block_elems == 0);
    int64_t nb = n_cols / tr->block_elems;
    for (int64_t r = r0; r < r1; r++) {
        const char *group =
            (const char *)wp + (size_t)(r / BT_PACK_ROWS * BT_PACK_ROWS) * row_bytes;
        for (int64_t i = 0; i < nb; i++) {
            _Alignas(8) uint8_t block[256]; /* the largest block of a packed type: Q6_K, 210 B */
            bt_pack_unpack_row(type, group + (size_t)i * BT_PACK_ROWS * tr->block_bytes,
                               (int)(r % BT_PACK_ROWS), block);
            bt_dequant_row(type, block, dst + (r - r0) * n_cols + i * tr->block_elems,
                           tr->block_elems);
        }
    }
}
