/*
 * bench_kernels.c - single-thread micro-benchmark of bt_matmul on the SmolLM2-135M shapes, for
 * every kernel level this CPU supports, at 1, 4, 16 and 64 tokens per call. Prints weight GB/s
 * (bytes of the matrix over the call's time: at 1 token the decode bandwidth) and GMAC/s
 * (multiply-adds: rows x columns x tokens).
 *
 *   bench_kernels [seconds_per_case [level [type]]]
 *     seconds_per_case: default 0.3; the best of 2 ms batches is reported
 *     level: scalar|avx2|avx512|all: only that level (default: every level this CPU has)
 *     type: only the cases of that weight type (q5_0, q4_K, ...; default: every case)
 * A type that the level packs (kernels.h, bt_pack_wanted) is timed twice: in the file's layout
 * and packed (type name with a "p": bt_matmul_packed).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/kernels.h"
#include "tensor_type.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint32_t rng = 12345u;
static uint32_t rnd(void) {
    rng = rng * 1664525u + 1013904223u;
    return rng >> 8;
}

typedef struct bench_case {
    const char *what;
    bt_type type;
    int64_t n_rows, n_cols;
} bench_case;

static void fill_weights(bt_type type, uint8_t *w, size_t bytes) {
    for (size_t i = 0; i < bytes; i++)
        w[i] = (uint8_t)rnd();
    const bt_type_traits *tr = bt_type_traits_of(type);
    if (tr->block_elems == 1) {
        if (type == BT_TYPE_F32)
            for (size_t i = 0; i + 4 <= bytes; i += 4) {
                float f = (float)(rnd() % 1000) / 1000.0f - 0.5f;
                memcpy(w + i, &f, 4);
            }
        else
            for (size_t i = 0; i + 2 <= bytes; i += 2) {
                bt_half h = bt_f32_to_half((float)(rnd() % 1000) / 1000.0f - 0.5f);
                memcpy(w + i, &h, 2);
            }
        return;
    }
    bt_half h = bt_f32_to_half(0.01f);
    for (size_t i = 0; i + tr->block_bytes <= bytes; i += tr->block_bytes) {
        memcpy(w + i, &h, 2);
        if (type == BT_TYPE_Q4_1)
            memcpy(w + i + 2, &h, 2);
    }
}

/* One bt_matmul (or, packed, bt_matmul_packed) call of a case over all its rows. */
typedef struct call {
    const bench_case *bc;
    const void *w; /* the file's layout, or packed */
    size_t row_bytes;
    const float *x;
    const bt_q8 *xq;
    const uint8_t *xu;
    int nt;
    float *y;
    int packed;
} call;

static void run(const call *c) {
    const bench_case *bc = c->bc;
    if (c->packed)
        bt_matmul_packed(bc->type, c->w, c->row_bytes, bc->n_cols, c->xq, c->xu, c->nt, c->y,
                         bc->n_rows, 0, bc->n_rows);
    else
        bt_matmul(bc->type, c->w, c->row_bytes, bc->n_cols, c->x, c->xq, c->xu, c->nt, c->y,
                  bc->n_rows, 0, bc->n_rows);
}

/* Seconds per call: the best of 2 ms batches over min_s, robust against other processes. */
static double best_time(const call *c, double min_s) {
    run(c); /* warm-up */
    double per = 1e30, t_start = now_s();
    do {
        int iters = 0;
        double t0 = now_s(), t1;
        do {
            run(c);
            iters++;
            t1 = now_s();
        } while (t1 - t0 < 2e-3);
        if ((t1 - t0) / iters < per)
            per = (t1 - t0) / iters;
    } while (now_s() - t_start < min_s);
    return per;
}

