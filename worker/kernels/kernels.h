/*
 * kernels.h - compute kernels of a stage: activation quantization, quantized dot products
 * and matrix products, dequantized rows.
 *
 * Weights stay in their GGUF type, or in a packed copy of it (bt_pack_rows below). For every
 * row of a batch the activation row is quantized once to bt_q8 blocks (32 int8 with a float
 * scale, plus d*sum for the types with a min) and every weight row is dotted with it in
 * integer arithmetic.
 *
 * Each entry point has a scalar reference (always compiled, used by tests) and SIMD variants
 * (AVX2, AVX-512 VNNI) chosen once at start-up by bt_kernels_init() from CPUID, or forced
 * with BATON_KERNELS=scalar|avx2|avx512. All are thread-safe (pure functions).
 */
#ifndef BT_KERNELS_H
#define BT_KERNELS_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "tensor_type.h"

/*
 * Quantized activations: one block per 32 inputs, rounded exactly as llama.cpp's x86 CPU
 * backend quantizes activations to block_q8_0 / block_q8_1 (model-format.md 3.10; ggml
 * quantize_row_q8_0/q8_1, AVX2 path), so that dot products match llama.cpp's:
 *   amax = max|x|, d = amax/127, id = amax ? 127/amax : 0,
 *   qs = round-to-nearest-even(x * id)             (in [-127, 127]; never -128)
 *   d  = fp16(d)                                    (ggml stores it as a half)
 *   s  = fp16(d_unrounded * sum(qs))               (block_q8_1.s; not fp16(d) * sum)
 *   sum = the exact integer sums of qs[0..15] and qs[16..31] (baton's own: the tiles of
 *         signed weights use them to take the weights unsigned, q + z, and subtract z * sum)
 * d and s are held as floats but are always exactly representable in fp16 (fp16 rounding is
 * to nearest even; fp16(d) may be 0 or inf for |x| < 4e-6 or > 8e6, as in ggml).
 * Weight dots use these rounded values per block: Q8_0/Q4_0/Q5_0 d_w*d*isum, Q4_1/Q5_1
 * d_w*d*isum + m_w*s. K-quants use the same blocks (llama.cpp's Q8_K differs: not matched).
 */
typedef struct bt_q8 {
    float d; /* scale: x ~= d * qs; an fp16 value */
    float s; /* fp16(d * sum(qs)), for the weight types with a min (Q4_1, Q5_1, K) */
    int8_t qs[32];
    int16_t sum[2]; /* sum(qs[0..15]), sum(qs[16..31]) */
} bt_q8;

typedef enum bt_kernel_level {
    BT_KERNELS_SCALAR = 0,
    BT_KERNELS_AVX2 = 1,
    BT_KERNELS_AVX512 = 2
} bt_kernel_level;

/* Picks the best level this CPU supports (or BATON_KERNELS). Idempotent; call before threads. */
void bt_kernels_init(void);
bt_kernel_level bt_kernels_level(void);
const char *bt_kernels_level_name(bt_kernel_level level);
/* Forces a level (tests); returns the previous one. A level the CPU lacks is refused
 * (returns the current level unchanged). */
bt_kernel_level bt_kernels_force(bt_kernel_level level);

/* x[n] -> y[n/32]; n a multiple of 32. Every level gives the same bytes (rounding above). */
void bt_quantize_q8(const float *x, bt_q8 *y, int64_t n);

/* Dot product of one weight row (n elements of `type`) with quantized activations. For quant
 * types, bit-identical to bt_matmul's output for that row and token at the same level. */
float bt_vec_dot_q8(bt_type type, const void *w_row, const bt_q8 *x, int64_t n);

/* xq's quants as unsigned bytes, qs + 128: 32 per block, n_blocks blocks (bt_matmul's xu). */
void bt_q8_plus_128(const bt_q8 *xq, uint8_t *xu, int64_t n_blocks);
/* Whether bt_matmul (or bt_matmul_packed) of `type` over n_tok tokens reads xu (the prompt
 * tiles of the signed quant types at this level, which take x + 128 as their unsigned
 * operand). */
bool bt_matmul_wants_xu(bt_type type, int64_t n_tok);

/*
 * Y[t][r] = sum_c W[r][c] * X[t][c] for rows r in [r0, r1) and tokens t in [0, n_tok).
 *   w:     weight tensor base, rows of row_bytes, n_cols elements each, type `type`
 *   x:     n_tok float activation rows of n_cols (used by F32/F16/BF16 weights)
 *   xq:    the same rows quantized, n_cols/32 blocks each, contiguous (used by quant types)
 *   xu:    xq as bt_q8_plus_128 makes it, or NULL: made once by the caller for every call
 *          that shares xq (a matrix section's tasks); without it, where bt_matmul_wants_xu,
 *          the decode tiles take every token (the same bits, about 10% slower)
 *   y:     n_tok rows of ldy floats
 * The caller splits [0, n_rows) across threads.
 * Batch invariant: y[t][r] is bit-identical to what bt_matmul computes for token t alone
 * (n_tok = 1) on any row range holding r, whatever n_tok, so a sequence's results do not
 * depend on what it is batched with (continuous batching). Levels differ from each other and
 * from the scalar reference in the last bits (summation order); a level never changes at run
 * time except through bt_kernels_force.
 */
