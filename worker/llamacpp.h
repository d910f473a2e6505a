/*
 * llamacpp.h - llama.cpp's CPU arithmetic, reproduced bit for bit (`--numerics llamacpp`).
 *
 * baton's own kernels (forward.h) are faster than llama.cpp's and agree with it up to float
 * summation order. That is not enough to give the same greedy tokens: both engines round
 * every matmul input to 8 bits, so a last-bit difference flips some of those roundings and
 * grows over the layers into logit differences of 0.1-0.3, which decide near-ties. This
 * module reproduces, operation for operation, what llama.cpp (ggml-cpu, built natively with
 * GCC for an AVX-512 x86 CPU, flash attention off, f16 KV cache) computes for a llama model:
 *
 *   - weight products: ggml_vec_dot_q4_1_q8_1 / ggml_vec_dot_q8_0_q8_0 (x86 AVX2 bodies,
 *     which AVX-512 builds use): per 32-block an integer dot in 8 lanes of 4 consecutive
 *     elements, one FMA chain per lane with the scale dw*dx, then hsum_float_8; Q4_1 adds its
 *     min terms as a scalar FMA chain m*s. The activations are bt_quantize_q8's blocks, which
 *     are ggml's quantize_row_q8_0/q8_1 bytes. llama.cpp runs these for every row count
 *     (Q4_1 has no tinyBLAS path; for Q8_0 tinyBLAS computes the same sums);
 *   - rope (mode NORMAL): out0 = fma(x0, cos, -(x1*sin)), out1 = fma(x0, sin, x1*cos), as GCC
 *     contracts ggml's rotate_pairs; cos/sin and theta exactly as ggml_rope_cache_init;
 *   - SwiGLU: silu(g) * u with ggml's ggml_v_expf polynomial and a true division, which is
 *     bt_swiglu (kernels.h), shared with the default numerics;
 *   - attention without flash attention: KQ = K . fp16(q) and KQV = V . fp16(softmax), both in
 *     f16 x f16 -> f32 products whose order depends on the batch: a pass of >= 2 rows goes
 *     through tinyBLAS (one 16-lane FMA chain, _mm512_reduce_add_ps), a single row through
 *     ggml_vec_dot_f16 (four 16-lane chains over steps of 64, pairwise reduced). The softmax
 *     scales by 1/sqrt(head_dim), takes ggml_v_expf(s - max), sums 16-key chunks in double and
 *     multiplies by (float)(1/sum). Keys past the row's position are masked (probability 0) in
 *     llama.cpp's padded KV window, which adds exact zeros: they are skipped here.
 * RMSNorm, residual adds, the embedding lookup and the KV cache's f16 rounding are already
 * identical in forward.c.
 *
 * So a run with these numerics reproduces llama.cpp's logits exactly when its passes have one
 * row where llama.cpp's have one (a generated token) and two or more where llama.cpp's have
 * two or more (a prompt, in any chunks of >= 2 rows: neither order depends on the chunking).
 * Like llama.cpp's, a sequence's numbers then depend on its batch: continuous batching and
 * preemption by recompute are deterministic but may move near-ties. Requirements (the
 * bt_lc_*_ok checks): a CPU with AVX2, FMA and F16C; weights Q4_1 or Q8_0 (F32 norms);
 * head_dim a multiple of 64 up to 256; f16 KV cache. Prompts run at about llama.cpp's speed,
 * below the default numerics'.
 *
 * Threads: every function is pure over its arguments.
 */
#ifndef BT_LLAMACPP_H
#define BT_LLAMACPP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"
#include "kv_cache.h"

#define BT_LC_MAX_HEAD_DIM 256

/* Whether the CPU can run these numerics (AVX2, FMA, F16C). */
bool bt_lc_cpu_ok(void);
/* Whether a weight matrix of this type can be multiplied (Q4_1, Q8_0). */
bool bt_lc_type_ok(bt_type type);
/* Whether attention can run for this head size (a multiple of 64, at most
 * BT_LC_MAX_HEAD_DIM). */
bool bt_lc_head_dim_ok(int head_dim);

/* y[t][r] = row r of w . xq[t] for r in [r0, r1), t in [0, n_tok); see bt_matmul. */
void bt_lc_matmul(bt_type type, const void *w, size_t row_bytes, int64_t n_cols, const bt_q8 *xq,
                  int64_t n_tok, float *y, int64_t ldy, int64_t r0, int64_t r1);

/* Rope of n_heads heads of D floats with the (cos, sin) pairs cs[D]. */
void bt_lc_rope(float *x, const float *cs, int n_heads, int D);

/* Attention of the n_q query heads that share KV head `kv_head`, of one row: q and out are
 * [n_q][head_dim] (rope applied). Keys and values 0..pos of seq from the f16 cache.
 * `batched`: the pass has two rows or more (tinyBLAS order), else ggml_vec_dot_f16 order.
 * scratch: bt_lc_attention_scratch(n_q, head_dim, pos + 1) floats. */
void bt_lc_attention(const bt_kv_cache *kv, int layer, int seq, int pos, int kv_head, int head_dim,
                     int n_q, const float *q, bool batched, float *scratch, float *out);
static inline size_t bt_lc_attention_scratch(int n_q, int head_dim, int n_keys) {
    return (size_t)n_q * ((size_t)n_keys + (size_t)head_dim * 64);
}

#endif
