/*
 * test_kernels.c - every kernel level this CPU supports against the scalar reference and
 * against plain float arithmetic on dequantized values: bt_quantize_q8, bt_vec_dot_q8,
 * bt_matmul (n_tok 1..9), bt_dequant_rows; the llama.cpp rounding of bt_quantize_q8 on
 * crafted blocks; batch invariance of bt_matmul (n_tok up to 33, bit for bit) and over tile
 * shapes (n_tok 1..70, odd token offsets and row ranges; bit for bit and against the scalar
 * reference); extreme quants and activations through every tile (no int16 overflow);
 * bt_swiglu against its reference, bit for bit; packed weights at every level against
 * their numerics computed from the file's bytes, bit for bit.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kernels/kernels.h"
#include "tensor_type.h"

/* bt_matmul's xu of n_blocks blocks at xq, as a matrix section's caller makes it once. */
static const uint8_t *xu_of(const bt_q8 *xq, int64_t n_blocks) {
    static uint8_t xu[64 * 4096];
    if (n_blocks * 32 > (int64_t)sizeof xu) {
        fprintf(stderr, "xu_of: %lld blocks do not fit\n", (long long)n_blocks);
        abort();
    }
    bt_q8_plus_128(xq, xu, n_blocks);
    return xu;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static float rndf(float lo, float hi) {
    return lo + (hi - lo) * (float)(rnd() & 0xFFFFFF) / (float)0x1000000;
}

/* Random bytes, then sane scale fields (a random half in the scale slots would often be inf
 * or nan, which tests nothing useful). */
static void fill_scales(bt_type type, uint8_t *w, int64_t n) {
    const bt_type_traits *tr = bt_type_traits_of(type);
    int64_t nb = n / tr->block_elems;
    for (int64_t i = 0; i < nb; i++) {
        uint8_t *b = w + i * tr->block_bytes;
        bt_half h0 = bt_f32_to_half(rndf(-0.05f, 0.05f)), h1 = bt_f32_to_half(rndf(-0.5f, 0.5f));
        switch (type) {
        case BT_TYPE_F32: {
            float f = rndf(-1.0f, 1.0f);
            memcpy(b, &f, 4);
            break;
        }
        case BT_TYPE_F16:
            memcpy(b, &h1, 2);
            break;
        case BT_TYPE_BF16: {
            uint16_t v = bt_f32_to_bf16(rndf(-1.0f, 1.0f));
            memcpy(b, &v, 2);
            break;
        }
        case BT_TYPE_Q6_K:
            memcpy(b + 208, &h0, 2);
            break;
        case BT_TYPE_Q4_1:
        case BT_TYPE_Q5_1:
        case BT_TYPE_Q4_K:
        case BT_TYPE_Q5_K:
            memcpy(b, &h0, 2);
            h1 = bt_f32_to_half(rndf(-0.05f, 0.05f));
            memcpy(b + 2, &h1, 2);
            break;
        default:
            memcpy(b, &h0, 2);
            break;
        }
    }
}

static void fill_weights(bt_type type, uint8_t *w, int64_t n) {
    size_t bytes;
    bt_type_row_bytes(type, n, &bytes);
    for (size_t i = 0; i < bytes; i++)
        w[i] = (uint8_t)rnd();
    fill_scales(type, w, n);
}

static void fill_x(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        x[i] = rndf(-2.0f, 2.0f);
    if (n >= 64) /* one all-zero block (d = 0) and one block with a single spike */
        for (int j = 0; j < 32; j++)
            x[32 + j] = 0.0f;
    x[0] = 37.0f;
}

static void dequant_q8(const bt_q8 *q, float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        x[i] = q[i / 32].d * (float)q[i / 32].qs[i % 32];
}

/* The same blocks with s = d * sum(qs) in float arithmetic, not rounded to fp16. */
static void exact_s(const bt_q8 *q, bt_q8 *out, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        int sum = 0;
        for (int j = 0; j < 32; j++)
            sum += q[i].qs[j];
        out[i] = q[i];
        out[i].s = q[i].d * (float)sum;
    }
}

/* |a - b| small relative to the sum of absolute products. */
static int close_rel(double a, double b, double mag) {
    return fabs(a - b) <= 2e-5 * mag + 1e-6;
}

static const bt_type all_types[] = {BT_TYPE_F32,  BT_TYPE_F16,  BT_TYPE_BF16, BT_TYPE_Q8_0,
                                    BT_TYPE_Q4_0, BT_TYPE_Q4_1, BT_TYPE_Q5_0, BT_TYPE_Q5_1,
                                    BT_TYPE_Q4_K, BT_TYPE_Q5_K, BT_TYPE_Q6_K};
static const int64_t lengths[] = {32, 256, 576, 1536, 2816};

#define MAXN 2816
#define NROW 5
#define MAXTOK 9

static int is_float(bt_type t) {
    return t == BT_TYPE_F32 || t == BT_TYPE_F16 || t == BT_TYPE_BF16;
}

