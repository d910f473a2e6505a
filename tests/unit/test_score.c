/*
 * test_score.c - prompt scoring (score_prompt requests, protocol 3's StageBatch.target)
 * through the whole pipeline in one process (coordinator engine + 1 or 2 stage threads over
 * the local transport), on a tiny random 6-layer llama and on SmolLM2 when present.
 *
 *   - the log-probability of each prompt token i given [0, i) equals, bit for bit, the
 *     log-softmax of the logits of one bt_stage_forward of the same tokens on a lone stage;
 *   - the same bits with prefill chunks of 5, 32 and 512 rows, with 1 and 2 stages (f32
 *     activations), alongside a generating request, and under KV pressure (preemptions);
 *   - prompts longer than BT_SCORE_ROWS (several batches of scored rows), of 2 tokens (one
 *     score), of 1 token (nothing to score: DONE at once, finish length), and one scored
 *     from token 40 on (score_from: the earlier ones are 0).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "engine.h"
#include "engine_client.h"
#include "gguf.h"
#include "hparams.h"
#include "kernel_level.h"
#include "launch.h"
#include "request.h"
#include "stage.h"
#include "stage_layout.h"
#include "vocab.h"

#define N_REQ 4
#define MAX_PROMPT 200

static const int prompt_len[N_REQ] = {150, 2, 1, 67};
static const int score_from[N_REQ] = {0, 1, 0, 40}; /* the last: tokens [40, 67) only */

static void make_prompt(int32_t n_vocab, int idx, int n, int32_t *ids) {
    uint64_t x = 0x9E3779B97F4A7C15ULL * (uint64_t)(idx + 3);
    for (int i = 0; i < n; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        ids[i] = (int32_t)(3 + (x >> 33) % (uint64_t)(n_vocab - 3));
    }
}

/* The oracle: log_softmax(logits)[target] as perplexity computes it (float max, double sum). */
static float ref_logprob(const float *logits, int n_vocab, int32_t target) {
    float mx = logits[0];
    for (int v = 1; v < n_vocab; v++)
        mx = logits[v] > mx ? logits[v] : mx;
    double sum = 0.0;
    for (int v = 0; v < n_vocab; v++)
        sum += exp((double)(logits[v] - mx));
    return (float)((double)(logits[target] - mx) - log(sum));
}

/* ref[i][k] for k in [1, n): one forward of the whole prompt on a lone stage, every row's
 * logits. */
static void reference(const bt_gguf *g, int32_t n_vocab, float ref[N_REQ][MAX_PROMPT]) {
    bt_error err;
    bt_error_init(&err);
    bt_stage_params sp = bt_stage_default_params();
    sp.kv_tokens = 256;
    sp.max_batch = MAX_PROMPT;
    sp.max_seqs = 1;
    bt_stage *st = NULL;
    float *logits = malloc(sizeof *logits * (size_t)MAX_PROMPT * (size_t)n_vocab);
    CHECK(logits != NULL);
    CHECK_OK(bt_stage_new(g, &sp, &st, &err));
    if (!st || !logits) {
        free(logits);
        bt_stage_free(st);
        return;
    }
    for (int r = 0; r < N_REQ; r++) {
        int n = prompt_len[r];
        int32_t ids[MAX_PROMPT], seq[MAX_PROMPT], pos[MAX_PROMPT];
        uint8_t want[MAX_PROMPT];
        make_prompt(n_vocab, r, n, ids);
        for (int i = 0; i < n; i++) {
            seq[i] = 0;
            pos[i] = i;
            want[i] = 1;
        }
        bt_stage_seq_free(st, 0);
        bt_batch b = {.n_rows = n, .seq = seq, .pos = pos, .token = ids, .logits = want};
        CHECK_OK(bt_stage_forward(st, &b, NULL, NULL, logits, &err));
        ref[r][0] = 0.0f;
        for (int i = 1; i < n; i++)
            ref[r][i] = ref_logprob(logits + (size_t)(i - 1) * (size_t)n_vocab, n_vocab, ids[i]);
    }
    bt_stage_free(st);
    free(logits);
}

