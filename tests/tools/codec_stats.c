/*
 * codec_stats.c - what each activation codec costs and loses on a set of hidden states:
 * bytes per row (token) on the wire, compression ratio vs f32, encode and decode MB/s (of
 * f32 data, one thread) and max abs / RMS error vs f32, for every kind without zstd and with
 * zstd levels 1 and 3. The rows are coded in micro-batches of BATCH rows, as a stage sends
 * them.
 *
 *   codec_stats FILE N_EMBD [BATCH]            FILE: raw little-endian f32, rows of N_EMBD
 *   codec_stats --random N_ROWS N_EMBD [BATCH] N(0,1) with ~1/150 outliers of +-50
 *
 * BATCH defaults to 64. Timings are the best of several passes over all rows.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "codec.h"

#define MIN_PASS_US 200000 /* repeat passes until this much time, keep the best */

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;

static double rng_unit(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) / 9007199254740992.0;
}

static float *read_rows(const char *path, int n_embd, int *n_rows) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "codec_stats: cannot open %s\n", path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    size_t row_bytes = (size_t)n_embd * 4;
    if (size <= 0 || (size_t)size % row_bytes != 0) {
        fprintf(stderr, "codec_stats: %s: %ld bytes is not a whole number of %zu-byte rows\n", path,
                size, row_bytes);
        fclose(f);
        return NULL;
    }
    float *x = malloc((size_t)size);
    if (!x || fread(x, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "codec_stats: cannot read %s\n", path);
        free(x);
        fclose(f);
        return NULL;
    }
    fclose(f);
    *n_rows = (int)((size_t)size / row_bytes);
    return x;
}

static float *random_rows(int n_embd, int n_rows) {
    size_t n = (size_t)n_embd * (size_t)n_rows;
    float *x = malloc(n * 4);
    if (!x)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        double g = sqrt(-2.0 * log(rng_unit())) * cos(6.283185307179586 * rng_unit());
        if (rng_unit() < 1.0 / 150.0)
            g = rng_unit() < 0.5 ? 50.0 : -50.0;
        x[i] = (float)g;
    }
    return x;
}

typedef struct stats {
    size_t bytes;
    double enc_us, dec_us; /* best pass */
    double max_err, rms_err;
    int n_nonfinite_out; /* decoded values that are NaN/Inf where the input was finite */
} stats;

/* Codes all rows in batches; returns 0 or prints the error and returns -1. */
static int measure(bt_codec_kind kind, int level, const float *x, int n_embd, int n_rows, int batch,
                   stats *s) {
    bt_codec_params p = {.kind = kind, .zstd_level = level, .n_embd = n_embd, .max_rows = batch};
    bt_codec *c = NULL;
    bt_error err;
    bt_error_init(&err);
    if (bt_codec_new(&p, &c, &err) != BT_OK) {
        printf("%-5s zstd %2d  skipped: %s\n", bt_codec_kind_name(kind), level, err.msg);
        return -1;
    }
    int n_batches = (n_rows + batch - 1) / batch;
    size_t cap = bt_codec_max_encoded_bytes(c, batch);
    size_t n = (size_t)n_embd * (size_t)n_rows;
    uint8_t *enc = malloc(cap * (size_t)n_batches);
    size_t *len = malloc(sizeof *len * (size_t)n_batches);
    float *y = malloc(n * 4);
    int rc = -1;
    if (!enc || !len || !y) {
        fprintf(stderr, "codec_stats: out of memory\n");
        goto done;
    }
    memset(s, 0, sizeof *s);
    s->enc_us = s->dec_us = 1e300;
    for (int pass = 0; pass < 2; pass++) { /* 0: encode, 1: decode */
        int64_t t_start = bt_now_us();
        do {
            int64_t t0 = bt_now_us();
            for (int b = 0; b < n_batches; b++) {
                int r0 = b * batch, rows = n_rows - r0 < batch ? n_rows - r0 : batch;
                const float *xb = x + (size_t)r0 * (size_t)n_embd;
                float *yb = y + (size_t)r0 * (size_t)n_embd;
                bt_status st =
                    pass == 0
                        ? bt_codec_encode(c, xb, rows, enc + (size_t)b * cap, cap, &len[b], &err)
                        : bt_codec_decode(c, kind, level > 0, enc + (size_t)b * cap, len[b], rows,
                                          yb, &err);
                if (st != BT_OK) {
                    printf("%-5s zstd %2d  failed: %s\n", bt_codec_kind_name(kind), level, err.msg);
                    goto done;
                }
            }
            double us = (double)(bt_now_us() - t0);
            double *best = pass == 0 ? &s->enc_us : &s->dec_us;
            *best = us < *best ? us : *best;
        } while (bt_now_us() - t_start < MIN_PASS_US);
    }
    for (int b = 0; b < n_batches; b++)
        s->bytes += len[b];
    double sq = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i]))
            continue;
        if (!isfinite(y[i])) {
            s->n_nonfinite_out++;
            continue;
        }
        double e = fabs((double)y[i] - (double)x[i]);
        s->max_err = e > s->max_err ? e : s->max_err;
        sq += e * e;
    }
    s->rms_err = sqrt(sq / (double)n);
    rc = 0;
