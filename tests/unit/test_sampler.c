/*
 * test_sampler.c - the sampler chain (worker/sampler.h) against direct computations written
 * here: each filter (top_k, typical_p, top_p, min_p) and their combinations keep exactly the
 * right candidates with the right renormalised probabilities, also on a 5000-token row that
 * takes the partial-selection paths; temperature; penalties on a fixed history; logit_bias;
 * min_tokens bans the end-of-generation ids; reported logprobs and top_logprobs are the raw
 * log-softmax; the per-sequence history (add, reset, copy); greedy ties; seeded draws are
 * reproducible and, over 20,000 positions, follow the softmax.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "sampler.h"

#define V 10
#define BIG 5000

/* ids 1 and 4 tie at the top; id 5 is negative (repetition penalty multiplies it) */
static const float L10[V] = {1.0f, 3.0f, 2.0f, 0.5f, 3.0f, -1.0f, 2.5f, 0.0f, -2.0f, 1.5f};

static bt_sampler *S10, *SBIG;
static int32_t ids[BIG];
static double probs[BIG];

/* ---- direct reference computations ---- */

/* order[] = ids sorted by key ascending, ties by lower id (insertion sort: obviously right) */
static void order_by(const double *key, const int *keep, int n, int *order, int *n_out) {
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (!keep[i])
            continue;
        int j = m++;
        while (j > 0 &&
               (key[order[j - 1]] > key[i] || (key[order[j - 1]] == key[i] && order[j - 1] > i))) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
    *n_out = m;
}

/* softmax of w/t over keep, 0 elsewhere */
static void ref_softmax(const float *w, const int *keep, int n, double t, double *out) {
    double mx = -INFINITY, sum = 0.0;
    for (int i = 0; i < n; i++)
        if (keep[i] && w[i] > mx)
            mx = w[i];
    for (int i = 0; i < n; i++) {
        out[i] = keep[i] ? exp(((double)w[i] - mx) / t) : 0.0;
        sum += out[i];
    }
    for (int i = 0; i < n; i++)
        out[i] /= sum;
}

static void ref_top_k(const float *w, int *keep, int n, int k) {
    double *key = malloc(sizeof *key * (size_t)n);
    int *ord = malloc(sizeof *ord * (size_t)n), m;
    for (int i = 0; i < n; i++)
        key[i] = -(double)w[i];
    order_by(key, keep, n, ord, &m);
    for (int j = k; j < m; j++)
        keep[ord[j]] = 0;
    free(key);
    free(ord);
}

static void ref_top_p(const float *w, int *keep, int n, double top_p) {
    double *key = malloc(sizeof *key * (size_t)n), *pr = malloc(sizeof *pr * (size_t)n);
    int *ord = malloc(sizeof *ord * (size_t)n), m;
    ref_softmax(w, keep, n, 1.0, pr);
    for (int i = 0; i < n; i++)
        key[i] = -(double)w[i];
    order_by(key, keep, n, ord, &m);
    double cum = 0.0;
    int j = 0;
    for (; j < m; j++) {
        cum += pr[ord[j]];
        if (cum >= top_p)
            break;
    }
    for (j = j + 1; j < m; j++)
        keep[ord[j]] = 0;
    free(key);
    free(pr);
    free(ord);
}

static void ref_typical(const float *w, int *keep, int n, double typ) {
    double *key = malloc(sizeof *key * (size_t)n), *pr = malloc(sizeof *pr * (size_t)n);
    int *ord = malloc(sizeof *ord * (size_t)n), m;
    ref_softmax(w, keep, n, 1.0, pr);
    double h = 0.0;
    for (int i = 0; i < n; i++)
        if (keep[i] && pr[i] > 0)
            h -= pr[i] * log(pr[i]);
    for (int i = 0; i < n; i++)
        key[i] = fabs(-log(pr[i]) - h);
    order_by(key, keep, n, ord, &m);
    double cum = 0.0;
    int j = 0;
    for (; j < m; j++) {
        cum += pr[ord[j]];
        if (cum > typ)
            break;
    }
    for (j = j + 1; j < m; j++)
        keep[ord[j]] = 0;
    free(key);
    free(pr);
    free(ord);
}

