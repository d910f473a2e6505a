/* quantize_ref.c - float -> ggml block quantizers for test data (see quantize_ref.h). */
#include "quantize_ref.h"

#include <math.h>
#include <stdio.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

/* The value with the largest magnitude, sign kept (ggml's `max` in q4_0/q5_0). */
static float signed_absmax(const float *x, int n) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

static void q4_0_block(const float *x, bt_block_q4_0 *y) {
    const float max = signed_absmax(x, BT_QK);
    const float d = max / -8.0f;
    const float id = d ? 1.0f / d : 0.0f;
    y->d = bt_f32_to_half(d);
    for (int j = 0; j < BT_QK / 2; j++) {
        int xi0 = (int)(int8_t)(x[j] * id + 8.5f);
        int xi1 = (int)(int8_t)(x[j + BT_QK / 2] * id + 8.5f);
        xi0 = xi0 < 15 ? xi0 : 15;
        xi1 = xi1 < 15 ? xi1 : 15;
        y->qs[j] = (uint8_t)(xi0 | (xi1 << 4));
    }
}

static void min_max(const float *x, int n, float *mn, float *mx) {
    *mn = x[0];
    *mx = x[0];
    for (int j = 1; j < n; j++) {
        *mn = fminf(*mn, x[j]);
        *mx = fmaxf(*mx, x[j]);
    }
}

static void q4_1_block(const float *x, bt_block_q4_1 *y) {
    float min, max;
    min_max(x, BT_QK, &min, &max);
    const float d = (max - min) / 15.0f;
    const float id = d ? 1.0f / d : 0.0f;
    y->d = bt_f32_to_half(d);
    y->m = bt_f32_to_half(min);
    for (int j = 0; j < BT_QK / 2; j++) {
        int xi0 = (int)(int8_t)((x[j] - min) * id + 0.5f);
        int xi1 = (int)(int8_t)((x[j + BT_QK / 2] - min) * id + 0.5f);
        xi0 = xi0 < 15 ? xi0 : 15;
        xi1 = xi1 < 15 ? xi1 : 15;
        y->qs[j] = (uint8_t)(xi0 | (xi1 << 4));
    }
}