done:
    free(enc);
    free(len);
    free(y);
    bt_codec_free(c);
    return rc;
}

int main(int argc, char **argv) {
    int n_rows = 0, n_embd, batch = 64;
    float *x;
    const char *what;
    if (argc >= 4 && strcmp(argv[1], "--random") == 0) {
        n_rows = atoi(argv[2]);
        n_embd = atoi(argv[3]);
        batch = argc > 4 ? atoi(argv[4]) : batch;
        if (n_rows < 1 || n_embd < 1) {
            fprintf(stderr, "codec_stats: N_ROWS and N_EMBD must be >= 1\n");
            return 2;
        }
        x = random_rows(n_embd, n_rows);
        what = "random N(0,1) + 1/150 outliers of +-50";
    } else if (argc >= 3 && argv[1][0] != '-') {
        n_embd = atoi(argv[2]);
        batch = argc > 3 ? atoi(argv[3]) : batch;
        if (n_embd < 1) {
            fprintf(stderr, "codec_stats: N_EMBD must be >= 1\n");
            return 2;
        }
        x = read_rows(argv[1], n_embd, &n_rows);
        what = argv[1];
    } else {
        fprintf(stderr, "usage: codec_stats FILE N_EMBD [BATCH]\n"
                        "       codec_stats --random N_ROWS N_EMBD [BATCH]\n");
        return 2;
    }
    if (!x)
        return 1;
    if (batch < 1)
        batch = 1;
    if (batch > n_rows)
        batch = n_rows;
    printf("%s: %d rows x n_embd %d, batches of %d rows; f32 = %d B/row\n", what, n_rows, n_embd,
           batch, n_embd * 4);
    printf("%-5s %-7s %11s %7s %10s %10s %11s %11s\n", "kind", "zstd", "bytes/row", "ratio",
           "enc MB/s", "dec MB/s", "max |err|", "rms err");
    static const int levels[] = {0, 1, 3};
    double mb = (double)n_rows * n_embd * 4 / 1e6;
    for (int k = 0; k < BT_CODEC_KIND_COUNT; k++) {
        for (int l = 0; l < 3; l++) {
            stats s;
            if (measure((bt_codec_kind)k, levels[l], x, n_embd, n_rows, batch, &s) != 0)
                continue;
            char z[16];
            snprintf(z, sizeof z, levels[l] ? "%d" : "-", levels[l]);
            printf("%-5s %-7s %11.1f %7.3f %10.0f %10.0f %11.3g %11.3g", bt_codec_kind_name(k), z,
                   (double)s.bytes / n_rows, (double)n_rows * n_embd * 4 / (double)s.bytes,
                   mb / (s.enc_us * 1e-6), mb / (s.dec_us * 1e-6), s.max_err, s.rms_err);
            if (s.n_nonfinite_out)
                printf("  (%d finite inputs decoded non-finite)", s.n_nonfinite_out);
            printf("\n");
        }
    }
    free(x);
    return 0;
}
