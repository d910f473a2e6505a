/*
 * quantize_ref.h - reference quantizers (float -> ggml blocks) for writing synthetic model
 * files in tests and tools. Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 follow ggml's
 * quantize_row_*_ref exactly; Q4_K and Q6_K are simple, deterministic quantizers that
 * produce valid blocks (one scale/min per sub-block from its range; not ggml's search).
 * F32, F16 and BF16 are plain conversions.
 *
 * Pure functions; any thread. Not for hot paths.
 */
#ifndef BT_QUANTIZE_REF_H
#define BT_QUANTIZE_REF_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "tensor_type.h"

/* Quantizes one row of n floats into dst (bt_type_row_bytes(type, n) bytes).
 * BT_ERR_FORMAT when n is not a multiple of the block size, BT_ERR_UNSUPPORTED for a type
 * without a quantizer here. */
bt_status bt_quantize_row_ref(bt_type type, const float *src, void *dst, int64_t n);

/* Quantizes n_rows rows of n_cols floats (row-major, rows contiguous) into dst; *n_bytes
 * receives the byte size written. */
bt_status bt_quantize_ref(bt_type type, const float *src, void *dst, int64_t n_cols, int64_t n_rows,
                          size_t *n_bytes);

/* Parses "q4_1", "Q8_0", "f16", "bf16", "q4_k", ... into a type this file can write. */
bt_status bt_quantize_type_from_name(const char *name, bt_type *out);

#endif