static void ref_min_p(const float *w, int *keep, int n, double min_p) {
    double *pr = malloc(sizeof *pr * (size_t)n), pmax = 0.0;
    ref_softmax(w, keep, n, 1.0, pr);
    for (int i = 0; i < n; i++)
        if (pr[i] > pmax)
            pmax = pr[i];
    for (int i = 0; i < n; i++)
        if (keep[i] && pr[i] < min_p * pmax)
            keep[i] = 0;
    free(pr);
}

/* The sampler's distribution as a dense [n] array. */
static void got_dist(bt_sampler *s, const bt_sampler_params *p, const bt_sampler_history *h,
                     const float *logits, int n, double *dense) {
    int m = bt_sampler_distribution(s, p, h, logits, ids, probs);
    for (int i = 0; i < n; i++)
        dense[i] = 0.0;
    double sum = 0.0;
    for (int i = 0; i < m; i++) {
        CHECK(ids[i] >= 0 && ids[i] < n);
        CHECK(dense[ids[i]] == 0.0); /* each id once */
        dense[ids[i]] = probs[i];
        sum += probs[i];
    }
    CHECK_NEAR(sum, 1.0, 1e-12);
}

/* Same kept set (exactly) and probabilities within 1e-12. */
static void check_dist(const char *what, const double *got, const double *want, int n) {
    int bad = 0;
    for (int i = 0; i < n; i++) {
        if ((got[i] > 0) != (want[i] > 0) || fabs(got[i] - want[i]) > 1e-12) {
            if (bad++ < 4)
                check_fail(__FILE__, __LINE__, "%s: token %d: p %.15g, want %.15g", what, i, got[i],
                           want[i]);
        }
    }
    if (!bad)
        bt_check_passed++;
}

/* Reference chain with no bias or penalties: the filters in the sampler's order. */
static void ref_chain(const float *w, int n, const bt_sampler_params *p, double *out) {
    int *keep = malloc(sizeof *keep * (size_t)n);
    for (int i = 0; i < n; i++)
        keep[i] = w[i] > -INFINITY;
    if (p->top_k > 0)
        ref_top_k(w, keep, n, p->top_k);
    if (p->typical_p < 1.0f)
        ref_typical(w, keep, n, p->typical_p);
    if (p->top_p < 1.0f)
        ref_top_p(w, keep, n, p->top_p);
    if (p->min_p > 0.0f)
        ref_min_p(w, keep, n, p->min_p);
    ref_softmax(w, keep, n, p->temperature, out);
    free(keep);
}

static int n_kept(const double *d, int n) {
    int k = 0;
    for (int i = 0; i < n; i++)
        k += d[i] > 0;
    return k;
}

/* ---- tests ---- */

static void test_filters(const char *name, const float *logits, int n, bt_sampler *s,
                         bt_sampler_params p, int want_kept) {
    double *got = malloc(sizeof *got * (size_t)n), *want = malloc(sizeof *want * (size_t)n);
    got_dist(s, &p, NULL, logits, n, got);
    ref_chain(logits, n, &p, want);
    check_dist(name, got, want, n);
    if (want_kept > 0 && n_kept(want, n) != want_kept)
        check_fail(__FILE__, __LINE__, "%s: reference keeps %d, the test expects %d", name,
                   n_kept(want, n), want_kept);
    free(got);
    free(want);
}

