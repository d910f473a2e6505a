/*
 * tensor_type.c - ggml type table, IEEE half/bfloat16 conversion and the scalar reference
 * dequantizers (shared/reference/model-format.md 3.8 and 3.9). The dequantizers here are the
 * definition of each format; worker/kernels has the fast versions and tests them against these.
 *
 * Pure functions, no state: thread-safe.
 */
#include "tensor_type.h"

#include <assert.h>
#include <math.h>
#include <string.h>

static_assert(sizeof(bt_half) == 2, "bt_half is 2 bytes");
static_assert(sizeof(bt_block_q8_0) == 34, "q8_0 block is 34 bytes");
static_assert(sizeof(bt_block_q4_0) == 18, "q4_0 block is 18 bytes");
static_assert(sizeof(bt_block_q4_1) == 20, "q4_1 block is 20 bytes");
static_assert(sizeof(bt_block_q5_0) == 22, "q5_0 block is 22 bytes");
static_assert(sizeof(bt_block_q5_1) == 24, "q5_1 block is 24 bytes");
static_assert(sizeof(bt_block_q4_k) == 144, "q4_k block is 144 bytes");
static_assert(sizeof(bt_block_q6_k) == 210, "q6_k block is 210 bytes");
static_assert(offsetof(bt_block_q5_1, qs) == 8, "q5_1 qs at offset 8");
static_assert(offsetof(bt_block_q4_k, qs) == 16, "q4_k qs at offset 16");
static_assert(offsetof(bt_block_q6_k, d) == 208, "q6_k d at offset 208");

static_assert(sizeof(bt_block_q5_k) == 176, "q5_k block is 176 bytes");

static const bt_type_traits traits_table[BT_TYPE_MAX_ID] = {
    [BT_TYPE_F32] = {"f32", 1, 4, true},           [BT_TYPE_F16] = {"f16", 1, 2, true},
    [BT_TYPE_Q4_0] = {"q4_0", BT_QK, 18, true},    [BT_TYPE_Q4_1] = {"q4_1", BT_QK, 20, true},
    [BT_TYPE_Q5_0] = {"q5_0", BT_QK, 22, true},    [BT_TYPE_Q5_1] = {"q5_1", BT_QK, 24, true},
    [BT_TYPE_Q8_0] = {"q8_0", BT_QK, 34, true},    [BT_TYPE_Q8_1] = {"q8_1", BT_QK, 36, false},
    [BT_TYPE_Q2_K] = {"q2_K", BT_QK_K, 84, false}, [BT_TYPE_Q3_K] = {"q3_K", BT_QK_K, 110, false},
    [BT_TYPE_Q4_K] = {"q4_K", BT_QK_K, 144, true}, [BT_TYPE_Q5_K] = {"q5_K", BT_QK_K, 176, true},
    [BT_TYPE_Q6_K] = {"q6_K", BT_QK_K, 210, true}, [BT_TYPE_Q8_K] = {"q8_K", BT_QK_K, 292, false},
    [BT_TYPE_BF16] = {"bf16", 1, 2, true},
};

const bt_type_traits *bt_type_traits_of(uint32_t type) {
    if (type >= BT_TYPE_MAX_ID || traits_table[type].name == NULL)
        return NULL;
    return &traits_table[type];
}

const char *bt_type_name(uint32_t type) {
    const bt_type_traits *t = bt_type_traits_of(type);
    return t ? t->name : "unknown";
}

bt_status bt_type_row_bytes(uint32_t type, int64_t n, size_t *out) {
    const bt_type_traits *t = bt_type_traits_of(type);
    if (t == NULL)
        return BT_ERR_UNSUPPORTED;
    if (n < 0 || n % t->block_elems != 0)
        return BT_ERR_FORMAT;
    *out = (size_t)(n / t->block_elems) * t->block_bytes;
    return BT_OK;
}

static float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

float bt_half_to_f32(bt_half h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t man = h & 0x3FFu;
    if (exp == 0x1F) /* inf / nan: keep the payload */
        return f32_from_bits(sign | 0x7F800000u | (man << 13));
    if (exp == 0) {
        if (man == 0)
            return f32_from_bits(sign);
        /* subnormal: man * 2^-24, exact in f32 */
        float v = (float)man * 5.9604644775390625e-8f;
        return f32_from_bits(sign | f32_bits(v));
    }
    return f32_from_bits(sign | ((exp + 112u) << 23) | (man << 13));
}