static void test_level(bt_kernel_level level) {
    static uint8_t w[NROW * MAXN * 4];
    static float x[MAXTOK * MAXN], xd[MAXN], wd[NROW * MAXN], wd2[NROW * MAXN];
    static float y[MAXTOK * (NROW + 3)];
    static bt_q8 xq[MAXTOK * MAXN / 32], xq_ref[MAXTOK * MAXN / 32];
    const char *name = bt_kernels_level_name(level);

    for (size_t li = 0; li < sizeof lengths / sizeof lengths[0]; li++) {
        int64_t n = lengths[li];
        for (int t = 0; t < MAXTOK; t++)
            fill_x(x + t * n, n);
        bt_quantize_q8(x, xq, MAXTOK * n);
        bt_quantize_q8_ref(x, xq_ref, MAXTOK * n);
        if (memcmp(xq, xq_ref, sizeof(bt_q8) * (size_t)(MAXTOK * n / 32)) != 0)
            check_fail(__FILE__, __LINE__, "%s: quantize_q8 n=%lld differs from ref", name,
                       (long long)n);
        else
            bt_check_passed++;
        /* d is fp16-rounded: |d*q - x| <= 127 * d * 2^-11 for the block maximum */
        CHECK(fabsf(xq[0].d * xq[0].qs[0] - 37.0f) < 37.0f / 2048.0f);
        if (n >= 64)
            CHECK(xq[1].d == 0.0f && xq[1].s == 0.0f && xq[1].qs[5] == 0);

        for (size_t ti = 0; ti < sizeof all_types / sizeof all_types[0]; ti++) {
            bt_type type = all_types[ti];
            const bt_type_traits *tr = bt_type_traits_of(type);
            if (n % tr->block_elems != 0)
                continue;
            size_t row_bytes;
            CHECK_OK(bt_type_row_bytes(type, n, &row_bytes));
            for (int r = 0; r < NROW; r++)
                fill_weights(type, w + r * row_bytes, n);

            /* dequant_rows == dequant_row, bit for bit */
            bt_dequant_rows(type, w, row_bytes, n, 1, NROW, wd2);
            for (int r = 0; r < NROW; r++)
                bt_dequant_row(type, w + r * row_bytes, wd + r * n, n);
            if (memcmp(wd + n, wd2, sizeof(float) * (size_t)((NROW - 1) * n)) != 0)
                check_fail(__FILE__, __LINE__, "%s %s n=%lld: dequant_rows != dequant_row", name,
                           tr->name, (long long)n);
            else
                bt_check_passed++;

            /* vec_dot: fast vs ref, and ref vs float arithmetic. The float sum uses x = d*q,
             * whose block sum is d*sum(q), so it is compared with the ref on a copy of the
             * activations whose s is that exact value instead of its fp16 rounding. */
            dequant_q8(xq, xd, n);
            static bt_q8 xq_exact[MAXN / 32];
            exact_s(xq, xq_exact, n / 32);
            for (int r = 0; r < NROW; r++) {
                double fd = 0.0, mag = 0.0;
                for (int64_t c = 0; c < n; c++) {
                    fd += (double)wd[r * n + c] * xd[c];
                    mag += fabs((double)wd[r * n + c] * xd[c]);
                }
                float fast = bt_vec_dot_q8(type, w + r * row_bytes, xq, n);
                float ref = bt_vec_dot_q8_ref(type, w + r * row_bytes, xq, n);
                float ref_exact = bt_vec_dot_q8_ref(type, w + r * row_bytes, xq_exact, n);
                if (!close_rel(fast, ref, mag) || !close_rel(ref_exact, fd, mag))
                    check_fail(__FILE__, __LINE__,
                               "%s %s n=%lld row %d: fast %.9g ref %.9g ref(exact s) %.9g "
                               "float %.9g (mag %g)",
                               name, tr->name, (long long)n, r, fast, ref, ref_exact, fd, mag);
                else
                    bt_check_passed++;
            }

            /* matmul over rows [1, NROW) for 1..9 tokens; y has ldy = NROW + 3 */
            int64_t ldy = NROW + 3;
            for (int nt = 1; nt <= MAXTOK; nt++) {
                for (size_t k = 0; k < sizeof y / sizeof y[0]; k++)
                    y[k] = -12345.0f;
                bt_matmul(type, w, row_bytes, n, x, xq, xu_of(xq, nt * n / 32), nt, y, ldy, 1,
                          NROW);
                int bad = 0;
                for (int t = 0; t < MAXTOK; t++) {
                    for (int r = 0; r < ldy; r++) {
                        float got = y[t * ldy + r];
                        if (t >= nt || r < 1 || r >= NROW) {
                            bad += got != -12345.0f; /* untouched */
                            continue;
                        }
                        double want, mag = 0.0;
                        if (is_float(type)) {
                            double s = 0.0;
                            for (int64_t c = 0; c < n; c++) {
                                s += (double)wd[r * n + c] * x[t * n + c];
                                mag += fabs((double)wd[r * n + c] * x[t * n + c]);
                            }
                            want = s;
                        } else {
                            want = bt_vec_dot_q8(type, w + r * row_bytes, xq + t * n / 32, n);
                            float xt[MAXN];
                            dequant_q8(xq + t * n / 32, xt, n);
                            for (int64_t c = 0; c < n; c++)
                                mag += fabs((double)wd[r * n + c] * xt[c]);
                        }
                        if (!close_rel(got, want, mag)) {
                            if (bad++ < 3)
                                fprintf(stderr, "  %s %s n=%lld nt=%d y[%d][%d] = %.9g want %.9g\n",
                                        name, tr->name, (long long)n, nt, t, r, got, want);
                        }
                    }
                }
                if (bad)
                    check_fail(__FILE__, __LINE__, "%s %s n=%lld nt=%d: %d bad outputs", name,
                               tr->name, (long long)n, nt, bad);
                else
                    bt_check_passed++;
            }
        }
    }
}

/* The log-softmax normaliser of logits-like rows (lengths with and without a tail, a row
 * with -inf entries) against the double-precision reference, at the current level. */
static void test_log_sum_exp(void) {
    static float x[49157];
    const int64_t lens[] = {1, 7, 8, 1000, 49152, 49157};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        int64_t n = lens[k];
        for (int64_t i = 0; i < n; i++)
            x[i] = rndf(-30.0f, 25.0f);
        if (n > 10)
            x[3] = x[9] = -INFINITY;
        float m_ref, m;
        float ref = bt_log_sum_exp_ref(x, n, &m_ref);
        float got = bt_log_sum_exp(x, n, &m);
        CHECK_EQ_INT(m == m_ref, 1);
        CHECK_NEAR(got, ref, 1e-5 * (fabs(ref) + 1.0));
    }
}

/* SwiGLU at the current level: the reference's bits for every input (gates in the normal
 * range, near and past exp's range, +-0, +-inf, NaN; lengths with a tail), and the reference
 * within 2 ulp-ish of silu by libm's expf where the result is not tiny. */
