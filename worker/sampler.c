/* sampler.c - the sampler chain and the per-sequence token history (see sampler.h). */
#include "sampler.h"

#include "kernels/kernels.h"

#include <assert.h>
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* A candidate token. The chain orders candidates by (key ascending, id ascending): key is
 * -logit for the logit order, the typical-sampling score for typical_p. */
typedef struct cand {
    double key;
    float logit; /* after bias and penalties */
    int32_t id;
} cand;

struct bt_sampler {
    int32_t n_vocab;
    int32_t n_eog;
    int32_t eog[BT_SAMPLER_MAX_EOG];
    float *work; /* [n_vocab] f32: the row after bias and penalties */
    cand *c;     /* [n_vocab] the candidates still kept */
};

/* Initial prefix length of the partial selections for typical_p and top_p; doubled until the
 * cumulative probability is reached. */
#define PREFIX_START 64

bt_status bt_sampler_new(int32_t n_vocab, const int32_t *eog, int n_eog, bt_sampler **out,
                         bt_error *err) {
    *out = NULL;
    if (n_vocab <= 0)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "sampler: n_vocab %d", n_vocab);
    if (n_eog < 0 || n_eog > BT_SAMPLER_MAX_EOG || (n_eog > 0 && !eog))
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "sampler: %d end-of-generation ids, at "
                            "most %d",
                            n_eog, BT_SAMPLER_MAX_EOG);
    for (int i = 0; i < n_eog; i++)
        if (eog[i] < 0 || eog[i] >= n_vocab)
            return bt_error_set(err, BT_ERR_INVALID_ARG,
                                "sampler: end-of-generation id %d not in [0, %d)", eog[i], n_vocab);
    bt_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return bt_error_set(err, BT_ERR_NOMEM, "sampler: out of memory");
    s->n_vocab = n_vocab;
    s->n_eog = n_eog;
    if (n_eog > 0)
        memcpy(s->eog, eog, sizeof *eog * (size_t)n_eog);
    s->work = malloc(sizeof *s->work * (size_t)n_vocab);
    s->c = malloc(sizeof *s->c * (size_t)n_vocab);
    if (!s->work || !s->c) {
        bt_sampler_free(s);
        return bt_error_set(err, BT_ERR_NOMEM, "sampler: out of memory for %d candidates", n_vocab);
    }
    *out = s;
    return BT_OK;
}

void bt_sampler_free(bt_sampler *s) {
    if (!s)
        return;
    free(s->work);
    free(s->c);
    free(s);
}

static double exp1(double x);

/* ---- ordering and partial selection ---- */

static int less(const cand *a, const cand *b) {
    return a->key < b->key || (a->key == b->key && a->id < b->id);
}

static int cmp_cand(const void *pa, const void *pb) {
    const cand *a = pa, *b = pb;
    return less(a, b) ? -1 : less(b, a);
}

static void swap(cand *a, cand *b) {
    cand t = *a;
    *a = *b;
    *b = t;
}

/* Quickselect: afterwards a[0..k) are the k smallest of a[0..n) (in no order), 0 < k < n.
 * The order is total (ids are distinct), so this terminates and is deterministic. */
static void select_smallest(cand *a, int n, int k) {
    int lo = 0, hi = n - 1, t = k - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (less(&a[mid], &a[lo]))
            swap(&a[mid], &a[lo]);
        if (less(&a[hi], &a[lo]))
            swap(&a[hi], &a[lo]);
        if (less(&a[hi], &a[mid]))
            swap(&a[hi], &a[mid]);
        cand pivot = a[mid];
        int i = lo, j = hi;
        while (i <= j) {
            while (less(&a[i], &pivot))
                i++;
            while (less(&pivot, &a[j]))
                j--;
            if (i <= j) {
                swap(&a[i], &a[j]);
                i++;
                j--;
            }
        }
        if (t <= j)
            hi = j;
        else if (t >= i)
            lo = i;
        else
            return;
    }
}

/* Given a[0..done) sorted and no larger than any of a[done..n), makes a[0..m) the sorted m
 * smallest (m clamped to n). Returns the new sorted length. */
