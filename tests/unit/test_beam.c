/*
 * test_beam.c - several completions of one request, in process (engine + 1..3 stage threads
 * over the local transport), on a tiny random 6-layer llama (make_tiny_model, BT_BUILD_DIR)
 * and on SmolLM2 when present:
 *
 *   - beam.c on fixed candidates (ranking, EOS hypotheses, early stopping);
 *   - beam width 1 equals greedy;
 *   - the engine's beam search equals a plain reference beam search written here over
 *     bt_stage_forward (full logits, log-softmax, same tie-breaking) for W = 2, 3, 4;
 *   - SmolLM2, W = 4, 16 tokens ignoring EOS: the best beam's cumulative logprob >= greedy's
 *     on at least 9 of 10 prompts;
 *   - n/best_of: branches share the prompt's KV blocks (scheduler accounting), differ, are
 *     reproducible, equal with 1, 2 and 3 stages and alone or among 8 concurrent requests
 *     (full sampler chain); best_of > n returns the n best by cumulative logprob;
 *   - stop strings across token boundaries end the completion and are never in its text.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "beam.h"
#include "check.h"
#include "kernel_level.h"
#include "engine.h"
#include "engine_client.h"
#include "engine_impl.h"
#include "gguf.h"
#include "hparams.h"
#include "launch.h"
#include "request.h"
#include "request_impl.h"
#include "stage.h"
#include "vocab.h"

#define MAX_REQ 12
#define MAX_TOK 128

static void make_prompt(int32_t n_vocab, int idx, int n, int32_t *ids) {
    uint64_t x = 0x9E3779B97F4A7C15ULL * (uint64_t)(idx + 3);
    for (int i = 0; i < n; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        ids[i] = (int32_t)(3 + (x >> 33) % (uint64_t)(n_vocab - 3));
    }
}

/* ---- an in-process cluster ---- */

typedef bt_test_cluster cluster;

static bt_status cluster_open(cluster *c, const char *model, int stages, int kv_tokens,
                              bt_error *err) {
    bt_engine_params ep = bt_engine_default_params();
    ep.cluster.max_batch = 256;
    ep.cluster.max_seqs = 16;
    ep.cluster.kv_tokens = kv_tokens;
    ep.prefill_chunk = 32;
    ep.n_ctx = 256;
    return bt_test_cluster_open(c, model, stages, ep, err);
}

static void cluster_close(cluster *c) {
    bt_test_cluster_close(c);
}

/* Runs requests (prompt i = make_prompt(prompt_idx(i), n_prompt[i])) through a fresh
 * cluster, all submitted before serving; reqs[i] are returned to the caller (one reference
 * each, bt_request_unref). */
static bt_status run_reqs_idx(const char *model, int stages, int kv_tokens, int n,
                              const int *n_prompt, int idx_div, const bt_request_params *p,
                              bt_request **reqs, bt_test_observer obs, void *obs_ctx,
                              bt_error *err) {
    cluster c;
    memset(reqs, 0, sizeof *reqs * (size_t)n);
    bt_status st = cluster_open(&c, model, stages, kv_tokens, err);
    static int32_t ids[MAX_REQ * 2][MAX_TOK];
    static bt_test_job jobs[MAX_REQ * 2];
    for (int i = 0; i < n && st == BT_OK; i++) {
        make_prompt(c.hp.n_vocab, i / idx_div, n_prompt[i], ids[i]);
        jobs[i] = (bt_test_job){.prompt = ids[i], .n_prompt = n_prompt[i], .p = p[i]};
    }
    if (st == BT_OK)
        st = bt_test_serve(c.e, n, jobs, false, reqs, obs, obs_ctx, err);
    cluster_close(&c);
    return st;
}

static bt_status run_reqs(const char *model, int stages, int n, const int *n_prompt,
                          const bt_request_params *p, bt_request **reqs, bt_error *err) {
    return run_reqs_idx(model, stages, 2048, n, n_prompt, 1, p, reqs, NULL, NULL, err);
}

static bool same_tokens(const bt_request *a, const bt_request *b) {
    if (a->n_tokens != b->n_tokens)
        return false;
    return memcmp(a->tokens, b->tokens, sizeof *a->tokens * (size_t)a->n_tokens) == 0;
}

/* ---- beam.c on fixed candidates ---- */

static bool eog_is_2(int32_t t, void *ctx) {
    (void)ctx;
    return t == 2;
}

