/* beam.c - beam selection and finished hypotheses (see beam.h). */
#include "beam.h"

#include <math.h>
#include <stdlib.h>

bt_beam *bt_beam_new(int width, float length_penalty, bool early_stopping) {
    if (width < 1 || width > BT_BEAM_MAX)
        return NULL;
    bt_beam *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->width = width;
    b->length_penalty = length_penalty;
    b->early_stopping = early_stopping;
    return b;
}

void bt_beam_free(bt_beam *b) {
    free(b);
}

double bt_beam_score(const bt_beam *b, double cum, int32_t length) {
    return cum / pow((double)(length > 0 ? length : 1), (double)b->length_penalty);
}

/* Better first; ties: lower beam, then lower rank. */
static int cmp_cand(const void *pa, const void *pb) {
    const bt_beam_cand *a = pa, *c = pb;
    if (a->cum != c->cum)
        return a->cum > c->cum ? -1 : 1;
    if (a->beam != c->beam)
        return a->beam < c->beam ? -1 : 1;
    return (a->rank > c->rank) - (a->rank < c->rank);
}

void bt_beam_select(bt_beam *b, int n_live, const double *cum,
                    bool (*is_eog)(int32_t token, void *ctx), void *eog_ctx, bt_beam_cand *keep,
                    int *n_keep, bt_beam_cand *fin, int *n_fin) {
    int W = b->width, n = 0;
    for (int i = 0; i < n_live; i++)
        for (int k = 0; k < b->n_cand[i]; k++)
            b->scratch[n++] = (bt_beam_cand){.beam = i,
                                             .token = b->cand_token[i][k],
                                             .logprob = b->cand_logprob[i][k],
                                             .cum = cum[i] + (double)b->cand_logprob[i][k],
                                             .rank = k};
    qsort(b->scratch, (size_t)n, sizeof *b->scratch, cmp_cand);
    *n_keep = *n_fin = 0;
    for (int i = 0; i < n && i < 2 * W && *n_keep < W; i++) {
        const bt_beam_cand *c = &b->scratch[i];
        if (is_eog && is_eog(c->token, eog_ctx)) {
            if (i < W)
                fin[(*n_fin)++] = *c;
        } else {
            keep[(*n_keep)++] = *c;
        }
    }
}

int bt_beam_hyp_add(bt_beam *b, double score) {
    if (b->n_hyp < b->width) {
        b->hyp_score[b->n_hyp] = score;
        return b->n_hyp++;
    }
    int worst = 0;
    for (int i = 1; i < b->n_hyp; i++)
        if (b->hyp_score[i] < b->hyp_score[worst])
            worst = i;
    if (score <= b->hyp_score[worst])
        return -1;
    b->hyp_score[worst] = score;
    return worst;
}

bool bt_beam_is_done(const bt_beam *b, double best_cum, int32_t length) {
    if (b->n_hyp < b->width)
        return false;
    if (b->early_stopping)
        return true;
    double worst = b->hyp_score[0];
    for (int i = 1; i < b->n_hyp; i++)
        if (b->hyp_score[i] < worst)
            worst = b->hyp_score[i];
    return bt_beam_score(b, best_cum, length) <= worst;
}