static int sort_prefix(cand *a, int n, int done, int m) {
    if (m > n)
        m = n;
    if (m <= done)
        return done;
    if (m < n)
        select_smallest(a + done, n - done, m - done);
    qsort(a + done, (size_t)(m - done), sizeof *a, cmp_cand);
    return m;
}

static void keys_by_logit(cand *a, int n) {
    for (int i = 0; i < n; i++)
        a[i].key = -(double)a[i].logit;
}

static double max_logit(const cand *a, int n) {
    float mx = a[0].logit;
    for (int i = 1; i < n; i++)
        if (a[i].logit > mx)
            mx = a[i].logit;
    return mx;
}

/* sum of exp(logit - mx) over a[0..n) */
static double exp_sum(const cand *a, int n, double mx) {
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += exp1((double)a[i].logit - mx);
    return sum;
}

/* ---- vector helpers (GCC vector types: the same IEEE operations in every lane at any
 * SIMD width, so every CPU gets the same bits) ---- */

typedef double f64x2 __attribute__((vector_size(16)));
typedef uint64_t u64x2 __attribute__((vector_size(16)));
typedef float f32x4 __attribute__((vector_size(16)));
typedef int32_t i32x4 __attribute__((vector_size(16)));

/* exp(x) for x <= 0 in each lane, within about 2 ulp (x < -708: 0; NaN: 0), 2-3 times as
 * fast as libm's over a row (and the same on every CPU, where libm picks its code by CPU):
 * x = k ln2 + r, |r| <= ln2 / 2, ln2 in two parts, exp(r) by its Taylor series to r^13
 * (truncation below 1e-17) in Estrin's scheme (a short dependency chain), times 2^k built
 * in the exponent bits. */
static inline __attribute__((always_inline)) f64x2 exp2v(f64x2 x) {
    const double magic = 0x1.8p52; /* adding it rounds to an integer in the low bits */
    f64x2 kd = (x * 0x1.71547652b82fep0 + magic) - magic;
    f64x2 r = x - kd * 0x1.62e42fee00000p-1; /* exact: the high part has 21 zero bits */
    r = r - kd * 0x1.a39ef35793c76p-33;
    f64x2 r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    f64x2 p01 = 1.0 + r, p23 = 1.0 / 2 + r * (1.0 / 6), p45 = 1.0 / 24 + r * (1.0 / 120),
          p67 = 1.0 / 720 + r * (1.0 / 5040), p89 = 1.0 / 40320 + r * (1.0 / 362880),
          pab = 1.0 / 3628800 + r * (1.0 / 39916800),
          pcd = 1.0 / 479001600 + r * (1.0 / 6227020800.0);
    f64x2 y = ((p01 + r2 * p23) + r4 * (p45 + r2 * p67)) + r8 * ((p89 + r2 * pab) + r4 * pcd);
    u64x2 e = ((u64x2)(kd + magic) + 1023) << 52; /* 2^k, k in [-1022, 0] */
    u64x2 keep = (u64x2)(x >= -708.0);
    return (f64x2)((u64x2)(y * (f64x2)e) & keep);
}

static double exp1(double x) {
    f64x2 v = {x, x};
    return exp2v(v)[0];
}

/* sum over i of exp(w[i] - mx) (-inf and NaN add 0), in 4 pairs of lanes added at the end. */
static double exp_sum_row(const float *w, int32_t n, double mx) {
    f64x2 a[4] = {{0, 0}, {0, 0}, {0, 0}, {0, 0}};
    int32_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 4; k++) {
            f64x2 v = {w[i + 2 * k], w[i + 2 * k + 1]};
            a[k] += exp2v(v - mx);
        }
    double sum =
        ((a[0][0] + a[0][1]) + (a[1][0] + a[1][1])) + ((a[2][0] + a[2][1]) + (a[3][0] + a[3][1]));
    for (; i < n; i++)
        sum += exp1((double)w[i] - mx);
    return sum;
}

/* How many of w[0..n) are >= t (NaN never is). */
static int32_t count_at_least(const float *w, int32_t n, float t) {
    i32x4 acc = {0, 0, 0, 0};
    f32x4 tv = {t, t, t, t};
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        f32x4 v;
        memcpy(&v, w + i, sizeof v);
        acc -= (i32x4)(v >= tv); /* true is -1 */
    }
    int32_t c = acc[0] + acc[1] + acc[2] + acc[3];
    for (; i < n; i++)
        c += w[i] >= t;
    return c;
}

