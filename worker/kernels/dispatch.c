/*
 * dispatch.c - chooses the kernel level (scalar, AVX2, AVX-512 VNNI) once from CPUID or the
 * BATON_KERNELS environment variable, and implements the public entry points of kernels.h on
 * top of the chosen table.
 *
 * Thread rules: bt_kernels_init()/bt_kernels_force() write the global table and must run
 * before worker threads start (or while none run); every other entry point only reads it.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "kernels_internal.h"
#include "log.h"

static bt_kernel_table g_table;
static bt_kernel_level g_level = BT_KERNELS_SCALAR;
static int g_ready;

static int cpu_has(bt_kernel_level level) {
    switch (level) {
    case BT_KERNELS_SCALAR:
        return 1;
    case BT_KERNELS_AVX2:
        return bt_cpu_has(BT_CPU_AVX2) && bt_cpu_has(BT_CPU_FMA) && bt_cpu_has(BT_CPU_F16C);
    case BT_KERNELS_AVX512:
        return cpu_has(BT_KERNELS_AVX2) && bt_cpu_has(BT_CPU_AVX512F) &&
               bt_cpu_has(BT_CPU_AVX512BW) && bt_cpu_has(BT_CPU_AVX512VL) &&
               bt_cpu_has(BT_CPU_AVX512DQ) && bt_cpu_has(BT_CPU_AVX512VNNI);
    }
    return 0;
}

static void table_build(bt_kernel_level level) {
    bt_kernels_fill_scalar(&g_table);
    if (level >= BT_KERNELS_AVX2)
        bt_kernels_fill_avx2(&g_table);
    if (level >= BT_KERNELS_AVX512)
        bt_kernels_fill_avx512(&g_table);
    g_level = level;
    g_ready = 1;
}

void bt_kernels_init(void) {
    if (g_ready)
        return;
    bt_kernel_level level = BT_KERNELS_SCALAR;
    if (cpu_has(BT_KERNELS_AVX512))
        level = BT_KERNELS_AVX512;
    else if (cpu_has(BT_KERNELS_AVX2))
        level = BT_KERNELS_AVX2;
    const char *env = getenv("BATON_KERNELS");
    if (env != NULL && env[0] != '\0') {
        bt_kernel_level want = level;
        if (strcmp(env, "scalar") == 0)
            want = BT_KERNELS_SCALAR;
        else if (strcmp(env, "avx2") == 0)
            want = BT_KERNELS_AVX2;
        else if (strcmp(env, "avx512") == 0)
            want = BT_KERNELS_AVX512;
        else
            BT_WARN("BATON_KERNELS=%s: not one of scalar|avx2|avx512; using %s", env,
                    bt_kernels_level_name(level));
        if (want > level)
            BT_WARN("BATON_KERNELS=%s: this CPU lacks it; using %s", env,
                    bt_kernels_level_name(level));
        else
            level = want;
    }
    table_build(level);
}

bt_kernel_level bt_kernels_level(void) {
    bt_kernels_init();
    return g_level;
}

const char *bt_kernels_level_name(bt_kernel_level level) {
    switch (level) {
    case BT_KERNELS_SCALAR:
        return "scalar";
    case BT_KERNELS_AVX2:
        return "avx2";
    case BT_KERNELS_AVX512:
        return "avx512";
    }
    return "unknown";
}

bt_kernel_level bt_kernels_force(bt_kernel_level level) {
    bt_kernels_init();
    bt_kernel_level prev = g_level;
    if (level < BT_KERNELS_SCALAR || level > BT_KERNELS_AVX512 || !cpu_has(level))
        return prev;
    table_build(level);
    return prev;
}

static const bt_kernel_table *table(void) {
    if (!g_ready)
        bt_kernels_init();
    return &g_table;
}

void bt_quantize_q8(const float *x, bt_q8 *y, int64_t n) {
    assert(n % BT_QK == 0);
    table()->quantize_q8(x, y, n);
}

float bt_vec_dot_q8(bt_type type, const void *w_row, const bt_q8 *x, int64_t n) {
    const bt_kernel_table *t = table();
    if ((unsigned)type < BT_TYPE_MAX_ID && t->tile_q8[type] != NULL) {
        float out;
        t->tile_q8[type](w_row, 0, 1, x, 0, 1, n, &out, 1);
        return out;
    }
    if ((unsigned)type < BT_TYPE_MAX_ID && t->rowdot_q8[type] != NULL) {
        float out;
        t->rowdot_q8[type](w_row, x, 0, 1, n, &out, 1);
        return out;
    }
    return bt_vec_dot_q8_ref(type, w_row, x, n);
}

/* Tokens per pass over the weight rows: a tile's activations (about 64 KiB) stay in L2 while
 * every weight row of the range meets them, and the range's rows stay in cache from one tile
 * to the next. Without it, a prompt of a few hundred tokens streams every token's activations
 * from memory once per weight row. The order of independent outputs changes nothing in any
 * output (each is one kernel call's own accumulation). */
