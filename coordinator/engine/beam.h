/*
 * beam.h - the arithmetic of beam search, on the coordinator: choosing the next beams from
 * the candidates of the live ones, and the set of finished hypotheses. The scheduler
 * (sched_family.c) owns the beams' sequences and applies the choices with FORK/FREE ops.
 *
 * One step (Hugging Face semantics): every live beam b, with cumulative logprob cum[b],
 * brings its top 2W (token, logprob) candidates. All candidates are ranked by cum[b] +
 * logprob, best first; ties go to the lower beam index, then the lower candidate rank. Only
 * the best 2W are looked at, in order: a candidate that ends the sequence (EOS) becomes a
 * finished hypothesis if its rank is below W, else it is skipped; any other candidate is a
 * next beam, until W beams are chosen.
 *
 * A hypothesis of generated length L (the EOS included) with cumulative logprob c scores
 * c / L^length_penalty. At most W are kept (a better one replaces the worst). The search is
 * done when W hypotheses are kept and either early_stopping is true, or the best live beam
 * (cumulative c_best at length L) cannot beat the worst kept: c_best / L^length_penalty <=
 * worst score (HF's early_stopping=False heuristic). At max_tokens every live beam is offered
 * as a hypothesis, and the best n hypotheses are the result.
 *
 * Plain data, no allocation after bt_beam_new; confined to the scheduling thread.
 */
#ifndef BT_BEAM_H
#define BT_BEAM_H

#include <stdbool.h>
#include <stdint.h>

#define BT_BEAM_MAX 8

typedef struct bt_beam_cand {
    int32_t beam; /* index of the parent in the live list */
    int32_t token;
    float logprob; /* of the token */
    double cum;    /* parent's cum + logprob */
    int32_t rank;  /* rank among the parent's candidates */
} bt_beam_cand;

struct bt_beam {
    int width;
    float length_penalty;
    bool early_stopping;
    /* pending candidates of each live beam for the current step */
    bool have[BT_BEAM_MAX];
    int n_cand[BT_BEAM_MAX];
    int32_t cand_token[BT_BEAM_MAX][2 * BT_BEAM_MAX];
    float cand_logprob[BT_BEAM_MAX][2 * BT_BEAM_MAX];
    /* finished hypotheses: score and the record index the caller stores them in */
    int n_hyp;
    double hyp_score[BT_BEAM_MAX];
    bt_beam_cand scratch[BT_BEAM_MAX * 2 * BT_BEAM_MAX];
};
typedef struct bt_beam bt_beam;

bt_beam *bt_beam_new(int width, float length_penalty, bool early_stopping);
void bt_beam_free(bt_beam *b);

double bt_beam_score(const bt_beam *b, double cum, int32_t length);

/* One step over n_live beams with cum[n_live] and the pending candidates. Writes the next
 * beams to keep[0..*n_keep) (best first) and the EOS candidates that may become hypotheses to
 * fin[0..*n_fin). is_eog NULL: no token ends a beam (fixed-length mode). */
void bt_beam_select(bt_beam *b, int n_live, const double *cum,
                    bool (*is_eog)(int32_t token, void *ctx), void *eog_ctx, bt_beam_cand *keep,
                    int *n_keep, bt_beam_cand *fin, int *n_fin);

/* Offers a hypothesis of the given score: returns the hypothesis slot [0, W) the caller
 * stores it in (replacing what was there), or -1 when it is not kept. */
int bt_beam_hyp_add(bt_beam *b, double score);

/* Done test after a step; best_cum: the best live beam's cumulative logprob at length. */
bool bt_beam_is_done(const bt_beam *b, double best_cum, int32_t length);

#endif
