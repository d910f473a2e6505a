/*
 * tensor_type.h - ggml tensor types: ids, block geometry, half-precision conversion and
 * scalar dequantization of rows. The block layouts are in shared/reference/model-format.md
 * section 3.9; the structs below mirror them byte for byte (static_asserts in the .c).
 *
 * Everything here is pure and thread-safe.
 */
#ifndef BT_TENSOR_TYPE_H
#define BT_TENSOR_TYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef enum bt_type {
    BT_TYPE_F32 = 0,
    BT_TYPE_F16 = 1,
    BT_TYPE_Q4_0 = 2,
    BT_TYPE_Q4_1 = 3,
    BT_TYPE_Q5_0 = 6,
    BT_TYPE_Q5_1 = 7,
    BT_TYPE_Q8_0 = 8,
    BT_TYPE_Q8_1 = 9,
    BT_TYPE_Q2_K = 10,
    BT_TYPE_Q3_K = 11,
    BT_TYPE_Q4_K = 12,
    BT_TYPE_Q5_K = 13,
    BT_TYPE_Q6_K = 14,
    BT_TYPE_Q8_K = 15,
    BT_TYPE_BF16 = 30,
    BT_TYPE_MAX_ID = 40 /* ids >= this are unknown */
} bt_type;

#define BT_QK 32    /* elements per block of the legacy quants */
#define BT_QK_K 256 /* elements per super-block of the k-quants */

typedef uint16_t bt_half; /* IEEE binary16 bits */

typedef struct {
    bt_half d;
    int8_t qs[32];
} bt_block_q8_0; /* 34 B */
typedef struct {
    bt_half d;
    uint8_t qs[16];
} bt_block_q4_0; /* 18 B */
typedef struct {
    bt_half d, m;
    uint8_t qs[16];
} bt_block_q4_1; /* 20 B */
typedef struct {
    bt_half d;
    uint8_t qh[4];
    uint8_t qs[16];
} bt_block_q5_0; /* 22 B */
typedef struct {
    bt_half d, m;
    uint8_t qh[4];
    uint8_t qs[16];
} bt_block_q5_1; /* 24 B */
typedef struct {
    bt_half d, dmin;
    uint8_t scales[12];
    uint8_t qs[128];
} bt_block_q4_k; /* 144 */
typedef struct {
    bt_half d, dmin;
    uint8_t scales[12];
    uint8_t qh[32]; /* bit j of qh[l]: the fifth bit of element l of sub-block j */
    uint8_t qs[128];
} bt_block_q5_k; /* 176 */
typedef struct {
    uint8_t ql[128];
    uint8_t qh[64];
    int8_t scales[16];
    bt_half d;
} bt_block_q6_k; /* 210 */

/* Geometry of a type known to the file format (some, e.g. Q2_K, are known but not
 * supported for compute). */
typedef struct bt_type_traits {
    const char *name; /* "q4_1" */
    uint32_t block_elems;
    uint32_t block_bytes;
    bool supported; /* we can dequantize and compute with it */
} bt_type_traits;

/* NULL for an id the format does not define. */
const bt_type_traits *bt_type_traits_of(uint32_t type);
const char *bt_type_name(uint32_t type); /* "unknown" for undefined ids */

/* Bytes of a row of n elements; BT_ERR_FORMAT if n is not a multiple of the block size,
 * BT_ERR_UNSUPPORTED for unknown types. */
bt_status bt_type_row_bytes(uint32_t type, int64_t n, size_t *out);

float bt_half_to_f32(bt_half h);
bt_half bt_f32_to_half(float f); /* round to nearest even */
float bt_bf16_to_f32(uint16_t h);
uint16_t bt_f32_to_bf16(float f); /* round to nearest even */

/* Scalar reference dequantization of one row of n elements (n a multiple of the block
 * size; type supported). This is the definition every fast kernel is tested against. */
void bt_dequant_row(bt_type type, const void *src, float *dst, int64_t n);

/* n floats (a multiple of BT_QK) into n/BT_QK Q8_0 blocks, ggml's quantize_row_q8_0_ref to the
 * bit: the q8_0 KV cache and the test files' writer both use it. */
void bt_quantize_row_q8_0(const float *x, bt_block_q8_0 *y, int64_t n);

#endif
