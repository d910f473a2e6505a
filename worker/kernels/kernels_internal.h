/*
 * kernels_internal.h - the table of per-level kernels that dispatch.c chooses from. Private to
 * the .c files of worker/kernels.
 *
 * A "row dot" takes one weight row and up to BT_KERNEL_MAX_TOK activation rows and writes one
 * output per token, so a batch reuses the weight row from cache:
 *   out[t * ldo] = sum_c W[c] * X_t[c]      t in [0, n_tok)
 * For quant types X_t = x + t * x_stride blocks of bt_q8; for float types X_t is a float row at
 * x + t * x_stride floats. A NULL entry means "use the scalar one".
 *
 * Batch invariance (kernels.h, bt_matmul): out[t * ldo] must be bit-identical for every n_tok
 * in [1, BT_KERNEL_MAX_TOK] and every position t of the token in the group: each token's
 * accumulation order and final reduction may depend only on the row, never on n_tok.
 * bt_vec_dot_q8 is the n_tok = 1 call of the same function.
 *
 * Invariant the SIMD dots rely on: bt_q8.qs values lie in [-127, 127] (bt_quantize_q8 never
 * produces -128), so negating them cannot overflow int8.
 */
#ifndef BT_KERNELS_INTERNAL_H
#define BT_KERNELS_INTERNAL_H

#include <float.h>
#include <stdbool.h>

#include "kernels.h"
#include "stage_layout.h"

#define BT_KERNEL_MAX_TOK BT_DECODE_GROUP /* the coordinator rounds decode rows to it */

/* Runs `stmt` with NT_ a compile-time constant equal to n_tok (1..BT_KERNEL_MAX_TOK; larger
 * counts run BT_KERNEL_MAX_TOK, the caller loops): each inlined kernel then keeps exactly one
 * accumulator set per token in registers. */
#define BT_WITH_NT(n_tok, stmt)                                                                    \
    switch (n_tok) {                                                                               \
    case 1: {                                                                                      \
        enum { NT_ = 1 };                                                                          \
        stmt;                                                                                      \
    } break;                                                                                       \
    case 2: {                                                                                      \
        enum { NT_ = 2 };                                                                          \
        stmt;                                                                                      \
    } break;                                                                                       \
    case 3: {                                                                                      \
        enum { NT_ = 3 };                                                                          \
        stmt;                                                                                      \
    } break;                                                                                       \
    default: {                                                                                     \
        enum { NT_ = BT_KERNEL_MAX_TOK };                                                          \
        stmt;                                                                                      \
    } break;                                                                                       \
    }

typedef void (*bt_rowdot_q8_fn)(const void *w, const bt_q8 *x, int64_t x_stride, int n_tok,
                                int64_t n, float *out, int64_t ldo);
/*
 * A "tile" takes n_rows consecutive weight rows (1..tile_rows of its level's table, row_bytes
 * apart; bt_matmul calls it for each run of tile_rows rows, the last run shorter) and n_tok
 * token rows (1..BT_KERNEL_MAX_TOK) and writes out[t * ldo + r] for every pair, so each
 * unpacked weight block serves every token of the tile and each activation block load and its
 * scale work serve every row. Same invariance rule as the row dots, extended to rows: an
 * output's accumulation order and final reduction depend only on its own row and token data,
 * never on n_rows, n_tok or where the row and token sit in the tile.
 */
typedef void (*bt_tile_q8_fn)(const void *w, size_t row_bytes, int n_rows, const bt_q8 *x,
                              int64_t x_stride, int n_tok, int64_t n, float *out, int64_t ldo);
/*
 * A "prefill tile" is a tile of exactly BT_PREFILL_TOK tokens (and 1..tile_rows rows), for
 * prompts: each unpacked weight block serves more tokens than in a decode tile (all 16 in the
 * AVX-512 tiles, whose 32 registers hold 16 accumulators; 8 at a time in the AVX2 ones). Where set,
 * bt_matmul runs every full group of BT_PREFILL_TOK tokens through it and the rest through
 * tile_q8. It must give every output bit for bit what tile_q8 gives (the same integer lane
 * sums, the same float operations in the same order), so the invariance rule above holds
 * across the two.
 */
#define BT_PREFILL_TOK BT_PROMPT_GROUP /* 16 */
/* xu: the same tokens' quants as unsigned bytes, qs + 128 (32 per block; block i of token t at
 * xu + 32 * (t * x_stride + i)), made once by bt_matmul's caller (bt_q8_plus_128); never NULL
 * for the types whose ptile_xu is set, maybe NULL for the others. The tiles of signed weight
 * types take x + 128 as vpdpbusd's/maddubs' unsigned operand, which without it costs two xors
 * per token, block and row group, a sixth of the tile's vector work. */
typedef void (*bt_ptile_q8_fn)(const void *w, size_t row_bytes, int n_rows, const bt_q8 *x,
                               const uint8_t *xu, int64_t x_stride, int64_t n, float *out,
                               int64_t ldo);