static void test_swiglu(void) {
    enum { N = 1037 };
    static float g[N], u[N], ref[N], got[N];
    const float special[] = {0.0f,  -0.0f,  87.0f,    -87.0f,    87.4f,  -87.4f,
                             88.8f, -88.8f, 103.0f,   -103.0f,   130.0f, -130.0f,
                             1e30f, -1e30f, INFINITY, -INFINITY, NAN,    1e-40f};
    const size_t n_special = sizeof special / sizeof special[0];
    for (int rep = 0; rep < 4; rep++) {
        int64_t n = rep == 0 ? 8 : rep == 1 ? 13 : N;
        for (int64_t i = 0; i < n; i++) {
            g[i] = rep == 3 ? rndf(-120.0f, 120.0f) : rndf(-12.0f, 12.0f);
            u[i] = rndf(-4.0f, 4.0f);
        }
        if (rep >= 2)
            for (size_t k = 0; k < n_special; k++)
                g[5 + 9 * k] = special[k];
        memcpy(ref, g, sizeof(float) * (size_t)n);
        memcpy(got, g, sizeof(float) * (size_t)n);
        bt_swiglu_ref(ref, u, n);
        bt_swiglu(got, u, n);
        int same = 1;
        for (int64_t i = 0; i < n; i++)
            if (memcmp(&ref[i], &got[i], sizeof(float)) != 0 && !(isnan(ref[i]) && isnan(got[i])))
                same = 0;
        CHECK_EQ_INT(same, 1);
        for (int64_t i = 0; i < n; i++) {
            float want = g[i] / (1.0f + expf(-g[i])) * u[i];
            if (isfinite(g[i]) && fabsf(want) > 1e-30f)
                CHECK_NEAR(ref[i], want, 4e-7 * fabs(want));
        }
    }
}

static void test_levels_and_force(void) {
    bt_kernels_init();
    bt_kernel_level best = bt_kernels_level();
    CHECK(best >= BT_KERNELS_SCALAR && best <= BT_KERNELS_AVX512);
    CHECK(strcmp(bt_kernels_level_name(BT_KERNELS_AVX2), "avx2") == 0);
    /* forcing an out-of-range level is refused and changes nothing */
    CHECK_EQ_INT(bt_kernels_force((bt_kernel_level)7), best);
    CHECK_EQ_INT(bt_kernels_level(), best);
    for (int l = BT_KERNELS_SCALAR; l <= BT_KERNELS_AVX512; l++) {
        bt_kernel_level prev = bt_kernels_force((bt_kernel_level)l);
        (void)prev;
        if (bt_kernels_level() != (bt_kernel_level)l) {
            printf("level %s not supported by this CPU: skipped\n",
                   bt_kernels_level_name((bt_kernel_level)l));
            continue;
        }
        printf("testing level %s\n", bt_kernels_level_name((bt_kernel_level)l));
        test_level((bt_kernel_level)l);
        test_log_sum_exp();
        test_swiglu();
    }
    bt_kernels_force(best);
}

/* A hand-computed Q4_1 dot: catches a nibble-order mistake made identically in ref and fast. */
static void test_q4_1_by_hand(void) {
    bt_block_q4_1 b;
    memset(&b, 0, sizeof b);
    b.d = bt_f32_to_half(0.5f);
    b.m = bt_f32_to_half(-1.0f);
    b.qs[0] = 0x3A; /* element 0 = 10 -> 4.0, element 16 = 3 -> 0.5; the rest 0 -> -1 */
    float x[32];
    for (int j = 0; j < 32; j++)
        x[j] = 0.0f;
    x[0] = 127.0f; /* d = 1, q = 127 */
    x[16] = 2.0f;  /* q = 2 */
    bt_q8 q;
    bt_quantize_q8_ref(x, &q, 32);
    CHECK_NEAR(q.d, 1.0f, 0);
    CHECK_NEAR(q.s, 129.0f, 0);
    /* 127*4 + 2*0.5 = 509 */
    for (int l = BT_KERNELS_SCALAR; l <= BT_KERNELS_AVX512; l++) {
        bt_kernel_level prev = bt_kernels_force((bt_kernel_level)l);
        CHECK_NEAR(bt_vec_dot_q8(BT_TYPE_Q4_1, &b, &q, 32), 509.0f, 1e-4);
        bt_kernels_force(prev);
    }
    CHECK_NEAR(bt_vec_dot_q8_ref(BT_TYPE_Q4_1, &b, &q, 32), 509.0f, 1e-4);
}

/*
 * bt_quantize_q8 on crafted blocks, every level: llama.cpp's x86 quantize_row_q8_1 gives
 * d = fp16(amax/127), q = nearest-even(x * 127/amax), s = fp16(amax/127 * sum(q)). The expected
 * values are worked out by hand (fp16 of v: round v / 2^(e-10) to an integer, ties even).
 */
static void test_quantize_rounding(void) {
    float x[5 * 32];
    memset(x, 0, sizeof x);
    /* A: amax 127 -> d = 1, id = 1: x*id lands exactly on .5 -> ties to even */
    const float ta[10] = {127.0f, 2.5f, 3.5f, -2.5f, 0.5f, 1.5f, -0.5f, -1.5f, 126.5f, -126.5f};
    const int qa[10] = {127, 2, 4, -2, 0, 2, 0, -2, 126, -126};
    memcpy(x, ta, sizeof ta);
    /* B: amax 1: d = 1/127 = 0.0078740157 -> fp16 1032 * 2^-17; q = {127, 8}; s from the
     * unrounded d: fp16(135/127 = 1.0629921) = 1089/1024 (from the rounded d it would be
     * fp16(1.0629196) = 1.0625, unrounded 1.0629921) */
    x[32] = 1.0f;
    x[33] = 0.0625f;
    /* C: all zero -> d = s = 0, q = 0 (block 2 stays zero) */
    /* D: negative maximum: amax 3: d = fp16(0.023622047) = 1548 * 2^-16; q = {42, -127};
     * s = fp16(-85 * 0.023622047 = -2.0078740) = -1028 * 2^-9 */
    x[96] = 1.0f;
    x[101] = -3.0f;
    /* E: amax 0.34375, x = 0.171875: x * (127/amax) = 63.5000038 -> 64, while x * (1/d) =
     * 63.4999962 would give 63; llama.cpp's AVX2 quantizer computes 127/amax */
    x[128] = 0.34375f;
    x[129] = 0.171875f;

    bt_kernel_level best = bt_kernels_level();
    for (int l = BT_KERNELS_SCALAR; l <= BT_KERNELS_AVX512 + 1; l++) {
        bt_q8 q[5];
        if (l <= BT_KERNELS_AVX512) {
            bt_kernels_force((bt_kernel_level)l);
            if (bt_kernels_level() != (bt_kernel_level)l)
                continue;
            bt_quantize_q8(x, q, 5 * 32);
        } else {
            bt_quantize_q8_ref(x, q, 5 * 32);
        }
        int ok = 1;
        ok &= q[0].d == 1.0f && q[0].s == 131.0f;
        for (int j = 0; j < 32; j++)
            ok &= q[0].qs[j] == (j < 10 ? qa[j] : 0);
        ok &= q[1].d == 1032.0f / 131072.0f && q[1].s == 1089.0f / 1024.0f;
        ok &= q[1].qs[0] == 127 && q[1].qs[1] == 8 && q[1].qs[2] == 0;
        ok &= q[2].d == 0.0f && q[2].s == 0.0f && q[2].qs[0] == 0 && q[2].qs[31] == 0;
        ok &= q[3].d == 1548.0f / 65536.0f && q[3].s == -1028.0f / 512.0f;
        ok &= q[3].qs[0] == 42 && q[3].qs[5] == -127 && q[3].qs[1] == 0;
        ok &= q[4].qs[0] == 127 && q[4].qs[1] == 64;
        if (!ok)
            check_fail(__FILE__, __LINE__,
                       "quantize_q8 level %d: crafted blocks: A d %.9g s %.9g q %d %d %d %d %d %d; "
                       "B d %.9g s %.9g q %d; D d %.9g s %.9g q %d %d; E q %d",
                       l, q[0].d, q[0].s, q[0].qs[1], q[0].qs[2], q[0].qs[3], q[0].qs[4],
                       q[0].qs[8], q[0].qs[9], q[1].d, q[1].s, q[1].qs[1], q[3].d, q[3].s,
                       q[3].qs[0], q[3].qs[5], q[4].qs[1]);
        else
            bt_check_passed++;
    }
    bt_kernels_force(best);
}

