/* quantize_ref.c - float -> ggml block quantizers for test data (see quantize_ref.h). */
#include "quantize_ref.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

static int nearest_int(float f) {
    return (int)lrintf(f);
}

static void q8_0_block(const float *x, bt_block_q8_0 *y) {
    float amax = 0.0f;
    for (int j = 0; j < BT_QK; j++)
        amax = fmaxf(amax, fabsf(x[j]));
    const float d = amax / 127.0f;
    const float id = d ? 1.0f / d : 0.0f;
    y->d = bt_f32_to_half(d);
    for (int j = 0; j < BT_QK; j++)
        y->qs[j] = (int8_t)roundf(x[j] * id);
}

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

/* Q4_K: 8 sub-blocks of 32, x ~ d*sc*q - dmin*m, with q in 0..15, sc and m 6-bit. */
static void q4_k_block(const float *x, bt_block_q4_k *y) {
    float scale[8], mins[8];
    float max_scale = 0.0f, max_min = 0.0f;
    for (int s = 0; s < 8; s++) {
        float mn, mx;
        min_max(x + 32 * s, 32, &mn, &mx);
        if (mn > 0.0f)
            mn = 0.0f; /* as ggml: the min term only ever subtracts */
        scale[s] = (mx - mn) / 15.0f;
        mins[s] = -mn;
        max_scale = fmaxf(max_scale, scale[s]);
        max_min = fmaxf(max_min, mins[s]);
    }
    const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    uint8_t ls[8], lm[8];
    for (int s = 0; s < 8; s++) {
        int a = nearest_int(inv_scale * scale[s]), b = nearest_int(inv_min * mins[s]);
        ls[s] = (uint8_t)(a < 0 ? 0 : a > 63 ? 63 : a);
        lm[s] = (uint8_t)(b < 0 ? 0 : b > 63 ? 63 : b);
    }
    memset(y->scales, 0, sizeof y->scales);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            y->scales[j] = ls[j];
            y->scales[j + 4] = lm[j];
        } else {
            y->scales[j + 4] = (uint8_t)((ls[j] & 0x0F) | ((lm[j] & 0x0F) << 4));
            y->scales[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            y->scales[j] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
    y->d = bt_f32_to_half(max_scale / 63.0f);
    y->dmin = bt_f32_to_half(max_min / 63.0f);
    const float d = bt_half_to_f32(y->d), dmin = bt_half_to_f32(y->dmin);
    uint8_t L[256];
    for (int s = 0; s < 8; s++) {
        const float dl = d * ls[s], dm = dmin * lm[s];
        for (int i = 0; i < 32; i++) {
            int q = dl ? nearest_int((x[32 * s + i] + dm) / dl) : 0;
            L[32 * s + i] = (uint8_t)(q < 0 ? 0 : q > 15 ? 15 : q);
        }
    }
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            y->qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
}

/* Q6_K: 16 sub-blocks of 16, x ~ d*sc*q with q in -32..31 and sc int8. */
static void q6_k_block(const float *x, bt_block_q6_k *y) {
    float scale[16];
    float max_scale = 0.0f, amax_scale = 0.0f;
    for (int s = 0; s < 16; s++) {
        scale[s] = signed_absmax(x + 16 * s, 16) / -32.0f;
        if (fabsf(scale[s]) > amax_scale) {
            amax_scale = fabsf(scale[s]);
            max_scale = scale[s];
        }
    }
    const float iscale = max_scale ? -128.0f / max_scale : 0.0f;
    const float d = max_scale ? 1.0f / iscale : 0.0f;
    y->d = bt_f32_to_half(d);
    const float dh = bt_half_to_f32(y->d);
    uint8_t L[256];
    for (int s = 0; s < 16; s++) {
        int sc = nearest_int(iscale * scale[s]);
        sc = sc < -128 ? -128 : sc > 127 ? 127 : sc;
        y->scales[s] = (int8_t)sc;
        const float ds = dh * (float)sc;
        for (int i = 0; i < 16; i++) {
            int q = ds ? nearest_int(x[16 * s + i] / ds) : 0;
            q = q < -32 ? -32 : q > 31 ? 31 : q;
            L[16 * s + i] = (uint8_t)(q + 32);
        }
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
        for (int64_t b = 0; b < nb; b++)
            q8_0_block(src + b * BT_QK, (bt_block_q8_0 *)dst + b);
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

bt_status bt_quantize_type_from_name(const char *name, bt_type *out) {
    static const struct {
        const char *name;
        bt_type type;
    } names[] = {{"f32", BT_TYPE_F32},   {"f16", BT_TYPE_F16},   {"bf16", BT_TYPE_BF16},
                 {"q4_0", BT_TYPE_Q4_0}, {"q4_1", BT_TYPE_Q4_1}, {"q5_0", BT_TYPE_Q5_0},
                 {"q5_1", BT_TYPE_Q5_1}, {"q8_0", BT_TYPE_Q8_0}, {"q4_k", BT_TYPE_Q4_K},
                 {"q6_k", BT_TYPE_Q6_K}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcasecmp(name, names[i].name) == 0) {
            *out = names[i].type;
            return BT_OK;
        }
    }
    return BT_ERR_NOT_FOUND;
}
