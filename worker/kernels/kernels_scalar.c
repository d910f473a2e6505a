/*
 * kernels_scalar.c - the scalar reference kernels: activation quantization, integer dot products
 * of every supported weight type with bt_q8 activations, float dots. Always compiled; the SIMD
 * levels are tested against these. Pure functions: thread-safe.
 *
 * Every quant dot works per 32-element block: an integer sum of products, then one float
 * multiply-add with the block scales (K-quants: one bt_q8 block per 32-element sub-block).
 */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "ggml_expf.h"
#include "kernels_internal.h"

void bt_quantize_q8_ref(const float *x, bt_q8 *y, int64_t n) {
    assert(n % BT_QK == 0);
    for (int64_t i = 0; i < n / BT_QK; i++) {
        const float *xb = x + i * BT_QK;
        float amax = 0.0f;
        for (int j = 0; j < BT_QK; j++) {
            float a = fabsf(xb[j]);
            amax = a > amax ? a : amax;
        }
        float d;
        float id = bt_q8_scale_inv(amax, &d);
        int half[2] = {0, 0};
        for (int j = 0; j < BT_QK; j++) {
            /* nearest, ties to even: ggml's _mm256_round_ps(_MM_ROUND_NEAREST), and what
             * cvtps2dq does, so the SIMD levels match bit for bit */
            int q = (int)nearbyintf(xb[j] * id);
            y[i].qs[j] = (int8_t)q;
            half[j / 16] += q;
        }
        int sum = half[0] + half[1];
        y[i].sum[0] = (int16_t)half[0];
        y[i].sum[1] = (int16_t)half[1];
        /* stored as fp16 by ggml (block_q8_0.d, block_q8_1.d/.s); s from the unrounded d */
        y[i].d = bt_half_to_f32(bt_f32_to_half(d));
        y[i].s = bt_half_to_f32(bt_f32_to_half(d * (float)sum));
    }
}

static int dot_i8(const int8_t *a, const int8_t *b, int n) {
    int s = 0;
    for (int j = 0; j < n; j++)
        s += a[j] * b[j];
    return s;
}

static float dot1_q8_0(const void *w, const bt_q8 *x, int64_t nb) {
    const bt_block_q8_0 *b = w;
    float acc = 0.0f;
    for (int64_t i = 0; i < nb; i++)
        acc += bt_half_to_f32(b[i].d) * x[i].d * (float)dot_i8(b[i].qs, x[i].qs, 32);
    return acc;
}

static float dot1_q4_0(const void *w, const bt_q8 *x, int64_t nb) {
    const bt_block_q4_0 *b = w;
    float acc = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int s = 0;
        for (int j = 0; j < 16; j++) {
            s += ((b[i].qs[j] & 0x0F) - 8) * x[i].qs[j];
            s += ((b[i].qs[j] >> 4) - 8) * x[i].qs[j + 16];
        }
        acc += bt_half_to_f32(b[i].d) * x[i].d * (float)s;
    }
    return acc;
}

static float dot1_q4_1(const void *w, const bt_q8 *x, int64_t nb) {
    const bt_block_q4_1 *b = w;
    float acc = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int s = 0;
        for (int j = 0; j < 16; j++) {
            s += (b[i].qs[j] & 0x0F) * x[i].qs[j];
            s += (b[i].qs[j] >> 4) * x[i].qs[j + 16];
        }
        acc += bt_half_to_f32(b[i].d) * x[i].d * (float)s + bt_half_to_f32(b[i].m) * x[i].s;
    }
    return acc;
}