/*
 * Batch invariance, every level and type: bt_matmul over rows [0, NROW) with n_tok tokens gives
 * for each token exactly (bit for bit) what bt_matmul gives for that token alone on one row,
 * and for quant types exactly bt_vec_dot_q8. Lengths cover an odd block count (the tail step)
 * and several super-blocks.
 */
#define INV_MAXTOK 33
#define INV_MAXN 768

static void test_batch_invariance(void) {
    static const int ntoks[] = {1, 2, 3, 4, 5, 7, 8, 9, 16, 33};
    static const int64_t inv_lengths[] = {96, 576, 768};
    static uint8_t w[NROW * INV_MAXN * 4];
    static float x[INV_MAXTOK * INV_MAXN], y[INV_MAXTOK * NROW];
    static bt_q8 xq[INV_MAXTOK * INV_MAXN / 32];
    bt_kernel_level best = bt_kernels_level();
    for (int l = BT_KERNELS_SCALAR; l <= BT_KERNELS_AVX512; l++) {
        bt_kernels_force((bt_kernel_level)l);
        if (bt_kernels_level() != (bt_kernel_level)l)
            continue;
        const char *name = bt_kernels_level_name((bt_kernel_level)l);
        for (size_t li = 0; li < sizeof inv_lengths / sizeof inv_lengths[0]; li++) {
            int64_t n = inv_lengths[li];
            for (int t = 0; t < INV_MAXTOK; t++)
                fill_x(x + t * n, n);
            bt_quantize_q8(x, xq, INV_MAXTOK * n);
            for (size_t ti = 0; ti < sizeof all_types / sizeof all_types[0]; ti++) {
                bt_type type = all_types[ti];
                const bt_type_traits *tr = bt_type_traits_of(type);
                if (n % tr->block_elems != 0)
                    continue;
                size_t row_bytes;
                CHECK_OK(bt_type_row_bytes(type, n, &row_bytes));
                for (int r = 0; r < NROW; r++)
                    fill_weights(type, w + r * row_bytes, n);
                for (size_t ni = 0; ni < sizeof ntoks / sizeof ntoks[0]; ni++) {
                    int nt = ntoks[ni];
                    bt_matmul(type, w, row_bytes, n, x, xq, xu_of(xq, nt * n / 32), nt, y, NROW, 0,
                              NROW);
                    /* without xu: the decode tiles take every token, the same bits */
                    static float y_no_xu[INV_MAXTOK * NROW];
                    bt_matmul(type, w, row_bytes, n, x, xq, NULL, nt, y_no_xu, NROW, 0, NROW);
                    int bad = memcmp(y, y_no_xu, sizeof(float) * (size_t)(nt * NROW)) != 0;
                    if (bad)
                        fprintf(stderr, "  %s %s n=%lld nt=%d: outputs differ without xu\n", name,
                                tr->name, (long long)n, nt);
                    for (int t = 0; t < nt; t++) {
                        for (int r = 0; r < NROW; r++) {
                            /* the token alone, on row r alone (it writes alone[r]) */
                            float alone[NROW], got = y[t * NROW + r];
                            bt_matmul(type, w, row_bytes, n, x + t * n, xq + t * n / 32, NULL, 1,
                                      alone, NROW, r, r + 1);
                            float one = alone[r];
                            int same = memcmp(&got, &one, sizeof got) == 0;
                            if (!is_float(type)) {
                                float vd =
                                    bt_vec_dot_q8(type, w + r * row_bytes, xq + t * n / 32, n);
                                same &= memcmp(&got, &vd, sizeof got) == 0;
                            }
                            if (!same && bad++ < 3)
                                fprintf(stderr,
                                        "  %s %s n=%lld nt=%d y[%d][%d] = %.9g alone %.9g\n", name,
                                        tr->name, (long long)n, nt, t, r, got, one);
                        }
                    }
                    if (bad)
                        check_fail(__FILE__, __LINE__,
                                   "%s %s n=%lld nt=%d: %d outputs differ from "
                                   "the token alone",
                                   name, tr->name, (long long)n, nt, bad);
                    else
                        bt_check_passed++;
                }
            }
        }
    }
    bt_kernels_force(best);
}

/*
 * Invariance over tile shapes, every level and type: bt_matmul groups rows into tiles
 * (kernels_internal.h, tile_rows: 4 or 16) and tokens into groups of BT_KERNEL_MAX_TOK, and splits
 * long batches into token tiles. For n_tok 1..70, tokens starting at an odd offset (so a token
 * sits at every position of a group), row ranges starting at odd rows and ending anywhere
 * (lone last rows, partial tiles), every output must equal bit for bit the token alone on
 * its row alone, and the scalar reference within the usual tolerance. Lengths: 3 blocks (96)
 * for every n_tok, 1536 columns (token tiles of 32: a batch crosses them) for a subset.
 */
