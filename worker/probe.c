/* probe.c - time one layer's matrix products on synthetic weights (see probe.h). */
#include "probe.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "forward.h"
#include "kernels/kernels.h"
#include "threadpool.h"

#define MIB (1024.0 * 1024.0)
#define PATTERN 0x11 /* halves 0x1111 ~ 6.6e-4, bf16/f32 ~ 1e-28: normal numbers, int8 17 */

static const char *const names[BT_PROBE_N_MATRICES] = {"q", "k", "v", "o", "gate", "up", "down"};

/* n_rows (outputs) and n_cols (inputs) of matrix m. */
static void dims_of(const bt_probe_shape *s, int m, int64_t *n_rows, int64_t *n_cols) {
    switch (m) {
    case BT_PROBE_Q:
        *n_rows = s->q_dim, *n_cols = s->n_embd;
        break;
    case BT_PROBE_K:
    case BT_PROBE_V:
        *n_rows = s->kv_dim, *n_cols = s->n_embd;
        break;
    case BT_PROBE_O:
        *n_rows = s->n_embd, *n_cols = s->q_dim;
        break;
    case BT_PROBE_GATE:
    case BT_PROBE_UP:
        *n_rows = s->n_ff, *n_cols = s->n_embd;
        break;
    default: /* down */
        *n_rows = s->n_embd, *n_cols = s->n_ff;
        break;
    }
}

bt_status bt_probe_check(const bt_probe_shape *s, bt_error *err) {
    const struct {
        const char *name;
        int v;
    } dims[] = {
        {"n_embd", s->n_embd}, {"q_dim", s->q_dim}, {"kv_dim", s->kv_dim}, {"n_ff", s->n_ff}};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i].v < 32 || dims[i].v > BT_PROBE_MAX_DIM || dims[i].v % 32 != 0)
            return bt_error_set(err, BT_ERR_INVALID_ARG,
                                "probe: %s %d is not a multiple of 32 in [32, %d]", dims[i].name,
                                dims[i].v, BT_PROBE_MAX_DIM);
    for (int m = 0; m < BT_PROBE_N_MATRICES; m++) {
        const bt_type_traits *tr = bt_type_traits_of(s->type[m]);
        if (!tr || !tr->supported)
            return bt_error_set(err, BT_ERR_INVALID_ARG, "probe: types[%d] (%s) %u: %s", m,
                                names[m], s->type[m],
                                tr ? "a type the kernels do not compute" : "not a tensor type");
        int64_t n_rows, n_cols;
        dims_of(s, m, &n_rows, &n_cols);
        if (n_cols % tr->block_elems != 0)
            return bt_error_set(err, BT_ERR_INVALID_ARG,
                                "probe: %s rows of %lld elements are not whole %s blocks of %u",
                                names[m], (long long)n_cols, tr->name, tr->block_elems);
    }
    uint64_t bytes = bt_probe_layer_bytes(s);
    if (bytes > BT_PROBE_MAX_BYTES)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "probe: a layer of %.1f MiB, at most %.1f MiB",
                            (double)bytes / MIB, (double)BT_PROBE_MAX_BYTES / MIB);
    return BT_OK;
}

uint64_t bt_probe_layer_bytes(const bt_probe_shape *s) {
    uint64_t total = 0;
    for (int m = 0; m < BT_PROBE_N_MATRICES; m++) {
        const bt_type_traits *tr = bt_type_traits_of(s->type[m]);
        int64_t n_rows, n_cols;
        dims_of(s, m, &n_rows, &n_cols);
        if (tr && tr->block_elems)
            total += (uint64_t)n_rows * (uint64_t)(n_cols / tr->block_elems) * tr->block_bytes;
    }
    return total;
}

/* One matrix section: like forward.c's run_mm, tasks of `chunk` weight rows over the jobs. */
typedef struct {
    const void *w;
    size_t row_bytes;
    bt_type type;
    int64_t n_rows, n_cols;
    const float *x;    /* [rows][n_cols] */
    const bt_q8 *xq;   /* [rows][n_cols / 32] */
    const uint8_t *xu; /* xq + 128 (bt_matmul's xu) */
    float *y;          /* [rows][n_rows] */
    bool packed;       /* w is packed (bt_matmul_packed) */
    int tasks;
} job;