/* c[] = the w[i] >= t, in index order (t > -inf: finite or +inf ones only; t = -FLT_MAX:
 * all of those). Four at a time, the usual group holding none of them passed over with one
 * vector compare. */
static int collect(const float *w, int32_t n, float t, cand *c) {
    f32x4 tv = {t, t, t, t};
    int nc = 0;
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        f32x4 v;
        memcpy(&v, w + i, sizeof v);
        i32x4 ge = (i32x4)(v >= tv);
        if (!(ge[0] | ge[1] | ge[2] | ge[3]))
            continue;
        for (int k = 0; k < 4; k++)
            if (ge[k])
                c[nc++] = (cand){.key = 0.0, .logit = w[i + k], .id = i + k};
    }
    for (; i < n; i++)
        if (w[i] >= t)
            c[nc++] = (cand){.key = 0.0, .logit = w[i], .id = i};
    return nc;
}

/* The threshold mx - d for the first d of *d, then 1.5 times more and so on, that leaves at
 * least m of w at or above it; *d keeps it for a later, larger m. mx is the largest w, finite,
 * and 0 < m < the number of finite ones: when mx - d reaches -inf, every finite one is above
 * -FLT_MAX. Every value below the threshold is below every one at or above it, so the m
 * first in the chain's order (by logit, ties by id) are among those. */
static float threshold_for(const float *w, int32_t n, float mx, int m, float *d) {
    for (;; *d *= 1.5f) {
        float t = mx - *d;
        if (!(t > -INFINITY))
            return -FLT_MAX; /* collect() then takes every finite one */
        if (count_at_least(w, n, t) >= m)
            return t;
    }
}

/* Nucleus as the first filter, on the whole row: top_p_filter's prefix search over the m
 * largest candidates for m = PREFIX_START, doubling, each time gathered above a threshold
 * (threshold_for) and selected among those, not among every candidate. n_fin (more than
 * PREFIX_START) finite logits, mx their largest. */
static int top_p_first(const float *w, int32_t n, int32_t n_fin, float mx, double top_p, cand *c) {
    double sum = exp_sum_row(w, n, mx), cum = 0.0;
    int checked = 0;
    float d = 1.0f;
    for (int m = PREFIX_START;; m *= 2) {
        int nc = m < n_fin ? collect(w, n, threshold_for(w, n, mx, m, &d), c)
                           : collect(w, n, -FLT_MAX, c);
        keys_by_logit(c, nc);
        int sorted = sort_prefix(c, nc, 0, m); /* its first `checked` are the last pass's */
        for (int i = checked; i < sorted; i++) {
            cum += exp1((double)c[i].logit - mx) / sum;
            if (cum >= top_p)
                return i + 1;
        }
        checked = sorted;
        if (sorted == n_fin)
            return n_fin;
    }
}

/* The largest finite w and how many there are (-inf and NaN are not): four lanes of maxima
 * and counts. */
static int32_t finite_max(const float *w, int32_t n, float *mx) {
    const float lo = -FLT_MAX;
    f32x4 m = {-INFINITY, -INFINITY, -INFINITY, -INFINITY}, lov = {lo, lo, lo, lo};
    i32x4 k = {0, 0, 0, 0};
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        f32x4 v;
        memcpy(&v, w + i, sizeof v);
        k -= (i32x4)(v >= lov);
        i32x4 gt = (i32x4)(v > m); /* NaN never is */
        m = (f32x4)(((i32x4)v & gt) | ((i32x4)m & ~gt));
    }
    float mm = m[0];
    for (int l = 1; l < 4; l++)
        mm = m[l] > mm ? m[l] : mm;
    int32_t cnt = k[0] + k[1] + k[2] + k[3];
    for (; i < n; i++)
        if (w[i] > -INFINITY) {
            cnt++;
            mm = w[i] > mm ? w[i] : mm;
        }
    *mx = mm;
    return cnt;
}

/* ---- the chain ---- */