static int64_t token_tile(int64_t row_bytes_of_x) {
    int64_t t = (64 << 10) / (row_bytes_of_x > 0 ? row_bytes_of_x : 1);
    t = t / BT_PREFILL_TOK * BT_PREFILL_TOK;
    return t < BT_PREFILL_TOK ? BT_PREFILL_TOK : t;
}

void bt_q8_plus_128(const bt_q8 *xq, uint8_t *xu, int64_t n_blocks) {
    typedef uint8_t bytes16 __attribute__((vector_size(16))); /* a register, any target */
    for (int64_t k = 0; k < n_blocks; k++)
        for (size_t h = 0; h < sizeof xq->qs; h += sizeof(bytes16), xu += sizeof(bytes16)) {
            bytes16 v;
            memcpy(&v, xq[k].qs + h, sizeof v);
            v ^= 0x80;
            memcpy(xu, &v, sizeof v);
        }
}

bool bt_matmul_wants_xu(bt_type type, int64_t n_tok) {
    const bt_kernel_table *t = table();
    return (unsigned)type < BT_TYPE_MAX_ID &&
           ((t->ptile_q8[type] && t->ptile_xu[type]) ||
            (t->packed_ptile[type] && t->packed_xu[type])) &&
           n_tok >= BT_PREFILL_TOK;
}

void bt_matmul(bt_type type, const void *w, size_t row_bytes, int64_t n_cols, const float *x,
               const bt_q8 *xq, const uint8_t *xu, int64_t n_tok, float *y, int64_t ldy, int64_t r0,
               int64_t r1) {
    const bt_kernel_table *t = table();
    assert((unsigned)type < BT_TYPE_MAX_ID);
    const char *wb = w;
    /* Quant types dot q8 blocks, float types the f32 rows: one walk, one kernel per call. */
    bt_tile_q8_fn fm = t->tile_q8[type];
    bt_ptile_q8_fn fp = fm ? t->ptile_q8[type] : NULL;
    bt_rowdot_q8_fn fq = t->rowdot_q8[type];
    bt_rowdot_f32_fn ff = t->rowdot_f32[type];
    int quant = fm != NULL || fq != NULL;
    assert(quant ? xq != NULL && n_cols % BT_QK == 0 : ff != NULL && x != NULL);
    int64_t stride = quant ? n_cols / BT_QK : n_cols; /* elements per token row */
    int64_t tile = token_tile(stride * (int64_t)(quant ? sizeof(bt_q8) : sizeof(float)));
    /* Weight-stationary: a tile of tile_rows rows stays in L1 while every token group of the
     * token tile meets it. */
    int64_t rstep = fm ? t->tile_rows : 1;
    for (int64_t tt = 0; tt < n_tok; tt += tile) {
        int64_t te = tt + tile < n_tok ? tt + tile : n_tok;
        /* Without xu where its prefill tile reads it, the decode tile takes every token. */
        bool prefill = fp != NULL && te - tt >= BT_PREFILL_TOK && (xu || !t->ptile_xu[type]);
        for (int64_t r = r0; r < r1; r += rstep) {
            int nr = (int)(r1 - r < rstep ? r1 - r : rstep);
            int64_t t0 = tt;
            if (prefill) /* full groups of BT_PREFILL_TOK first; the rest by the decode tile */
                for (; te - t0 >= BT_PREFILL_TOK; t0 += BT_PREFILL_TOK)
                    fp(wb + r * row_bytes, row_bytes, nr, xq + t0 * stride,
                       xu ? xu + t0 * stride * (int64_t)sizeof xq->qs : NULL, stride, n_cols,
                       y + t0 * ldy + r, ldy);
            for (; t0 < te; t0 += BT_KERNEL_MAX_TOK) {
                int nt = (int)(te - t0 < BT_KERNEL_MAX_TOK ? te - t0 : BT_KERNEL_MAX_TOK);
                float *out = y + t0 * ldy + r;
                if (fm)
                    fm(wb + r * row_bytes, row_bytes, nr, xq + t0 * stride, stride, nt, n_cols, out,
                       ldy);
                else if (fq)
                    fq(wb + r * row_bytes, xq + t0 * stride, stride, nt, n_cols, out, ldy);
                else
                    ff(wb + r * row_bytes, x + t0 * stride, stride, nt, n_cols, out, ldy);
            }
        }
    }
}

