/*
 * test_pipeline.c - the whole pipeline in one process: coordinator engine + 1, 2 or 3 stage
 * threads over the local transport (bt_launch_start singleton mode), on a tiny random
 * 6-layer llama (made by make_tiny_model from BT_BUILD_DIR) and on SmolLM2 when present.
 *
 *   - codec f32: 1, 2 and 3 stages give exactly the same tokens and logprobs, greedy and
 *     seeded temperature 0.8;
 *   - 8 concurrent requests of different prompt and output lengths give exactly the tokens
 *     and logprobs each gives alone, greedy and seeded;
 *   - a KV capacity small enough to force many preemptions still gives those bits;
 *   - n = 4 (forks of the prompt's KV) gives 4 copies of the n = 1 completion, greedy, with
 *     and without KV pressure;
 *   - a stage killed mid-run fails every request with a message naming its rank.
 *
 * Prompts are token ids (no tokenizer involved), drawn from a fixed LCG inside the vocab.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "kernel_level.h"
#include "engine.h"
#include "engine_client.h"
#include "gguf.h"
#include "hparams.h"
#include "launch.h"
#include "request.h"
#include "request_impl.h"
#include "vocab.h"

#define MAX_REQ 8
#define MAX_TOK 256
#define MAX_N 4

typedef struct completion {
    int n;
    int32_t tok[MAX_TOK];
    float lp[MAX_TOK];
} completion;

typedef struct out {
    int n; /* = c[0].n */
    int32_t tok[MAX_TOK];
    float lp[MAX_TOK];
    bt_finish finish;
    char msg[512];
    int n_comp; /* completions of the request (n) */
    completion c[MAX_N];
} out;

typedef struct job {
    int n_req;
    int n_prompt[MAX_REQ];
    int n_gen[MAX_REQ];
    float temperature;
    uint64_t seed;
    int n; /* completions per request; 0 = 1 */
} job;

typedef struct run_opts {
    int stages;
    bool concurrent; /* all submitted before one run; else one run per request */
    int kv_tokens;   /* 0 = default */
    int max_seqs;
    int kill_rank; /* > 0: kill this stage after kill_after tokens */
    int kill_after;
} run_opts;

typedef struct kill_ctx {
    bt_launch *L;
    int rank, after, seen;
} kill_ctx;

static void on_event_kill(int i, const bt_event *ev, void *ctx) {
    (void)i;
    kill_ctx *k = ctx;
    if (ev->kind == BT_EVENT_TOKEN && k->rank > 0 && ++k->seen == k->after)
        bt_local_hub_kill(k->L->hub, k->rank);
}

static void make_prompt(int32_t n_vocab, int idx, int n, int32_t *ids) {
    uint64_t x = 0x2545F4914F6CDD1DULL * (uint64_t)(idx + 1);
    for (int i = 0; i < n; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        ids[i] = (int32_t)(3 + (x >> 33) % (uint64_t)(n_vocab - 3));
    }
}

