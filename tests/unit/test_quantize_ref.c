/*
 * test_quantize_ref.c - the reference quantizers (tests/support/quantize_ref.c) against
 * llama.cpp's own bytes, and their round-trip error.
 *
 * 1. Known answers: tests/data/quant/ggml_vectors.txt holds one row of 1280 floats and what
 *    ggml's quantize_row_<type>_ref made of it for every type we quantize, plus ggml's
 *    dequantize_row_<type> of those bytes (written offline by tests/tools/
 *    make_quant_vectors.py). Our quantizer must give the same bytes, and bt_dequant_row the
 *    same float bits: tests/tools/requant relies on both to rebuild llama-quantize's files.
 * 2. Round trip: random rows of several scales, quantized then dequantized, within a
 *    relative RMS error bound per type (a quantizer that drops its search or mis-packs
 *    a level fails it), and every level of the packed form in range.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "quantize_ref.h"
#include "tensor_type.h"

enum { MAX_N = 4096 };

typedef struct {
    int n;
    float input[MAX_N];
    int n_quant;
    struct {
        bt_type type;
        uint8_t bytes[MAX_N * 2];
        size_t n_bytes;
        bool has_dequant;
        uint32_t dequant[MAX_N];
    } quant[16];
} vectors;

static int hex_nibble(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Reads space-separated 8-digit hex words into out (up to max); returns the count or -1. */
static int read_words(char *s, uint32_t *out, int max) {
    int n = 0;
    for (char *tok = strtok(s, " \n"); tok; tok = strtok(NULL, " \n")) {
        if (n == max || strlen(tok) != 8)
            return -1;
        out[n++] = (uint32_t)strtoul(tok, NULL, 16);
    }
    return n;
}

static bool load_vectors(const char *path, vectors *v) {
    FILE *f = fopen(path, "r");
    if (!f) {
        check_fail(__FILE__, __LINE__, "%s: cannot open", path);
        return false;
    }
    static char line[1 << 17];
    v->n = 0;
    v->n_quant = 0;
    bool ok = true;
    while (ok && fgets(line, sizeof line, f)) {
        char kind[16], tname[16];
        int off = 0;
        if (line[0] == '#' || sscanf(line, "%15s %15s %n", kind, tname, &off) < 2)
            continue;
        bt_type t;
        if (strcmp(kind, "input") == 0) {
            static uint32_t bits[MAX_N];
            int n = read_words(line + off, bits, MAX_N);
            ok = n == atoi(tname);
            for (int i = 0; ok && i < n; i++)
                memcpy(&v->input[i], &bits[i], sizeof(float));
            v->n = n;
        } else if (strcmp(kind, "quant") == 0 && bt_quantize_type_from_name(tname, &t) == BT_OK &&
                   v->n_quant < 16) {
            const char *h = line + off;
            size_t n = 0;
            while (hex_nibble(h[2 * n]) >= 0 && hex_nibble(h[2 * n + 1]) >= 0 &&
                   n < sizeof v->quant[0].bytes) {
                v->quant[v->n_quant].bytes[n] =
                    (uint8_t)(hex_nibble(h[2 * n]) << 4 | hex_nibble(h[2 * n + 1]));
                n++;
            }
            v->quant[v->n_quant].type = t;
            v->quant[v->n_quant].n_bytes = n;
            v->quant[v->n_quant].has_dequant = false;
            v->n_quant++;
        } else if (strcmp(kind, "dequant") == 0 && v->n_quant > 0 &&
                   bt_quantize_type_from_name(tname, &t) == BT_OK &&
                   v->quant[v->n_quant - 1].type == t) {
            ok = read_words(line + off, v->quant[v->n_quant - 1].dequant, MAX_N) == v->n;
            v->quant[v->n_quant - 1].has_dequant = ok;
        } else {
            check_fail(__FILE__, __LINE__, "%s: unexpected line '%.40s'", path, line);
            ok = false;
        }
    }
    fclose(f);
    if (!ok || v->n == 0 || v->n_quant == 0) {
        check_fail(__FILE__, __LINE__, "%s: malformed (n %d, %d types)", path, v->n, v->n_quant);
        return false;
    }
    return true;
}