bool bt_pack_wanted(bt_type type, int64_t n_rows, int64_t n_cols) {
    const bt_kernel_table *t = table();
    if ((unsigned)type >= BT_TYPE_MAX_ID || !bt_pack_has_layout(type) ||
        g_level < BT_KERNELS_AVX2 || t->packed_tile[type] == NULL)
        return false;
    int64_t block = (int64_t)bt_type_traits_of(type)->block_elems;
    return n_rows > 0 && n_rows % BT_PACK_ROWS == 0 && n_cols > 0 && n_cols % block == 0;
}

void bt_matmul_packed(bt_type type, const void *wp, size_t row_bytes, int64_t n_cols,
                      const bt_q8 *xq, const uint8_t *xu, int64_t n_tok, float *y, int64_t ldy,
                      int64_t r0, int64_t r1) {
    const bt_kernel_table *t = table();
    assert((unsigned)type < BT_TYPE_MAX_ID && t->packed_tile[type] != NULL);
    int64_t block = (int64_t)bt_type_traits_of(type)->block_elems;
    assert(n_cols % block == 0 && r0 >= 0 && r0 <= r1);
    bt_packed_tile_fn fm = t->packed_tile[type],
                      fp = xu || !t->packed_xu[type] ? t->packed_ptile[type] : NULL;
    const char *wb = wp;
    int64_t nb = n_cols / block, xs = n_cols / BT_QK; /* weight blocks, bt_q8 blocks a row */
    int64_t tile = token_tile(xs * (int64_t)sizeof(bt_q8));
    /* As bt_matmul: a group's rows stay in L1 while every token group of the tile meets them. */
    for (int64_t tt = 0; tt < n_tok; tt += tile) {
        int64_t te = tt + tile < n_tok ? tt + tile : n_tok;
        for (int64_t g0 = r0 / BT_PACK_ROWS * BT_PACK_ROWS; g0 < r1; g0 += BT_PACK_ROWS) {
            int64_t lo = r0 > g0 ? r0 - g0 : 0;
            int64_t hi = r1 - g0 < BT_PACK_ROWS ? r1 - g0 : BT_PACK_ROWS;
            uint32_t rows = (uint32_t)(((1u << hi) - 1) & ~((1u << lo) - 1));
            const char *wg = wb + (size_t)g0 * row_bytes;
            int64_t t0 = tt;
            if (fp)
                for (; te - t0 >= BT_PREFILL_TOK; t0 += BT_PREFILL_TOK)
                    fp(wg, nb, xq + t0 * xs, xu ? xu + t0 * xs * 32 : NULL, xs, BT_PREFILL_TOK,
                       y + t0 * ldy + g0, ldy, rows);
            for (; t0 < te; t0 += BT_KERNEL_MAX_TOK) {
                int nt = (int)(te - t0 < BT_KERNEL_MAX_TOK ? te - t0 : BT_KERNEL_MAX_TOK);
                fm(wg, nb, xq + t0 * xs, xu ? xu + t0 * xs * 32 : NULL, xs, nt, y + t0 * ldy + g0,
                   ldy, rows);
            }
        }
    }
}

void bt_dequant_rows(bt_type type, const void *w, size_t row_bytes, int64_t n_cols, int64_t r0,
                     int64_t r1, float *dst) {
    const bt_kernel_table *t = table();
    assert((unsigned)type < BT_TYPE_MAX_ID && t->dequant[type] != NULL);
    const char *wb = w;
    for (int64_t r = r0; r < r1; r++)
        t->dequant[type](wb + r * row_bytes, dst + (r - r0) * n_cols, n_cols);
}

float bt_log_sum_exp(const float *x, int64_t n, float *max_out) {
    return table()->log_sum_exp(x, n, max_out);
}

void bt_swiglu(float *g, const float *u, int64_t n) {
    table()->swiglu(g, u, n);
}
