/*
 * sampler.h - turns one row of logits into a token, on the last stage, and keeps the
 * per-sequence token history that the penalties read.
 *
 * Chain (fixed order; steps 1-4 work on a copy of the row, the caller's logits are never
 * modified):
 *   1. logit_bias          logit[t] += bias for every (t, bias) entry
 *   2. min_tokens          while n_generated < min_tokens: logit[e] = -inf for every
 *                          end-of-generation id e (given to bt_sampler_new) and
 *                          every id of p->stop_token_ids
 *   3. repetition_penalty  (HF, vLLM) every token in prompt or output:
 *                          logit = logit > 0 ? logit / p : logit * p
 *   4. presence/frequency  (OpenAI, vLLM) logit -= presence * [count > 0] + frequency * count,
 *                          count = occurrences among the generated tokens only
 *   5. temperature == 0    argmax of the result (ties: the lowest id); done.
 *   Otherwise, over the candidates whose logit is not -inf (filters keep >= 1 candidate; the
 *   probabilities of 7-9 are the softmax at temperature 1 of the candidates still kept):
 *   6. top_k               the k largest logits (ties: lower id first)
 *   7. typical_p           llama.cpp's locally typical sampling: H = entropy of the kept
 *                          candidates; order by |-log p - H| ascending (ties: lower id); keep
 *                          the shortest prefix whose cumulative p exceeds typical_p (strict >)
 *   8. top_p               order by logit; keep the shortest prefix whose cumulative p reaches
 *                          top_p (>=)
 *   9. min_p               keep p >= min_p * p_max, i.e. logit >= max_logit + log(min_p)
 *  10. temperature         softmax of logit / temperature over the kept candidates
 *  11. draw                u uniform in [0, 1) from an RNG seeded with (seed, pos); the first
 *                          candidate (in the chain's final order) whose cumulative p passes u
 * Steps whose parameter is "off" (sampling.h) are skipped.
 *
 * Reported logprobs (bt_sample.logprob, top_*) are the log-softmax of the RAW logits (before
 * bias, penalties and temperature; what vLLM reports by default), so they are comparable
 * across sampling settings. top_logprobs are the top-n raw logits, ties by lower id first.
 *
 * Determinism: the random draw for the token at position `pos` of a sequence comes from an
 * RNG seeded with (seed, pos), so it does not depend on what else is sampled, on the number
 * of stages, on batching, or on a preemption that recomputes the sequence. Every ordering
 * above is a total order (ties by id), so the result depends only on the inputs.
 *
 * Cost: O(n_vocab) per row for the copy and the raw log-sum-exp; penalties touch only the
 * tokens in the history (bitmap scan); top_k and top_p select a sorted prefix by partial
 * selection (quickselect, prefix doubling for top_p) and sort all candidates only when the
 * prefix needed is that long. When top_k or top_p is the first filter, only the logits at or
 * above a threshold that leaves enough of them (a few vector passes over the row) become
 * candidates, not the whole vocabulary. Probabilities use a
 * vector exp in double (sampler.c) that is the same on every CPU.
 *
 * The bt_sampler holds the n_vocab scratch shared by all sequences sampled on one thread
 * (the last stage's loop); sampling allocates nothing. Confined to that thread.
 *
 * bt_sampler_hist: the token statistics of up to n_seqs sequences (the last stage's sequence
 * slots), sized once: per sequence a [n_vocab] int32 count of generated tokens and a
 * [n_vocab] bitmap of tokens seen in prompt or output. Updated by the owner of the slots
 * (stage_loop.c) from every row it receives; no allocation after bt_sampler_hist_new.
 * Confined to the thread that owns it.
 */
#ifndef BT_SAMPLER_H
#define BT_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#include "rng.h"
#include "sampling.h"
#include "status.h"

/* One sequence's token history, as the sampler reads it; borrowed for the call. */
typedef struct bt_sampler_history {
    const int32_t *count; /* [n_vocab] int32: times each token was generated */
    const uint64_t *seen; /* [(n_vocab + 63) / 64] bitmap: in prompt or generated */
    int32_t n_generated;  /* tokens generated so far, for min_tokens */
} bt_sampler_history;

/* The outcome of one row. */
typedef struct bt_sample {
    int32_t token;
    float logprob;                          /* raw log-softmax of token */
    int32_t n_top;                          /* = params top_logprobs */
    int32_t top_token[BT_MAX_TOP_LOGPROBS]; /* best first, ties lower id first */
    float top_logprob[BT_MAX_TOP_LOGPROBS]; /* raw log-softmax of top_token[i] */
} bt_sample;

typedef struct bt_sampler bt_sampler;

/* eog[n_eog] (copied; n_eog <= BT_SAMPLER_MAX_EOG, ids in [0, n_vocab)) are the tokens that
 * min_tokens bans; NULL/0 = none. BT_ERR_INVALID_ARG naming the bad value. */
bt_status bt_sampler_new(int32_t n_vocab, const int32_t *eog, int n_eog, bt_sampler **out,
                         bt_error *err);
void bt_sampler_free(bt_sampler *s); /* NULL is a no-op */

/* Picks the token at position pos of a sequence from logits[n_vocab] (not modified) with
 * parameters p (valid: bt_sampler_params_validate with n_vocab) and the sequence's history h
 * (NULL = no tokens seen, none generated). Fills *out and returns out->token. */
int32_t bt_sampler_sample(bt_sampler *s, const bt_sampler_params *p, const bt_sampler_history *h,
                          int32_t pos, const float *logits, bt_sample *out);

/* The distribution the draw of bt_sampler_sample picks from (steps 1-10): the kept
 * candidates in the chain's final order into ids[], their probabilities (summing to 1) into
 * probs[]; both have room for n_vocab. Returns how many. Temperature 0: the argmax with
 * probability 1. For tests, and for callers that need the distribution itself. */
int32_t bt_sampler_distribution(bt_sampler *s, const bt_sampler_params *p,
                                const bt_sampler_history *h, const float *logits, int32_t *ids,
                                double *probs);

typedef struct bt_sampler_hist bt_sampler_hist;

bt_status bt_sampler_hist_new(int32_t n_seqs, int32_t n_vocab, bt_sampler_hist **out,
                              bt_error *err);
void bt_sampler_hist_free(bt_sampler_hist *h); /* NULL is a no-op */
/* seq, src, dst in [0, n_seqs); token in [0, n_vocab) (the caller has validated them). */
void bt_sampler_hist_reset(bt_sampler_hist *h, int32_t seq);
void bt_sampler_hist_copy(bt_sampler_hist *h, int32_t src, int32_t dst); /* dst = src */
/* Records one token of seq: seen; counted as well when generated. */
void bt_sampler_hist_add(bt_sampler_hist *h, int32_t seq, int32_t token, bool generated);
/* The view bt_sampler_sample reads; valid until the next change to seq. */
bt_sampler_history bt_sampler_hist_view(const bt_sampler_hist *h, int32_t seq, int32_t n_generated);

#endif