typedef struct {
    job jobs[3];
    int n_jobs, rows;
    int64_t chunk;
} section;

static void section_task(void *p, int task, int thread) {
    (void)thread;
    section *c = p;
    int j = 0;
    while (task >= c->jobs[j].tasks) {
        task -= c->jobs[j].tasks;
        j++;
    }
    const job *o = &c->jobs[j];
    int64_t r0 = (int64_t)task * c->chunk;
    int64_t r1 = r0 + c->chunk < o->n_rows ? r0 + c->chunk : o->n_rows;
    if (o->packed)
        bt_matmul_packed(o->type, o->w, o->row_bytes, o->n_cols, o->xq, o->xu, c->rows, o->y,
                         o->n_rows, r0, r1);
    else
        bt_matmul(o->type, o->w, o->row_bytes, o->n_cols, o->x, o->xq, o->xu, c->rows, o->y,
                  o->n_rows, r0, r1);
}

/* The synthetic layer and the activations of one probe. */
typedef struct {
    void *w[BT_PROBE_N_MATRICES];
    size_t row_bytes[BT_PROBE_N_MATRICES];
    int64_t n_rows[BT_PROBE_N_MATRICES], n_cols[BT_PROBE_N_MATRICES];
    float *x[BT_PROBE_N_MATRICES]; /* each matrix's input, [rows][n_cols] (the first of a
                                      section's is used) */
    bt_q8 *xq[BT_PROBE_N_MATRICES];
    uint8_t *xu[BT_PROBE_N_MATRICES];
    float *y[BT_PROBE_N_MATRICES];    /* [rows][n_rows] */
    bool packed[BT_PROBE_N_MATRICES]; /* w[m] in the kernels' packed layout, as a stage has it */
} layer;

static void layer_free(layer *L) {
    for (int m = 0; m < BT_PROBE_N_MATRICES; m++) {
        free(L->w[m]);
        free(L->x[m]);
        free(L->xq[m]);
        free(L->xu[m]);
        free(L->y[m]);
    }
}

static bt_status layer_alloc(layer *L, const bt_probe_shape *s, int rows, bt_error *err) {
    memset(L, 0, sizeof *L);
    size_t total = 0;
    for (int m = 0; m < BT_PROBE_N_MATRICES; m++) {
        dims_of(s, m, &L->n_rows[m], &L->n_cols[m]);
        bt_status st = bt_type_row_bytes(s->type[m], L->n_cols[m], &L->row_bytes[m]);
        if (st != BT_OK)
            return bt_error_set(err, st, "probe: %s: %lld columns of type %u", names[m],
                                (long long)L->n_cols[m], s->type[m]);
        size_t bytes = L->row_bytes[m] * (size_t)L->n_rows[m];
        size_t nx = (size_t)rows * (size_t)L->n_cols[m];
        L->w[m] = malloc(bytes);
        L->x[m] = malloc(nx * sizeof(float));
        L->xq[m] = malloc(nx / 32 * sizeof(bt_q8));
        L->xu[m] = malloc(nx);
        L->y[m] = malloc((size_t)rows * (size_t)L->n_rows[m] * sizeof(float));
        total += bytes;
        if (!L->w[m] || !L->x[m] || !L->xq[m] || !L->xu[m] || !L->y[m]) {
            layer_free(L);
            return bt_error_set(err, BT_ERR_NOMEM,
                                "probe: no memory for a synthetic layer (%.1f MiB so far, at %s)",
                                (double)total / (1024.0 * 1024.0), names[m]);
        }
        memset(L->w[m], PATTERN, bytes); /* touched now: no page faults while timed */
        if (bt_pack_wanted(s->type[m], L->n_rows[m], L->n_cols[m])) { /* as a stage packs it */
            void *p = malloc(bytes);
            if (!p) {
                layer_free(L);
                return bt_error_set(err, BT_ERR_NOMEM, "probe: no memory to pack %s", names[m]);
            }
            bt_pack_rows(s->type[m], L->w[m], L->row_bytes[m], L->n_rows[m], L->n_cols[m], p);
            free(L->w[m]);
            L->w[m] = p;
            L->packed[m] = true;
        }
        for (size_t i = 0; i < nx; i++)
            L->x[m][i] = sinf((float)(i % 1021) * 0.37f); /* activations in [-1, 1] */
    }
    return BT_OK;
}

