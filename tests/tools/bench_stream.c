/*
 * bench_stream.c - decode's weight stream per quant type: how fast the packed one-token
 * kernels read weights that are not in any cache, beside a prefetched read of the same bytes.
 *
 *   bench_stream [--threads N] [--mib M] [--reps R] [type ...]
 *     (defaults: every CPU, 4 x the L3 and at least 256 MiB, 5; every type the kernels pack at
 *     this CPU's level)
 *
 * For each type, matrices of 5632 x 2048 (a 1.1B model's feed-forward shape) packed as the
 * stage packs them, enough of them to fill M MiB (several times the L3). A pass is a decode
 * step's matrix sections: each thread multiplies its contiguous share of one matrix's rows by
 * one token (bt_matmul_packed), then all meet at a barrier, then the next matrix. A read pass
 * sums the same shares of the same bytes with 64-bit loads and a software prefetch ahead,
 * with the same barriers (faster than membw's plain read, which has no prefetch).
 * The two alternate R times; the best of each is printed as GB/s of weights (1e9 bytes) and
 * their ratio: how much of the memory's speed the kernel keeps, the number that bench_kernels
 * (in cache) does not show and that sets a one-stream decode's speed.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "tensor_type.h"

#define MAX_THREADS 64
#define ROWS 5632
#define COLS 2048

typedef struct stream_run {
    bt_type type;
    size_t row_bytes, matrix_bytes;
    int n_mats, n_threads;
    uint8_t **mats; /* [n_mats] packed copies */
    const bt_q8 *x; /* one token */
    float *y;       /* [ROWS] */
    bool read_only; /* this pass: plain reads instead of the kernel */
    pthread_barrier_t barrier;
    uint64_t sums[MAX_THREADS]; /* the read passes' sums, so their loads stay */
} stream_run;

typedef struct stream_thread {
    stream_run *run;
    int id;
    pthread_barrier_t *start, *done;
    const bool *stop;
} stream_thread;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Bytes a read pass prefetches ahead, as the legacy types' one-token kernels do: on the Zen 3
 * this was written on, a plain loop without it read 24-25 GB/s and with it 27-28. */
#define READ_AHEAD 1024

static uint64_t sum_words(const uint8_t *p, size_t bytes) {
    uint64_t a = 0, b = 0, c = 0, d = 0, w[4];
    for (size_t i = 0; i + sizeof w <= bytes; i += sizeof w) {
        if (i % 64 == 0)
            __builtin_prefetch(p + i + READ_AHEAD);
        memcpy(w, p + i, sizeof w);
        a += w[0];
        b += w[1];
        c += w[2];
        d += w[3];
    }
    return a + b + c + d;
}

/* One pass over every matrix: this thread's rows [r0, r1) of each, a barrier after each. */
static void pass(stream_run *r, int id) {
    /* Shares in whole 16-row groups, as the forward pass's tasks are cut. */
    int64_t groups = ROWS / 16;
    int64_t r0 = groups * id / r->n_threads * 16, r1 = groups * (id + 1) / r->n_threads * 16;
    for (int m = 0; m < r->n_mats; m++) {
        if (r->read_only)
            r->sums[id] +=
                sum_words(r->mats[m] + (size_t)r0 * r->row_bytes, (size_t)(r1 - r0) * r->row_bytes);
        else
            bt_matmul_packed(r->type, r->mats[m], r->row_bytes, COLS, r->x, NULL, 1, r->y, ROWS, r0,
                             r1);
        pthread_barrier_wait(&r->barrier);
    }
}

static void *worker(void *p) {
    stream_thread *t = p;
    for (;;) {
        pthread_barrier_wait(t->start);
        if (*t->stop)
            return NULL;
        pass(t->run, t->id);
        pthread_barrier_wait(t->done);
    }
}

static int usage(const char *msg) {
    fprintf(stderr,
            "bench_stream: %s\nusage: bench_stream [--threads N] [--mib M] [--reps R] "
            "[type ...]\n",
            msg);
    return 2;
}

/* Random quants, and the f16 scales of every block set to 0.01 (at the end of a Q6_K block,
 * at its start in the others; Q4_1's, Q5_1's and the K-quants' second one too), so no
 * product is a NaN or an infinity. */
static void fill_weights(bt_type type, uint8_t *w, size_t bytes) {
    uint32_t s = 12345u;
    for (size_t i = 0; i < bytes; i++) {
        s = s * 1664525u + 1013904223u;
        w[i] = (uint8_t)(s >> 24);
    }
    const bt_type_traits *tr = bt_type_traits_of(type);
    bt_half h = bt_f32_to_half(0.01f);
    bool two = type == BT_TYPE_Q4_1 || type == BT_TYPE_Q5_1 || type == BT_TYPE_Q4_K ||
               type == BT_TYPE_Q5_K;
    for (size_t i = 0; i + tr->block_bytes <= bytes; i += tr->block_bytes) {
        size_t at = type == BT_TYPE_Q6_K ? tr->block_bytes - sizeof h : 0;
        memcpy(w + i + at, &h, sizeof h);
        if (two)
            memcpy(w + i + sizeof h, &h, sizeof h);
    }
}