static void test_beam_arith(void) {
    bt_beam *b = bt_beam_new(2, 1.0f, false);
    CHECK(b != NULL);
    double cum[2] = {-1.0, -1.5};
    int32_t t0[4] = {2, 5, 6, 7}, t1[4] = {8, 2, 9, 10};
    float l0[4] = {-0.1f, -0.2f, -2.0f, -3.0f}, l1[4] = {-0.05f, -0.3f, -1.0f, -4.0f};
    b->n_cand[0] = b->n_cand[1] = 4;
    for (int k = 0; k < 4; k++) {
        b->cand_token[0][k] = t0[k];
        b->cand_logprob[0][k] = l0[k];
        b->cand_token[1][k] = t1[k];
        b->cand_logprob[1][k] = l1[k];
    }
    bt_beam_cand keep[8], fin[8];
    int nk, nf;
    bt_beam_select(b, 2, cum, eog_is_2, NULL, keep, &nk, fin, &nf);
    /* ranked: (0,2) -1.1 EOS rank0 -> hyp; (0,5) -1.2; (1,8) -1.55; stop at 2 kept */
    CHECK_EQ_INT(nf, 1);
    CHECK_EQ_INT(fin[0].token, 2);
    CHECK_EQ_INT(nk, 2);
    CHECK_EQ_INT(keep[0].token, 5);
    CHECK_EQ_INT(keep[1].token, 8);
    CHECK_EQ_INT(keep[1].beam, 1);
    /* without EOS handling, token 2 is a beam */
    bt_beam_select(b, 2, cum, NULL, NULL, keep, &nk, fin, &nf);
    CHECK_EQ_INT(nf, 0);
    CHECK_EQ_INT(keep[0].token, 2);
    CHECK_EQ_INT(keep[1].token, 5);
    /* EOS beyond rank W is skipped */
    cum[0] = -5.0;
    bt_beam_select(b, 2, cum, eog_is_2, NULL, keep, &nk, fin, &nf);
    /* ranked: (1,8) -1.55, (1,2) -1.8 EOS rank 1 (< W) -> hyp, (1,9) -2.5 */
    CHECK_EQ_INT(nf, 1);
    CHECK_EQ_INT(keep[0].token, 8);
    CHECK_EQ_INT(keep[1].token, 9);
    /* hypotheses and the done tests */
    CHECK_NEAR(bt_beam_score(b, -4.0, 4), -1.0, 1e-12);
    CHECK_EQ_INT(bt_beam_hyp_add(b, -2.0), 0);
    CHECK(!bt_beam_is_done(b, -1.0, 2));
    CHECK_EQ_INT(bt_beam_hyp_add(b, -1.0), 1);
    CHECK_EQ_INT(bt_beam_hyp_add(b, -3.0), -1); /* worse than the worst kept */
    CHECK_EQ_INT(bt_beam_hyp_add(b, -1.5), 0);  /* replaces -2.0 */
    CHECK(!bt_beam_is_done(b, -2.0, 2));        /* -1.0 may still beat -1.5 */
    CHECK(bt_beam_is_done(b, -4.0, 2));         /* -2.0 cannot */
    b->early_stopping = true;
    CHECK(bt_beam_is_done(b, -2.0, 2));
    bt_beam_free(b);
}

/* ---- reference beam search over bt_stage_forward ---- */

typedef struct ref_beam {
    int32_t tok[MAX_TOK];
    int n;
    double cum;
} ref_beam;

typedef struct ref_cand {
    double cum;
    int beam, rank;
    int32_t token;
    float lp;
} ref_cand;

static int cmp_ref(const void *a, const void *b) {
    const ref_cand *x = a, *y = b;
    if (x->cum != y->cum)
        return x->cum > y->cum ? -1 : 1;
    if (x->beam != y->beam)
        return x->beam < y->beam ? -1 : 1;
    return x->rank - y->rank;
}

/* Log-softmax of the logits of the whole sequence tok[0..n) computed from scratch in one pass
 * (a row's numbers do not depend on how the engine batched it). */
