/*
 * quantize_ref.h - reference quantizers (float -> ggml blocks) for test data, synthetic
 * model files and tests/tools/requant. Every quantized type here (Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_0, Q4_K, Q5_K, Q6_K) produces the same bytes as ggml's quantize_row_*_ref, i.e. as
 * llama-quantize without an importance matrix: tests/unit/test_quantize_ref.c compares them
 * with bytes llama.cpp wrote (tests/data/quant/ggml_vectors.txt). F32, F16 and BF16 are plain
 * conversions. The inverse, bt_dequant_row (common/tensor_type.h), is ggml's dequantize_row_*
 * to the bit for Q4_1 and Q8_0 (a requant's sources), checked by the same test.
 *
 * Pure functions; any thread. Not for hot paths.
 */
#ifndef BT_QUANTIZE_REF_H
#define BT_QUANTIZE_REF_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "tensor_type.h"

/* Q5_K's block (ggml's block_q5_K; common/ has no public struct for it). */
typedef struct {
    bt_half d, dmin;
    uint8_t scales[12];
    uint8_t qh[32];
    uint8_t qs[128];
} bt_block_q5_k_ref; /* 176 B */

/* Quantizes one row of n floats into dst (bt_type_row_bytes(type, n) bytes).
 * BT_ERR_FORMAT when n is not a multiple of the block size, BT_ERR_UNSUPPORTED for a type
 * without a quantizer here. */
bt_status bt_quantize_row_ref(bt_type type, const float *src, void *dst, int64_t n);

/* Quantizes n_rows rows of n_cols floats (row-major, rows contiguous) into dst; *n_bytes
 * receives the byte size written. */
bt_status bt_quantize_ref(bt_type type, const float *src, void *dst, int64_t n_cols, int64_t n_rows,
                          size_t *n_bytes);

/* Parses "q4_1", "Q8_0", "f16", "bf16", "q4_k", "q5_K", ... into a type this file can write. */
bt_status bt_quantize_type_from_name(const char *name, bt_type *out);

/* Writes the names of the types this file can write, space-separated ("f32 f16 bf16 q4_0
 * ... q6_K"), into buf (truncated to size), for messages that list the choices. */
void bt_quantize_type_list(char *buf, size_t size);

#endif