static void test_small_filters(void) {
    bt_sampler_params p = bt_sampler_default_params();
    p.temperature = 1.0f;
    test_filters("none", L10, V, S10, p, V);
    p.top_k = 1;
    test_filters("top_k 1 (tie: lower id)", L10, V, S10, p, 1);
    double d[V];
    got_dist(S10, &p, NULL, L10, V, d);
    CHECK(d[1] == 1.0);
    p.top_k = 3;
    test_filters("top_k 3", L10, V, S10, p, 3);
    got_dist(S10, &p, NULL, L10, V, d);
    CHECK(d[1] > 0 && d[4] > 0 && d[6] > 0);
    p.top_k = 0;
    p.top_p = 0.6f;
    test_filters("top_p 0.6", L10, V, S10, p, 3);
    p.top_p = 0.95f;
    test_filters("top_p 0.95", L10, V, S10, p, 0);
    p.top_p = 1.0f;
    p.min_p = 0.2f;
    test_filters("min_p 0.2", L10, V, S10, p, 0);
    p.min_p = 0.0f;
    p.typical_p = 0.5f;
    test_filters("typical_p 0.5", L10, V, S10, p, 0);
    p.typical_p = 0.9f;
    test_filters("typical_p 0.9", L10, V, S10, p, 0);
    p.typical_p = 1.0f;
    p.temperature = 0.7f;
    test_filters("temperature 0.7", L10, V, S10, p, V);
    p.temperature = 2.5f;
    test_filters("temperature 2.5", L10, V, S10, p, V);
    /* combinations */
    p = bt_sampler_default_params();
    p.temperature = 0.7f;
    p.top_k = 6;
    p.top_p = 0.9f;
    p.min_p = 0.1f;
    test_filters("top_k 6 + top_p 0.9 + min_p 0.1, T 0.7", L10, V, S10, p, 0);
    p.typical_p = 0.8f;
    test_filters("top_k 6 + typical 0.8 + top_p 0.9 + min_p 0.1, T 0.7", L10, V, S10, p, 0);
    p = bt_sampler_default_params();
    p.temperature = 1.3f;
    p.typical_p = 0.95f;
    p.top_p = 0.7f;
    test_filters("typical 0.95 + top_p 0.7, T 1.3", L10, V, S10, p, 0);
}

/* 5000 logits from an LCG: the partial selections (quickselect, prefix doubling) must keep
 * what a full sort keeps. */
static void test_big_filters(void) {
    static float big[BIG];
    uint64_t x = 12345;
    for (int i = 0; i < BIG; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        big[i] = (float)((double)(x >> 11) * 0x1.0p-53 * 8.0 - 4.0);
    }
    big[77] = big[4000] = 6.0f; /* a tie at the top */
    bt_sampler_params p = bt_sampler_default_params();
    p.temperature = 0.9f;
    p.top_k = 50;
    test_filters("big top_k 50", big, BIG, SBIG, p, 50);
    p.top_k = 0;
    p.top_p = 0.5f; /* needs far more than the first prefix of 64 */
    test_filters("big top_p 0.5", big, BIG, SBIG, p, 0);
    p.top_p = 0.999f;
    test_filters("big top_p 0.999", big, BIG, SBIG, p, 0);
    p.top_p = 1.0f;
    p.typical_p = 0.3f;
    test_filters("big typical 0.3", big, BIG, SBIG, p, 0);
    p.min_p = 0.05f;
    p.top_k = 700;
    p.top_p = 0.8f;
    test_filters("big top_k 700 + typical 0.3 + top_p 0.8 + min_p 0.05", big, BIG, SBIG, p, 0);
    p = bt_sampler_default_params();
    p.temperature = 0.9f;
    p.min_p = 0.3f;
    test_filters("big min_p 0.3", big, BIG, SBIG, p, 0);

    /* The first filter gathers only the candidates above a threshold: rows where it must
     * step past many ties, banned (-inf) and NaN logits, a wide range, and a range where
     * max - 1 rounds back to max in float. */
    static float row[BIG];
    for (int i = 0; i < BIG; i++)
        row[i] = roundf(big[i] * 2.0f) / 2.0f; /* 17 values, hundreds of ties each */
    for (int i = 0; i < BIG; i += 7)
        row[i] = -INFINITY;
    row[5] = NAN;
    p = bt_sampler_default_params();
    p.temperature = 1.0f;
    p.top_k = 50;
    test_filters("ties, -inf and NaN: top_k 50", row, BIG, SBIG, p, 50);
    p.top_k = 0;
    p.top_p = 0.5f;
    test_filters("ties, -inf and NaN: top_p 0.5", row, BIG, SBIG, p, 0);
    for (int i = 0; i < BIG; i++)
        row[i] = big[i] * 25.0f; /* -100 .. 150 */
    p.top_p = 0.99f;
    test_filters("wide: top_p 0.99", row, BIG, SBIG, p, 0);
    p.top_p = 1.0f;
    p.top_k = 3000;
    test_filters("wide: top_k 3000", row, BIG, SBIG, p, 3000);
    for (int i = 0; i < BIG; i++)
        row[i] = 1e8f + big[i] * 64.0f; /* float steps of 8 */
    p.top_k = 10;
    test_filters("near 1e8: top_k 10", row, BIG, SBIG, p, 10);
    p.top_k = 0;
    p.top_p = 0.9f;
    test_filters("near 1e8: top_p 0.9", row, BIG, SBIG, p, 0);

    /* no filter: every finite logit is weighed straight from the row (5000 of them, and 5003,
     * with a tail past the 8 at a time), or with banned ones through the candidates */
    p = bt_sampler_default_params();
    p.temperature = 0.7f;
    test_filters("big, temperature only", big, BIG, SBIG, p, BIG);
    bt_sampler *s3;
    CHECK_OK(bt_sampler_new(BIG - 3, NULL, 0, &s3, NULL));
    if (s3) {
        test_filters("big - 3, temperature only", big, BIG - 3, s3, p, BIG - 3);
        bt_sampler_free(s3);
    }
    for (int i = 0; i < BIG; i++)
        row[i] = i % 7 ? big[i] : -INFINITY;
    test_filters("banned, temperature only", row, BIG, SBIG, p, BIG - (BIG + 6) / 7);
}