/*
 * Packed Q5_0 (kernels.h, bt_pack_rows; made by pack.c): 16 rows x one block of 32 columns in
 * 352 bytes, the 22 bytes per row of the file's blocks rearranged so that row r of the 16 is
 * the 32-bit lane r of a 512-bit vector (AVX2: rows 0..7 and 8..15 in the two 256-bit halves).
 * Group g (g = 0..7) is elements 4g..4g+3 of every row:
 *   qs[j][4r + k]:  byte 4j + k of row r's qs, whose low nibble is element 4j + k (group j)
 *                   and high nibble element 16 + 4j + k (group j + 4), j = 0..3
 *   nohi[4r + k] bit g: set iff element 4g + k of row r has its fifth bit clear, so its value
 *                   is the nibble - 16 (else the nibble): one bit plane per group, so that a
 *                   group's bits are one shift or bit test of a vector in its lanes' bytes
 *   d[r]:           row r's scale
 * A matrix of n_rows (a multiple of 16) rows is n_rows / 16 groups of rows, each its blocks in
 * column order; group G starts at byte 16 G * row_bytes, as row 16 G does in the file.
 */
typedef struct bt_block_q5_0x16 {
    uint8_t qs[4][64];
    uint8_t nohi[64];
    bt_half d[16];
} bt_block_q5_0x16; /* 352 B */

/*
 * Packed Q4_1: 16 rows x one block of 32 in 320 bytes (16 x 20), as packed Q5_0 without the
 * fifth bits: qs[j][4r + k] is byte 4j + k of row r's qs (low nibble element 4j + k, high
 * nibble element 16 + 4j + k), and d[r], m[r] are row r's scale and min.
 */
typedef struct bt_block_q4_1x16 {
    uint8_t qs[4][64];
    bt_half d[16], m[16];
} bt_block_q4_1x16; /* 320 B */

/*
 * Packed Q4_0: 16 rows x one block of 32 in 288 bytes (16 x 18), as packed Q4_1 without the
 * min: qs[j][4r + k] is byte 4j + k of row r's qs (low nibble element 4j + k, high nibble
 * element 16 + 4j + k, each q with the value q - 8), and d[r] is row r's scale.
 */
typedef struct bt_block_q4_0x16 {
    uint8_t qs[4][64];
    bt_half d[16];
} bt_block_q4_0x16; /* 288 B */

/*
 * Packed Q5_1: 16 rows x one block of 32 in 384 bytes (16 x 24), as packed Q4_1 with the fifth
 * bits as packed Q5_0's, set where the file's is (not cleared): hi[4r + k] bit g is the fifth
 * bit of element 4g + k of row r.
 */
typedef struct bt_block_q5_1x16 {
    uint8_t qs[4][64];
    uint8_t hi[64];
    bt_half d[16], m[16];
} bt_block_q5_1x16; /* 384 B */

/*
 * Packed Q8_0: 16 rows x one block of 32 in 544 bytes (16 x 34): qs[g][4r + k] is element
 * 4g + k of row r (int8), d[r] its scale.
 */
typedef struct bt_block_q8_0x16 {
    int8_t qs[8][64];
    bt_half d[16];
} bt_block_q8_0x16; /* 544 B */

/*
 * Packed Q4_K: 16 rows x one super-block of 256 in 2304 bytes (16 x 144). Sub-block j (a
 * bt_q8 block) is elements 32j..32j+31; group g of it elements 32j + 4g..+3.
 *   qs[p][g][4r + k]: byte 32p + 4g + k of row r's qs: its low nibble is element 4g + k of
 *                     sub-block 2p, its high nibble the same of sub-block 2p + 1
 *   sm[w][r]:         bytes 4w..4w+3 of row r's 12 bytes of 6-bit scales and mins, as the
 *                     32-bit words u0, u1, u2 that tensor_type.c's scale_min_k4 unpacks
 *   d[r], dmin[r]:    row r's super-block scales
 */
typedef struct bt_block_q4_kx16 {
    uint8_t qs[4][8][64];
    uint32_t sm[3][16];
    bt_half d[16], dmin[16];
} bt_block_q4_kx16; /* 2304 B */

/*
 * Packed Q5_K: 16 rows x one super-block in 2816 bytes (16 x 176): the low 4 bits, scales,
 * mins and super-block scales as packed Q4_K, then the fifth bits,
 *   qh[g][4r + k]: byte 4g + k of row r's qh, whose bit j is the fifth bit of element
 *                  4g + k of sub-block j (so a group's bits are one vector for all 8
 *                  sub-blocks, and sub-block j's are one shift of it)
 */
typedef struct bt_block_q5_kx16 {
    bt_block_q4_kx16 lo;
    uint8_t qh[8][64];
} bt_block_q5_kx16; /* 2816 B */

/*
 * Packed Q6_K: 16 rows x one super-block in 3360 bytes (16 x 210). Element 32j + 4g + k
 * (sub-block j = 4n + m, group g) of row r is, with the file's q = (low 4 | high 2 << 4) - 32:
 *   low 4 bits:  ql[n][m & 1][g][4r + k] >> 4 (m >> 1), and 0x0F
 *   high 2 bits: qh[n][g][4r + k] >> 2m, and 3
 * (ql[n][h][g][4r + k] is byte 64n + 32h + 4g + k of row r's ql, qh[n][g][4r + k] byte
 * 32n + 4g + k of its qh), and sc[w][4r + k] is row r's int8 scale 4w + k (scale 2j for groups
 * 0..3 of sub-block j, 2j + 1 for groups 4..7).
 */
