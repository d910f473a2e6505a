/* sampler.c - greedy and seeded temperature sampling with top-k/top-p/min-p (see sampler.h). */
#include "sampler.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>

struct bt_sampler {
    bt_sampler_params p;
    int32_t n_vocab;
    bt_rng rng;
    /* scratch, n_vocab each */
    int32_t *idx;
    float *prob;
};

bt_sampler_params bt_sampler_default_params(void) {
    return (bt_sampler_params){
        .temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f, .seed = 0};
}

bt_status bt_sampler_params_validate(const bt_sampler_params *p, bt_error *err) {
    if (!(p->temperature >= 0.0f && p->temperature <= 100.0f))
        return bt_error_set(err, BT_ERR_RANGE, "temperature %g is outside [0, 100]",
                            (double)p->temperature);
    if (p->top_k < 0)
        return bt_error_set(err, BT_ERR_RANGE, "top_k %d is negative", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return bt_error_set(err, BT_ERR_RANGE, "top_p %g is outside (0, 1]", (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return bt_error_set(err, BT_ERR_RANGE, "min_p %g is outside [0, 1]", (double)p->min_p);
    return BT_OK;
}

bt_status bt_sampler_new(const bt_sampler_params *p, int32_t n_vocab, bt_sampler **out,
                         bt_error *err) {
    *out = NULL;
    bt_status st = bt_sampler_params_validate(p, err);
    if (st != BT_OK)
        return st;
    if (n_vocab <= 0)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "sampler: n_vocab %d", n_vocab);
    bt_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return bt_error_set(err, BT_ERR_NOMEM, "sampler: out of memory");
    s->p = *p;
    s->n_vocab = n_vocab;
    s->idx = malloc(sizeof *s->idx * (size_t)n_vocab);
    s->prob = malloc(sizeof *s->prob * (size_t)n_vocab);
    if (!s->idx || !s->prob) {
        bt_sampler_free(s);
        return bt_error_set(err, BT_ERR_NOMEM, "sampler: out of memory");
    }
    bt_rng_seed(&s->rng, p->seed);
    *out = s;
    return BT_OK;
}

void bt_sampler_free(bt_sampler *s) {
    if (!s)
        return;
    free(s->idx);
    free(s->prob);
    free(s);
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void bt_rng_seed(bt_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

uint64_t bt_rng_next(bt_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double bt_rng_uniform(bt_rng *r) {
    return (double)(bt_rng_next(r) >> 11) * 0x1.0p-53;
}

/* log-sum-exp of the raw logits, for the reported logprob. */
static float log_softmax_at(const float *logits, int32_t n, int32_t tok) {
    float mx = logits[0];
    for (int32_t i = 1; i < n; i++)
        if (logits[i] > mx)
            mx = logits[i];
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++)
        sum += exp((double)(logits[i] - mx));
    return (float)((double)(logits[tok] - mx) - log(sum));
}

static int32_t argmax(const float *x, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* Orders candidate ids by logit descending; ties by lower id first, so the order is total and
 * the result deterministic. */
static int cmp_desc(const void *a, const void *b, void *ctx) {
    const float *logits = ctx;
    int32_t ia = *(const int32_t *)a, ib = *(const int32_t *)b;
    float la = logits[ia], lb = logits[ib];
    if (la != lb)
        return la > lb ? -1 : 1;
    return ia < ib ? -1 : (ia > ib);
}

int32_t bt_sampler_sample(bt_sampler *s, const float *logits, float *logprob) {
    const int32_t n = s->n_vocab;
    int32_t tok;
    if (s->p.temperature == 0.0f) {
        tok = argmax(logits, n);
    } else {
        /* Candidates in id order; sorted by logit only when a filter needs the order. */
        for (int32_t i = 0; i < n; i++)
            s->idx[i] = i;
        bool filtered = (s->p.top_k > 0 && s->p.top_k < n) || s->p.top_p < 1.0f ||
                        s->p.min_p > 0.0f;
        if (filtered)
            qsort_r(s->idx, (size_t)n, sizeof *s->idx, cmp_desc, (void *)logits);
        int32_t k = n;
        if (s->p.top_k > 0 && s->p.top_k < k)
            k = s->p.top_k;
        /* probabilities at temperature 1 for top-p and min-p, as llama.cpp's chain does
         * before its temperature stage */
        float mx = logits[s->idx[0]];
        for (int32_t i = 1; i < k && !filtered; i++)
            mx = fmaxf(mx, logits[s->idx[i]]);
        double sum = 0.0;
        for (int32_t i = 0; i < k; i++) {
            s->prob[i] = expf(logits[s->idx[i]] - mx);
            sum += s->prob[i];
        }
        if (s->p.top_p < 1.0f) {
            double cum = 0.0;
            for (int32_t i = 0; i < k; i++) {
                cum += s->prob[i] / sum;
                if (cum >= s->p.top_p) {
                    k = i + 1;
                    break;
                }
            }
        }
        if (s->p.min_p > 0.0f) {
            float floor_p = s->p.min_p * s->prob[0]; /* sorted: prob[0] is the max */
            int32_t keep = 1;
            while (keep < k && s->prob[keep] >= floor_p)
                keep++;
            k = keep;
        }
        double tsum = 0.0;
        for (int32_t i = 0; i < k; i++) {
            s->prob[i] = expf((logits[s->idx[i]] - mx) / s->p.temperature);
            tsum += s->prob[i];
        }
        double u = bt_rng_uniform(&s->rng) * tsum, cum = 0.0;
        tok = s->idx[k - 1];
        for (int32_t i = 0; i < k; i++) {
            cum += s->prob[i];
            if (u < cum) {
                tok = s->idx[i];
                break;
            }
        }
    }
    if (logprob)
        *logprob = log_softmax_at(logits, n, tok);
    assert(tok >= 0 && tok < n);
    return tok;
}