static void test_penalties_bias_min_tokens(void) {
    bt_sampler_hist *hist;
    CHECK_OK(bt_sampler_hist_new(3, V, &hist, NULL));
    /* prompt 2 3 3 5, generated 4 4 7 */
    const int32_t prompt[] = {2, 3, 3, 5}, gen[] = {4, 4, 7};
    for (int i = 0; i < 4; i++)
        bt_sampler_hist_add(hist, 1, prompt[i], false);
    for (int i = 0; i < 3; i++)
        bt_sampler_hist_add(hist, 1, gen[i], true);
    bt_sampler_history h = bt_sampler_hist_view(hist, 1, 3);

    bt_sampler_params p = bt_sampler_default_params();
    p.temperature = 1.0f;
    p.repetition_penalty = 1.3f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    p.logit_bias[0] = (bt_logit_bias){.token = 0, .bias = 2.0f};
    p.logit_bias[1] = (bt_logit_bias){.token = 8, .bias = -100.0f};
    p.logit_bias[2] = (bt_logit_bias){.token = 3, .bias = 0.75f};
    p.n_logit_bias = 3;
    /* direct: bias, then repetition on {2,3,4,5,7}, then frequency/presence on {4:2, 7:1} */
    float w[V];
    memcpy(w, L10, sizeof w);
    w[0] += 2.0f;
    w[8] += -100.0f;
    w[3] += 0.75f;
    const int seen[] = {2, 3, 4, 5, 7};
    for (int i = 0; i < 5; i++) {
        int t = seen[i];
        w[t] = w[t] > 0 ? w[t] / 1.3f : w[t] * 1.3f;
    }
    w[4] -= 0.25f * 2.0f;
    w[4] -= 0.5f;
    w[7] -= 0.25f * 1.0f;
    w[7] -= 0.5f;
    int keep[V];
    for (int i = 0; i < V; i++)
        keep[i] = 1;
    double want[V], got[V];
    ref_softmax(w, keep, V, 1.0, want);
    got_dist(S10, &p, &h, L10, V, got);
    check_dist("bias + repetition + presence + frequency", got, want, V);

    /* counts only over generated tokens: presence/frequency alone leave prompt tokens be */
    p = bt_sampler_default_params();
    p.temperature = 1.0f;
    p.frequency_penalty = -1.0f;
    memcpy(w, L10, sizeof w);
    w[4] -= -1.0f * 2.0f;
    w[7] -= -1.0f;
    ref_softmax(w, keep, V, 1.0, want);
    got_dist(S10, &p, &h, L10, V, got);
    check_dist("frequency -1 (generated only)", got, want, V);

    /* greedy sees bias and penalties: token 0 + 2 = 3.0 ties 1 and 4, lowest id wins */
    p = bt_sampler_default_params();
    p.logit_bias[0] = (bt_logit_bias){.token = 0, .bias = 2.0f};
    p.n_logit_bias = 1;
    bt_sample out;
    CHECK_EQ_INT(bt_sampler_sample(S10, &p, NULL, 0, L10, &out), 0);
    p.repetition_penalty = 2.0f; /* 4 is seen: 3.0 / 2 */
    p.logit_bias[0].bias = 1.9f;
    CHECK_EQ_INT(bt_sampler_sample(S10, &p, &h, 0, L10, &out), 1);

    /* min_tokens: the sampler was made with eog {9, 4}; 4 ties for the max */
    p = bt_sampler_default_params();
    p.min_tokens = 3;
    bt_sampler_history h2 = bt_sampler_hist_view(hist, 2, 2); /* empty, 2 generated */
    CHECK_EQ_INT(bt_sampler_sample(S10, &p, &h2, 0, L10, &out), 1);
    p.logit_bias[0] = (bt_logit_bias){.token = 4, .bias = 1.0f};
    p.n_logit_bias = 1;
    CHECK_EQ_INT(bt_sampler_sample(S10, &p, &h2, 0, L10, &out), 1); /* 4 banned despite bias */
    h2.n_generated = 3;
    CHECK_EQ_INT(bt_sampler_sample(S10, &p, &h2, 0, L10, &out), 4);  /* allowed from 3 on */
    CHECK_EQ_INT(bt_sampler_sample(S10, &p, NULL, 0, L10, &out), 1); /* NULL: 0 generated */
    p.temperature = 1.0f;
    p.n_logit_bias = 0;
    h2.n_generated = 0;
    for (int i = 0; i < V; i++)
        keep[i] = i != 9 && i != 4;
    ref_softmax(L10, keep, V, 1.0, want);
    got_dist(S10, &p, &h2, L10, V, got);
    check_dist("min_tokens bans eog", got, want, V);
    for (int pos = 0; pos < 200; pos++) {
        int32_t t = bt_sampler_sample(S10, &p, &h2, pos, L10, &out);
        if (t == 9 || t == 4) {
            check_fail(__FILE__, __LINE__, "pos %d drew end-of-generation %d", pos, t);
            break;
        }
    }

    /* history: counts and bitmap, copy, reset */
    bt_sampler_hist_copy(hist, 1, 0);
    bt_sampler_history h0 = bt_sampler_hist_view(hist, 0, 0);
    CHECK_EQ_INT(h0.count[4], 2);
    CHECK_EQ_INT(h0.count[7], 1);
    CHECK_EQ_INT(h0.count[3], 0);
    CHECK(h0.seen[0] == ((1u << 2) | (1u << 3) | (1u << 4) | (1u << 5) | (1u << 7)));
    bt_sampler_hist_reset(hist, 1);
    CHECK(h.seen[0] == 0 && h.count[4] == 0 && h.count[7] == 0);
    CHECK_EQ_INT(h0.count[4], 2); /* the copy is its own */
    bt_sampler_hist_free(hist);
    bt_sampler_hist_free(NULL);
}