#define TS_ROWS 37 /* more than two 16-row tiles */
#define TS_TOK 73
#define TS_MAXN 1536

static void test_tile_shapes(void) {
    static const int64_t ts_lengths[] = {96, 1536};
    static const int some_ntok[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 31, 32, 33, 36, 63, 65, 70};
    static const int ranges[][2] = {{0, TS_ROWS}, {1, TS_ROWS}, {3, 10}, {5, 6}, {7, 10}, {13, 35}};
    static uint8_t w[TS_ROWS * TS_MAXN * 4];
    static float x[TS_TOK * TS_MAXN], y[TS_TOK * TS_ROWS];
    static float alone[TS_TOK][TS_ROWS], ref[TS_TOK][TS_ROWS], mag[TS_TOK][TS_ROWS];
    static float wd[TS_ROWS * TS_MAXN], xt[TS_MAXN];
    static bt_q8 xq[TS_TOK * TS_MAXN / 32];
    bt_kernel_level best = bt_kernels_level();
    for (int l = BT_KERNELS_SCALAR; l <= BT_KERNELS_AVX512; l++) {
        bt_kernels_force((bt_kernel_level)l);
        if (bt_kernels_level() != (bt_kernel_level)l)
            continue;
        const char *name = bt_kernels_level_name((bt_kernel_level)l);
        for (size_t li = 0; li < sizeof ts_lengths / sizeof ts_lengths[0]; li++) {
            int64_t n = ts_lengths[li];
            for (int t = 0; t < TS_TOK; t++)
                fill_x(x + t * n, n);
            bt_quantize_q8(x, xq, TS_TOK * n);
            for (size_t ti = 0; ti < sizeof all_types / sizeof all_types[0]; ti++) {
                bt_type type = all_types[ti];
                const bt_type_traits *tr = bt_type_traits_of(type);
                if (n % tr->block_elems != 0)
                    continue;
                size_t row_bytes;
                CHECK_OK(bt_type_row_bytes(type, n, &row_bytes));
                for (int r = 0; r < TS_ROWS; r++) {
                    fill_weights(type, w + r * row_bytes, n);
                    bt_dequant_row(type, w + r * row_bytes, wd + r * n, n);
                }
                /* each token alone on each row alone, and the reference */
                for (int t = 0; t < TS_TOK; t++) {
                    if (!is_float(type))
                        dequant_q8(xq + t * n / 32, xt, n);
                    for (int r = 0; r < TS_ROWS; r++) {
                        float one[TS_ROWS];
                        bt_matmul(type, w, row_bytes, n, x + t * n, xq + t * n / 32, NULL, 1, one,
                                  TS_ROWS, r, r + 1);
                        alone[t][r] = one[r];
                        double s = 0.0, m = 0.0;
                        for (int64_t c = 0; c < n; c++) {
                            double v = is_float(type) ? x[t * n + c] : xt[c];
                            s += (double)wd[r * n + c] * v;
                            m += fabs((double)wd[r * n + c] * v);
                        }
                        ref[t][r] = is_float(type) ? (float)s
                                                   : bt_vec_dot_q8_ref(type, w + r * row_bytes,
                                                                       xq + t * n / 32, n);
                        mag[t][r] = (float)m;
                    }
                }
                int n_cases = n == 96 ? 70 : (int)(sizeof some_ntok / sizeof some_ntok[0]);
                for (int ci = 0; ci < n_cases; ci++) {
                    int nt = n == 96 ? ci + 1 : some_ntok[ci];
                    for (int off = 0; off <= 3; off += 3) {
                        for (size_t ri = 0; ri < sizeof ranges / sizeof ranges[0]; ri++) {
                            int r0 = ranges[ri][0], r1 = ranges[ri][1];
                            bt_matmul(type, w, row_bytes, n, x + off * n, xq + off * n / 32,
                                      xu_of(xq + off * n / 32, nt * n / 32), nt, y, TS_ROWS, r0,
                                      r1);
                            int bad = 0;
                            for (int t = 0; t < nt; t++) {
                                for (int r = r0; r < r1; r++) {
                                    float got = y[t * TS_ROWS + r], one = alone[off + t][r];
                                    int ok = memcmp(&got, &one, sizeof got) == 0 &&
                                             close_rel(got, ref[off + t][r], mag[off + t][r]);
                                    if (!ok && bad++ < 3)
                                        fprintf(stderr,
                                                "  %s %s n=%lld nt=%d off=%d rows [%d,%d) "
                                                "y[%d][%d] = %.9g alone %.9g ref %.9g\n",
                                                name, tr->name, (long long)n, nt, off, r0, r1, t, r,
                                                got, one, ref[off + t][r]);
                                }
                            }
                            if (bad)
                                check_fail(__FILE__, __LINE__,
                                           "%s %s n=%lld nt=%d off=%d rows [%d,%d): %d outputs "
                                           "differ from the token alone or the reference",
                                           name, tr->name, (long long)n, nt, off, r0, r1, bad);
                            else
                                bt_check_passed++;
                        }
                    }
                }
            }
        }
    }
    bt_kernels_force(best);
}

/*
 * Extreme quants through every tile (the prefill tiles of BT_PREFILL_TOK tokens included):
 * rows whose quant bytes are all 0x00, all 0xFF, 0x0F/0xF0 or 0x80/0x7F (every type's
 * largest |w| of either sign: Q8_0 -128/127, Q5_0 -16/15, Q6_K -32/31, ...) against tokens
 * whose activations are all +127, all -127 or alternating, so any int16 overflow or
 * saturation in a kernel's integer sums shows (the sums are exact in the reference). Each
 * output must equal the scalar reference within the usual tolerance and the token alone bit
 * for bit.
 */
#define EX_ROWS 6
#define EX_TOK 19
#define EX_N 512

