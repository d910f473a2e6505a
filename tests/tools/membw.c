/*
 * membw.c - the machine's memory read bandwidth, the ceiling of a decode step that streams the
 * weights (and at long contexts the KV cache) once per token.
 *
 *   membw [--threads N] [--mib M] [--reps R]      (defaults: every CPU, 1024 MiB, 5)
 *
 * Each thread sums its own slice of one buffer of M MiB (far larger than any cache) with
 * 64-bit loads, four independent accumulators wide so the compiler vectorises the loop; the
 * best of R passes is printed as GB/s (1e9 bytes), with the checksum so the loads cannot be
 * optimised away. Threads are created once and meet at a barrier before each pass, so a pass
 * measures reading only. docs/benchmarks.md states decode speed as a fraction of this number
 * (read_gb_s). Each plain pass alternates with one that also prefetches READ_AHEAD bytes ahead,
 * as the one-token kernels do (read_prefetch_gb_s): on the Zen 3 of stop 35 that read 2-7%
 * more, and the kernels of the legacy types stream at about that speed (bench_stream).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 256
#define READ_AHEAD 1024

typedef struct membw_run {
    const uint64_t *buf;
    size_t n_words;
    int n_threads;
    int reps;
    int prefetch; /* this pass: with a software prefetch (set between passes) */
    pthread_barrier_t start, done;
    uint64_t sums[MAX_THREADS];
} membw_run;

typedef struct membw_thread {
    membw_run *run;
    int id;
} membw_thread;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t sum_words(const uint64_t *w, size_t n) {
    uint64_t a = 0, b = 0, c = 0, d = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a += w[i];
        b += w[i + 1];
        c += w[i + 2];
        d += w[i + 3];
    }
    for (; i < n; i++)
        a += w[i];
    return a + b + c + d;
}

/* sum_words with a prefetch of the line READ_AHEAD bytes ahead at the start of each line. */
static uint64_t sum_words_prefetch(const uint64_t *w, size_t n) {
    uint64_t a = 0, b = 0, c = 0, d = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __builtin_prefetch(w + i + READ_AHEAD / 8);
        a += w[i] + w[i + 4];
        b += w[i + 1] + w[i + 5];
        c += w[i + 2] + w[i + 6];
        d += w[i + 3] + w[i + 7];
    }
    for (; i < n; i++)
        a += w[i];
    return a + b + c + d;
}

static void *reader(void *p) {
    membw_thread *t = p;
    membw_run *r = t->run;
    size_t per = r->n_words / (size_t)r->n_threads;
    const uint64_t *mine = r->buf + per * (size_t)t->id;
    for (int rep = 0; rep < 2 * r->reps; rep++) {
        pthread_barrier_wait(&r->start);
        r->sums[t->id] += r->prefetch ? sum_words_prefetch(mine, per) : sum_words(mine, per);
        pthread_barrier_wait(&r->done);
    }
    return NULL;
}

static int usage(const char *msg) {
    fprintf(stderr, "membw: %s\nusage: membw [--threads N] [--mib M] [--reps R]\n", msg);
    return 2;
}

int main(int argc, char **argv) {
    long n_threads = sysconf(_SC_NPROCESSORS_ONLN), mib = 1024, reps = 5;
    for (int i = 1; i < argc; i++) {
        long *dst = NULL, lo = 1, hi = 0;
        if (strcmp(argv[i], "--threads") == 0)
            dst = &n_threads, hi = MAX_THREADS;
        else if (strcmp(argv[i], "--mib") == 0)
            dst = &mib, lo = 64, hi = 1 << 20;
        else if (strcmp(argv[i], "--reps") == 0)
            dst = &reps, hi = 1000;
        else
            return usage("unknown argument");
        if (i + 1 >= argc)
            return usage("a flag needs a value");
        char *end;
        *dst = strtol(argv[++i], &end, 10);
        if (*end != '\0' || *dst < lo || *dst > hi)
            return usage("a value is not a number in range (threads 1-256, mib 64-1048576, "
                         "reps 1-1000)");
    }
    size_t bytes = (size_t)mib << 20;
    uint64_t *buf = aligned_alloc(64, bytes);
    if (!buf) {
        fprintf(stderr, "membw: cannot allocate %ld MiB\n", mib);
        return 1;
    }
    /* Written once, so every page is resident before the first timed pass. */
    for (size_t i = 0; i < bytes / 8; i++)
        buf[i] = i * 0x9E3779B97F4A7C15ull;

    membw_run r = {
        .buf = buf, .n_words = bytes / 8, .n_threads = (int)n_threads, .reps = (int)reps};
    pthread_barrier_init(&r.start, NULL, (unsigned)n_threads + 1);
    pthread_barrier_init(&r.done, NULL, (unsigned)n_threads + 1);
    pthread_t th[MAX_THREADS];
    membw_thread args[MAX_THREADS];
    for (int i = 0; i < n_threads; i++) {
        args[i] = (membw_thread){&r, i};
        if (pthread_create(&th[i], NULL, reader, &args[i]) != 0) {
            fprintf(stderr, "membw: cannot start thread %d\n", i);
            return 1;
        }
    }
    double best[2] = {0.0, 0.0}; /* plain, prefetch */
    size_t read = r.n_words / (size_t)n_threads * (size_t)n_threads * 8;
    for (int pass = 0; pass < 2 * reps; pass++) {
        r.prefetch = pass % 2;
        double t0 = now_s();
        pthread_barrier_wait(&r.start);
        pthread_barrier_wait(&r.done);
        double gbs = (double)read / (now_s() - t0) / 1e9;
        best[pass % 2] = gbs > best[pass % 2] ? gbs : best[pass % 2];
    }
    uint64_t check = 0;
    for (int i = 0; i < n_threads; i++) {
        pthread_join(th[i], NULL);
        check += r.sums[i];
    }
    printf("{\"threads\":%ld,\"mib\":%ld,\"reps\":%ld,\"read_gb_s\":%.2f,"
           "\"read_prefetch_gb_s\":%.2f,\"checksum\":%llu}\n",
           n_threads, mib, reps, best[0], best[1], (unsigned long long)check);
    free(buf);
    return 0;
}