/* Runs job j through a fresh cluster. Returns the status of the engine run. */
static bt_status run_job(const char *model, const job *j, const run_opts *o, out *res,
                         uint64_t *preemptions, char *run_msg, size_t run_msg_len) {
    bt_error err;
    bt_error_init(&err);
    bt_gguf *g = NULL;
    bt_vocab *v = NULL;
    bt_hparams hp;
    bt_launch L;
    bt_engine *e = NULL;
    bt_request *reqs[MAX_REQ] = {0};
    bool launched = false;
    bt_status st;
    memset(res, 0, sizeof *res * (size_t)j->n_req);
    if (run_msg_len)
        run_msg[0] = '\0';
    if ((st = bt_gguf_open(model, &g, &err)) != BT_OK ||
        (st = bt_hparams_load(g, &hp, &err)) != BT_OK || (st = bt_vocab_load(g, &v, &err)) != BT_OK)
        goto done;
    int max_seqs = o->max_seqs ? o->max_seqs : 8;
    bt_launch_params lp = {.n_threads = 1,
                           .local_stages = o->stages,
                           .max_batch = 512,
                           .max_seqs = max_seqs,
                           .n_embd = hp.n_embd};
    if ((st = bt_launch_start(&L, g, &lp, &err)) != BT_OK)
        goto done;
    launched = true;
    bt_engine_params ep = bt_engine_default_params();
    ep.cluster.codec = BT_CODEC_F32;
    ep.cluster.max_batch = 512;
    ep.cluster.max_seqs = max_seqs;
    ep.cluster.kv_tokens = o->kv_tokens ? o->kv_tokens : 2048;
    ep.prefill_chunk = 32; /* prompts span several chunks */
    ep.n_ctx = o->kv_tokens ? o->kv_tokens : 256;
    if (ep.n_ctx > hp.n_ctx_train && hp.n_ctx_train > 0)
        ep.n_ctx = hp.n_ctx_train;
    if ((st = bt_engine_new(L.t, g, v, &ep, &e, &err)) != BT_OK)
        goto done;
    kill_ctx kc = {.L = &L, .rank = o->kill_rank, .after = o->kill_after};
    int32_t ids[MAX_REQ][MAX_TOK];
    bt_test_job jobs[MAX_REQ];
    for (int i = 0; i < j->n_req; i++) {
        make_prompt(hp.n_vocab, i, j->n_prompt[i], ids[i]);
        bt_request_params rp = {
            .max_tokens = j->n_gen[i], .ignore_eos = true, .sampling = bt_sampler_default_params()};
        rp.sampling.temperature = j->temperature;
        rp.sampling.seed = j->seed;
        rp.n = j->n;
        jobs[i] = (bt_test_job){.prompt = ids[i], .n_prompt = j->n_prompt[i], .p = rp};
    }
    st = bt_test_serve(e, j->n_req, jobs, !o->concurrent, reqs, on_event_kill, &kc, &err);
    for (int i = 0; i < j->n_req; i++) {
        const bt_request *r = reqs[i];
        if (!r)
            continue;
        res[i].finish = r->finish;
        res[i].n = r->n_tokens - r->n_prompt;
        for (int k = 0; k < res[i].n && k < MAX_TOK; k++) {
            res[i].tok[k] = r->tokens[r->n_prompt + k];
            res[i].lp[k] = r->logprobs[r->n_prompt + k];
        }
        snprintf(res[i].msg, sizeof res[i].msg, "%s", r->error.msg);
        res[i].n_comp = r->n_out < MAX_N ? r->n_out : MAX_N;
        for (int c = 0; c < res[i].n_comp; c++) {
            const bt_request *oc = r->out[c];
            completion *rc = &res[i].c[c];
            rc->n = oc->n_tokens - oc->n_prompt;
            for (int k = 0; k < rc->n && k < MAX_TOK; k++) {
                rc->tok[k] = oc->tokens[oc->n_prompt + k];
                rc->lp[k] = oc->logprobs[oc->n_prompt + k];
            }
        }
    }
    if (preemptions) {
        bt_engine_metrics m;
        bt_engine_get_metrics(e, &m);
        *preemptions = m.preemptions_total;
    }
done:
    if (st != BT_OK && run_msg_len)
        snprintf(run_msg, run_msg_len, "%s", err.msg);
    bt_engine_metrics em;
    if (e)
        bt_engine_get_metrics(e, &em);
    if (launched && (!e || em.failed))
        bt_launch_abort(&L, 1);
    bt_engine_free(e);
    if (launched) {
        int rc = bt_launch_finish(&L, st == BT_OK ? 0 : 1);
        if (st == BT_OK)
            CHECK_EQ_INT(rc, 0);
    }
    for (int i = 0; i < j->n_req; i++)
        bt_request_unref(reqs[i]);
    bt_vocab_free(v);
    bt_gguf_free(g);
    return st;
}

/* Exact equality of tokens, and of logprobs when `exact_lp` (else within tol). */
static void check_same(const char *what, const job *j, const out *a, const out *b, bool exact_lp,
                       double tol) {
    int bad_tok = 0, bad_lp = 0;
    double max_d = 0;
    for (int i = 0; i < j->n_req; i++) {
        if (a[i].n != b[i].n || a[i].n != j->n_gen[i] || a[i].finish != BT_FINISH_LENGTH ||
            b[i].finish != BT_FINISH_LENGTH) {
            check_fail(__FILE__, __LINE__,
                       "%s: request %d: %d vs %d tokens (want %d), finish %s/%s", what, i, a[i].n,
                       b[i].n, j->n_gen[i], bt_finish_name(a[i].finish),
                       bt_finish_name(b[i].finish));
            continue;
        }
        for (int k = 0; k < a[i].n; k++) {
            if (a[i].tok[k] != b[i].tok[k]) {
                if (!bad_tok)
                    printf("  %s: request %d first differs at token %d: %d vs %d\n", what, i, k,
                           a[i].tok[k], b[i].tok[k]);
                bad_tok++;
                break;
            }
            double d = (double)a[i].lp[k] - (double)b[i].lp[k];
            d = d < 0 ? -d : d;
            if (d > max_d)
                max_d = d;
            if (exact_lp ? d != 0 : d > tol)
                bad_lp++;
        }
    }
    if (bad_tok || bad_lp)
        check_fail(__FILE__, __LINE__,
                   "%s: %d requests with other tokens, %d logprobs differ "
                   "(max |d| %.3g)",
                   what, bad_tok, bad_lp, max_d);
    else
        bt_check_passed++;
    printf("%s: %s, max |logprob diff| %.3g\n", what, bad_tok || bad_lp ? "DIFFER" : "same", max_d);
}