static void ref_logprobs(bt_stage *st, const int32_t *tok, int n, float *logits, double *lp,
                         int n_vocab) {
    int32_t seq[MAX_TOK], pos[MAX_TOK];
    uint8_t want[MAX_TOK];
    for (int i = 0; i < n; i++) {
        seq[i] = 0;
        pos[i] = i;
        want[i] = (uint8_t)(i == n - 1);
    }
    bt_stage_seq_free(st, 0);
    bt_batch b = {.n_rows = n, .seq = seq, .pos = pos, .token = tok, .logits = want};
    bt_error err;
    bt_error_init(&err);
    CHECK_OK(bt_stage_forward(st, &b, NULL, NULL, logits, &err));
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < n_vocab; i++)
        mx = logits[i] > mx ? logits[i] : mx;
    for (int i = 0; i < n_vocab; i++)
        sum += exp((double)logits[i] - mx);
    double lse = mx + log(sum);
    for (int i = 0; i < n_vocab; i++)
        lp[i] = (double)logits[i] - lse;
}

/* Plain beam search of width W for n_gen tokens (no EOS): beams sorted best first. */
static void ref_beam_search(bt_stage *st, const int32_t *prompt, int n_prompt, int W, int n_gen,
                            int n_vocab, ref_beam *out) {
    ref_beam *live = calloc((size_t)W, sizeof *live), *next = calloc((size_t)W, sizeof *next);
    float *logits = malloc(sizeof *logits * (size_t)n_vocab);
    double *lp = malloc(sizeof *lp * (size_t)n_vocab);
    ref_cand *cand = malloc(sizeof *cand * (size_t)(W * 2 * W));
    int n_live = 1;
    memcpy(live[0].tok, prompt, sizeof *prompt * (size_t)n_prompt);
    live[0].n = n_prompt;
    live[0].cum = 0;
    for (int step = 0; step < n_gen; step++) {
        int nc = 0;
        for (int b = 0; b < n_live; b++) {
            ref_logprobs(st, live[b].tok, live[b].n, logits, lp, n_vocab);
            /* top 2W by logit, ties lower id first */
            bool *taken = calloc((size_t)n_vocab, 1);
            for (int r = 0; r < 2 * W; r++) {
                int best = -1;
                for (int t = 0; t < n_vocab; t++)
                    if (!taken[t] && (best < 0 || logits[t] > logits[best]))
                        best = t;
                taken[best] = true;
                cand[nc++] = (ref_cand){.cum = live[b].cum + (double)(float)lp[best],
                                        .beam = b,
                                        .rank = r,
                                        .token = best,
                                        .lp = (float)lp[best]};
            }
            free(taken);
        }
        qsort(cand, (size_t)nc, sizeof *cand, cmp_ref);
        for (int k = 0; k < W; k++) {
            next[k] = live[cand[k].beam];
            next[k].tok[next[k].n++] = cand[k].token;
            next[k].cum = cand[k].cum;
        }
        memcpy(live, next, sizeof *live * (size_t)W);
        n_live = W;
    }
    memcpy(out, live, sizeof *live * (size_t)W);
    free(live);
    free(next);
    free(logits);
    free(lp);
    free(cand);
}