static const float *adjust(bt_sampler *s, const bt_sampler_params *p, const bt_sampler_history *h,
                           const float *logits);

/* Locally typical sampling (llama.cpp llama_sampler_typical_apply): returns the number kept
 * and leaves them first in a, ordered by |-log p - H|. */
static int typical_filter(cand *a, int n, double typical_p) {
    double mx = max_logit(a, n), sum = exp_sum(a, n, mx), ent = 0.0;
    for (int i = 0; i < n; i++) {
        double pr = exp1((double)a[i].logit - mx) / sum;
        if (pr > 0.0)
            ent -= pr * log(pr);
    }
    for (int i = 0; i < n; i++) {
        double pr = exp1((double)a[i].logit - mx) / sum;
        a[i].key = pr > 0.0 ? fabs(-log(pr) - ent) : INFINITY;
    }
    double cum = 0.0;
    int sorted = 0;
    for (int m = PREFIX_START;; m *= 2) {
        int from = sorted;
        sorted = sort_prefix(a, n, sorted, m);
        for (int i = from; i < sorted; i++) {
            cum += exp1((double)a[i].logit - mx) / sum;
            if (cum > typical_p)
                return i + 1;
        }
        if (sorted == n)
            return n;
    }
}

/* Nucleus: a[0..*sorted) is sorted by logit already. Returns the number kept, which are
 * first in a in logit order; *sorted is updated. */
static int top_p_filter(cand *a, int n, int *sorted, double top_p) {
    if (*sorted == 0)
        keys_by_logit(a, n);
    double mx = *sorted > 0 ? (double)a[0].logit : max_logit(a, n), sum = exp_sum(a, n, mx);
    double cum = 0.0;
    int checked = 0;
    for (int m = PREFIX_START;; m *= 2) {
        *sorted = sort_prefix(a, n, *sorted, m);
        for (int i = checked; i < *sorted; i++) {
            cum += exp1((double)a[i].logit - mx) / sum;
            if (cum >= top_p) {
                *sorted = i + 1;
                return i + 1;
            }
        }
        checked = *sorted;
        if (*sorted == n)
            return n;
    }
}

/* First index of the largest value. Two passes: the maximum over 8 independent lanes (no
 * loop-carried dependency through a reloaded x[best]), then the first index holding it. */
static int argmax_f(const float *x, int32_t n) {
    float m[8];
    for (int l = 0; l < 8; l++)
        m[l] = x[0];
    int32_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++)
            m[l] = x[i + l] > m[l] ? x[i + l] : m[l];
    float mx = m[0];
    for (int l = 1; l < 8; l++)
        mx = m[l] > mx ? m[l] : mx;
    for (; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    for (i = 0; i < n; i++)
        if (x[i] == mx)
            return i;
    return 0; /* every value is NaN */
}

/* The weights exp((l[k] - mk) * inv_t) of 8 logits into e[0..8), four exps in flight: the
 * end of filter() and weigh_row weigh each group of 8 by this one definition. */
static inline __attribute__((always_inline)) void weigh8(const float *l, double mk, double inv_t,
                                                         double *e) {
    for (int k = 0; k < 4; k++) {
        f64x2 v = {l[2 * k], l[2 * k + 1]};
        f64x2 r = exp2v((v - mk) * inv_t);
        e[2 * k] = r[0];
        e[2 * k + 1] = r[1];
    }
}

/* Step 10 when no filter runs and every logit is finite: every token a candidate, in index
 * order, weighed as the end of filter() weighs them (the same weights and total), straight
 * from the row in one pass. */
static int weigh_row(const float *w, int32_t n, float mx, double inv_t, cand *c, double *total) {
    double tot = 0.0;
    int32_t i = 0;
    for (; i + 8 <= n; i += 8) {
        double e[8];
        weigh8(w + i, mx, inv_t, e);
        for (int k = 0; k < 8; k++) {
            c[i + k] = (cand){.key = e[k], .logit = w[i + k], .id = i + k};
            tot += e[k];
        }
    }
    for (; i < n; i++) {
        c[i] = (cand){.key = exp1(((double)w[i] - mx) * inv_t), .logit = w[i], .id = i};
        tot += c[i].key;
    }
    *total = tot;
    return n;
}