bt_half bt_f32_to_half(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) /* nan: quiet, keep the top payload bits */
        return (bt_half)(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
    if (a >= 0x477FF000u) /* >= 65520 rounds to inf */
        return (bt_half)(sign | 0x7C00u);
    if (a < 0x38800000u) {   /* below the smallest normal half (2^-14): subnormal or zero */
        if (a < 0x33000000u) /* < 2^-25: rounds to zero (2^-25 itself is a tie to even 0) */
            return sign;
        uint32_t e = a >> 23;
        uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
        uint32_t shift = 126u - e; /* value = m * 2^(e-150); half unit 2^-24 */
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t halfway = 1u << (shift - 1u);
        if (rem > halfway || (rem == halfway && (q & 1u)))
            q++;
        return (bt_half)(sign | q);
    }
    /* normal: rebias exponent and round the 13 dropped mantissa bits to nearest even; a carry
     * into the exponent is the correct result (including overflow to inf, excluded above) */
    uint32_t r = a - 0x38000000u; /* exponent 127 -> 15 */
    uint32_t q = r >> 13;
    uint32_t rem = r & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1u)))
        q++;
    return (bt_half)(sign | q);
}

float bt_bf16_to_f32(uint16_t h) {
    return f32_from_bits((uint32_t)h << 16);
}

uint16_t bt_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) /* nan: quiet it so truncation keeps it a nan */
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* 6-bit scale and min of sub-block j of a Q4_K/Q5_K super-block. */
static void scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

static void dequant_q8_0(const bt_block_q8_0 *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        float d = bt_half_to_f32(x[i].d);
        for (int j = 0; j < 32; j++)
            y[i * 32 + j] = x[i].qs[j] * d;
    }
}

static void dequant_q4_0(const bt_block_q4_0 *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        float d = bt_half_to_f32(x[i].d);
        for (int j = 0; j < 16; j++) {
            y[i * 32 + j] = ((x[i].qs[j] & 0x0F) - 8) * d;
            y[i * 32 + j + 16] = ((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}

static void dequant_q4_1(const bt_block_q4_1 *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        float d = bt_half_to_f32(x[i].d);
        float m = bt_half_to_f32(x[i].m);
        for (int j = 0; j < 16; j++) {
            y[i * 32 + j] = (x[i].qs[j] & 0x0F) * d + m;
            y[i * 32 + j + 16] = (x[i].qs[j] >> 4) * d + m;
        }
    }
}

static uint32_t load_qh(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

static void dequant_q5_0(const bt_block_q5_0 *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        float d = bt_half_to_f32(x[i].d);
        uint32_t qh = load_qh(x[i].qh);
        for (int j = 0; j < 16; j++) {
            int xh0 = (int)(((qh >> j) << 4) & 0x10);
            int xh1 = (int)((qh >> (j + 12)) & 0x10);
            y[i * 32 + j] = (((x[i].qs[j] & 0x0F) | xh0) - 16) * d;
            y[i * 32 + j + 16] = (((x[i].qs[j] >> 4) | xh1) - 16) * d;
        }
    }
}

static void dequant_q5_1(const bt_block_q5_1 *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        float d = bt_half_to_f32(x[i].d);
        float m = bt_half_to_f32(x[i].m);
        uint32_t qh = load_qh(x[i].qh);
        for (int j = 0; j < 16; j++) {
            int xh0 = (int)(((qh >> j) << 4) & 0x10);
            int xh1 = (int)((qh >> (j + 12)) & 0x10);
            y[i * 32 + j] = ((x[i].qs[j] & 0x0F) | xh0) * d + m;
            y[i * 32 + j + 16] = ((x[i].qs[j] >> 4) | xh1) * d + m;
        }
    }
}

static void dequant_q4_k(const bt_block_q4_k *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        float d = bt_half_to_f32(x[i].d);
        float dmin = bt_half_to_f32(x[i].dmin);
        const uint8_t *q = x[i].qs;
        float *out = y + i * BT_QK_K;
        for (int c = 0; c < 4; c++) {
            uint8_t sc0, m0, sc1, m1;
            scale_min_k4(2 * c, x[i].scales, &sc0, &m0);
            scale_min_k4(2 * c + 1, x[i].scales, &sc1, &m1);
            float d1 = d * sc0, mm1 = dmin * m0, d2 = d * sc1, mm2 = dmin * m1;
            for (int l = 0; l < 32; l++) {
                out[64 * c + l] = d1 * (q[32 * c + l] & 0x0F) - mm1;
                out[64 * c + 32 + l] = d2 * (q[32 * c + l] >> 4) - mm2;
            }
        }
    }
}

