/* sampler.c - greedy and seeded temperature sampling with top-k/top-p/min-p (see sampler.h). */
#include "sampler.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>

struct bt_sampler {
    int32_t n_vocab;
    /* scratch, n_vocab each */
    int32_t *idx;
    float *prob;
};

bt_status bt_sampler_new(int32_t n_vocab, bt_sampler **out, bt_error *err) {
    *out = NULL;
    if (n_vocab <= 0)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "sampler: n_vocab %d", n_vocab);
    bt_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return bt_error_set(err, BT_ERR_NOMEM, "sampler: out of memory");
    s->n_vocab = n_vocab;
    s->idx = malloc(sizeof *s->idx * (size_t)n_vocab);
    s->prob = malloc(sizeof *s->prob * (size_t)n_vocab);
    if (!s->idx || !s->prob) {
        bt_sampler_free(s);
        return bt_error_set(err, BT_ERR_NOMEM, "sampler: out of memory");
    }
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

int32_t bt_sampler_sample(bt_sampler *s, const bt_sampler_params *p, int32_t pos,
                          const float *logits, float *logprob) {
    const int32_t n = s->n_vocab;
    int32_t tok;
    if (p->temperature == 0.0f) {
        tok = argmax(logits, n);
    } else {
        /* Candidates in id order; sorted by logit only when a filter needs the order. */
        for (int32_t i = 0; i < n; i++)
            s->idx[i] = i;
        bool filtered = (p->top_k > 0 && p->top_k < n) || p->top_p < 1.0f ||
                        p->min_p > 0.0f;
        if (filtered)
            qsort_r(s->idx, (size_t)n, sizeof *s->idx, cmp_desc, (void *)logits);
        int32_t k = n;
        if (p->top_k > 0 && p->top_k < k)
            k = p->top_k;
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
        if (p->top_p < 1.0f) {
            double cum = 0.0;
            for (int32_t i = 0; i < k; i++) {
                cum += s->prob[i] / sum;
                if (cum >= p->top_p) {
                    k = i + 1;
                    break;
                }
            }
        }
        if (p->min_p > 0.0f) {
            float floor_p = p->min_p * s->prob[0]; /* sorted: prob[0] is the max */
            int32_t keep = 1;
            while (keep < k && s->prob[keep] >= floor_p)
                keep++;
            k = keep;
        }
        double tsum = 0.0;
        for (int32_t i = 0; i < k; i++) {
            s->prob[i] = expf((logits[s->idx[i]] - mx) / p->temperature);
            tsum += s->prob[i];
        }
        bt_rng rng;
        bt_rng_seed(&rng, p->seed + (uint64_t)pos * 0x9e3779b97f4a7c15ull);
        double u = bt_rng_uniform(&rng) * tsum, cum = 0.0;
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