/* Steps 6-10 on the adjusted row w: leaves the kept candidates in s->c[0..return) in the
 * chain's final order, each with its unnormalised weight in .key, and their sum in *total. */
static int filter(bt_sampler *s, const bt_sampler_params *p, const float *w, double *total) {
    const int32_t n = s->n_vocab;
    cand *c = s->c;
    float mx;
    int32_t n_fin = finite_max(w, n, &mx);
    if (n_fin == 0) { /* everything banned: the argmax keeps the chain total */
        c[0] = (cand){.key = 1.0, .logit = 0.0f, .id = argmax_f(w, n)};
        *total = 1.0;
        return 1;
    }
    bool no_filter = (p->top_k <= 0 || p->top_k >= n_fin) && p->typical_p >= 1.0f &&
                     p->top_p >= 1.0f && p->min_p <= 0.0f;
    if (no_filter && n_fin == n && isfinite(mx))
        return weigh_row(w, n, mx, 1.0 / (double)p->temperature, c, total);
    /* The candidates are the finite logits; the first filter, when it is top_k or top_p,
     * builds only those above a threshold (threshold_for) that it may keep, not the whole
     * row. */
    int nc, sorted = 0; /* c[0..sorted) are the top logits in order, the rest smaller */
    bool top_p_done = false;
    if (!isfinite(mx)) {
        nc = collect(w, n, -FLT_MAX, c);
    } else if (p->top_k > 0 && p->top_k < n_fin) {
        float d = 1.0f;
        nc = collect(w, n, threshold_for(w, n, mx, p->top_k, &d), c);
        keys_by_logit(c, nc);
        sorted = sort_prefix(c, nc, 0, p->top_k);
        nc = p->top_k;
    } else if (p->typical_p >= 1.0f && p->top_p < 1.0f && n_fin > PREFIX_START) {
        nc = sorted = top_p_first(w, n, n_fin, mx, (double)p->top_p, c);
        top_p_done = true;
    } else if (p->typical_p >= 1.0f && p->top_p >= 1.0f && p->min_p > 0.0f) {
        double floor_logit = (double)mx + log((double)p->min_p); /* as min_p below */
        nc = collect(w, n, nextafterf((float)floor_logit, -INFINITY), c);
    } else {
        nc = collect(w, n, -FLT_MAX, c);
    }
    if (p->typical_p < 1.0f) {
        nc = typical_filter(c, nc, (double)p->typical_p);
        sorted = 0;
    }
    if (p->top_p < 1.0f && !top_p_done)
        nc = top_p_filter(c, nc, &sorted, (double)p->top_p);
    if (p->min_p > 0.0f) {
        double floor_logit = max_logit(c, nc) + log((double)p->min_p);
        int keep = 0;
        for (int i = 0; i < nc; i++)
            if ((double)c[i].logit >= floor_logit)
                c[keep++] = c[i];
        nc = keep; /* the max is always kept: min_p <= 1 */
    }
    double mk = max_logit(c, nc), inv_t = 1.0 / (double)p->temperature, tot = 0.0;
    int i = 0;
    for (; i + 8 <= nc; i += 8) { /* the weight, reusing key */
        float l[8];
        double e[8];
        for (int k = 0; k < 8; k++)
            l[k] = c[i + k].logit;
        weigh8(l, mk, inv_t, e);
        for (int k = 0; k < 8; k++) {
            c[i + k].key = e[k];
            tot += e[k];
        }
    }
    for (; i < nc; i++) {
        c[i].key = exp1(((double)c[i].logit - mk) * inv_t);
        tot += c[i].key;
    }
    *total = tot;
    return nc;
}

static int32_t draw(bt_sampler *s, const bt_sampler_params *p, const float *w, int32_t pos) {
    double total;
    int nc = filter(s, p, w, &total);
    const cand *c = s->c;
    bt_rng rng;
    bt_rng_seed(&rng, p->seed + (uint64_t)pos * 0x9e3779b97f4a7c15ull);
    double u = bt_rng_uniform(&rng) * total, cum = 0.0;
    for (int i = 0; i < nc; i++) {
        cum += c[i].key;
        if (u < cum)
            return c[i].id;
    }
    return c[nc - 1].id; /* rounding: u within total but past the last partial sum */
}