/* 1, 2, 3 stages, each request alone: identical tokens and logprobs. */
static void test_stage_counts(const char *model, const char *name, const job *j) {
    out r1[MAX_REQ], rn[MAX_REQ];
    char msg[512];
    run_opts o = {.stages = 1};
    CHECK_OK(run_job(model, j, &o, r1, NULL, msg, sizeof msg));
    for (int s = 2; s <= 3; s++) {
        o.stages = s;
        bt_status st = run_job(model, j, &o, rn, NULL, msg, sizeof msg);
        CHECK_OK(st);
        if (st != BT_OK) {
            printf("  %s %d stages: %s\n", name, s, msg);
            continue;
        }
        char what[128];
        snprintf(what, sizeof what, "%s T=%.1f: 1 vs %d stages", name, (double)j->temperature, s);
        check_same(what, j, r1, rn, true, 0);
    }
}

/* 8 requests of different prompt and output lengths, run alone, then all at once, then all at
 * once with a KV capacity far below their needs (preemption and recomputation): the same bits,
 * greedy (temperature 0) or sampled (seeded). */
static void test_concurrent(const char *model, const char *name, int stages, float temperature,
                            int kv_small) {
    job j = {.n_req = 8, .temperature = temperature, .seed = 11};
    for (int i = 0; i < 8; i++) {
        j.n_prompt[i] = 3 + (i * 19) % 70;
        j.n_gen[i] = 4 + (i * 5) % 21;
    }
    out alone[MAX_REQ], conc[MAX_REQ];
    char msg[512], what[160];
    run_opts o = {.stages = stages, .concurrent = false};
    CHECK_OK(run_job(model, &j, &o, alone, NULL, msg, sizeof msg));
    o.concurrent = true;
    CHECK_OK(run_job(model, &j, &o, conc, NULL, msg, sizeof msg));
    snprintf(what, sizeof what, "%s T=%.1f: 8 concurrent vs alone, %d stages", name,
             (double)temperature, stages);
    check_same(what, &j, alone, conc, true, 0);

    uint64_t n_pre = 0;
    o.kv_tokens = kv_small;
    out small[MAX_REQ];
    bt_status st = run_job(model, &j, &o, small, &n_pre, msg, sizeof msg);
    CHECK_OK(st);
    if (st != BT_OK)
        printf("  preemption run: %s\n", msg);
    CHECK(n_pre > 0);
    snprintf(what, sizeof what,
             "%s T=%.1f: 8 concurrent, %d KV tokens (%llu preemptions), %d stages", name,
             (double)temperature, kv_small, (unsigned long long)n_pre, stages);
    check_same(what, &j, alone, small, true, 0);
}

/* n = 4 greedy completions share the prompt's KV through forks, and each decodes the last
 * prompt token on its own: every one equals the n = 1 completion, bit for bit, with room
 * and under KV pressure (forks preempted and recomputed alone). */
