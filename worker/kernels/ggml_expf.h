/*
 * ggml_expf.h - exp(x) as ggml's ggml_v_expf computes it (the ARM optimized-routines
 * polynomial: x = n ln2 + b with n = round(x / ln2) by the 1.5 * 2^23 trick, a degree-5
 * polynomial in b, times 2^n), one float at a time. llama.cpp's SwiGLU and softmax use it, so
 * kernels that follow it give llama.cpp's values: `--numerics llamacpp` (llamacpp_avx2.c)
 * bit for bit, and the SwiGLU of the default numerics (bt_swiglu), whose SIMD variants compute
 * the same operations lane by lane.
 *
 * Pure; the header is included by the files that need it (static inline).
 */
#ifndef BT_GGML_EXPF_H
#define BT_GGML_EXPF_H

#include <math.h>

#define BT_GGML_EXPF_SHIFT 0x1.8p23f /* 1.5 * 2^23: adding it rounds to an integer */
#define BT_GGML_EXPF_LOG2E 0x1.715476p+0f
#define BT_GGML_EXPF_LN2_HI 0x1.62e4p-1f
#define BT_GGML_EXPF_LN2_LO 0x1.7f7d1cp-20f
#define BT_GGML_EXPF_C5 0x1.0e4020p-7f
#define BT_GGML_EXPF_C4 0x1.573e2ep-5f
#define BT_GGML_EXPF_C3 0x1.555e66p-3f
#define BT_GGML_EXPF_C2 0x1.fffdb6p-2f
#define BT_GGML_EXPF_C1 0x1.ffffecp-1f

/* 2^n scaling by scalbnf, as the AVX-512 variant's scalef (the AVX2 variant splits large n
 * in two factors: the same values); |n| > 192 gives 0 or inf. */
static inline float bt_ggml_expf(float x) {
    float z = fmaf(x, BT_GGML_EXPF_LOG2E, BT_GGML_EXPF_SHIFT);
    float n = z - BT_GGML_EXPF_SHIFT;
    float b = fmaf(-n, BT_GGML_EXPF_LN2_LO, fmaf(-n, BT_GGML_EXPF_LN2_HI, x));
    if (isnan(n))
        return n;
    if (fabsf(n) > 192.0f) /* out of range: 0 or inf by the sign of n */
        return n <= 0.0f ? 0.0f : INFINITY;
    float u = b * b;
    float j = fmaf(fmaf(fmaf(BT_GGML_EXPF_C5, b, BT_GGML_EXPF_C4), u,
                        fmaf(BT_GGML_EXPF_C3, b, BT_GGML_EXPF_C2)),
                   u, fmaf(BT_GGML_EXPF_C1, b, 1.0f));
    return scalbnf(j, (int)n);
}

#endif