static void dequant_q5_k(const bt_block_q5_k *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        float d = bt_half_to_f32(x[i].d);
        float dmin = bt_half_to_f32(x[i].dmin);
        const uint8_t *q = x[i].qs;
        float *out = y + i * BT_QK_K;
        for (int c = 0; c < 4; c++) {
            uint8_t sc0, m0, sc1, m1;
            scale_min_k4(2 * c, x[i].scales, &sc0, &m0);
            scale_min_k4(2 * c + 1, x[i].scales, &sc1, &m1);
            float d1 = d * sc0, mm1 = dmin * m0, d2 = d * sc1, mm2 = dmin * m1;
            unsigned u1 = 1u << (2 * c), u2 = 2u << (2 * c);
            for (int l = 0; l < 32; l++) {
                int h1 = (x[i].qh[l] & u1) ? 16 : 0;
                int h2 = (x[i].qh[l] & u2) ? 16 : 0;
                out[64 * c + l] = d1 * ((q[32 * c + l] & 0x0F) + h1) - mm1;
                out[64 * c + 32 + l] = d2 * ((q[32 * c + l] >> 4) + h2) - mm2;
            }
        }
    }
}

static void dequant_q6_k(const bt_block_q6_k *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        float d = bt_half_to_f32(x[i].d);
        for (int n = 0; n < 2; n++) {
            const uint8_t *ql = x[i].ql + 64 * n;
            const uint8_t *qh = x[i].qh + 32 * n;
            const int8_t *sc = x[i].scales + 8 * n;
            float *out = y + i * BT_QK_K + 128 * n;
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                out[l] = d * sc[is + 0] * q1;
                out[l + 32] = d * sc[is + 2] * q2;
                out[l + 64] = d * sc[is + 4] * q3;
                out[l + 96] = d * sc[is + 6] * q4;
            }
        }
    }
}

void bt_dequant_row(bt_type type, const void *src, float *dst, int64_t n) {
    const bt_type_traits *t = bt_type_traits_of((uint32_t)type);
    assert(t != NULL && t->supported && n % t->block_elems == 0);
    int64_t nb = n / t->block_elems;
    switch (type) {
    case BT_TYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        break;
    case BT_TYPE_F16: {
        const bt_half *h = src;
        for (int64_t i = 0; i < n; i++)
            dst[i] = bt_half_to_f32(h[i]);
        break;
    }
    case BT_TYPE_BF16: {
        const uint16_t *h = src;
        for (int64_t i = 0; i < n; i++)
            dst[i] = bt_bf16_to_f32(h[i]);
        break;
    }
    case BT_TYPE_Q8_0:
        dequant_q8_0(src, dst, nb);
        break;
    case BT_TYPE_Q4_0:
        dequant_q4_0(src, dst, nb);
        break;
    case BT_TYPE_Q4_1:
        dequant_q4_1(src, dst, nb);
        break;
    case BT_TYPE_Q5_0:
        dequant_q5_0(src, dst, nb);
        break;
    case BT_TYPE_Q5_1:
        dequant_q5_1(src, dst, nb);
        break;
    case BT_TYPE_Q4_K:
        dequant_q4_k(src, dst, nb);
        break;
    case BT_TYPE_Q5_K:
        dequant_q5_k(src, dst, nb);
        break;
    case BT_TYPE_Q6_K:
        dequant_q6_k(src, dst, nb);
        break;
    default:
        assert(!"bt_dequant_row: unsupported type");
        break;
    }
}

void bt_quantize_row_q8_0(const float *x, bt_block_q8_0 *y, int64_t n) {
    assert(n % BT_QK == 0);
    for (int64_t b = 0; b < n / BT_QK; b++, x += BT_QK) {
        float amax = 0.0f;
        for (int j = 0; j < BT_QK; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = bt_f32_to_half(d);
        for (int j = 0; j < BT_QK; j++)
            y[b].qs[j] = (int8_t)roundf(x[j] * id);
    }
}