typedef struct score_opts {
    int stages, prefill_chunk, kv_tokens;
} score_opts;

/* What the DONE events said, per request. */
typedef struct done_seen {
    bool done, has_lp;
    bt_status status;
    bt_finish finish;
    int32_t prompt_tokens, completion_tokens;
    float lp[MAX_PROMPT];
} done_seen;

static void on_event(int i, const bt_event *ev, void *ctx) {
    done_seen *d = (done_seen *)ctx + i;
    if (ev->kind != BT_EVENT_DONE)
        return;
    d->done = true;
    d->status = ev->status;
    d->finish = ev->finish;
    d->prompt_tokens = ev->usage_prompt_tokens;
    d->completion_tokens = ev->usage_completion_tokens;
    d->has_lp = ev->prompt_logprobs != NULL;
    if (ev->prompt_logprobs && ev->usage_prompt_tokens <= MAX_PROMPT)
        memcpy(d->lp, ev->prompt_logprobs, sizeof(float) * (size_t)ev->usage_prompt_tokens);
}

/* Scores the N_REQ prompts concurrently (with one generating request among them) and checks
 * every log-probability against ref, bit for bit. */
static void check_scores(const char *model, const char *name, const score_opts *o,
                         float ref[N_REQ][MAX_PROMPT], uint64_t *preemptions) {
    bt_error err;
    bt_error_init(&err);
    bt_gguf *g = NULL;
    bt_vocab *v = NULL;
    bt_hparams hp;
    bt_launch L;
    bt_engine *e = NULL;
    bt_request *reqs[N_REQ + 1] = {0};
    bool launched = false;
    bt_status st;
    if ((st = bt_gguf_open(model, &g, &err)) != BT_OK ||
        (st = bt_hparams_load(g, &hp, &err)) != BT_OK || (st = bt_vocab_load(g, &v, &err)) != BT_OK)
        goto done;
    bt_launch_params lp = {.n_threads = 1,
                           .local_stages = o->stages,
                           .max_batch = 512,
                           .max_seqs = 8,
                           .n_embd = hp.n_embd};
    if ((st = bt_launch_start(&L, g, &lp, &err)) != BT_OK)
        goto done;
    launched = true;
    bt_engine_params ep = bt_engine_default_params();
    ep.cluster.codec = BT_CODEC_F32;
    ep.cluster.max_batch = 512;
    ep.cluster.max_seqs = 8;
    ep.cluster.kv_tokens = o->kv_tokens;
    ep.prefill_chunk = o->prefill_chunk;
    ep.n_ctx = 160;
    if ((st = bt_engine_new(L.t, g, v, &ep, &e, &err)) != BT_OK)
        goto done;
    static int32_t ids[N_REQ + 1][MAX_PROMPT];
    static done_seen seen[N_REQ + 1];
    memset(seen, 0, sizeof seen);
    bt_test_job jobs[N_REQ + 1];
    for (int r = 0; r <= N_REQ; r++) {
        bt_request_params rp = bt_request_default_params();
        int n = r < N_REQ ? prompt_len[r] : 20;
        make_prompt(hp.n_vocab, r, n, ids[r]);
        if (r < N_REQ) {
            rp.score_prompt = true;
            rp.score_from = score_from[r];
            rp.max_tokens = 0;
        } else { /* a generating neighbour */
            rp.max_tokens = 30;
            rp.ignore_eos = true;
            rp.sampling.temperature = 0.0f;
        }
        jobs[r] = (bt_test_job){.prompt = ids[r], .n_prompt = n, .p = rp};
    }
    st = bt_test_serve(e, N_REQ + 1, jobs, false, reqs, on_event, seen, &err);
    if (st == BT_OK && preemptions) {
        bt_engine_metrics m;
        bt_engine_get_metrics(e, &m);
        *preemptions = m.preemptions_total;
    }
    for (int r = 0; r < N_REQ && st == BT_OK; r++) {
        const done_seen *q = &seen[r];
        int n = prompt_len[r], bad = -1;
        CHECK(q->done && q->has_lp);
        for (int i = 0; i < n && bad < 0; i++) {
            float want = i < score_from[r] ? 0.0f : ref[r][i];
            if (memcmp(&q->lp[i], &want, sizeof(float)) != 0)
                bad = i;
        }
        if (bad >= 0)
            check_fail(__FILE__, __LINE__,
                       "%s, %d stages, chunk %d, kv %d: prompt %d (%d tokens) logprob[%d] %.9g, "
                       "the forward pass gives %.9g",
                       name, o->stages, o->prefill_chunk, o->kv_tokens, r, n, bad,
                       (double)q->lp[bad], bad < score_from[r] ? 0.0 : (double)ref[r][bad]);
        else
            bt_check_passed++;
        CHECK_EQ_INT(q->status, BT_OK);
        CHECK_EQ_INT(q->finish, BT_FINISH_LENGTH);
        CHECK_EQ_INT(q->prompt_tokens, n);
        CHECK_EQ_INT(q->completion_tokens, 0);
    }
    if (st == BT_OK) { /* the generating neighbour has no prompt_logprobs */
        CHECK(seen[N_REQ].done && !seen[N_REQ].has_lp);
        CHECK_EQ_INT(seen[N_REQ].finish, BT_FINISH_LENGTH);
        CHECK_EQ_INT(seen[N_REQ].completion_tokens, 30);
    }
done:
    if (st != BT_OK)
        check_fail(__FILE__, __LINE__, "%s, %d stages: %s", name, o->stages, err.msg);
    bt_engine_metrics em;
    if (e)
        bt_engine_get_metrics(e, &em);
    if (launched && (!e || em.failed))
        bt_launch_abort(&L, 1);
    bt_engine_free(e);
    if (launched)
        CHECK_EQ_INT(bt_launch_finish(&L, st == BT_OK ? 0 : 1), st == BT_OK ? 0 : 1);
    for (int r = 0; r <= N_REQ; r++)
        bt_request_unref(reqs[r]);
    bt_vocab_free(v);
    bt_gguf_free(g);
}