static void test_logprobs(void) {
    double mx = 3.0, sum = 0.0;
    for (int i = 0; i < V; i++)
        sum += exp((double)L10[i] - mx);
    bt_sampler_params p = bt_sampler_default_params();
    p.top_logprobs = 5;
    /* settings that change the draw do not change the reported (raw) numbers */
    p.temperature = 0.3f;
    p.repetition_penalty = 1.7f;
    p.logit_bias[0] = (bt_logit_bias){.token = 8, .bias = 50.0f};
    p.n_logit_bias = 1;
    float before[V];
    memcpy(before, L10, sizeof before);
    bt_sample out;
    int32_t t = bt_sampler_sample(S10, &p, NULL, 5, L10, &out);
    CHECK_EQ_INT(t, 8); /* the bias dominates */
    CHECK(memcmp(before, L10, sizeof before) == 0);
    CHECK_NEAR(out.logprob, (double)L10[8] - mx - log(sum), 1e-6);
    CHECK_EQ_INT(out.n_top, 5);
    const int32_t want[5] = {1, 4, 6, 2, 9};
    for (int i = 0; i < 5 && i < out.n_top; i++) {
        CHECK_EQ_INT(out.top_token[i], want[i]);
        CHECK_NEAR(out.top_logprob[i], (double)L10[want[i]] - mx - log(sum), 1e-6);
    }
    p.top_logprobs = 20; /* more than the vocabulary: all of it */
    bt_sampler_sample(S10, &p, NULL, 5, L10, &out);
    CHECK_EQ_INT(out.n_top, V);
    CHECK_EQ_INT(out.top_token[V - 1], 8);
    p.top_logprobs = 0;
    bt_sampler_sample(S10, &p, NULL, 5, L10, &out);
    CHECK_EQ_INT(out.n_top, 0);
}