void bt_matmul(bt_type type, const void *w, size_t row_bytes, int64_t n_cols, const float *x,
               const bt_q8 *xq, const uint8_t *xu, int64_t n_tok, float *y, int64_t ldy, int64_t r0,
               int64_t r1);

/*
 * Packed weights: a copy of a weight matrix in a layout of our own, made once when a stage
 * loads its weights (pack.c), that the matrix products read faster than the GGUF layout.
 * Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K have one (the default model's types and
 * those of Q4_0, Q8_0, Q4_K_M and Q5_K_M files, where Q5_0 and Q5_1 are the types of the
 * matrices whose rows are not a multiple of 256, e.g. most of SmolLM2's and Gemma 3's): blocks of
 * BT_PACK_ROWS rows with row r of the 16 in the 32-bit lane r of a 512-bit vector
 * (kernels_internal.h has the layouts). A packed matrix has the size of the file's bytes, and the
 * group of rows 16G..16G+15 begins at byte 16G * row_bytes.
 *
 * Numerics: each output is accumulated one 32-element (sub-)block at a time, in order from 0,
 * with isum the block's exact integer dot and dx, s the activation block's scale and sum:
 *   Q4_0, Q5_0, Q8_0  acc = fma(fl(d * dx), isum, acc)
 *   Q4_1, Q5_1  acc = fma(fl(d * dx), isum, acc); acc = fma(m, s, acc)
 *   Q4_K, Q5_K  acc = fma(fl(fl(d * sc) * dx), isum, acc); acc = fma(-fl(dmin * m), s, acc)
 *   Q6_K  acc = fma(fl(d * dx), sc_lo * isum_lo + sc_hi * isum_hi, acc)  (an exact integer)
 * Every level gives these bits (the scalar one too), so a row's packed products do not depend
 * on the CPU, the batch or the tile. They differ from bt_matmul's on the file's bytes in the
 * last bits (another summation order), and --numerics llamacpp never reads packed data.
 */
#define BT_PACK_ROWS 16

/* Whether bt_pack_rows has a layout for `type` with this shape (n_rows a multiple of
 * BT_PACK_ROWS) and this level reads it (AVX2 and AVX-512; the scalar level keeps the file's
 * layout, whose reference it is). */
bool bt_pack_wanted(bt_type type, int64_t n_rows, int64_t n_cols);
/* Writes the n_rows rows of w (row_bytes apart, n_cols elements of `type`) to dst in the
 * packed layout: n_rows * row_bytes bytes; bt_pack_wanted must hold. */
void bt_pack_rows(bt_type type, const void *w, size_t row_bytes, int64_t n_rows, int64_t n_cols,
                  void *dst);
/* bt_matmul over packed weights wp (bt_pack_rows of the same type and shape): the same
 * arguments and the same batch invariance, any [r0, r1), with the numerics above. */
void bt_matmul_packed(bt_type type, const void *wp, size_t row_bytes, int64_t n_cols,
                      const bt_q8 *xq, const uint8_t *xu, int64_t n_tok, float *y, int64_t ldy,
                      int64_t r0, int64_t r1);

/* bt_dequant_rows over packed weights wp: the same floats, bit for bit (the embedding rows of a
 * stage whose tied output head is packed). */
void bt_dequant_rows_packed(bt_type type, const void *wp, size_t row_bytes, int64_t n_cols,
                            int64_t r0, int64_t r1, float *dst);

/* Dequantizes weight rows [r0, r1) to dst (row-major, n_cols floats per row): embedding rows. */
void bt_dequant_rows(bt_type type, const void *w, size_t row_bytes, int64_t n_cols, int64_t r0,
                     int64_t r1, float *dst);

/* log(sum_i exp(x[i] - m)) with m = max x[0..n), written to *max_out (n >= 1): the
 * normaliser of a log-softmax, e.g. the logprobs of a row of logits. The SIMD variants use a
 * polynomial exp (about 2 ulp) and float partial sums; the result is within 1e-6 relative of
 * the scalar reference. */
float bt_log_sum_exp(const float *x, int64_t n, float *max_out);

/* SwiGLU in place: g[i] = g[i] / (1 + exp(-g[i])) * u[i], with ggml's exp (ggml_expf.h), so
 * that the default numerics' FFN activation is llama.cpp's. Every level gives the same bits:
 * the SIMD variants do the scalar reference's operations lane by lane. Pure over its rows, so
 * batch invariant. */
void bt_swiglu(float *g, const float *u, int64_t n);

/* Scalar references, exported for tests of the SIMD variants. */
void bt_quantize_q8_ref(const float *x, bt_q8 *y, int64_t n);
float bt_vec_dot_q8_ref(bt_type type, const void *w_row, const bt_q8 *x, int64_t n);
float bt_log_sum_exp_ref(const float *x, int64_t n, float *max_out);
void bt_swiglu_ref(float *g, const float *u, int64_t n);

#endif