/* R alternations of a kernel pass and a read pass over one type's matrices; prints a row. */
static int run_type(bt_type type, int n_threads, long mib, int reps) {
    stream_run r = {.type = type, .n_threads = n_threads};
    if (bt_type_row_bytes(type, COLS, &r.row_bytes) != BT_OK || !bt_pack_wanted(type, ROWS, COLS)) {
        printf("%-6s (no packed layout at this level)\n", bt_type_name(type));
        return 0;
    }
    r.matrix_bytes = r.row_bytes * ROWS;
    r.n_mats = (int)(((size_t)mib << 20) / r.matrix_bytes) + 1;
    uint8_t *file = malloc(r.matrix_bytes);
    float *x = malloc(sizeof(float) * COLS);
    bt_q8 *xq = malloc(sizeof(bt_q8) * (COLS / BT_QK));
    r.y = malloc(sizeof(float) * ROWS);
    r.mats = calloc((size_t)r.n_mats, sizeof *r.mats);
    int ok = file && x && xq && r.y && r.mats;
    for (int m = 0; ok && m < r.n_mats; m++)
        ok = (r.mats[m] = aligned_alloc(64, (r.matrix_bytes + 63) / 64 * 64)) != NULL;
    if (!ok) {
        fprintf(stderr, "bench_stream: cannot allocate %ld MiB of %s\n", mib, bt_type_name(type));
        return 1;
    }
    fill_weights(type, file, r.matrix_bytes);
    for (int m = 0; m < r.n_mats; m++)
        bt_pack_rows(type, file, r.row_bytes, ROWS, COLS, r.mats[m]);
    for (int i = 0; i < COLS; i++)
        x[i] = (float)(i % 17) / 17.0f - 0.5f;
    bt_quantize_q8(x, xq, COLS);
    r.x = xq;

    pthread_barrier_t start, done;
    pthread_barrier_init(&r.barrier, NULL, (unsigned)n_threads);
    pthread_barrier_init(&start, NULL, (unsigned)n_threads);
    pthread_barrier_init(&done, NULL, (unsigned)n_threads);
    bool stop = false;
    pthread_t th[MAX_THREADS];
    stream_thread args[MAX_THREADS];
    for (int i = 0; i < n_threads; i++)
        args[i] = (stream_thread){&r, i, &start, &done, &stop};
    for (int i = 1; i < n_threads; i++)
        if (pthread_create(&th[i], NULL, worker, &args[i]) != 0) {
            fprintf(stderr, "bench_stream: cannot start thread %d\n", i);
            return 1;
        }
    double best[2] = {0.0, 0.0};          /* kernel, read: GB/s */
    for (int rep = 0; rep <= reps; rep++) /* rep 0 warms up */
        for (int read = 0; read < 2; read++) {
            r.read_only = read;
            pthread_barrier_wait(&start);
            double t0 = now_s();
            pass(&r, 0);
            pthread_barrier_wait(&done);
            double gbs = (double)r.matrix_bytes * r.n_mats / (now_s() - t0) * 1e-9;
            if (rep > 0 && gbs > best[read])
                best[read] = gbs;
        }
    stop = true;
    pthread_barrier_wait(&start);
    for (int i = 1; i < n_threads; i++)
        pthread_join(th[i], NULL);
    printf("%-6s %8d %10.2f %10.2f %8.0f%%\n", bt_type_name(type), r.n_mats, best[0], best[1],
           100.0 * best[0] / best[1]);
    for (int m = 0; m < r.n_mats; m++)
        free(r.mats[m]);
    free(r.mats);
    free(file);
    free(x);
    free(xq);
    free(r.y);
    pthread_barrier_destroy(&r.barrier);
    pthread_barrier_destroy(&start);
    pthread_barrier_destroy(&done);
    return 0;
}

int main(int argc, char **argv) {
    long n_threads = sysconf(_SC_NPROCESSORS_ONLN), reps = 5;
    long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE); /* 0 or -1 where the C library cannot tell */
    long mib = l3 > 64L << 20 ? 4 * (l3 >> 20) : 256;
    const char *types[BT_TYPE_MAX_ID];
    int n_types = 0;
    for (int i = 1; i < argc; i++) {
        long *dst = NULL, lo = 1, hi = 0;
        if (strcmp(argv[i], "--threads") == 0)
            dst = &n_threads, hi = MAX_THREADS;
        else if (strcmp(argv[i], "--mib") == 0)
            dst = &mib, lo = 16, hi = 1 << 16;
        else if (strcmp(argv[i], "--reps") == 0)
            dst = &reps, hi = 1000;
        else if (argv[i][0] != '-' && n_types < BT_TYPE_MAX_ID) {
            types[n_types++] = argv[i];
            continue;
        } else
            return usage("unknown argument");
        if (i + 1 >= argc)
            return usage("a flag needs a value");
        char *end;
        *dst = strtol(argv[++i], &end, 10);
        if (*end != '\0' || *dst < lo || *dst > hi)
            return usage("a value is not a number in range (threads 1-64, mib 16-65536, "
                         "reps 1-1000)");
    }
    static const char *const packed[] = {"q4_0", "q4_1", "q5_0", "q5_1",
                                         "q8_0", "q4_K", "q5_K", "q6_K"};
    if (n_types == 0)
        for (size_t i = 0; i < sizeof packed / sizeof packed[0]; i++)
            types[n_types++] = packed[i];
    bt_kernels_init();
    printf("bench_stream: %s kernels, %ld threads, %dx%d matrices, %ld MiB of each type, best of "
           "%ld\n",
           bt_kernels_level_name(bt_kernels_level()), n_threads, ROWS, COLS, mib, reps);
    printf("%-6s %8s %10s %10s %9s\n", "type", "matrices", "GB/s", "read GB/s", "of read");
    for (int i = 0; i < n_types; i++) {
        bt_type type = BT_TYPE_MAX_ID;
        for (int t = 0; t < BT_TYPE_MAX_ID; t++)
            if (strcmp(bt_type_name((uint32_t)t), types[i]) == 0)
                type = (bt_type)t;
        if (type == BT_TYPE_MAX_ID)
            return usage("unknown type (q4_0, q4_1, q5_0, q5_1, q8_0, q4_K, q5_K, q6_K)");
        if (run_type(type, (int)n_threads, mib, (int)reps) != 0)
            return 1;
    }
    return 0;
}