static void test_greedy_and_determinism(void) {
    const float tie[V] = {0, 1, 2, 5, 1, 0, 5, 5, -3, 4};
    bt_sampler_params p = bt_sampler_default_params();
    bt_sample out;
    CHECK_EQ_INT(bt_sampler_sample(S10, &p, NULL, 0, tie, &out), 3);

    p.temperature = 1.0f;
    p.seed = 99;
    int distinct = 0, seen[V] = {0};
    for (int pos = 0; pos < 100; pos++) {
        bt_sample a, b;
        int32_t ta = bt_sampler_sample(S10, &p, NULL, pos, L10, &a);
        bt_sampler_sample(S10, &p, NULL, pos + 1, L10, &b); /* something else in between */
        int32_t tb = bt_sampler_sample(S10, &p, NULL, pos, L10, &b);
        CHECK_EQ_INT(ta, tb);
        if (!seen[ta]++)
            distinct++;
    }
    CHECK(distinct >= 4); /* positions give different draws */

    /* everything banned keeps one candidate */
    bt_sampler *s2;
    const int32_t eog2[2] = {0, 1};
    CHECK_OK(bt_sampler_new(2, eog2, 2, &s2, NULL));
    p.min_tokens = 1;
    int32_t t = bt_sampler_sample(s2, &p, NULL, 0, L10, &out);
    CHECK(t == 0 || t == 1);
    bt_sampler_free(s2);

    bt_error err;
    bt_error_init(&err);
    const int32_t bad = 10;
    CHECK(bt_sampler_new(V, &bad, 1, &s2, &err) == BT_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "10") != NULL);
    bt_sampler_free(NULL);
}

/* 20,000 draws at positions 0..19999 with seed 1234 from 8 tokens at temperature 0.7. Each
 * token's count must be within 4 standard deviations (sqrt(N p (1 - p))) of N p, and the
 * chi-square statistic (7 degrees of freedom) below 29.9, its 0.9999 quantile. The seed is
 * fixed, so the test is deterministic; a correct sampler passes these bounds for all but
 * about 1 in 10^4 seeds. */
static void test_statistics(void) {
    const float l8[8] = {0.0f, 0.5f, 1.0f, -0.5f, 1.5f, -1.0f, 0.25f, 0.75f};
    bt_sampler *s8;
    CHECK_OK(bt_sampler_new(8, NULL, 0, &s8, NULL));
    bt_sampler_params p = bt_sampler_default_params();
    p.temperature = 0.7f;
    p.seed = 1234;
    const int N = 20000;
    int count[8] = {0};
    bt_sample out;
    for (int pos = 0; pos < N; pos++)
        count[bt_sampler_sample(s8, &p, NULL, pos, l8, &out)]++;
    int keep[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    double pr[8], chi2 = 0.0;
    ref_softmax(l8, keep, 8, 0.7, pr);
    for (int i = 0; i < 8; i++) {
        double e = N * pr[i], sd = sqrt(N * pr[i] * (1.0 - pr[i]));
        CHECK_NEAR(count[i], e, 4.0 * sd);
        chi2 += (count[i] - e) * (count[i] - e) / e;
    }
    printf("statistics: chi-square %.2f (7 dof, bound 29.9)\n", chi2);
    CHECK(chi2 < 29.9);
    bt_sampler_free(s8);
}

int main(void) {
    const int32_t eog[2] = {9, 4};
    CHECK_OK(bt_sampler_new(V, eog, 2, &S10, NULL));
    CHECK_OK(bt_sampler_new(BIG, NULL, 0, &SBIG, NULL));
    if (S10 && SBIG) {
        test_small_filters();
        test_big_filters();
        test_penalties_bias_min_tokens();
        test_logprobs();
        test_greedy_and_determinism();
        test_statistics();
    }
    bt_sampler_free(S10);
    bt_sampler_free(SBIG);
    return check_finish();
}