static void test_beam_reference(const char *model) {
    bt_error err;
    bt_error_init(&err);
    bt_gguf *g = NULL;
    bt_hparams hp;
    CHECK_OK(bt_gguf_open(model, &g, &err));
    CHECK_OK(bt_hparams_load(g, &hp, &err));
    bt_stage_params sp = bt_stage_default_params();
    sp.kv_tokens = 512;
    sp.max_batch = 128;
    sp.max_seqs = 2;
    bt_stage *st = NULL;
    CHECK_OK(bt_stage_new(g, &sp, &st, &err));
    const int n_gen = 8;
    for (int W = 1; W <= 4; W++) {
        int n_prompt[2] = {5 + W, 20 + 3 * W};
        bt_request_params p[2];
        for (int i = 0; i < 2; i++) {
            p[i] = bt_request_default_params();
            p[i].max_tokens = n_gen;
            p[i].ignore_eos = true;
            p[i].sampling.temperature = 0;
            p[i].beam_width = W;
            p[i].n = W;
            p[i].best_of = W;
        }
        bt_request *reqs[2];
        bt_status rs = run_reqs(model, W == 3 ? 2 : 1, 2, n_prompt, p, reqs, &err);
        CHECK_OK(rs);
        if (rs != BT_OK)
            printf("  beam W=%d: %s\n", W, err.msg);
        for (int i = 0; i < 2 && rs == BT_OK; i++) {
            int32_t prompt[MAX_TOK];
            make_prompt(hp.n_vocab, i, n_prompt[i], prompt);
            ref_beam ref[4];
            ref_beam_search(st, prompt, n_prompt[i], W, n_gen, hp.n_vocab, ref);
            bt_request *r = reqs[i];
            CHECK_EQ_INT(r->state, BT_REQ_DONE);
            CHECK_EQ_INT(r->n_out, W);
            int bad = 0;
            for (int k = 0; k < W && k < r->n_out; k++) {
                const bt_request *o = r->out[k];
                bool same = o->n_tokens == ref[k].n &&
                            memcmp(o->tokens, ref[k].tok, sizeof(int32_t) * (size_t)ref[k].n) == 0;
                bad += !same;
                CHECK(same);
                CHECK_NEAR(o->logprob_sum, ref[k].cum, 1e-3);
                CHECK_EQ_INT(o->finish, BT_FINISH_LENGTH);
            }
            printf("beam W=%d prompt %d: engine %s the reference (best cum %.4f)\n", W, i,
                   bad ? "DIFFERS from" : "equals",
                   r->n_out ? (double)r->out[0]->logprob_sum : 0.0);
            if (W == 1) {
                /* width 1 equals greedy: rerun greedy */
                bt_request_params gp = bt_request_default_params();
                gp.max_tokens = n_gen;
                gp.ignore_eos = true;
                gp.sampling.temperature = 0;
                bt_request_params gps[2] = {gp, gp};
                bt_request *both[2];
                CHECK_OK(run_reqs(model, 1, 2, n_prompt, gps, both, &err));
                CHECK(r->n_out == 1 && same_tokens(r->out[0], both[i]));
                bt_request_unref(both[0]);
                bt_request_unref(both[1]);
            }
        }
        for (int i = 0; i < 2; i++)
            bt_request_unref(reqs[i]);
    }
    bt_stage_free(st);
    bt_gguf_free(g);
}

/* ---- n and best_of ---- */

typedef struct kv_probe {
    bt_engine **e;
    int seen;
    int used_at_first; /* blocks in use when the first branch token arrived */
    int used_at_done;  /* when the request's DONE arrived */
} kv_probe;

/* On the engine thread, from the sink: the scheduler's own count. */
static void on_event_probe(int i, const bt_event *ev, void *ctx) {
    (void)i;
    kv_probe *k = ctx;
    if (ev->kind == BT_EVENT_TOKEN && k->seen++ == 0)
        k->used_at_first = bt_sched_kv_blocks_used(bt_engine_sched(*k->e));
    if (ev->kind == BT_EVENT_DONE)
        k->used_at_done = bt_sched_kv_blocks_used(bt_engine_sched(*k->e));
}

static bt_request_params chain_params(uint64_t seed, int n, int best_of, int max_tokens) {
    bt_request_params p = bt_request_default_params();
    p.max_tokens = max_tokens;
    p.ignore_eos = true;
    p.n = n;
    p.best_of = best_of;
    p.sampling.temperature = 0.9f;
    p.sampling.top_k = 40;
    p.sampling.top_p = 0.9f;
    p.sampling.repetition_penalty = 1.1f;
    p.sampling.presence_penalty = 0.5f;
    p.sampling.seed = seed;
    return p;
}

static bool same_completions(const bt_request *a, const bt_request *b) {
    if (a->n_out != b->n_out)
        return false;
    for (int i = 0; i < a->n_out; i++)
        if (!same_tokens(a->out[i], b->out[i]) ||
            memcmp(a->out[i]->logprobs, b->out[i]->logprobs,
                   sizeof(float) * (size_t)a->out[i]->n_tokens) != 0)
            return false;
    return true;
}