static void test_forks(const char *model, const char *name, int stages, int kv_small) {
    job j1 = {.n_req = 2, .temperature = 0.0f};
    j1.n_prompt[0] = 21, j1.n_gen[0] = 24;
    j1.n_prompt[1] = 50, j1.n_gen[1] = 17;
    job jn = j1;
    jn.n = MAX_N;
    out one[MAX_REQ], many[MAX_REQ];
    char msg[512], what[160];
    run_opts o = {.stages = stages, .concurrent = true};
    CHECK_OK(run_job(model, &j1, &o, one, NULL, msg, sizeof msg));
    for (int pass = 0; pass < 2; pass++) {
        uint64_t n_pre = 0;
        o.kv_tokens = pass ? kv_small : 0;
        bt_status st = run_job(model, &jn, &o, many, &n_pre, msg, sizeof msg);
        CHECK_OK(st);
        if (st != BT_OK) {
            printf("  forks: %s\n", msg);
            continue;
        }
        if (pass)
            CHECK(n_pre > 0);
        int bad = 0;
        for (int i = 0; i < jn.n_req; i++) {
            CHECK_EQ_INT(many[i].n_comp, MAX_N);
            for (int c = 0; c < many[i].n_comp; c++) {
                const completion *k = &many[i].c[c];
                if (k->n != one[i].n ||
                    memcmp(k->tok, one[i].tok, sizeof(int32_t) * (size_t)k->n) != 0 ||
                    memcmp(k->lp, one[i].lp, sizeof(float) * (size_t)k->n) != 0) {
                    printf("  request %d completion %d differs from n = 1\n", i, c);
                    bad++;
                }
            }
        }
        CHECK_EQ_INT(bad, 0);
        snprintf(what, sizeof what, "%s: n=%d vs n=1 greedy, %d stages, KV %s (%llu preemptions)",
                 name, MAX_N, stages, pass ? "small" : "ample", (unsigned long long)n_pre);
        printf("%s: %s\n", what, bad ? "DIFFER" : "same");
    }
}

static void test_stage_failure(const char *model) {
    job j = {.n_req = 4, .temperature = 0.0f};
    for (int i = 0; i < 4; i++) {
        j.n_prompt[i] = 5 + 7 * i;
        j.n_gen[i] = 200;
    }
    out res[MAX_REQ];
    char msg[512];
    run_opts o = {.stages = 3, .concurrent = true, .kill_rank = 2, .kill_after = 6};
    bt_status st = run_job(model, &j, &o, res, NULL, msg, sizeof msg);
    CHECK(st != BT_OK);
    printf("stage failure: %s: %s\n", bt_status_str(st), msg);
    CHECK(strstr(msg, "rank 2") != NULL);
    for (int i = 0; i < j.n_req; i++) {
        CHECK_EQ_INT(res[i].finish, BT_FINISH_ERROR);
        if (!strstr(res[i].msg, "rank 2"))
            check_fail(__FILE__, __LINE__, "request %d error '%s' does not name rank 2", i,
                       res[i].msg);
        CHECK(res[i].n < j.n_gen[i]);
    }
}

int main(void) {
    if (bt_test_kernel_level_skip())
        return 77;
    const char *tiny = check_make_tiny_model("test_pipeline");
    if (tiny) {
        job j = {.n_req = 4, .temperature = 0.0f};
        int np[4] = {1, 9, 33, 70}, ng[4] = {12, 20, 8, 16};
        for (int i = 0; i < 4; i++) {
            j.n_prompt[i] = np[i];
            j.n_gen[i] = ng[i];
        }
        test_stage_counts(tiny, "tiny", &j);
        j.temperature = 0.8f;
        j.seed = 7;
        test_stage_counts(tiny, "tiny", &j);
        for (int stages = 1; stages <= 3; stages += 2) {
            test_concurrent(tiny, "tiny", stages, 0.0f, 128);
            test_concurrent(tiny, "tiny", stages, 0.8f, 128);
            test_forks(tiny, "tiny", stages, 128);
        }
        test_stage_failure(tiny);
        unlink(tiny);
    }
    const char *smol = check_model_path("SmolLM2 pipeline checks");
    if (smol) {
        job j = {.n_req = 2, .temperature = 0.0f};
        j.n_prompt[0] = 6;
        j.n_gen[0] = 6;
        j.n_prompt[1] = 40;
        j.n_gen[1] = 5;
        test_stage_counts(smol, "SmolLM2", &j);
        j.temperature = 0.8f;
        j.seed = 7;
        test_stage_counts(smol, "SmolLM2", &j);
        /* The real model under heavy KV pressure, 1 and 2 stages. */
        for (int stages = 1; stages <= 2; stages++) {
            test_concurrent(smol, "SmolLM2", stages, 0.0f, 144);
            test_forks(smol, "SmolLM2", stages, 144);
        }
        test_concurrent(smol, "SmolLM2", 2, 0.8f, 144);
    }
    return check_finish();
}