int32_t bt_sampler_distribution(bt_sampler *s, const bt_sampler_params *p,
                                const bt_sampler_history *h, const float *logits, int32_t *ids,
                                double *probs) {
    const float *w = adjust(s, p, h, logits);
    if (p->temperature == 0.0f) {
        ids[0] = argmax_f(w, s->n_vocab);
        probs[0] = 1.0;
        return 1;
    }
    double total;
    int nc = filter(s, p, w, &total);
    for (int i = 0; i < nc; i++) {
        ids[i] = s->c[i].id;
        probs[i] = s->c[i].key / total;
    }
    return nc;
}

/* Steps 1-4: the row with bias, min_tokens and the penalties applied, in s->work; or the
 * caller's logits themselves when none of them applies (no copy of the row). */
static const float *adjust(bt_sampler *s, const bt_sampler_params *p, const bt_sampler_history *h,
                           const float *logits) {
    int32_t n_generated = h ? h->n_generated : 0;
    bool bans = n_generated < p->min_tokens && (s->n_eog > 0 || p->n_stop_token_ids > 0);
    const float rep = p->repetition_penalty, pres = p->presence_penalty,
                freq = p->frequency_penalty;
    bool penalties = h && h->seen && (rep != 1.0f || pres != 0.0f || freq != 0.0f);
    if (p->n_logit_bias == 0 && !bans && !penalties)
        return logits;
    float *w = s->work;
    memcpy(w, logits, sizeof *w * (size_t)s->n_vocab);
    for (int i = 0; i < p->n_logit_bias; i++)
        w[p->logit_bias[i].token] += p->logit_bias[i].bias;
    if (bans) {
        for (int i = 0; i < s->n_eog; i++)
            w[s->eog[i]] = -INFINITY;
        for (int i = 0; i < p->n_stop_token_ids; i++) /* they end it too (vLLM's min_tokens) */
            w[p->stop_token_ids[i]] = -INFINITY;
    }
    if (!penalties)
        return w;
    int32_t n_words = (s->n_vocab + 63) / 64;
    for (int32_t wi = 0; wi < n_words; wi++) {
        for (uint64_t bits = h->seen[wi]; bits; bits &= bits - 1) {
            int32_t t = wi * 64 + __builtin_ctzll(bits);
            if (rep != 1.0f)
                w[t] = w[t] > 0.0f ? w[t] / rep : w[t] * rep;
            int32_t cnt = h->count ? h->count[t] : 0;
            if (cnt > 0) {
                w[t] -= freq * (float)cnt;
                w[t] -= pres;
            }
        }
    }
    return w;
}

int32_t bt_sampler_sample(bt_sampler *s, const bt_sampler_params *p, const bt_sampler_history *h,
                          int32_t pos, const float *logits, bt_sample *out) {
    const int32_t n = s->n_vocab;
    const float *w = adjust(s, p, h, logits);
    int32_t tok = p->temperature == 0.0f ? argmax_f(w, n) : draw(s, p, w, pos);
    assert(tok >= 0 && tok < n);

    /* raw log-softmax for the reports */
    float mx;
    double log_sum = bt_log_sum_exp(logits, n, &mx);
    out->token = tok;
    out->logprob = (float)((double)(logits[tok] - mx) - log_sum);

    /* top_logprobs: insertion into a sorted list of at most 20; ids ascend, so an equal
     * logit met later never displaces an earlier one */
    int k = p->top_logprobs, nt = 0;
    for (int32_t i = 0; i < n && k > 0; i++) {
        if (nt == k && !(logits[i] > logits[out->top_token[nt - 1]]))
            continue;
        int j = nt < k ? nt++ : k - 1;
        while (j > 0 && logits[i] > logits[out->top_token[j - 1]]) {
            out->top_token[j] = out->top_token[j - 1];
            j--;
        }
        out->top_token[j] = i;
    }
    out->n_top = nt;
    for (int i = 0; i < nt; i++)
        out->top_logprob[i] = (float)((double)(logits[out->top_token[i]] - mx) - log_sum);
    return tok;
}