static void test_n_best_of(const char *model) {
    bt_error err;
    bt_error_init(&err);
    /* KV sharing: a 70-token prompt, best_of 4; count blocks when the first token lands. */
    {
        cluster c;
        CHECK_OK(cluster_open(&c, model, 1, 2048, &err));
        kv_probe k = {.e = &c.e};
        bt_request_params p = chain_params(11, 4, 4, 6);
        int32_t ids[MAX_TOK];
        make_prompt(c.hp.n_vocab, 0, 70, ids);
        bt_request *r = NULL;
        bt_test_job job = {.prompt = ids, .n_prompt = 70, .p = p};
        CHECK_OK(bt_test_serve(c.e, 1, &job, false, &r, on_event_probe, &k, &err));
        /* shared: 69 positions = 4 whole blocks once + 4 branches x (partial + growth) */
        printf("best_of 4, 70-token prompt: %d KV blocks in use at the first token (unshared "
               "would be >= %d)\n",
               k.used_at_first, 4 * 5);
        CHECK(k.used_at_first > 0 && k.used_at_first <= 4 + 4 * 1);
        CHECK_EQ_INT(r->n_out, 4);
        int differ = 0;
        for (int i = 1; i < r->n_out; i++)
            differ += !same_tokens(r->out[0], r->out[i]);
        CHECK(differ >= 2);
        for (int i = 0; i < r->n_out; i++) {
            CHECK_EQ_INT(r->out[i]->n_generated, 6);
            CHECK_EQ_INT(r->out[i]->n_prompt, 70);
            CHECK(memcmp(r->out[i]->tokens, ids, sizeof ids[0] * 70) == 0);
        }
        CHECK_EQ_INT(k.used_at_done, 0);
        CHECK_EQ_INT(bt_sched_kv_blocks_used(bt_engine_sched(c.e)), 0);
        bt_request_unref(r);
        cluster_close(&c);
    }
    /* Same seed: 1, 2, 3 stages, and among 8 concurrent requests. */
    bt_request_params p[8];
    int np[8];
    for (int i = 0; i < 8; i++) {
        p[i] = chain_params(100 + (uint64_t)i, 1 + i % 3, 1 + i % 3 + (i == 4), 5 + i);
        np[i] = 1 + (i * 13) % 40;
    }
    bt_request *alone[3][3], *conc[8];
    for (int s = 1; s <= 3; s++)
        CHECK_OK(run_reqs(model, s, 3, np, p, alone[s - 1], &err));
    CHECK(alone[0][0]->n_out == 1 && alone[0][1]->n_out == 2 && alone[0][2]->n_out == 3);
    bool st_same = true;
    for (int i = 0; i < 3; i++)
        st_same &= same_completions(alone[0][i], alone[1][i]) &&
                   same_completions(alone[0][i], alone[2][i]);
    CHECK(st_same);
    /* request 1 (n 2): alone on 2 stages vs among 8 */
    bt_request *one[2];
    CHECK_OK(run_reqs(model, 2, 2, np, p, one, &err));
    CHECK_OK(run_reqs(model, 2, 8, np, p, conc, &err));
    bool c_same = same_completions(one[0], conc[0]) && same_completions(one[1], conc[1]);
    CHECK(c_same);
    CHECK_EQ_INT(conc[1]->n_out, 2);
    CHECK(!same_tokens(conc[1]->out[0], conc[1]->out[1]));
    /* again: reproducible */
    bt_request *again[8];
    CHECK_OK(run_reqs(model, 3, 8, np, p, again, &err));
    int rep = 0;
    for (int i = 0; i < 8; i++)
        rep += same_completions(conc[i], again[i]);
    CHECK_EQ_INT(rep, 8);
    printf("n/best_of: 1/2/3 stages %s, alone vs 8 concurrent %s, 2 vs 3 stages concurrent %d/8 "
           "same\n",
           st_same ? "same" : "DIFFER", c_same ? "same" : "DIFFER", rep);
    /* best_of 5 > n 2 (request 4 has best_of 3 > n 2): the best by cumulative logprob */
    {
        bt_request *r = conc[4];
        CHECK_EQ_INT(r->n_out, 2);
        CHECK_EQ_INT(r->n_branch, 3);
        if (r->n_out == 2) {
            CHECK(r->out[0]->logprob_sum >= r->out[1]->logprob_sum);
            for (int b = 0; b < r->n_branch; b++) {
                const bt_request *x = r->branch[b];
                if (x != r->out[0] && x != r->out[1])
                    CHECK(x->logprob_sum <= r->out[1]->logprob_sum);
            }
        }
    }
    for (int i = 0; i < 8; i++) {
        bt_request_unref(conc[i]);
        bt_request_unref(again[i]);
    }
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < 3; i++)
            bt_request_unref(alone[s][i]);
    bt_request_unref(one[0]);
    bt_request_unref(one[1]);
}

/* ---- SmolLM2 ---- */