typedef struct bt_block_q6_kx16 {
    uint8_t ql[2][2][8][64];
    uint8_t qh[2][8][64];
    int8_t sc[4][64];
    bt_half d[16];
} bt_block_q6_kx16; /* 3360 B */

/* A packed tile: the BT_PACK_ROWS rows of one group (wg: its first block; nb blocks of the
 * type, so nb * 8 bt_q8 blocks per token for the K types) x n_tok tokens (1..BT_KERNEL_MAX_TOK,
 * or BT_PREFILL_TOK with xu for a prefill tile), writing out[t * ldo + r] for the rows r whose
 * bit is set in `rows`. xu as for bt_ptile_q8_fn, or NULL (a tile that wants x + 128 then
 * makes it itself). Every output has kernels.h's packed numerics. */
typedef void (*bt_packed_tile_fn)(const void *wg, int64_t nb, const bt_q8 *x, const uint8_t *xu,
                                  int64_t x_stride, int n_tok, float *out, int64_t ldo,
                                  uint32_t rows);

/* Whether pack.c has a packed layout for `type`. */
bool bt_pack_has_layout(bt_type type);

/* Row r's block of a packed block pb (BT_PACK_ROWS rows of one block), in the file's layout
 * again, into out (the type's block_bytes): the inverse of bt_pack_rows for one row. */
void bt_pack_unpack_row(bt_type type, const void *pb, int r, void *out);

typedef void (*bt_rowdot_f32_fn)(const void *w, const float *x, int64_t x_stride, int n_tok,
                                 int64_t n, float *out, int64_t ldo);
typedef void (*bt_dequant_fn)(const void *w, float *dst, int64_t n);
typedef void (*bt_quantize_fn)(const float *x, bt_q8 *y, int64_t n);
typedef float (*bt_log_sum_exp_fn)(const float *x, int64_t n, float *max_out);
typedef void (*bt_swiglu_fn)(float *g, const float *u, int64_t n);

typedef struct bt_kernel_table {
    bt_quantize_fn quantize_q8;
    bt_rowdot_q8_fn rowdot_q8[BT_TYPE_MAX_ID]; /* quant weight types */
    /* Multi-row tiles of quant types; where set, used instead of rowdot_q8 (bt_vec_dot_q8
     * included), so a level that overrides a type's rowdot_q8 must clear its tile_q8. */
    bt_tile_q8_fn tile_q8[BT_TYPE_MAX_ID];
    /* Rows per tile call: a tile's rows stay in L1 while every token group of bt_matmul's
     * token tile meets them, and each tile prefetches the next call's rows. */
    int tile_rows;
    /* Prefill tiles (BT_PREFILL_TOK tokens); only where tile_q8 is set, and cleared with it. */
    bt_ptile_q8_fn ptile_q8[BT_TYPE_MAX_ID];
    bool ptile_xu[BT_TYPE_MAX_ID];               /* that ptile reads xu */
    bt_rowdot_f32_fn rowdot_f32[BT_TYPE_MAX_ID]; /* F32, F16, BF16 weights */
    bt_dequant_fn dequant[BT_TYPE_MAX_ID];
    /* Tiles of packed weights (kernels.h, bt_pack_rows); every level fills them, all alike
     * in their bits. packed_ptile: BT_PREFILL_TOK tokens, or NULL; packed_xu: it reads xu
     * (and is used only where bt_matmul_packed has one). */
    bt_packed_tile_fn packed_tile[BT_TYPE_MAX_ID];
    bt_packed_tile_fn packed_ptile[BT_TYPE_MAX_ID];
    bool packed_xu[BT_TYPE_MAX_ID];
    bt_log_sum_exp_fn log_sum_exp;
    bt_swiglu_fn swiglu;
} bt_kernel_table;

/* Each fills the entries it implements; the table starts as a copy of the scalar one. */
void bt_kernels_fill_scalar(bt_kernel_table *t);
void bt_kernels_fill_avx2(bt_kernel_table *t);
void bt_kernels_fill_avx512(bt_kernel_table *t);

/*
 * Scale of one activation block of 32, exactly as llama.cpp's x86 quantize_row_q8_0/q8_1
 * (ggml-cpu quants.c, AVX2 path, which AVX-512 builds use too): d = amax/127 (kept unrounded
 * for s), id = 127/amax (one division, not 1/d: the two differ in the last bit for some amax
 * and that can flip a rounding of q). id is 0 for an all-zero block, and also where 127/amax
 * overflows (|x| < 4e-37: fp16(d) is 0 there anyway), so q stays in [-127, 127].
 */
static inline float bt_q8_scale_inv(float amax, float *d) {
    *d = amax / 127.0f;
    float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    return id <= FLT_MAX ? id : 0.0f;
}

#endif