static uint32_t qh_u32(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

/* The 32 5-bit quants (0..31) of a Q5_0/Q5_1 block. */
static void unpack_q5(const uint8_t qs[16], const uint8_t qh4[4], int q[32]) {
    uint32_t qh = qh_u32(qh4);
    for (int j = 0; j < 16; j++) {
        q[j] = (qs[j] & 0x0F) | (int)(((qh >> j) << 4) & 0x10);
        q[j + 16] = (qs[j] >> 4) | (int)((qh >> (j + 12)) & 0x10);
    }
}

static float dot1_q5_0(const void *w, const bt_q8 *x, int64_t nb) {
    const bt_block_q5_0 *b = w;
    float acc = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int q[32], s = 0;
        unpack_q5(b[i].qs, b[i].qh, q);
        for (int j = 0; j < 32; j++)
            s += (q[j] - 16) * x[i].qs[j];
        acc += bt_half_to_f32(b[i].d) * x[i].d * (float)s;
    }
    return acc;
}

static float dot1_q5_1(const void *w, const bt_q8 *x, int64_t nb) {
    const bt_block_q5_1 *b = w;
    float acc = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int q[32], s = 0;
        unpack_q5(b[i].qs, b[i].qh, q);
        for (int j = 0; j < 32; j++)
            s += q[j] * x[i].qs[j];
        acc += bt_half_to_f32(b[i].d) * x[i].d * (float)s + bt_half_to_f32(b[i].m) * x[i].s;
    }
    return acc;
}

static void scale_min_k4(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

static float dot1_q4_k(const void *w, const bt_q8 *x, int64_t nb) {
    const bt_block_q4_k *b = w;
    float acc = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        float d = bt_half_to_f32(b[i].d), dmin = bt_half_to_f32(b[i].dmin);
        const bt_q8 *xs = x + 8 * i;
        for (int j = 0; j < 8; j++) {
            int sc, m, s = 0;
            scale_min_k4(j, b[i].scales, &sc, &m);
            const uint8_t *q = b[i].qs + 32 * (j / 2);
            int shift = (j & 1) ? 4 : 0;
            for (int l = 0; l < 32; l++)
                s += ((q[l] >> shift) & 0x0F) * xs[j].qs[l];
            acc += d * (float)sc * xs[j].d * (float)s - dmin * (float)m * xs[j].s;
        }
    }
    return acc;
}

/* Q5_K: same layout as Q4_K plus qh[32] before qs (see tensor_type.c). */
static float dot1_q5_k(const void *w, const bt_q8 *x, int64_t nb) {
    const uint8_t *p = w;
    float acc = 0.0f;
    for (int64_t i = 0; i < nb; i++, p += 176) {
        bt_half hd, hm;
        memcpy(&hd, p, 2);
        memcpy(&hm, p + 2, 2);
        float d = bt_half_to_f32(hd), dmin = bt_half_to_f32(hm);
        const uint8_t *scales = p + 4, *qh = p + 16, *qs = p + 48;
        const bt_q8 *xs = x + 8 * i;
        for (int j = 0; j < 8; j++) {
            int sc, m, s = 0;
            scale_min_k4(j, scales, &sc, &m);
            const uint8_t *q = qs + 32 * (j / 2);
            int shift = (j & 1) ? 4 : 0;
            for (int l = 0; l < 32; l++) {
                int v = ((q[l] >> shift) & 0x0F) + ((qh[l] >> j) & 1) * 16;
                s += v * xs[j].qs[l];
            }
            acc += d * (float)sc * xs[j].d * (float)s - dmin * (float)m * xs[j].s;
        }
    }
    return acc;
}