static void test_smol_beam(const char *model) {
    bt_error err;
    bt_error_init(&err);
    bt_request_params p[20];
    int np[20];
    for (int i = 0; i < 20; i++) {
        p[i] = bt_request_default_params();
        p[i].max_tokens = 16;
        p[i].ignore_eos = true;
        p[i].sampling.temperature = 0;
        np[i] = 4 + (i / 2) * 3;
        if (i % 2 == 0) {
            p[i].beam_width = 4;
            p[i].n = 1;
            p[i].best_of = 1;
        }
    }
    /* prompts: make_prompt(index) differs per index, so pair them by index: run the beam
     * requests at even indices and greedy at the odd ones with the same prompt. */
    bt_request *reqs[20] = {0};
    bt_status st = run_reqs_idx(model, 2, 4096, 20, np, 2, p, reqs, NULL, NULL, &err);
    CHECK_OK(st);
    int wins = 0;
    for (int i = 0; i < 10 && st == BT_OK; i++) {
        bt_request *b = reqs[2 * i], *g = reqs[2 * i + 1];
        CHECK_EQ_INT(b->n_out, 1);
        CHECK_EQ_INT(g->n_generated, 16);
        if (b->n_out < 1)
            continue;
        CHECK_EQ_INT(b->out[0]->n_generated, 16);
        bool win = b->out[0]->logprob_sum >= g->logprob_sum - 1e-4f;
        wins += win;
        printf("  prompt %d: beam4 %.4f greedy %.4f\n", i, (double)b->out[0]->logprob_sum,
               (double)g->logprob_sum);
    }
    printf("SmolLM2 beam 4 >= greedy on %d/10 prompts\n", wins);
    CHECK(wins >= 9);
    for (int i = 0; i < 20; i++)
        bt_request_unref(reqs[i]);
}

/* Stop strings: cut greedy output text across a token boundary, rerun with it as a stop. */
static void test_smol_stop(const char *model) {
    bt_error err;
    bt_error_init(&err);
    bt_request_params p = bt_request_default_params();
    p.max_tokens = 24;
    p.ignore_eos = true;
    p.sampling.temperature = 0;
    int np[1] = {12};
    bt_request *r[1];
    CHECK_OK(run_reqs(model, 1, 1, np, &p, r, &err));
    const bt_request *a = r[0];
    CHECK(a->text && a->n_text > 8);
    if (!a->text || a->n_text <= 8) {
        bt_request_unref(r[0]);
        return;
    }
    /* find a token boundary in the text near the middle: the text of the first k tokens */
    cluster c;
    CHECK_OK(cluster_open(&c, model, 1, 512, &err));
    char pre[4096];
    size_t n_pre = 0;
    int k = a->n_prompt + 6;
    bt_detokenize(c.v, a->tokens + a->n_prompt, (size_t)(k - a->n_prompt), false, false, pre,
                  sizeof pre, &n_pre, &err);
    cluster_close(&c);
    size_t cut = n_pre < a->n_text ? n_pre : a->n_text / 2;
    size_t from = cut >= 2 ? cut - 2 : 0;
    size_t len = from + 4 <= a->n_text ? 4 : a->n_text - from;
    char stop[8];
    memcpy(stop, a->text + from, len);
    stop[len] = '\0';
    bt_request_params q = p;
    CHECK_OK(bt_request_params_add_stop(&q, "\x01never", 6, &err));
    CHECK_OK(bt_request_params_add_stop(&q, stop, len, &err));
    bt_request *s[1];
    CHECK_OK(run_reqs(model, 2, 1, np, &q, s, &err));
    const char *first = strstr(a->text, stop);
    size_t want = first ? (size_t)(first - a->text) : a->n_text;
    CHECK_EQ_INT(s[0]->finish, BT_FINISH_STOP);
    CHECK_EQ_INT((int)s[0]->n_text, (int)want);
    CHECK(s[0]->n_text == 0 || memcmp(s[0]->text, a->text, want) == 0);
    CHECK(s[0]->n_text == 0 || strstr(s[0]->text, stop) == NULL);
    printf("stop \"%s\" (spans a token boundary at byte %zu): %zu bytes kept of %zu, finish %s\n",
           stop, cut, s[0]->n_text, a->n_text, bt_finish_name(s[0]->finish));
    bt_request_unref(r[0]);
    bt_request_unref(s[0]);
}

int main(void) {
    if (bt_test_kernel_level_skip())
        return 77;
    test_beam_arith();
    const char *tiny = check_make_tiny_model("test_beam");
    if (tiny) {
        test_beam_reference(tiny);
        test_n_best_of(tiny);
        unlink(tiny);
    }
    const char *smol = check_model_path("SmolLM2 beam and stop checks");
    if (smol) {
        test_smol_stop(smol);
        test_smol_beam(smol);
    }
    return check_finish();
}