int main(int argc, char **argv) {
    double min_s = argc > 1 ? atof(argv[1]) : 0.3;
    const char *only = argc > 2 && strcmp(argv[2], "all") != 0 ? argv[2] : NULL;
    const char *only_type = argc > 3 ? argv[3] : NULL;
    const bench_case cases[] = {
        {"ffn_gate 576->1536", BT_TYPE_Q4_1, 1536, 576},
        {"ffn_down 1536->576", BT_TYPE_Q4_1, 576, 1536},
        {"output 576->49152", BT_TYPE_Q8_0, 49152, 576},
        {"ffn_gate q8_0", BT_TYPE_Q8_0, 1536, 576},
        {"ffn_gate q4_0", BT_TYPE_Q4_0, 1536, 576},
        {"ffn_gate q5_0", BT_TYPE_Q5_0, 1536, 576},
        {"ffn_down q5_0", BT_TYPE_Q5_0, 576, 1536},
        {"ffn_gate q5_1", BT_TYPE_Q5_1, 1536, 576},
        {"ffn_down q4_k", BT_TYPE_Q4_K, 576, 1536},
        {"ffn_down q5_k", BT_TYPE_Q5_K, 576, 1536},
        {"ffn_down q6_k", BT_TYPE_Q6_K, 576, 1536},
        {"attn_q f32 576->576", BT_TYPE_F32, 576, 576},
        {"attn_q f16 576->576", BT_TYPE_F16, 576, 576},
    };
    const int toks[] = {1, 4, 16, 64};
    enum { MAX_TOK = 64 };
    bt_kernels_init();
    bt_kernel_level best = bt_kernels_level();
    printf("%-8s %-22s %-6s %4s %10s %9s %9s\n", "level", "matrix", "type", "ntok", "us/call",
           "GB/s", "GMAC/s");
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const bench_case *bc = &cases[ci];
        if (only_type != NULL && strcmp(only_type, bt_type_name(bc->type)) != 0)
            continue;
        size_t row_bytes;
        if (bt_type_row_bytes(bc->type, bc->n_cols, &row_bytes) != BT_OK)
            return 1;
        size_t wbytes = row_bytes * (size_t)bc->n_rows;
        uint8_t *w = malloc(wbytes), *wp = malloc(wbytes);
        float *x = malloc(sizeof(float) * (size_t)(MAX_TOK * bc->n_cols));
        bt_q8 *xq = malloc(sizeof(bt_q8) * (size_t)(MAX_TOK * bc->n_cols / 32));
        uint8_t *xu = malloc((size_t)(MAX_TOK * bc->n_cols));
        float *y = malloc(sizeof(float) * (size_t)(MAX_TOK * bc->n_rows));
        if (!w || !wp || !x || !xq || !xu || !y)
            return 1;
        fill_weights(bc->type, w, wbytes);
        for (int64_t i = 0; i < MAX_TOK * bc->n_cols; i++)
            x[i] = (float)(rnd() % 2000) / 1000.0f - 1.0f;
        for (int l = BT_KERNELS_SCALAR; l <= BT_KERNELS_AVX512; l++) {
            bt_kernels_force((bt_kernel_level)l);
            if (bt_kernels_level() != (bt_kernel_level)l ||
                (only != NULL && strcmp(only, bt_kernels_level_name((bt_kernel_level)l)) != 0))
                continue;
            for (int packed = 0; packed < 2; packed++) {
                if (packed && !bt_pack_wanted(bc->type, bc->n_rows, bc->n_cols))
                    continue;
                if (packed)
                    bt_pack_rows(bc->type, w, row_bytes, bc->n_rows, bc->n_cols, wp);
                for (size_t ti = 0; ti < sizeof toks / sizeof toks[0]; ti++) {
                    int nt = toks[ti];
                    bt_quantize_q8(x, xq, nt * bc->n_cols);
                    bt_q8_plus_128(xq, xu, nt * bc->n_cols / 32); /* the caller's, once */
                    const call c = {bc, packed ? wp : w, row_bytes, x, xq, xu, nt, y, packed};
                    double per = best_time(&c, min_s);
                    double macs = (double)bc->n_rows * (double)bc->n_cols * nt;
                    printf("%-8s %-22s %-5s%s %4d %10.1f %9.2f %9.2f\n",
                           bt_kernels_level_name((bt_kernel_level)l), bc->what,
                           bt_type_name(bc->type), packed ? "p" : " ", nt, per * 1e6,
                           (double)wbytes / per * 1e-9, macs / per * 1e-9);
                }
            }
        }
        free(w);
        free(wp);
        free(x);
        free(xq);
        free(xu);
        free(y);
    }
    bt_kernels_force(best);
    return 0;
}