static void test_known_answers(void) {
    const char *data = check_data_dir("ggml known-answer vectors");
    if (!data)
        return;
    char path[1024];
    snprintf(path, sizeof path, "%s/quant/ggml_vectors.txt", data);
    static vectors v;
    if (!load_vectors(path, &v))
        return;
    /* Every type this file quantizes is covered, K-quants included. */
    static const bt_type want[] = {BT_TYPE_Q4_0, BT_TYPE_Q4_1, BT_TYPE_Q5_0, BT_TYPE_Q5_1,
                                   BT_TYPE_Q8_0, BT_TYPE_Q4_K, BT_TYPE_Q5_K, BT_TYPE_Q6_K};
    for (size_t w = 0; w < sizeof want / sizeof want[0]; w++) {
        bool found = false;
        for (int q = 0; q < v.n_quant; q++)
            found |= v.quant[q].type == want[w];
        if (!found)
            check_fail(__FILE__, __LINE__, "%s: no vector for %s", path,
                       bt_type_name((uint32_t)want[w]));
    }
    bool saw_dequant_q4_1 = false, saw_dequant_q8_0 = false;
    for (int q = 0; q < v.n_quant; q++) {
        const bt_type t = v.quant[q].type;
        const char *name = bt_type_name((uint32_t)t);
        static uint8_t got[MAX_N * 2];
        size_t row_bytes = 0;
        CHECK_OK(bt_type_row_bytes((uint32_t)t, v.n, &row_bytes));
        CHECK_EQ_INT(v.quant[q].n_bytes, row_bytes);
        CHECK_OK(bt_quantize_row_ref(t, v.input, got, v.n));
        const size_t blk = bt_type_traits_of((uint32_t)t)->block_bytes;
        size_t first = row_bytes;
        for (size_t i = 0; i < row_bytes && first == row_bytes; i++)
            if (got[i] != v.quant[q].bytes[i])
                first = i;
        if (first == row_bytes)
            bt_check_passed++;
        else
            check_fail(__FILE__, __LINE__,
                       "%s: byte %zu (block %zu, offset %zu) is 0x%02x, ggml wrote 0x%02x", name,
                       first, first / blk, first % blk, got[first], v.quant[q].bytes[first]);
        if (!v.quant[q].has_dequant)
            continue;
        saw_dequant_q4_1 |= t == BT_TYPE_Q4_1;
        saw_dequant_q8_0 |= t == BT_TYPE_Q8_0;
        static float y[MAX_N];
        bt_dequant_row(t, v.quant[q].bytes, y, v.n);
        int bad = -1;
        for (int i = 0; i < v.n && bad < 0; i++) {
            uint32_t b;
            memcpy(&b, &y[i], sizeof b);
            if (b != v.quant[q].dequant[i])
                bad = i;
        }
        if (bad < 0)
            bt_check_passed++;
        else
            check_fail(__FILE__, __LINE__, "%s dequant: element %d is %.9g, ggml's %08x", name, bad,
                       (double)y[bad], v.quant[q].dequant[bad]);
    }
    CHECK(saw_dequant_q4_1 && saw_dequant_q8_0);
}

/* Relative RMS error of quantize -> dequantize over rows of 1024 at three scales. */
static void test_round_trip(void) {
    static const struct {
        bt_type type;
        double max_rel_rmse;
    } cases[] = {/* measured maxima over the three scales, plus ~20% */
                 {BT_TYPE_Q8_0, 0.011}, {BT_TYPE_Q5_0, 0.08}, {BT_TYPE_Q5_1, 0.055},
                 {BT_TYPE_Q4_0, 0.165}, {BT_TYPE_Q4_1, 0.12}, {BT_TYPE_Q4_K, 0.11},
                 {BT_TYPE_Q5_K, 0.054}, {BT_TYPE_Q6_K, 0.032}};
    enum { NC = sizeof cases / sizeof cases[0] };
    enum { N = 1024 };
    static float x[N], y[N];
    static uint8_t q[N * 2];
    static const float scales[] = {1e-3f, 0.05f, 30.0f};
    double errs[NC];
    for (size_t sc = 0; sc < sizeof scales / sizeof scales[0]; sc++) {
        uint32_t s = 777u + (uint32_t)sc;
        for (int i = 0; i < N; i++) {
            /* sum of 4 uniforms: roughly normal, like weights, with a few 6x outliers */
            float u = 0;
            for (int k = 0; k < 4; k++) {
                s = s * 1664525u + 1013904223u;
                u += (float)(s >> 8) / (float)(1u << 24) - 0.5f;
            }
            x[i] = u * scales[sc] * (i % 101 == 0 ? 6.0f : 1.0f);
        }
        double rms = 0;
        for (int i = 0; i < N; i++)
            rms += (double)x[i] * x[i];
        rms = sqrt(rms / N);
        for (size_t c = 0; c < NC; c++) {
            const bt_type t = cases[c].type;
            CHECK_OK(bt_quantize_row_ref(t, x, q, N));
            bt_dequant_row(t, q, y, N);
            double err = 0;
            for (int i = 0; i < N; i++)
                err += (double)(x[i] - y[i]) * (x[i] - y[i]);
            err = sqrt(err / N) / rms;
            errs[c] = err;
            if (getenv("BT_TEST_VERBOSE"))
                printf("scale %g %s rel rmse %.4f\n", (double)scales[sc], bt_type_name((uint32_t)t),
                       err);
            if (err <= cases[c].max_rel_rmse)
                bt_check_passed++;
            else
                check_fail(__FILE__, __LINE__, "scale %g %s: relative rmse %g > %g",
                           (double)scales[sc], bt_type_name((uint32_t)t), err,
                           cases[c].max_rel_rmse);
        }
        /* The K-quants' search beats the legacy type of the same bits (q4_K < q4_1,
         * q5_K < q5_1), and more bits help (q6_K < q5_K < q4_K). */
        CHECK(errs[5] < errs[4] && errs[6] < errs[2] && errs[7] < errs[6] && errs[6] < errs[5]);
    }
    /* An all-zero row stays zero in every type (the K-quants' early exits). */
    memset(x, 0, sizeof x);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        CHECK_OK(bt_quantize_row_ref(cases[c].type, x, q, N));
        bt_dequant_row(cases[c].type, q, y, N);
        int nonzero = 0;
        for (int i = 0; i < N; i++)
            nonzero += y[i] != 0.0f;
        CHECK_EQ_INT(nonzero, 0);
    }
    CHECK_EQ_INT(bt_quantize_row_ref(BT_TYPE_Q5_K, x, q, 320), BT_ERR_FORMAT);
    bt_type t;
    CHECK_OK(bt_quantize_type_from_name("Q5_K", &t));
    CHECK_EQ_INT(t, BT_TYPE_Q5_K);
}

int main(void) {
    test_known_answers();
    test_round_trip();
    return check_finish();
}