/* The 256 quants of a Q6_K super-block, q - 32. */
static void unpack_q6_k(const bt_block_q6_k *b, int8_t q[256]) {
    for (int n = 0; n < 2; n++) {
        const uint8_t *ql = b->ql + 64 * n, *qh = b->qh + 32 * n;
        int8_t *o = q + 128 * n;
        for (int l = 0; l < 32; l++) {
            o[l] = (int8_t)(((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
            o[l + 32] = (int8_t)(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
            o[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            o[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
    }
}

/* Q6_K element e of a super-block has scale scales[e / 16]; bt_q8 block j covers 2j, 2j+1. */
static float dot1_q6_k(const void *w, const bt_q8 *x, int64_t nb) {
    const bt_block_q6_k *b = w;
    float acc = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int8_t q[256];
        unpack_q6_k(&b[i], q);
        float d = bt_half_to_f32(b[i].d);
        const bt_q8 *xs = x + 8 * i;
        for (int j = 0; j < 8; j++) {
            int s = b[i].scales[2 * j] * dot_i8(q + 32 * j, xs[j].qs, 16) +
                    b[i].scales[2 * j + 1] * dot_i8(q + 32 * j + 16, xs[j].qs + 16, 16);
            acc += d * xs[j].d * (float)s;
        }
    }
    return acc;
}

/* The packed numerics of the 8 sub-blocks of a Q4_K super-block (qh NULL) or a Q5_K one. */
static float packed_k45_steps(bt_half hd, bt_half hdmin, const uint8_t *scales, const uint8_t *qs,
                              const uint8_t *qh, const bt_q8 *x, float acc) {
    float d = bt_half_to_f32(hd), dmin = bt_half_to_f32(hdmin);
    for (int j = 0; j < 8; j++) {
        int sc, m, s = 0;
        scale_min_k4(j, scales, &sc, &m);
        for (int l = 0; l < 32; l++) {
            int v = (qs[32 * (j / 2) + l] >> (j & 1 ? 4 : 0)) & 0x0F;
            s += (v + (qh ? (qh[l] >> j & 1) * 16 : 0)) * x[j].qs[l];
        }
        acc = fmaf(d * (float)sc * x[j].d, (float)s, acc);
        acc = fmaf(-(dmin * (float)m), x[j].s, acc);
    }
    return acc;
}

/*
 * The packed numerics (kernels.h, "Packed weights"), the reference of the SIMD packed tiles'
 * bits: one block of the file's layout (a packed block's row, unpacked by pack.c) against its
 * activation blocks, the same integer sums as the dots above and fma per 32-element block.
 */
static float packed_block_step(bt_type type, const void *blk, const bt_q8 *x, float acc) {
    int q[32];
    switch (type) {
    case BT_TYPE_Q4_0: {
        const bt_block_q4_0 *b = blk;
        int s = 0;
        for (int j = 0; j < 16; j++)
            s += ((b->qs[j] & 0x0F) - 8) * x->qs[j] + ((b->qs[j] >> 4) - 8) * x->qs[j + 16];
        return fmaf(bt_half_to_f32(b->d) * x->d, (float)s, acc);
    }
    case BT_TYPE_Q4_1: {
        const bt_block_q4_1 *b = blk;
        int s = 0;
        for (int j = 0; j < 16; j++)
            s += (b->qs[j] & 0x0F) * x->qs[j] + (b->qs[j] >> 4) * x->qs[j + 16];
        acc = fmaf(bt_half_to_f32(b->d) * x->d, (float)s, acc);
        return fmaf(bt_half_to_f32(b->m), x->s, acc);
    }
    case BT_TYPE_Q5_0: {
        const bt_block_q5_0 *b = blk;
        int s = 0;
        unpack_q5(b->qs, b->qh, q);
        for (int j = 0; j < 32; j++)
            s += (q[j] - 16) * x->qs[j];
        return fmaf(bt_half_to_f32(b->d) * x->d, (float)s, acc);
    }
    case BT_TYPE_Q5_1: {
        const bt_block_q5_1 *b = blk;
        int s = 0;
        unpack_q5(b->qs, b->qh, q);
        for (int j = 0; j < 32; j++)
            s += q[j] * x->qs[j];
        acc = fmaf(bt_half_to_f32(b->d) * x->d, (float)s, acc);
        return fmaf(bt_half_to_f32(b->m), x->s, acc);
    }
    case BT_TYPE_Q8_0: {
        const bt_block_q8_0 *b = blk;
        return fmaf(bt_half_to_f32(b->d) * x->d, (float)dot_i8(b->qs, x->qs, 32), acc);
    }
    case BT_TYPE_Q4_K: {
        const bt_block_q4_k *b = blk;
        return packed_k45_steps(b->d, b->dmin, b->scales, b->qs, NULL, x, acc);
    }
    case BT_TYPE_Q5_K: {
        const bt_block_q5_k *b = blk;
        return packed_k45_steps(b->d, b->dmin, b->scales, b->qs, b->qh, x, acc);
    }
    default: { /* Q6_K */
        const bt_block_q6_k *b = blk;
        int8_t q6[256];
        unpack_q6_k(b, q6);
        for (int j = 0; j < 8; j++) {
            int s = b->scales[2 * j] * dot_i8(q6 + 32 * j, x[j].qs, 16) +
                    b->scales[2 * j + 1] * dot_i8(q6 + 32 * j + 16, x[j].qs + 16, 16);
            acc = fmaf(bt_half_to_f32(b->d) * x[j].d, (float)s, acc);
        }
        return acc;
    }
    }
}

static void packed_tile_ref(bt_type type, const void *wg, int64_t nb, const bt_q8 *x, int64_t xs,
                            int n_tok, float *out, int64_t ldo, uint32_t rows) {
    const bt_type_traits *tr = bt_type_traits_of(type);
    int64_t per = tr->block_elems / BT_QK; /* bt_q8 blocks per weight block */
    for (int r = 0; r < BT_PACK_ROWS; r++) {
        if (!(rows >> r & 1))
            continue;
        for (int t = 0; t < n_tok; t++) {
            float acc = 0.0f;
            for (int64_t i = 0; i < nb; i++) {
                _Alignas(8) uint8_t blk[256]; /* the largest block of a packed type: Q6_K, 210 B */
                bt_pack_unpack_row(type, (const char *)wg + i * BT_PACK_ROWS * tr->block_bytes, r,
                                   blk);
                acc = packed_block_step(type, blk, x + t * xs + i * per, acc);
            }
            out[t * ldo + r] = acc;
        }
    }
}

#define PACKED_REF(name, type_id)                                                                  \
    static void packed_tile_##name(const void *wg, int64_t nb, const bt_q8 *x, const uint8_t *xu,  \
                                   int64_t xs, int n_tok, float *out, int64_t ldo,                 \
                                   uint32_t rows) {                                                \
        (void)xu;                                                                                  \
        packed_tile_ref(type_id, wg, nb, x, xs, n_tok, out, ldo, rows);                            \
    }

PACKED_REF(q4_0, BT_TYPE_Q4_0)
PACKED_REF(q4_1, BT_TYPE_Q4_1)
PACKED_REF(q5_0, BT_TYPE_Q5_0)
PACKED_REF(q5_1, BT_TYPE_Q5_1)
PACKED_REF(q8_0, BT_TYPE_Q8_0)
PACKED_REF(q4_k, BT_TYPE_Q4_K)
PACKED_REF(q5_k, BT_TYPE_Q5_K)
PACKED_REF(q6_k, BT_TYPE_Q6_K)

/* Float weights against quantized activations (for completeness of bt_vec_dot_q8). */
static float dot1_float_q8(bt_type type, const void *w, const bt_q8 *x, int64_t nb) {
    float acc = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        float wf[32];
        const char *wb = (const char *)w + i * 32 * (type == BT_TYPE_F32 ? 4 : 2);
        bt_dequant_row(type, wb, wf, 32);
        float s = 0.0f;
        for (int j = 0; j < 32; j++)
            s += wf[j] * (float)x[i].qs[j];
        acc += s * x[i].d;
    }
    return acc;
}

typedef float (*dot1_fn)(const void *w, const bt_q8 *x, int64_t nb);

static dot1_fn dot1_of(bt_type type) {
    switch (type) {
    case BT_TYPE_Q8_0:
        return dot1_q8_0;
    case BT_TYPE_Q4_0:
        return dot1_q4_0;
    case BT_TYPE_Q4_1:
        return dot1_q4_1;
    case BT_TYPE_Q5_0:
        return dot1_q5_0;
    case BT_TYPE_Q5_1:
        return dot1_q5_1;
    case BT_TYPE_Q4_K:
        return dot1_q4_k;
    case BT_TYPE_Q5_K:
        return dot1_q5_k;
    case BT_TYPE_Q6_K:
        return dot1_q6_k;
    default:
        return NULL;
    }
}

float bt_vec_dot_q8_ref(bt_type type, const void *w_row, const bt_q8 *x, int64_t n) {
    assert(n % BT_QK == 0);
    dot1_fn f = dot1_of(type);
    if (f == NULL) {
        assert(type == BT_TYPE_F32 || type == BT_TYPE_F16 || type == BT_TYPE_BF16);
        return dot1_float_q8(type, w_row, x, n / BT_QK);
    }
    if (type == BT_TYPE_Q4_K || type == BT_TYPE_Q5_K || type == BT_TYPE_Q6_K) {
        assert(n % BT_QK_K == 0);
        return f(w_row, x, n / BT_QK_K);
    }
    return f(w_row, x, n / BT_QK);
}

#define ROWDOT_Q8(name, type_id)                                                                   \
    static void rowdot_##name(const void *w, const bt_q8 *x, int64_t x_stride, int n_tok,          \
                              int64_t n, float *out, int64_t ldo) {                                \
        for (int t = 0; t < n_tok; t++)                                                            \
            out[t * ldo] = bt_vec_dot_q8_ref(type_id, w, x + t * x_stride, n);                     \
    }

ROWDOT_Q8(q8_0, BT_TYPE_Q8_0)
ROWDOT_Q8(q4_0, BT_TYPE_Q4_0)
ROWDOT_Q8(q4_1, BT_TYPE_Q4_1)
ROWDOT_Q8(q5_0, BT_TYPE_Q5_0)
ROWDOT_Q8(q5_1, BT_TYPE_Q5_1)
ROWDOT_Q8(q4_k, BT_TYPE_Q4_K)
ROWDOT_Q8(q5_k, BT_TYPE_Q5_K)
ROWDOT_Q8(q6_k, BT_TYPE_Q6_K)

static void rowdot_f32(const void *w, const float *x, int64_t x_stride, int n_tok, int64_t n,
                       float *out, int64_t ldo) {
    const float *wf = w;
    for (int t = 0; t < n_tok; t++) {
        const float *xt = x + t * x_stride;
        float acc = 0.0f;
        for (int64_t c = 0; c < n; c++)
            acc += wf[c] * xt[c];
        out[t * ldo] = acc;
    }
}

static void rowdot_f16(const void *w, const float *x, int64_t x_stride, int n_tok, int64_t n,
                       float *out, int64_t ldo) {
    const bt_half *wh = w;
    for (int t = 0; t < n_tok; t++) {
        const float *xt = x + t * x_stride;
        float acc = 0.0f;
        for (int64_t c = 0; c < n; c++)
            acc += bt_half_to_f32(wh[c]) * xt[c];
        out[t * ldo] = acc;
    }
}

static void rowdot_bf16(const void *w, const float *x, int64_t x_stride, int n_tok, int64_t n,
                        float *out, int64_t ldo) {
    const uint16_t *wh = w;
    for (int t = 0; t < n_tok; t++) {
        const float *xt = x + t * x_stride;
        float acc = 0.0f;
        for (int64_t c = 0; c < n; c++)
            acc += bt_bf16_to_f32(wh[c]) * xt[c];
        out[t * ldo] = acc;
    }
}

#define DEQUANT(name, type_id)                                                                     \
    static void dequant_##name(const void *w, float *dst, int64_t n) {                             \
        bt_dequant_row(type_id, w, dst, n);                                                        \
    }

DEQUANT(f32, BT_TYPE_F32)
DEQUANT(f16, BT_TYPE_F16)
DEQUANT(bf16, BT_TYPE_BF16)
DEQUANT(q8_0, BT_TYPE_Q8_0)
DEQUANT(q4_0, BT_TYPE_Q4_0)
DEQUANT(q4_1, BT_TYPE_Q4_1)
DEQUANT(q5_0, BT_TYPE_Q5_0)
DEQUANT(q5_1, BT_TYPE_Q5_1)
DEQUANT(q4_k, BT_TYPE_Q4_K)
DEQUANT(q5_k, BT_TYPE_Q5_K)
DEQUANT(q6_k, BT_TYPE_Q6_K)

void bt_kernels_fill_scalar(bt_kernel_table *t) {
    memset(t, 0, sizeof *t);
    t->tile_rows = 1; /* levels with tiles set their own; never 0, bt_matmul's row step */
    t->quantize_q8 = bt_quantize_q8_ref;
    t->log_sum_exp = bt_log_sum_exp_ref;
    t->swiglu = bt_swiglu_ref;
    t->rowdot_q8[BT_TYPE_Q8_0] = rowdot_q8_0;
    t->rowdot_q8[BT_TYPE_Q4_0] = rowdot_q4_0;
    t->rowdot_q8[BT_TYPE_Q4_1] = rowdot_q4_1;
    t->rowdot_q8[BT_TYPE_Q5_0] = rowdot_q5_0;
    t->rowdot_q8[BT_TYPE_Q5_1] = rowdot_q5_1;
    t->rowdot_q8[BT_TYPE_Q4_K] = rowdot_q4_k;
    t->rowdot_q8[BT_TYPE_Q5_K] = rowdot_q5_k;
    t->rowdot_q8[BT_TYPE_Q6_K] = rowdot_q6_k;
    t->rowdot_f32[BT_TYPE_F32] = rowdot_f32;
    t->rowdot_f32[BT_TYPE_F16] = rowdot_f16;
    t->rowdot_f32[BT_TYPE_BF16] = rowdot_bf16;
    t->packed_tile[BT_TYPE_Q4_0] = packed_tile_q4_0;
    t->packed_tile[BT_TYPE_Q4_1] = packed_tile_q4_1;
    t->packed_tile[BT_TYPE_Q5_0] = packed_tile_q5_0;
    t->packed_tile[BT_TYPE_Q5_1] = packed_tile_q5_1;
    t->packed_tile[BT_TYPE_Q8_0] = packed_tile_q8_0;
    t->packed_tile[BT_TYPE_Q4_K] = packed_tile_q4_k;
    t->packed_tile[BT_TYPE_Q5_K] = packed_tile_q5_k;
    t->packed_tile[BT_TYPE_Q6_K] = packed_tile_q6_k;
    t->dequant[BT_TYPE_F32] = dequant_f32;
    t->dequant[BT_TYPE_F16] = dequant_f16;
    t->dequant[BT_TYPE_BF16] = dequant_bf16;
    t->dequant[BT_TYPE_Q8_0] = dequant_q8_0;
    t->dequant[BT_TYPE_Q4_0] = dequant_q4_0;
    t->dequant[BT_TYPE_Q4_1] = dequant_q4_1;
    t->dequant[BT_TYPE_Q5_0] = dequant_q5_0;
    t->dequant[BT_TYPE_Q5_1] = dequant_q5_1;
    t->dequant[BT_TYPE_Q4_K] = dequant_q4_k;
    t->dequant[BT_TYPE_Q5_K] = dequant_q5_k;
    t->dequant[BT_TYPE_Q6_K] = dequant_q6_k;
}

float bt_log_sum_exp_ref(const float *x, int64_t n, float *max_out) {
    float mx = x[0];
    for (int64_t i = 1; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++)
        sum += exp((double)(x[i] - mx));
    *max_out = mx;
    return (float)log(sum);
}

void bt_swiglu_ref(float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + bt_ggml_expf(0.0f - g[i])) * u[i];
}