static void q5_0_block(const float *x, bt_block_q5_0 *y) {
    const float max = signed_absmax(x, BT_QK);
    const float d = max / -16.0f;
    const float id = d ? 1.0f / d : 0.0f;
    y->d = bt_f32_to_half(d);
    uint32_t qh = 0;
    for (int j = 0; j < BT_QK / 2; j++) {
        int xi0 = (int)(int8_t)(x[j] * id + 16.5f);
        int xi1 = (int)(int8_t)(x[j + BT_QK / 2] * id + 16.5f);
        xi0 = xi0 < 31 ? xi0 : 31;
        xi1 = xi1 < 31 ? xi1 : 31;
        y->qs[j] = (uint8_t)((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
        qh |= (uint32_t)((xi0 & 0x10) >> 4) << j;
        qh |= (uint32_t)((xi1 & 0x10) >> 4) << (j + BT_QK / 2);
    }
    for (int k = 0; k < 4; k++)
        y->qh[k] = (uint8_t)(qh >> (8 * k));
}

static void q5_1_block(const float *x, bt_block_q5_1 *y) {
    float min, max;
    min_max(x, BT_QK, &min, &max);
    const float d = (max - min) / 31.0f;
    const float id = d ? 1.0f / d : 0.0f;
    y->d = bt_f32_to_half(d);
    y->m = bt_f32_to_half(min);
    uint32_t qh = 0;
    for (int j = 0; j < BT_QK / 2; j++) {
        int xi0 = (int)(uint8_t)((x[j] - min) * id + 0.5f);
        int xi1 = (int)(uint8_t)((x[j + BT_QK / 2] - min) * id + 0.5f);
        y->qs[j] = (uint8_t)((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
        qh |= (uint32_t)((xi0 & 0x10) >> 4) << j;
        qh |= (uint32_t)((xi1 & 0x10) >> 4) << (j + BT_QK / 2);
    }
    for (int k = 0; k < 4; k++)
        y->qh[k] = (uint8_t)(qh >> (8 * k));
}

/* ---- K-quants, as ggml's quantize_row_q{4,5,6}_K_ref (no importance matrix) ----
 * Bit-exact with ggml only because every float operation below is the same operation, in
 * the same order, on the same types (ggml-base is built without FMA; we build with
 * -ffp-contract=off): keep each expression's shape when editing, e.g. `w * l * x` is
 * (w*l)*x, and a reassociation changes bytes that the known-answer test
 * (tests/unit/test_quantize_ref.c) compares with llama.cpp's. */

#define KQ_GROUP_MAX_EPS 1e-15f /* ggml's GROUP_MAX_EPS: a sub-block below it is all zero */

/* Round to nearest, ties to even, by ggml's trick: adding 1.5*2^23 leaves the rounded
 * integer in the low mantissa bits (valid for |f| <= 4194303). */
static int kq_nearest_int(float f) {
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

static int kq_clamp(int v, int lo, int hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

/* ggml's make_qkx2_quants: x ~ scale*L - the_min with L in 0..nmax, searched over nstep+1
 * trial inverse scales around nmax/(max-min) for the least weighted error. Returns scale;
 * *the_min receives the (non-negative) min; L receives the levels. */
static float kq_make_qkx2(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                          float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep) {
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min)
            min = x[i];
        if (x[i] > max)
            max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0)
        min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = (float)nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; i++) {
        int l = kq_nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)kq_clamp(l, 0, nmax);
        float diff = scale * L[i] + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = kq_clamp(kq_nearest_int(iscale * (x[i] - min)), 0, nmax);
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * (float)l;
            sum_l2 += w * (float)l * (float)l;
            sum_xl += w * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* ggml's make_qx_quants with rmse_type 1 and no weights (what q6_K uses): x ~ scale*(L-nmax),
 * L in 0..2*nmax-1, the scale searched over 19 trial inverse scales, weights x^2. */
static float kq_make_qx(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < KQ_GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = (float)-nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = kq_clamp(kq_nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0)
            continue;
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = kq_clamp(kq_nearest_int(iscale * x[i]), -nmax, nmax - 1);
            float w = x[i] * x[i];
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++)
                L[i] = (int8_t)(nmax + kq_clamp(kq_nearest_int(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

static void kq_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* The part Q4_K and Q5_K share: 8 sub-blocks of 32, each fitted by make_qkx2 with weights
 * rms(x) + |x|, their scales and mins coded in 6 bits against the super-block's d and dmin
 * (packed into scales[12]), then every level recomputed from the coded scale and min.
 * nmax 15 (Q4_K: rmin -1, 20 steps) or 31 (Q5_K: rmin -0.5, 15 steps). */
static void kq_q45_k_levels(const float *x, int nmax, float rmin, int nstep, bt_half *d_out,
                            bt_half *dmin_out, uint8_t scales_out[12], uint8_t L[256]) {
    uint8_t Laux[32];
    float weights[32], mins[8], scales[8];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++)
            sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++)
            weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = kq_make_qkx2(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin,
                                 0.1f, nstep);
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    memset(scales_out, 0, 12);
    for (int j = 0; j < 8; j++) {
        /* ggml stores nearest_int into a uint8_t before MIN(63, .): a negative wraps to
         * >= 193 and becomes 63. Kept, since the bytes must match. */
        uint8_t ls = (uint8_t)kq_nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)kq_nearest_int(inv_min * mins[j]);
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        if (j < 4) {
            scales_out[j] = ls;
            scales_out[j + 4] = lm;
        } else {
            scales_out[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            scales_out[j - 4] |= (uint8_t)((ls >> 4) << 6);
            scales_out[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    *d_out = bt_f32_to_half(max_scale / 63.f);
    *dmin_out = bt_f32_to_half(max_min / 63.f);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        kq_scale_min(j, scales_out, &sc, &m);
        const float d = bt_half_to_f32(*d_out) * sc;
        if (!d)
            continue; /* the levels make_qkx2 chose stay (ggml does the same) */
        const float dm = bt_half_to_f32(*dmin_out) * m;
        for (int ii = 0; ii < 32; ii++)
            L[32 * j + ii] = (uint8_t)kq_clamp(kq_nearest_int((x[32 * j + ii] + dm) / d), 0, nmax);
    }
}

static void q4_k_block(const float *x, bt_block_q4_k *y) {
    uint8_t L[256];
    kq_q45_k_levels(x, 15, -1.f, 20, &y->d, &y->dmin, y->scales, L);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            y->qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
}

static void q5_k_block(const float *x, bt_block_q5_k_ref *y) {
    uint8_t L[256];
    kq_q45_k_levels(x, 31, -0.5f, 15, &y->d, &y->dmin, y->scales, L);
    memset(y->qh, 0, sizeof y->qh);
    uint8_t m1 = 1, m2 = 2;
    uint8_t *ql = y->qs;
    for (int n = 0; n < 256; n += 64) {
        for (int j = 0; j < 32; j++) {
            int l1 = L[n + j], l2 = L[n + j + 32];
            if (l1 > 15) {
                l1 -= 16;
                y->qh[j] |= m1;
            }
            if (l2 > 15) {
                l2 -= 16;
                y->qh[j] |= m2;
            }
            ql[j] = (uint8_t)(l1 | (l2 << 4));
        }
        m1 = (uint8_t)(m1 << 2);
        m2 = (uint8_t)(m2 << 2);
        ql += 32;
    }
}

/* Q6_K: 16 sub-blocks of 16, each fitted by make_qx (levels -32..31), their scales coded as
 * int8 against the super-block's d = max_scale / -128. */
static void q6_k_block(const float *x, bt_block_q6_k *y) {
    int8_t L[256];
    float scales[16];
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < 16; ib++) {
        const float scale = kq_make_qx(16, 32, x + 16 * ib, L + 16 * ib);
        scales[ib] = scale;
        if (fabsf(scale) > max_abs_scale) {
            max_abs_scale = fabsf(scale);
            max_scale = scale;
        }
    }
    if (max_abs_scale < KQ_GROUP_MAX_EPS) {
        memset(y, 0, sizeof *y);
        return;
    }
    float iscale = -128.f / max_scale;
    y->d = bt_f32_to_half(1 / iscale);
    for (int ib = 0; ib < 16; ib++) {
        int sc = kq_nearest_int(iscale * scales[ib]);
        y->scales[ib] = (int8_t)(sc < 127 ? sc : 127);
    }
    for (int j = 0; j < 16; j++) {
        float d = bt_half_to_f32(y->d) * y->scales[j];
        if (!d)
            continue;
        for (int ii = 0; ii < 16; ii++)
            L[16 * j + ii] = (int8_t)(kq_clamp(kq_nearest_int(x[16 * j + ii] / d), -32, 31) + 32);
    }
    uint8_t *ql = y->ql, *qh = y->qh;
    for (int j = 0; j < 256; j += 128) {
        for (int l = 0; l < 32; l++) {
            const uint8_t q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF;
            const uint8_t q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
            ql[l] = (uint8_t)(q1 | (q3 << 4));
            ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
            qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                              ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
        }
        ql += 64;
        qh += 32;
    }
}

bt_status bt_quantize_row_ref(bt_type type, const float *src, void *dst, int64_t n) {
    const bt_type_traits *tr = bt_type_traits_of((uint32_t)type);
    if (!tr)
        return BT_ERR_UNSUPPORTED;
    if (n < 0 || n % tr->block_elems != 0)
        return BT_ERR_FORMAT;
    const int64_t nb = n / tr->block_elems;
    switch (type) {
    case BT_TYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        return BT_OK;
    case BT_TYPE_F16:
        for (int64_t i = 0; i < n; i++)
            ((bt_half *)dst)[i] = bt_f32_to_half(src[i]);
        return BT_OK;
    case BT_TYPE_BF16:
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)dst)[i] = bt_f32_to_bf16(src[i]);
        return BT_OK;
    case BT_TYPE_Q8_0:
        bt_quantize_row_q8_0(src, dst, n);
        return BT_OK;
    case BT_TYPE_Q4_0:
        for (int64_t b = 0; b < nb; b++)
            q4_0_block(src + b * BT_QK, (bt_block_q4_0 *)dst + b);
        return BT_OK;
    case BT_TYPE_Q4_1:
        for (int64_t b = 0; b < nb; b++)
            q4_1_block(src + b * BT_QK, (bt_block_q4_1 *)dst + b);
        return BT_OK;
    case BT_TYPE_Q5_0:
        for (int64_t b = 0; b < nb; b++)
            q5_0_block(src + b * BT_QK, (bt_block_q5_0 *)dst + b);
        return BT_OK;
    case BT_TYPE_Q5_1:
        for (int64_t b = 0; b < nb; b++)
            q5_1_block(src + b * BT_QK, (bt_block_q5_1 *)dst + b);
        return BT_OK;
    case BT_TYPE_Q4_K:
        for (int64_t b = 0; b < nb; b++)
            q4_k_block(src + b * BT_QK_K, (bt_block_q4_k *)dst + b);
        return BT_OK;
    case BT_TYPE_Q5_K:
        for (int64_t b = 0; b < nb; b++)
            q5_k_block(src + b * BT_QK_K, (bt_block_q5_k_ref *)dst + b);
        return BT_OK;
    case BT_TYPE_Q6_K:
        for (int64_t b = 0; b < nb; b++)
            q6_k_block(src + b * BT_QK_K, (bt_block_q6_k *)dst + b);
        return BT_OK;
    default:
        return BT_ERR_UNSUPPORTED;
    }
}

bt_status bt_quantize_ref(bt_type type, const float *src, void *dst, int64_t n_cols, int64_t n_rows,
                          size_t *n_bytes) {
    size_t row_bytes;
    bt_status st = bt_type_row_bytes((uint32_t)type, n_cols, &row_bytes);
    if (st != BT_OK)
        return st;
    for (int64_t r = 0; r < n_rows; r++) {
        st = bt_quantize_row_ref(type, src + r * n_cols, (uint8_t *)dst + (size_t)r * row_bytes,
                                 n_cols);
        if (st != BT_OK)
            return st;
    }
    *n_bytes = row_bytes * (size_t)n_rows;
    return BT_OK;
}

/* The types this file writes, by the names the parsers take (one list for both uses). */
static const struct {
    const char *name;
    bt_type type;
} names[] = {{"f32", BT_TYPE_F32},   {"f16", BT_TYPE_F16},   {"bf16", BT_TYPE_BF16},
             {"q4_0", BT_TYPE_Q4_0}, {"q4_1", BT_TYPE_Q4_1}, {"q5_0", BT_TYPE_Q5_0},
             {"q5_1", BT_TYPE_Q5_1}, {"q8_0", BT_TYPE_Q8_0}, {"q4_k", BT_TYPE_Q4_K},
             {"q5_k", BT_TYPE_Q5_K}, {"q6_k", BT_TYPE_Q6_K}};

bt_status bt_quantize_type_from_name(const char *name, bt_type *out) {
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcasecmp(name, names[i].name) == 0) {
            *out = names[i].type;
            return BT_OK;
        }
    }
    return BT_ERR_NOT_FOUND;
}

void bt_quantize_type_list(char *buf, size_t size) {
    size_t used = 0;
    if (size == 0)
        return;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof names / sizeof names[0] && used < size; i++) {
        int n = snprintf(buf + used, size - used, "%s%s", i ? " " : "",
                         bt_type_name((uint32_t)names[i].type));
        if (n < 0)
            break;
        used += (size_t)n;
    }
}