static void test_extreme_quants(void) {
    static const uint8_t patterns[][2] = {{0x00, 0x00}, {0xFF, 0xFF}, {0x0F, 0xF0},
                                          {0x80, 0x7F}, {0x7F, 0x80}, {0x55, 0xAA}};
    static uint8_t w[EX_ROWS * EX_N * 4];
    static float x[EX_TOK * EX_N], y[EX_TOK * EX_ROWS], xt[EX_N];
    static bt_q8 xq[EX_TOK * EX_N / 32];
    for (int t = 0; t < EX_TOK; t++)
        for (int c = 0; c < EX_N; c++) {
            float v = t % 4 == 0   ? 1.0f
                      : t % 4 == 1 ? -1.0f
                      : t % 4 == 2 ? (c & 1 ? 1.0f : -1.0f)
                                   : rndf(-1.0f, 1.0f);
            x[t * EX_N + c] = v;
        }
    bt_kernel_level best = bt_kernels_level();
    for (int l = BT_KERNELS_SCALAR; l <= BT_KERNELS_AVX512; l++) {
        bt_kernels_force((bt_kernel_level)l);
        if (bt_kernels_level() != (bt_kernel_level)l)
            continue;
        const char *name = bt_kernels_level_name((bt_kernel_level)l);
        bt_quantize_q8(x, xq, EX_TOK * EX_N);
        for (size_t ti = 0; ti < sizeof all_types / sizeof all_types[0]; ti++) {
            bt_type type = all_types[ti];
            if (is_float(type))
                continue;
            size_t row_bytes;
            CHECK_OK(bt_type_row_bytes(type, EX_N, &row_bytes));
            for (int r = 0; r < EX_ROWS; r++) {
                uint8_t *row = w + r * row_bytes;
                for (size_t i = 0; i < row_bytes; i++)
                    row[i] = patterns[r][i & 1];
                fill_scales(type, row, EX_N);
            }
            bt_matmul(type, w, row_bytes, EX_N, x, xq, xu_of(xq, EX_TOK * EX_N / 32), EX_TOK, y,
                      EX_ROWS, 0, EX_ROWS);
            int bad = 0;
            for (int t = 0; t < EX_TOK; t++) {
                dequant_q8(xq + t * EX_N / 32, xt, EX_N);
                for (int r = 0; r < EX_ROWS; r++) {
                    static float wd[EX_N];
                    bt_dequant_row(type, w + r * row_bytes, wd, EX_N);
                    double mag = 0.0;
                    for (int c = 0; c < EX_N; c++)
                        mag += fabs((double)wd[c] * xt[c]);
                    float alone[EX_ROWS], got = y[t * EX_ROWS + r];
                    bt_matmul(type, w, row_bytes, EX_N, x + t * EX_N, xq + t * EX_N / 32, NULL, 1,
                              alone, EX_ROWS, r, r + 1);
                    float ref =
                        bt_vec_dot_q8_ref(type, w + r * row_bytes, xq + t * EX_N / 32, EX_N);
                    int ok = memcmp(&got, &alone[r], sizeof got) == 0 && close_rel(got, ref, mag);
                    if (!ok && bad++ < 3)
                        fprintf(stderr, "  %s %s extreme y[%d][%d] = %.9g alone %.9g ref %.9g\n",
                                name, bt_type_name(type), t, r, got, alone[r], ref);
                }
            }
            if (bad)
                check_fail(__FILE__, __LINE__, "%s %s: %d extreme outputs wrong", name,
                           bt_type_name(type), bad);
            else
                bt_check_passed++;
        }
    }
    bt_kernels_force(best);
}

/*
 * The AVX-512 tiles of the quant types are the AVX2 pair tiles' arithmetic on wider vectors
 * (kernels_avx512.c): every output must be the same bits at both levels, for decode groups and
 * prompt tiles, full and partial row quads.
 */
static void test_avx512_equals_avx2(void) {
    static const bt_type tiled[] = {BT_TYPE_Q8_0, BT_TYPE_Q4_0, BT_TYPE_Q4_1, BT_TYPE_Q5_0,
                                    BT_TYPE_Q5_1, BT_TYPE_Q4_K, BT_TYPE_Q5_K, BT_TYPE_Q6_K};
    static const int ntoks[] = {1, 2, 3, 4, 8, 9, 13, 24};
    enum { ROWS = 37, TOK = 24, N = 1536 }; /* rows: partial quads and tiles at both levels */
    static uint8_t w[ROWS * N * 2];
    static float x[TOK * N], y2[TOK * ROWS], y5[TOK * ROWS];
    static bt_q8 xq[TOK * N / 32];
    bt_kernel_level best = bt_kernels_level();
    bt_kernels_force(BT_KERNELS_AVX512);
    if (bt_kernels_level() != BT_KERNELS_AVX512) {
        printf("avx512 equals avx2: this CPU lacks avx512: skipped\n");
        bt_kernels_force(best);
        return;
    }
    for (int t = 0; t < TOK; t++)
        fill_x(x + t * N, N);
    bt_quantize_q8(x, xq, TOK * N);
    for (size_t ti = 0; ti < sizeof tiled / sizeof tiled[0]; ti++) {
        bt_type type = tiled[ti];
        size_t row_bytes;
        CHECK_OK(bt_type_row_bytes(type, N, &row_bytes));
        for (int r = 0; r < ROWS; r++)
            fill_weights(type, w + r * row_bytes, N);
        for (size_t ni = 0; ni < sizeof ntoks / sizeof ntoks[0]; ni++) {
            int nt = ntoks[ni], bad = 0;
            for (int r0 = 0; r0 <= 2; r0 += 2) {
                bt_kernels_force(BT_KERNELS_AVX2);
                bt_matmul(type, w, row_bytes, N, x, xq, xu_of(xq, nt * N / 32), nt, y2, ROWS, r0,
                          ROWS);
                bt_kernels_force(BT_KERNELS_AVX512);
                bt_matmul(type, w, row_bytes, N, x, xq, xu_of(xq, nt * N / 32), nt, y5, ROWS, r0,
                          ROWS);
                for (int t = 0; t < nt; t++)
                    for (int r = r0; r < ROWS; r++)
                        if (memcmp(&y2[t * ROWS + r], &y5[t * ROWS + r], sizeof(float)) != 0 &&
                            bad++ < 3)
                            fprintf(stderr, "  %s nt=%d y[%d][%d]: avx2 %.9g avx512 %.9g\n",
                                    bt_type_name(type), nt, t, r, y2[t * ROWS + r],
                                    y5[t * ROWS + r]);
            }
            if (bad)
                check_fail(__FILE__, __LINE__,
                           "%s nt=%d: %d outputs differ between avx2 and avx512",
                           bt_type_name(type), nt, bad);
            else
                bt_check_passed++;
        }
    }
    bt_kernels_force(best);
}