/* A section over matrices [m0, m0 + n), which share one input (q, k, v; gate, up): the input
 * quantized (as forward's row section before each matrix section does), then the products
 * tiled over the pool. */
static void run_section(bt_threadpool *pool, int n_threads, layer *L, const bt_probe_shape *s,
                        int rows, int m0, int n) {
    section c;
    memset(&c, 0, sizeof c);
    c.rows = rows;
    c.n_jobs = n;
    bt_quantize_q8(L->x[m0], L->xq[m0], (int64_t)rows * L->n_cols[m0]);
    bt_q8_plus_128(L->xq[m0], L->xu[m0], (int64_t)rows * L->n_cols[m0] / 32);
    int64_t total = 0;
    for (int j = 0; j < n; j++) {
        int m = m0 + j;
        c.jobs[j] = (job){.w = L->w[m],
                          .row_bytes = L->row_bytes[m],
                          .type = (bt_type)s->type[m],
                          .n_rows = L->n_rows[m],
                          .n_cols = L->n_cols[m],
                          .x = L->x[m0],
                          .xq = L->xq[m0],
                          .xu = L->xu[m0],
                          .y = L->y[m],
                          .packed = L->packed[m]};
        total += L->n_rows[m];
    }
    c.chunk = bt_forward_rows_per_task(total, n_threads);
    int n_tasks = 0;
    for (int j = 0; j < n; j++) {
        c.jobs[j].tasks = (int)((c.jobs[j].n_rows + c.chunk - 1) / c.chunk);
        n_tasks += c.jobs[j].tasks;
    }
    bt_threadpool_run(pool, section_task, &c, n_tasks);
}

static void pass(bt_threadpool *pool, int n_threads, layer *L, const bt_probe_shape *s, int rows) {
    run_section(pool, n_threads, L, s, rows, BT_PROBE_Q, 3);    /* q, k, v */
    run_section(pool, n_threads, L, s, rows, BT_PROBE_O, 1);    /* o */
    run_section(pool, n_threads, L, s, rows, BT_PROBE_GATE, 2); /* gate, up */
    run_section(pool, n_threads, L, s, rows, BT_PROBE_DOWN, 1); /* down */
}

static int64_t cpu_now_us(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

bt_status bt_probe_run(const bt_probe_shape *s, int n_threads, int rows, int64_t min_us,
                       bt_probe_result *out, bt_error *err) {
    memset(out, 0, sizeof *out);
    bt_status st = bt_probe_check(s, err);
    if (st != BT_OK)
        return st;
    if (n_threads < 1 || n_threads > BT_THREADPOOL_MAX_THREADS || rows < 1 ||
        rows > BT_PROBE_MAX_ROWS || min_us < 1000 || min_us > (int64_t)BT_PROBE_MAX_MS * 1000)
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "probe: threads %d (1..%d), rows %d (1..%d) or min %lld ms (1..%d)",
                            n_threads, BT_THREADPOOL_MAX_THREADS, rows, BT_PROBE_MAX_ROWS,
                            (long long)(min_us / 1000), BT_PROBE_MAX_MS);
    layer L;
    if ((st = layer_alloc(&L, s, rows, err)) != BT_OK)
        return st;
    bt_threadpool *pool = NULL;
    if ((st = bt_threadpool_new(n_threads, &pool, err)) != BT_OK) {
        layer_free(&L);
        return st;
    }
    pass(pool, n_threads, &L, s, rows); /* warm-up: caches, the pool's threads */
    int64_t t0 = bt_now_us(), c0 = cpu_now_us(), t = t0;
    int n = 0;
    do {
        pass(pool, n_threads, &L, s, rows);
        n++;
        t = bt_now_us();
    } while (t - t0 < min_us);
    out->passes = n;
    out->wall_us = t - t0;
    out->cpu_us = cpu_now_us() - c0;
    bt_threadpool_free(pool);
    layer_free(&L);
    return BT_OK;
}