/* ---- per-sequence history ---- */

struct bt_sampler_hist {
    int32_t n_seqs, n_vocab, n_words;
    int32_t *count; /* [n_seqs][n_vocab] int32; nonzero only where seen is set */
    uint64_t *seen; /* [n_seqs][n_words] bitmap */
};

bt_status bt_sampler_hist_new(int32_t n_seqs, int32_t n_vocab, bt_sampler_hist **out,
                              bt_error *err) {
    *out = NULL;
    if (n_seqs <= 0 || n_vocab <= 0)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "sampler history: %d seqs, n_vocab %d", n_seqs,
                            n_vocab);
    bt_sampler_hist *h = calloc(1, sizeof *h);
    if (!h)
        return bt_error_set(err, BT_ERR_NOMEM, "sampler history: out of memory");
    h->n_seqs = n_seqs;
    h->n_vocab = n_vocab;
    h->n_words = (n_vocab + 63) / 64;
    h->count = calloc((size_t)n_seqs * (size_t)n_vocab, sizeof *h->count);
    h->seen = calloc((size_t)n_seqs * (size_t)h->n_words, sizeof *h->seen);
    if (!h->count || !h->seen) {
        bt_sampler_hist_free(h);
        return bt_error_set(err, BT_ERR_NOMEM,
                            "sampler history: out of memory for %d seqs x %d tokens", n_seqs,
                            n_vocab);
    }
    *out = h;
    return BT_OK;
}

void bt_sampler_hist_free(bt_sampler_hist *h) {
    if (!h)
        return;
    free(h->count);
    free(h->seen);
    free(h);
}

static int32_t *count_of(const bt_sampler_hist *h, int32_t seq) {
    return h->count + (size_t)seq * (size_t)h->n_vocab;
}
static uint64_t *seen_of(const bt_sampler_hist *h, int32_t seq) {
    return h->seen + (size_t)seq * (size_t)h->n_words;
}

/* Clears the counts of seq's seen tokens (the only nonzero ones), then the bitmap: cost in
 * proportion to the distinct tokens, not n_vocab. */
void bt_sampler_hist_reset(bt_sampler_hist *h, int32_t seq) {
    assert(seq >= 0 && seq < h->n_seqs);
    int32_t *cnt = count_of(h, seq);
    uint64_t *seen = seen_of(h, seq);
    for (int32_t wi = 0; wi < h->n_words; wi++) {
        for (uint64_t bits = seen[wi]; bits; bits &= bits - 1)
            cnt[wi * 64 + __builtin_ctzll(bits)] = 0;
        seen[wi] = 0;
    }
}

void bt_sampler_hist_copy(bt_sampler_hist *h, int32_t src, int32_t dst) {
    assert(src >= 0 && src < h->n_seqs && dst >= 0 && dst < h->n_seqs);
    if (src == dst)
        return;
    bt_sampler_hist_reset(h, dst);
    const int32_t *sc = count_of(h, src);
    const uint64_t *ss = seen_of(h, src);
    int32_t *dc = count_of(h, dst);
    uint64_t *ds = seen_of(h, dst);
    for (int32_t wi = 0; wi < h->n_words; wi++) {
        for (uint64_t bits = ss[wi]; bits; bits &= bits - 1) {
            int32_t t = wi * 64 + __builtin_ctzll(bits);
            dc[t] = sc[t];
        }
        ds[wi] = ss[wi];
    }
}

void bt_sampler_hist_add(bt_sampler_hist *h, int32_t seq, int32_t token, bool generated) {
    assert(seq >= 0 && seq < h->n_seqs && token >= 0 && token < h->n_vocab);
    seen_of(h, seq)[token / 64] |= 1ull << (token % 64);
    int32_t *c = &count_of(h, seq)[token];
    if (generated && *c < INT32_MAX)
        (*c)++;
}

bt_sampler_history bt_sampler_hist_view(const bt_sampler_hist *h, int32_t seq,
                                        int32_t n_generated) {
    assert(seq >= 0 && seq < h->n_seqs);
    return (bt_sampler_history){
        .count = count_of(h, seq), .seen = seen_of(h, seq), .n_generated = n_generated};
}