static void test_model(const char *model, const char *name, bool full) {
    bt_error err;
    bt_error_init(&err);
    bt_gguf *g = NULL;
    bt_hparams hp;
    CHECK_OK(bt_gguf_open(model, &g, &err));
    if (!g)
        return;
    CHECK_OK(bt_hparams_load(g, &hp, &err));
    static float ref[N_REQ][MAX_PROMPT];
    reference(g, hp.n_vocab, ref);
    bt_gguf_free(g);
    static const int chunks[3] = {5, 32, 512};
    for (int stages = 1; stages <= 2; stages++)
        for (int c = 0; c < 3; c++) {
            if (!full && c != 1)
                continue;
            score_opts o = {.stages = stages, .prefill_chunk = chunks[c], .kv_tokens = 2048};
            check_scores(model, name, &o, ref, NULL);
        }
    /* KV for barely more than the longest prompt: scoring requests are preempted and
     * recomputed, and score the same. */
    uint64_t pre = 0;
    score_opts o = {.stages = 2, .prefill_chunk = 32, .kv_tokens = 176};
    check_scores(model, name, &o, ref, &pre);
    if (pre == 0)
        check_fail(__FILE__, __LINE__, "%s: kv_tokens 176 caused no preemption", name);
    else
        bt_check_passed++;
}

int main(void) {
    if (bt_test_kernel_level_skip())
        return 77;
    const char *tiny = check_make_tiny_model("test_score");
    if (tiny) {
        test_model(tiny, "tiny", true);
        unlink(tiny);
    }
    const char *smol = check_model_path("SmolLM2 prompt scoring");
    if (smol)
        test_model(smol, "SmolLM2", false);
    return check_finish();
}