/*
 * Packed weights (kernels.h, bt_pack_rows / bt_matmul_packed) at every level, for each type
 * with a packed layout: each output equals, bit for bit, the packed numerics computed here
 * from the file's bytes (sub-block by sub-block: fma(fl(scale * dx), exact integer sum, acc),
 * and for Q4_K and Q5_K fma(-fl(dmin * m), s, acc) after it), with and without xu, for n_tok 1..70
 * and row ranges that start and end inside a 16-row group; rows outside the range are not written.
 * Extreme rows (every quant at its least and at its most) against activations of
 * +-127 are among them: the most an int16 partial sum of the AVX2 tiles holds.
 */
static void k_scale_min(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

static float packed_expect(bt_type type, const uint8_t *row, const bt_q8 *x, int64_t n) {
    float acc = 0.0f;
    if (type == BT_TYPE_Q4_0 || type == BT_TYPE_Q4_1 || type == BT_TYPE_Q5_0 ||
        type == BT_TYPE_Q5_1) {
        /* d; Q4_1 and Q5_1: m; Q5_0 and Q5_1: qh[4], the fifth bits; then qs[16], nibbles */
        bool has_m = type == BT_TYPE_Q4_1 || type == BT_TYPE_Q5_1;
        bool has_qh = type == BT_TYPE_Q5_0 || type == BT_TYPE_Q5_1;
        int offset = has_m ? 0 : has_qh ? 16 : 8; /* the quant's zero */
        size_t bsz = bt_type_traits_of(type)->block_bytes;
        for (int64_t i = 0; i < n / 32; i++) {
            const uint8_t *blk = row + i * bsz, *qs = blk + 2 + 2 * has_m + 4 * has_qh;
            bt_half hd, hm;
            memcpy(&hd, blk, 2);
            memcpy(&hm, blk + 2, 2);
            uint32_t qh = 0;
            if (has_qh)
                memcpy(&qh, blk + 2 + 2 * has_m, 4);
            int isum = 0;
            for (int j = 0; j < 32; j++) {
                int nib = j < 16 ? qs[j] & 0x0F : qs[j - 16] >> 4;
                isum += (nib + (int)(qh >> j & 1) * 16 - offset) * x[i].qs[j];
            }
            acc = fmaf(bt_half_to_f32(hd) * x[i].d, (float)isum, acc);
            if (has_m)
                acc = fmaf(bt_half_to_f32(hm), x[i].s, acc);
        }
    } else if (type == BT_TYPE_Q8_0) {
        const bt_block_q8_0 *b = (const bt_block_q8_0 *)(const void *)row;
        for (int64_t i = 0; i < n / 32; i++) {
            int isum = 0;
            for (int j = 0; j < 32; j++)
                isum += b[i].qs[j] * x[i].qs[j];
            acc = fmaf(bt_half_to_f32(b[i].d) * x[i].d, (float)isum, acc);
        }
    } else if (type == BT_TYPE_Q4_K || type == BT_TYPE_Q5_K) {
        size_t bsz = bt_type_traits_of(type)->block_bytes;
        for (int64_t i = 0; i < n / 256; i++) {
            /* Q4_K: d, dmin, scales, qs; Q5_K: the same with qh[32] before qs */
            const uint8_t *blk = row + i * bsz, *scales = blk + 4;
            const uint8_t *qh = type == BT_TYPE_Q5_K ? blk + 16 : NULL, *qs = blk + (qh ? 48 : 16);
            bt_half hd, hm;
            memcpy(&hd, blk, 2);
            memcpy(&hm, blk + 2, 2);
            float d = bt_half_to_f32(hd), dmin = bt_half_to_f32(hm);
            for (int j = 0; j < 8; j++) {
                const bt_q8 *xb = x + 8 * i + j;
                int sc, m, isum = 0;
                k_scale_min(j, scales, &sc, &m);
                for (int e = 0; e < 32; e++)
                    isum += ((qs[32 * (j / 2) + e] >> 4 * (j % 2) & 0x0F) +
                             (qh ? (qh[e] >> j & 1) * 16 : 0)) *
                            xb->qs[e];
                acc = fmaf(d * (float)sc * xb->d, (float)isum, acc);
                acc = fmaf(-(dmin * (float)m), xb->s, acc);
            }
        }
    } else { /* Q6_K */
        const bt_block_q6_k *b = (const bt_block_q6_k *)(const void *)row;
        for (int64_t i = 0; i < n / 256; i++)
            for (int j = 0; j < 8; j++) {
                const bt_q8 *xb = x + 8 * i + j;
                int half[2] = {0, 0};
                for (int e = 0; e < 32; e++) {
                    int el = 32 * j + e, nn = el / 128, l = el % 128 % 32, k = el % 128 / 32;
                    int lo = b[i].ql[64 * nn + l + 32 * (k & 1)] >> 4 * (k >> 1) & 0x0F;
                    int hi = b[i].qh[32 * nn + l] >> 2 * k & 3;
                    half[e / 16] += ((lo | hi << 4) - 32) * xb->qs[e];
                }
                int v = b[i].scales[2 * j] * half[0] + b[i].scales[2 * j + 1] * half[1];
                acc = fmaf(bt_half_to_f32(b[i].d) * xb->d, (float)v, acc);
            }
    }
    return acc;
}

/* Row r's quants all at their least (lo) or most (!lo) value, scales kept. */
static void extreme_row(bt_type type, uint8_t *row, int64_t n, int lo) {
    const bt_type_traits *tr = bt_type_traits_of(type);
    for (int64_t i = 0; i < n / (int64_t)tr->block_elems; i++) {
        uint8_t *b = row + i * tr->block_bytes, v = lo ? 0x00 : 0xFF;
        if (type == BT_TYPE_Q4_0)
            memset(b + 2, v, 16);
        else if (type == BT_TYPE_Q4_1)
            memset(b + 4, v, 16);
        else if (type == BT_TYPE_Q5_0)
            memset(b + 2, v, 20); /* qh and qs */
        else if (type == BT_TYPE_Q5_1)
            memset(b + 4, v, 20); /* qh and qs */
        else if (type == BT_TYPE_Q8_0)
            memset(b + 2, lo ? 0x80 : 0x7F, 32); /* -128, 127 */
        else if (type == BT_TYPE_Q4_K)
            memset(b + 16, v, 128);
        else if (type == BT_TYPE_Q5_K)
            memset(b + 16, v, 160); /* qh and qs */
        else
            memset(b, v, 192); /* ql and qh */
    }
}

static void test_packed(void) {
    enum { ROWS = 48, TOK = 70, N = 1536 };
    static const bt_type types[] = {BT_TYPE_Q4_0, BT_TYPE_Q4_1, BT_TYPE_Q5_0, BT_TYPE_Q5_1,
                                    BT_TYPE_Q8_0, BT_TYPE_Q4_K, BT_TYPE_Q5_K, BT_TYPE_Q6_K};
    static const int ntoks[] = {1, 2, 3, 4, 5, 9, 16, 17, 33, 70};
    static const int ranges[][2] = {{0, ROWS}, {1, ROWS}, {3, 10}, {13, 35}, {16, 32}, {47, 48}};
    /* Q8_0: 34 bytes per 32; aligned as an allocation (the packed blocks hold 32-bit words) */
    static _Alignas(64) uint8_t w[ROWS * N * 2], wp[ROWS * N * 2];
    static float x[TOK * N], y[TOK * ROWS];
    static bt_q8 xq[TOK * N / 32];
    bt_kernel_level best = bt_kernels_level();
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
        for (int long_rows = 0; long_rows < 2; long_rows++) {
            bt_type type = types[ti];
            int64_t n = long_rows ? N : bt_type_traits_of(type)->block_elems == 32 ? 96 : 256;
            int64_t nb = n / 32;
            size_t row_bytes;
            CHECK_OK(bt_type_row_bytes(type, n, &row_bytes));
            for (int r = 0; r < ROWS; r++)
                fill_weights(type, w + r * row_bytes, n);
            extreme_row(type, w + 5 * row_bytes, n, 1);
            extreme_row(type, w + 6 * row_bytes, n, 0);
            for (int t = 0; t < TOK; t++)
                fill_x(x + t * n, n);
            bt_quantize_q8(x, xq, TOK * n);
            for (int t = 0; t < 3; t++) /* tokens of +-127 everywhere */
                for (int64_t i = 0; i < nb; i++)
                    for (int j = 0; j < 32; j++)
                        xq[t * nb + i].qs[j] = (int8_t)(t == 0   ? 127
                                                        : t == 1 ? -127
                                                        : j % 2  ? 127
                                                                 : -127);
            for (int64_t i = 0; i < 3 * nb; i++) /* and their halves' sums to match */
                for (int h = 0; h < 2; h++)
                    xq[i].sum[h] = (int16_t)(i < nb ? 16 * 127 : i < 2 * nb ? -16 * 127 : 0);
            bt_pack_rows(type, w, row_bytes, ROWS, n, wp);
            { /* every row dequantized from the packed copy: the file's floats, bit for bit */
                static float from_file[ROWS * N], from_packed[ROWS * N];
                bt_dequant_rows(type, w, row_bytes, n, 0, ROWS, from_file);
                bt_dequant_rows_packed(type, wp, row_bytes, n, 3, ROWS, from_packed);
                CHECK(memcmp(from_file + 3 * n, from_packed,
                             sizeof(float) * (size_t)((ROWS - 3) * n)) == 0);
            }
            for (int l = BT_KERNELS_SCALAR; l <= BT_KERNELS_AVX512; l++) {
                bt_kernels_force((bt_kernel_level)l);
                if (bt_kernels_level() != (bt_kernel_level)l)
                    continue;
                const char *name = bt_kernels_level_name((bt_kernel_level)l);
                CHECK(bt_pack_wanted(type, ROWS, n) == (l >= BT_KERNELS_AVX2));
                CHECK(!bt_pack_wanted(type, ROWS - 8, n));
                CHECK(!bt_pack_wanted(BT_TYPE_F16, ROWS, n)); /* no packed layout */
                for (size_t ni = 0; ni < sizeof ntoks / sizeof ntoks[0]; ni++)
                    for (size_t ri = 0; ri < sizeof ranges / sizeof ranges[0]; ri++)
                        for (int with_xu = 0; with_xu < 2; with_xu++) {
                            int nt = ntoks[ni], r0 = ranges[ri][0], r1 = ranges[ri][1], bad = 0;
                            if (long_rows && ri > 1 && nt != 70)
                                continue; /* the long rows: every range at one batch */
                            for (int i = 0; i < nt * ROWS; i++)
                                y[i] = -1.0f;
                            bt_matmul_packed(type, wp, row_bytes, n, xq,
                                             with_xu ? xu_of(xq, nt * nb) : NULL, nt, y, ROWS, r0,
                                             r1);
                            for (int t = 0; t < nt; t++)
                                for (int r = 0; r < ROWS; r++) {
                                    float want =
                                        r >= r0 && r < r1
                                            ? packed_expect(type, w + r * row_bytes, xq + t * nb, n)
                                            : -1.0f;
                                    if (memcmp(&want, &y[t * ROWS + r], sizeof want) != 0 &&
                                        bad++ < 3)
                                        fprintf(stderr,
                                                "  %s %s n=%lld nt=%d rows [%d,%d) xu %d: "
                                                "y[%d][%d] = %.9g, want %.9g\n",
                                                name, bt_type_name(type), (long long)n, nt, r0, r1,
                                                with_xu, t, r, y[t * ROWS + r], want);
                                }
                            if (bad)
                                check_fail(__FILE__, __LINE__,
                                           "%s packed %s n=%lld nt=%d rows [%d,%d) xu %d: %d "
                                           "outputs wrong",
                                           name, bt_type_name(type), (long long)n, nt, r0, r1,
                                           with_xu, bad);
                            else
                                bt_check_passed++;
                        }
            }
        }
    bt_kernels_force(best);
}

int main(void) {
    test_packed();
    test_q4_1_by_hand();
    test_avx512_equals_avx2();
    test_quantize_rounding();
    test_batch_invariance();
    test_tile_shapes();
    test_extreme_quants();
    test_levels_and_force();
    return check_finish();
}
