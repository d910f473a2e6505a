/*
 * test_scheduler.c - the scheduler alone, driven by a fake pipeline (no model, no transport).
 *
 * The fake stage keeps, per sequence slot, the tokens of the positions it holds in its "KV
 * cache", applies every micro-batch's ops and rows in send order (as real stages do) and
 * checks them: rows of a sequence must extend its cached positions contiguously, and a FREE
 * must not hit a sequence that is in flight. The "model" samples token = H(history): a hash
 * of every token the sequence holds up to the wanted position, so a sequence recomputed after
 * preemption from wrong tokens, wrong positions or a stale cache generates different tokens
 * than the closed form each test compares against.
 *
 * Every batch is also checked against the scheduler's promises: at most max_batch rows, at
 * most prefill_chunk rows of one sequence, decode rows at most ceil(running / max_inflight)
 * (or BT_PROMPT_GROUP once running >= BT_PROMPT_GROUP x n_stages),
 * no sequence in two in-flight batches, prefill flag == (pos < n_prompt), row tokens == the
 * request's tokens, KV blocks used == the blocks the fake stage holds and <= capacity.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "request.h"
#include "request_impl.h"
#include "scheduler.h"

#define MAX_SEQS 16
#define MAX_BATCH 64
#define MAX_POS 2048
#define MAX_FLIGHT 8
#define MAX_REQS 32

/* ---- the fake model ---- */

static int32_t model_token(const int32_t *hist, int32_t n) {
    uint32_t h = 2166136261u;
    for (int32_t i = 0; i < n; i++) {
        h ^= (uint32_t)hist[i] + 0x9e3779b9u * (uint32_t)i;
        h *= 16777619u;
    }
    return (int32_t)(3 + h % 997); /* never 0..2 */
}

static float model_logprob(int32_t token) {
    return -0.125f * (float)(token % 13);
}

/* Tokens a request generates alone: the closed form every scheduling must reproduce. */
static void expected_tokens(const int32_t *prompt, int32_t n_prompt, int32_t n_gen, int32_t *out) {
    int32_t hist[MAX_POS];
    memcpy(hist, prompt, sizeof *hist * (size_t)n_prompt);
    for (int32_t i = 0; i < n_gen; i++) {
        hist[n_prompt + i] = model_token(hist, n_prompt + i);
        out[i] = hist[n_prompt + i];
    }
}

/* ---- the fake pipeline ---- */

typedef struct flight {
    uint64_t step;
    int n, n_rows;
    int32_t seq[MAX_BATCH], token[MAX_BATCH], row_seq[MAX_BATCH];
    float logprob[MAX_BATCH];
} flight;

typedef struct fake {
    bt_sched *s;
    bt_sched_params p;
    int32_t kv[MAX_SEQS][MAX_POS];
    int32_t kv_len[MAX_SEQS];
    bt_request *owner[MAX_SEQS]; /* request bound to a slot (from new_reqs) */
    flight fl[MAX_FLIGHT];
    int fl_head, n_fl;
    /* observations */
    int max_running, max_inflight_seen, max_decode_rows, n_batches, n_free_ops;
    int n_free_of_live; /* FREE of a request that was not done: a preemption */
    int violations;
} fake;

static int blocks(int32_t tokens) {
    return (tokens + BT_KV_BLOCK_TOKENS - 1) / BT_KV_BLOCK_TOKENS;
}

static bool seq_in_flight(const fake *f, int32_t seq) {
    for (int k = 0; k < f->n_fl; k++) {
        const flight *e = &f->fl[(f->fl_head + k) % MAX_FLIGHT];
        for (int i = 0; i < e->n_rows; i++)
            if (e->row_seq[i] == seq)
                return true;
    }
    return false;
}

#define VIOLATION(...)                                                                             \
    do {                                                                                           \
        f->violations++;                                                                           \
        check_fail(__FILE__, __LINE__, __VA_ARGS__);                                               \
    } while (0)

/* Snapshot of the running requests before a next_batch call (for the victim rule). */
typedef struct snap {
    int n;
    bt_request *r[MAX_REQS];
    uint64_t admit[MAX_REQS];
    bool in_flight[MAX_REQS];
    int preempted[MAX_REQS];
} snap;

static void take_snap(bt_request **reqs, int n_reqs, snap *sn) {
    sn->n = 0;
    for (int i = 0; i < n_reqs; i++) {
        bt_request *r = reqs[i];
        if (r->state != BT_REQ_RUNNING)
            continue;
        sn->r[sn->n] = r;
        sn->admit[sn->n] = r->admit_order;
        sn->in_flight[sn->n] = r->in_flight;
        sn->preempted[sn->n] = r->n_preempted;
        sn->n++;
    }
}

/* Checks and applies one batch to the fake stage; queues its results. */
static void fake_send(fake *f, const bt_sched_batch *b, const snap *sn, int running_before) {
    f->n_batches++;
    if (b->n_rows > f->p.max_batch)
        VIOLATION("batch %llu has %d rows > max_batch %d", (unsigned long long)b->step, b->n_rows,
                  f->p.max_batch);
    for (int i = 0; i < b->n_new; i++) {
        bt_request *r = b->new_reqs[i];
        if (r->seq < 0 || r->seq >= f->p.max_seqs)
            VIOLATION("new request with seq %d", r->seq);
        else
            f->owner[r->seq] = r;
    }
    for (int i = 0; i < b->n_ops; i++) {
        const bt_sched_op *op = &b->ops[i];
        CHECK_EQ_INT(op->kind, BT_SCHED_OP_FREE);
        if (seq_in_flight(f, op->seq))
            VIOLATION("FREE of seq %d while it is in flight", op->seq);
        f->kv_len[op->seq] = 0;
        f->n_free_ops++;
    }
    /* Rows: contiguity, flags, chunk sizes, one in-flight batch per sequence. */
    int rows_of[MAX_SEQS] = {0}, n_decode = 0;
    for (int i = 0; i < b->n_rows; i++)
        rows_of[b->seq[i]]++;
    for (int q = 0; q < f->p.max_seqs; q++) {
        if (!rows_of[q])
            continue;
        if (seq_in_flight(f, q))
            VIOLATION("seq %d is in two in-flight batches", q);
        if (rows_of[q] > f->p.prefill_chunk && rows_of[q] > 1)
            VIOLATION("seq %d has %d rows > prefill_chunk %d", q, rows_of[q], f->p.prefill_chunk);
    }
    flight *e = &f->fl[(f->fl_head + f->n_fl) % MAX_FLIGHT];
    e->step = b->step;
    e->n = 0;
    e->n_rows = b->n_rows;
    for (int i = 0; i < b->n_rows; i++) {
        int32_t q = b->seq[i], pos = b->pos[i];
        const bt_request *r = f->owner[q];
        e->row_seq[i] = q;
        if (!r || r->seq != q) {
            VIOLATION("row %d: seq %d has no request bound", i, q);
            continue;
        }
        if (pos != f->kv_len[q])
            VIOLATION("row %d: seq %d pos %d, the stage holds %d positions", i, q, pos,
                      f->kv_len[q]);
        if (pos >= MAX_POS)
            continue;
        if (b->token[i] != r->tokens[pos])
            VIOLATION("row %d: seq %d pos %d token %d, the request has %d", i, q, pos, b->token[i],
                      r->tokens[pos]);
        if (b->want[i] != (pos == r->n_tokens - 1))
            VIOLATION("row %d: seq %d pos %d want %d with n_tokens %d", i, q, pos, b->want[i],
                      r->n_tokens);
        f->kv[q][pos] = b->token[i];
        f->kv_len[q] = pos + 1;
        if (b->want[i]) {
            e->seq[e->n] = q;
            e->token[e->n] = model_token(f->kv[q], pos + 1);
            e->logprob[e->n] = model_logprob(e->token[e->n]);
            e->n++;
            if (rows_of[q] == 1)
                n_decode++;
        }
    }
    /* Decode rows are spread: at most ceil(running / max_inflight) per batch (above 4 rounded
     * up to the kernels' group of 4 tokens; a prompt tile's 16 once every stage can have
     * 16), counting the sequences running when the batch was formed (before any preemption
     * in it). */
    int cap = (running_before + f->p.max_inflight - 1) / f->p.max_inflight;
    if (cap > 4)
        cap = (cap + 3) / 4 * 4;
    if (cap < 2 && running_before >= 2)
        cap = 2;
    if (running_before >= 16 * f->p.n_stages && cap < 16)
        cap = 16;
    if (n_decode > cap)
        VIOLATION("batch %llu: %d decode rows > the cap %d of %d running, %d in flight, %d "
                  "stages",
                  (unsigned long long)b->step, n_decode, cap, running_before, f->p.max_inflight,
                  f->p.n_stages);
    if (n_decode > f->max_decode_rows)
        f->max_decode_rows = n_decode;
    f->n_fl++;
    if (f->n_fl > f->max_inflight_seen)
        f->max_inflight_seen = f->n_fl;
    if (f->n_fl > f->p.max_inflight)
        VIOLATION("%d batches in flight > max_inflight %d", f->n_fl, f->p.max_inflight);
    CHECK_EQ_INT(bt_sched_n_inflight(f->s), f->n_fl);

    /* KV accounting: every pending op has gone out with this batch, so the scheduler's count
     * must be exactly the blocks the stage holds. */
    int held = 0;
    for (int q = 0; q < f->p.max_seqs; q++)
        held += blocks(f->kv_len[q]);
    if (held != bt_sched_kv_blocks_used(f->s))
        VIOLATION("after batch %llu: scheduler counts %d KV blocks, the stage holds %d",
                  (unsigned long long)b->step, bt_sched_kv_blocks_used(f->s), held);
    if (held > f->p.kv_tokens / BT_KV_BLOCK_TOKENS)
        VIOLATION("stage holds %d blocks > capacity %d", held, f->p.kv_tokens / BT_KV_BLOCK_TOKENS);

    /* Preemption victims: each is the newest running sequence that was not in flight, except
     * sequences placed in this very batch; it is queued again at the front. */
    for (int i = 0; i < sn->n; i++) {
        bt_request *v = sn->r[i];
        if (v->n_preempted == sn->preempted[i])
            continue;
        f->n_free_of_live++;
        if (v->state != BT_REQ_QUEUED)
            VIOLATION("preempted request %llu is not queued", (unsigned long long)v->id);
        if (sn->in_flight[i])
            VIOLATION("preempted request %llu was in flight", (unsigned long long)v->id);
        if (v->q_prev && v->q_prev->n_preempted == 0)
            VIOLATION("preempted request %llu is not at the front of the queue",
                      (unsigned long long)v->id);
        for (int j = 0; j < sn->n; j++) {
            bt_request *w = sn->r[j];
            if (j == i || sn->admit[j] < sn->admit[i] || sn->in_flight[j])
                continue;
            if (w->state == BT_REQ_RUNNING && !w->in_flight)
                VIOLATION("preempted request %llu (admitted %llu) while newer %llu (admitted "
                          "%llu) was idle",
                          (unsigned long long)v->id, (unsigned long long)sn->admit[i],
                          (unsigned long long)w->id, (unsigned long long)sn->admit[j]);
        }
    }
}

static bt_status fake_complete(fake *f, bt_error *err) {
    flight *e = &f->fl[f->fl_head];
    bt_status st = bt_sched_on_results(f->s, e->step, e->n, e->seq, e->token, e->logprob, err);
    if (st != BT_OK)
        return st;
    f->fl_head = (f->fl_head + 1) % MAX_FLIGHT;
    f->n_fl--;
    return BT_OK;
}

static void fake_init(fake *f, const bt_sched_params *p) {
    memset(f, 0, sizeof *f);
    f->p = *p;
    bt_error err;
    bt_error_init(&err);
    CHECK_OK(bt_sched_new(p, &f->s, &err));
}

/* Sends every batch the scheduler will form now (checking each). Returns how many. */
static int fake_fill(fake *f, bt_request **reqs, int n_reqs) {
    int n = 0;
    for (;;) {
        snap sn;
        take_snap(reqs, n_reqs, &sn);
        bt_sched_batch *b;
        /* admission happens inside next_batch: count the running set it forms batches from */
        uint64_t pre = bt_sched_n_preemptions(f->s);
        if (!bt_sched_next_batch(f->s, &b))
            break;
        int running_before = bt_sched_n_running(f->s) + (int)(bt_sched_n_preemptions(f->s) - pre);
        if (running_before > f->max_running)
            f->max_running = running_before;
        if (bt_sched_n_running(f->s) > f->p.max_seqs)
            VIOLATION("%d running > max_seqs %d", bt_sched_n_running(f->s), f->p.max_seqs);
        fake_send(f, b, &sn, running_before);
        n++;
        if (n > 10000)
            break;
    }
    return n;
}

/* Runs until nothing is active, completing one batch after each fill. */
static void fake_run(fake *f, bt_request **reqs, int n_reqs) {
    bt_error err;
    bt_error_init(&err);
    for (int guard = 0; guard < 100000; guard++) {
        fake_fill(f, reqs, n_reqs);
        if (f->n_fl == 0) {
            if (bt_sched_n_active(f->s) > 0)
                VIOLATION("stalled: %d active, nothing in flight", bt_sched_n_active(f->s));
            return;
        }
        CHECK_OK(fake_complete(f, &err));
    }
    VIOLATION("did not finish");
}

/* ---- requests ---- */

static int n_done_calls;
static void on_done(bt_request *r, void *ctx) {
    (void)r;
    (void)ctx;
    n_done_calls++;
}

/* Request `id` with rp: its n_prompt prompt tokens are a function of the id. */
static bt_request *new_req(uint64_t id, int32_t n_prompt, const bt_request_params *rp,
                           int32_t n_ctx) {
    int32_t prompt[MAX_POS];
    for (int32_t i = 0; i < n_prompt; i++)
        prompt[i] = (int32_t)(3 + (id * 131 + (uint64_t)i * 17) % 997);
    bt_request *r = NULL;
    bt_error err;
    bt_error_init(&err);
    CHECK_OK(bt_request_new(prompt, n_prompt, rp, n_ctx, &r, &err));
    if (r)
        r->id = id;
    return r;
}

static bt_request *make_req(uint64_t id, int32_t n_prompt, int32_t max_tokens, int32_t n_ctx) {
    bt_request_params rp = {.max_tokens = max_tokens,
                            .ignore_eos = true,
                            .sampling = bt_sampler_default_params(),
                            .on_done = on_done};
    return new_req(id, n_prompt, &rp, n_ctx);
}

/* n alike requests, ids id0.., into reqs and submitted in order. */
static void submit_alike(bt_sched *s, bt_request **reqs, int n, uint64_t id0, int32_t n_prompt,
                         int32_t max_tokens, int32_t n_ctx) {
    for (int i = 0; i < n; i++) {
        reqs[i] = make_req(id0 + (uint64_t)i, n_prompt, max_tokens, n_ctx);
        bt_sched_submit(s, reqs[i]);
    }
}

/* Each of reqs[0..n) ended with an error whose message holds `what`. */
static void check_failed(bt_request *const *reqs, int n, const char *what) {
    for (int i = 0; i < n; i++) {
        CHECK_EQ_INT(reqs[i]->state, BT_REQ_DONE);
        CHECK_EQ_INT(reqs[i]->finish, BT_FINISH_ERROR);
        CHECK(strstr(reqs[i]->error.msg, what) != NULL);
    }
}

static void check_generated(const bt_request *r, int32_t n_gen) {
    int32_t want[MAX_POS];
    CHECK_EQ_INT(r->state, BT_REQ_DONE);
    CHECK_EQ_INT(r->finish, BT_FINISH_LENGTH);
    CHECK_EQ_INT(r->n_generated, n_gen);
    CHECK_EQ_INT(r->n_tokens, r->n_prompt + n_gen);
    expected_tokens(r->tokens, r->n_prompt, n_gen, want);
    int bad = 0;
    for (int32_t i = 0; i < n_gen; i++) {
        if (r->tokens[r->n_prompt + i] != want[i] ||
            r->logprobs[r->n_prompt + i] != model_logprob(want[i]))
            bad++;
    }
    if (bad)
        check_fail(__FILE__, __LINE__,
                   "request %llu: %d of %d generated tokens differ from "
                   "its run alone",
                   (unsigned long long)r->id, bad, n_gen);
    else
        bt_check_passed++;
}

static bt_sched_params params(int max_seqs, int kv_tokens, int max_batch, int chunk, int inflight,
                              int n_ctx) {
    return (bt_sched_params){.max_seqs = max_seqs,
                             .kv_tokens = kv_tokens,
                             .max_batch = max_batch,
                             .prefill_chunk = chunk,
                             .max_inflight = inflight,
                             .n_stages = 1,
                             .n_ctx = n_ctx};
}

/* ---- tests ---- */

/* Many requests of varied lengths, ample KV: every request gets its solo tokens, slots and
 * chunks are respected, decode rows are spread over every in-flight batch. */
static void test_mixed_load(void) {
    bt_sched_params p = params(8, 4096, 24, 7, 4, 256);
    fake f;
    fake_init(&f, &p);
    bt_request *reqs[20];
    int gens[20];
    for (int i = 0; i < 20; i++) {
        gens[i] = 1 + (i * 7) % 23;
        reqs[i] = make_req((uint64_t)i + 1, 1 + (i * 13) % 40, gens[i], p.n_ctx);
        bt_sched_submit(f.s, reqs[i]);
    }
    CHECK_EQ_INT(bt_sched_n_active(f.s), 20);
    fake_run(&f, reqs, 20);
    for (int i = 0; i < 20; i++)
        check_generated(reqs[i], gens[i]);
    CHECK_EQ_INT(f.violations, 0);
    CHECK_EQ_INT(f.max_running, 8); /* slots fill up, never beyond */
    CHECK_EQ_INT(f.max_inflight_seen, 4);
    CHECK_EQ_INT(bt_sched_kv_blocks_used(f.s), 0);
    CHECK_EQ_INT(bt_sched_n_active(f.s), 0);
    CHECK_EQ_INT(bt_sched_n_running(f.s), 0);
    CHECK_EQ_INT(bt_sched_n_inflight(f.s), 0);
    CHECK_EQ_INT(bt_sched_n_preemptions(f.s), 0);
    for (int i = 0; i < 20; i++)
        bt_request_free(reqs[i]);
    bt_sched_free(f.s);
}

/* 8 sequences decoding with 4 in flight: 2 decode rows per batch, 4 batches moving. */
static void test_decode_spread(void) {
    bt_sched_params p = params(8, 4096, 64, 64, 4, 256);
    fake f;
    fake_init(&f, &p);
    bt_request *reqs[8];
    submit_alike(f.s, reqs, 8, 100, 5, 12, p.n_ctx);
    /* The first batch carries every prompt (8 x 5 rows fit in 64). */
    fake_fill(&f, reqs, 8);
    CHECK_EQ_INT(f.n_fl, 1);
    bt_error err;
    bt_error_init(&err);
    CHECK_OK(fake_complete(&f, &err));
    /* Now all 8 are ready to decode: the scheduler spreads them, 2 per batch, 4 batches. */
    int before = f.n_batches;
    fake_fill(&f, reqs, 8);
    CHECK_EQ_INT(f.n_batches - before, 4);
    for (int k = 0; k < f.n_fl; k++)
        CHECK_EQ_INT(f.fl[(f.fl_head + k) % MAX_FLIGHT].n_rows, 2);
    fake_run(&f, reqs, 8);
    CHECK_EQ_INT(f.max_decode_rows, 2);
    for (int i = 0; i < 8; i++)
        check_generated(reqs[i], 12);
    CHECK_EQ_INT(f.violations, 0);
    CHECK_EQ_INT(bt_sched_kv_blocks_used(f.s), 0);
    for (int i = 0; i < 8; i++)
        bt_request_free(reqs[i]);
    bt_sched_free(f.s);
}

/* Decode micro-batches are not cut below a prompt tile (BT_PROMPT_GROUP rows) once every
 * stage can have one: 16 sequences with 2 in flight on one stage decode as one batch of 16;
 * on 2 stages with 4 in flight (16 < 16 x 2) they spread as 4 x 4, so both stages work. */
static void test_decode_prompt_group(void) {
    CHECK_EQ_INT(BT_PROMPT_GROUP, 16);
    for (int n_stages = 1; n_stages <= 2; n_stages++) {
        bt_sched_params p = params(MAX_SEQS, 4096, 64, 64, 2 * n_stages, 256);
        p.n_stages = n_stages;
        fake f;
        fake_init(&f, &p);
        bt_request *reqs[MAX_SEQS];
        submit_alike(f.s, reqs, MAX_SEQS, 200, 2, 9, p.n_ctx);
        fake_fill(&f, reqs, MAX_SEQS); /* every prompt in the first batch: 16 x 2 rows */
        CHECK_EQ_INT(f.n_fl, 1);
        bt_error err;
        bt_error_init(&err);
        CHECK_OK(fake_complete(&f, &err));
        int before = f.n_batches, want_rows = n_stages == 1 ? 16 : 4;
        fake_fill(&f, reqs, MAX_SEQS);
        CHECK_EQ_INT(f.n_batches - before, MAX_SEQS / want_rows);
        for (int k = 0; k < f.n_fl; k++)
            CHECK_EQ_INT(f.fl[(f.fl_head + k) % MAX_FLIGHT].n_rows, want_rows);
        fake_run(&f, reqs, MAX_SEQS);
        CHECK_EQ_INT(f.max_decode_rows, want_rows);
        for (int i = 0; i < MAX_SEQS; i++)
            check_generated(reqs[i], 9);
        CHECK_EQ_INT(f.violations, 0);
        for (int i = 0; i < MAX_SEQS; i++)
            bt_request_free(reqs[i]);
        bt_sched_free(f.s);
    }
}

/* Long prompts: chunks of at most prefill_chunk rows per sequence, max_batch per batch. */
static void test_prefill_chunks(void) {
    bt_sched_params p = params(4, 4096, 10, 4, 2, 256);
    fake f;
    fake_init(&f, &p);
    bt_request *reqs[3];
    for (int i = 0; i < 3; i++) {
        reqs[i] = make_req((uint64_t)i + 200, 30 + i, 3, p.n_ctx);
        bt_sched_submit(f.s, reqs[i]);
    }
    bt_sched_batch *b;
    CHECK(bt_sched_next_batch(f.s, &b));
    /* 3 sequences x 4 rows would be 12 > 10: the third chunk is cut to 2 rows */
    CHECK_EQ_INT(b->n_rows, 10);
    int per[4] = {0};
    for (int i = 0; i < b->n_rows; i++)
        per[b->seq[i]]++;
    CHECK_EQ_INT(per[0], 4);
    CHECK_EQ_INT(per[1], 4);
    CHECK_EQ_INT(per[2], 2);
    for (int i = 0; i < b->n_rows; i++)
        CHECK_EQ_INT(b->want[i], 0);
    snap sn = {0};
    fake_send(&f, b, &sn, 3);
    fake_run(&f, reqs, 3);
    for (int i = 0; i < 3; i++)
        check_generated(reqs[i], 3);
    CHECK_EQ_INT(f.violations, 0);
    CHECK_EQ_INT(bt_sched_kv_blocks_used(f.s), 0);
    for (int i = 0; i < 3; i++)
        bt_request_free(reqs[i]);
    bt_sched_free(f.s);
}

/* Admission waits for a slot and for the first chunk's KV blocks. */
static void test_admission(void) {
    bt_error err;
    bt_error_init(&err);
    /* slots: 2 of 5 run at once */
    {
        bt_sched_params p = params(2, 4096, 64, 64, 2, 256);
        fake f;
        fake_init(&f, &p);
        bt_request *reqs[5];
        submit_alike(f.s, reqs, 5, 300, 3, 4, p.n_ctx);
        fake_fill(&f, reqs, 5);
        CHECK_EQ_INT(bt_sched_n_running(f.s), 2);
        CHECK_EQ_INT(reqs[0]->state, BT_REQ_RUNNING);
        CHECK_EQ_INT(reqs[1]->state, BT_REQ_RUNNING);
        CHECK_EQ_INT(reqs[2]->state, BT_REQ_QUEUED);
        fake_run(&f, reqs, 5);
        CHECK_EQ_INT(f.max_running, 2);
        for (int i = 0; i < 5; i++)
            check_generated(reqs[i], 4);
        CHECK_EQ_INT(f.violations, 0);
        for (int i = 0; i < 5; i++)
            bt_request_free(reqs[i]);
        bt_sched_free(f.s);
    }
    /* blocks: 4 blocks (64 tokens); a 40-token prompt takes 3, the next one waits */
    {
        bt_sched_params p = params(4, 64, 64, 64, 2, 64);
        fake f;
        fake_init(&f, &p);
        bt_request *reqs[2];
        submit_alike(f.s, reqs, 2, 400, 40, 4, p.n_ctx);
        bt_sched_batch *b;
        CHECK(bt_sched_next_batch(f.s, &b));
        CHECK_EQ_INT(bt_sched_n_running(f.s), 1);
        CHECK_EQ_INT(b->n_rows, 40);
        CHECK_EQ_INT(bt_sched_kv_blocks_used(f.s), 3);
        CHECK_EQ_INT(reqs[1]->state, BT_REQ_QUEUED);
        snap sn = {0};
        fake_send(&f, b, &sn, 1);
        fake_run(&f, reqs, 2);
        CHECK_EQ_INT(f.max_running, 1);
        CHECK_EQ_INT(bt_sched_n_preemptions(f.s), 0);
        for (int i = 0; i < 2; i++)
            check_generated(reqs[i], 4);
        CHECK_EQ_INT(f.violations, 0);
        CHECK_EQ_INT(bt_sched_kv_blocks_used(f.s), 0);
        for (int i = 0; i < 2; i++)
            bt_request_free(reqs[i]);
        bt_sched_free(f.s);
    }
    /* a first chunk that fills the pool: 100 blocks, a 1% watermark of 1, one 1590-token
     * prompt in one chunk (bench's --prefill-chunk = --pp). The watermark is headroom for
     * running sequences, so with none running it must not hold the request back for ever;
     * the second request waits for the first one's blocks. */
    {
        bt_sched_params p = params(4, 1600, 64, 1600, 2, 1600);
        fake f;
        fake_init(&f, &p);
        bt_request *reqs[2];
        submit_alike(f.s, reqs, 2, 450, 1590, 4, p.n_ctx);
        fake_fill(&f, reqs, 2);
        CHECK_EQ_INT(reqs[0]->state, BT_REQ_RUNNING);
        CHECK_EQ_INT(reqs[1]->state, BT_REQ_QUEUED);
        fake_run(&f, reqs, 2);
        CHECK_EQ_INT(f.max_running, 1);
        CHECK_EQ_INT(bt_sched_n_preemptions(f.s), 0);
        for (int i = 0; i < 2; i++)
            check_generated(reqs[i], 4);
        CHECK_EQ_INT(f.violations, 0);
        for (int i = 0; i < 2; i++)
            bt_request_free(reqs[i]);
        bt_sched_free(f.s);
    }
}

/* KV too small for everyone's growth: the newest idle sequence is preempted (FREE sent,
 * queued at the front), recomputed from its tokens later, and every request still gets
 * exactly its solo tokens. */
static void test_preemption(void) {
    bt_sched_params p = params(6, 160, 32, 8, 3, 96); /* 10 blocks */
    fake f;
    fake_init(&f, &p);
    enum { N = 6 };
    bt_request *reqs[N];
    int gens[N];
    for (int i = 0; i < N; i++) {
        gens[i] = 30 + 5 * i;
        reqs[i] = make_req((uint64_t)i + 500, 10 + 3 * i, gens[i], p.n_ctx);
        bt_sched_submit(f.s, reqs[i]);
    }
    int before_done = n_done_calls;
    fake_run(&f, reqs, N);
    CHECK(bt_sched_n_preemptions(f.s) > 0);
    CHECK(f.n_free_of_live > 0);
    CHECK(f.n_free_ops > N); /* N finishes + the preemptions */
    int recomputed = 0, n_preempted = 0;
    for (int i = 0; i < N; i++) {
        check_generated(reqs[i], gens[i]);
        recomputed += reqs[i]->n_preempted > 0;
        n_preempted += reqs[i]->n_preempted;
    }
    CHECK_EQ_INT((int)bt_sched_n_preemptions(f.s), n_preempted);
    CHECK(recomputed > 0);
    CHECK_EQ_INT(n_done_calls - before_done, N);
    CHECK_EQ_INT(f.violations, 0);
    CHECK_EQ_INT(bt_sched_kv_blocks_used(f.s), 0);
    CHECK_EQ_INT(bt_sched_n_active(f.s), 0);
    printf("preemption: %llu preemptions, %d requests recomputed, %d batches\n",
           (unsigned long long)bt_sched_n_preemptions(f.s), recomputed, f.n_batches);
    for (int i = 0; i < N; i++)
        bt_request_free(reqs[i]);
    bt_sched_free(f.s);
}

/* Cancel while queued, while running (idle) and while in flight. */
static void test_cancel(void) {
    bt_error err;
    bt_error_init(&err);
    bt_sched_params p = params(2, 4096, 64, 64, 2, 256);
    fake f;
    fake_init(&f, &p);
    bt_request *reqs[4];
    submit_alike(f.s, reqs, 4, 600, 6, 10, p.n_ctx);
    /* queued: leaves at once */
    int done0 = n_done_calls;
    bt_sched_cancel(f.s, reqs[3]);
    CHECK_EQ_INT(reqs[3]->state, BT_REQ_DONE);
    CHECK_EQ_INT(reqs[3]->finish, BT_FINISH_CANCELLED);
    CHECK_EQ_INT(n_done_calls - done0, 1);
    CHECK_EQ_INT(bt_sched_n_active(f.s), 3);

    /* in flight: reqs[0] and [1] go out in the first batch */
    fake_fill(&f, reqs, 3);
    CHECK(reqs[0]->in_flight);
    bt_sched_cancel(f.s, reqs[0]);
    CHECK_EQ_INT(reqs[0]->state, BT_REQ_RUNNING); /* ends when its step lands */
    while (f.n_fl > 0)
        CHECK_OK(fake_complete(&f, &err));
    CHECK_EQ_INT(reqs[0]->state, BT_REQ_DONE);
    CHECK_EQ_INT(reqs[0]->finish, BT_FINISH_CANCELLED);
    CHECK_EQ_INT(reqs[0]->n_generated, 0);

    /* running and idle: reqs[1] has its first token and waits for a decode batch */
    CHECK_EQ_INT(reqs[1]->state, BT_REQ_RUNNING);
    CHECK(!reqs[1]->in_flight);
    CHECK_EQ_INT(reqs[1]->n_generated, 1);
    bt_sched_cancel(f.s, reqs[1]);
    CHECK_EQ_INT(reqs[1]->state, BT_REQ_DONE);
    CHECK_EQ_INT(reqs[1]->finish, BT_FINISH_CANCELLED);
    CHECK_EQ_INT(bt_sched_n_running(f.s), 0);
    /* the FREE ops go out with the next batch; reqs[2] runs to the end */
    fake_run(&f, reqs, 3);
    check_generated(reqs[2], 10);
    CHECK(f.n_free_ops >= 3);
    CHECK_EQ_INT(f.violations, 0);
    CHECK_EQ_INT(bt_sched_kv_blocks_used(f.s), 0);
    CHECK_EQ_INT(bt_sched_n_active(f.s), 0);
    bt_sched_cancel(f.s, reqs[2]); /* cancelling a done request changes nothing */
    CHECK_EQ_INT(reqs[2]->finish, BT_FINISH_LENGTH);
    for (int i = 0; i < 4; i++)
        bt_request_free(reqs[i]);
    bt_sched_free(f.s);
}

/* Results that do not match the step's wanted rows are refused and change nothing. */
static void test_protocol_errors(void) {
    bt_error err;
    bt_error_init(&err);
    bt_sched_params p = params(4, 4096, 64, 64, 2, 256);
    fake f;
    fake_init(&f, &p);
    int32_t seq0 = 0, tok = 5;
    float lp = -1.0f;
    CHECK_EQ_INT(bt_sched_on_results(f.s, 1, 1, &seq0, &tok, &lp, &err), BT_ERR_PROTOCOL);
    CHECK(strstr(err.msg, "none in flight") != NULL);

    bt_request *reqs[2];
    submit_alike(f.s, reqs, 2, 700, 4, 3, p.n_ctx);
    fake_fill(&f, reqs, 2);
    CHECK_EQ_INT(f.n_fl, 1);
    flight *e = &f.fl[f.fl_head];
    CHECK_EQ_INT(e->n, 2);
    /* wrong step */
    bt_error_init(&err);
    CHECK_EQ_INT(bt_sched_on_results(f.s, e->step + 1, e->n, e->seq, e->token, e->logprob, &err),
                 BT_ERR_PROTOCOL);
    CHECK(strstr(err.msg, "step") != NULL);
    /* wrong count */
    bt_error_init(&err);
    CHECK_EQ_INT(bt_sched_on_results(f.s, e->step, 1, e->seq, e->token, e->logprob, &err),
                 BT_ERR_PROTOCOL);
    /* wrong sequence */
    int32_t bad_seq[2] = {e->seq[1], e->seq[0]};
    bt_error_init(&err);
    CHECK_EQ_INT(bt_sched_on_results(f.s, e->step, 2, bad_seq, e->token, e->logprob, &err),
                 BT_ERR_PROTOCOL);
    CHECK(strstr(err.msg, "seq") != NULL);
    /* nothing changed: the real results are still accepted */
    CHECK_EQ_INT(bt_sched_n_inflight(f.s), 1);
    CHECK_EQ_INT(reqs[0]->n_generated, 0);
    CHECK_OK(fake_complete(&f, &err));
    fake_run(&f, reqs, 2);
    for (int i = 0; i < 2; i++)
        check_generated(reqs[i], 3);
    CHECK_EQ_INT(f.violations, 0);
    for (int i = 0; i < 2; i++)
        bt_request_free(reqs[i]);
    bt_sched_free(f.s);
}

static void test_zero_tokens_and_params(void) {
    bt_error err;
    bt_error_init(&err);
    bt_sched_params p = params(4, 4096, 64, 64, 2, 256);
    fake f;
    fake_init(&f, &p);
    int done0 = n_done_calls;
    bt_request *r = make_req(800, 5, 0, p.n_ctx);
    bt_sched_submit(f.s, r);
    CHECK_EQ_INT(r->state, BT_REQ_DONE);
    CHECK_EQ_INT(r->finish, BT_FINISH_LENGTH);
    CHECK_EQ_INT(r->n_generated, 0);
    CHECK_EQ_INT(n_done_calls - done0, 1);
    CHECK_EQ_INT(bt_sched_n_active(f.s), 0);
    bt_sched_batch *b;
    CHECK(!bt_sched_next_batch(f.s, &b));
    bt_request_free(r);
    bt_sched_free(f.s);

    /* invalid parameters are refused with a message */
    bt_sched *s = NULL;
    bt_sched_params bad = params(0, 4096, 64, 64, 2, 256);
    CHECK_EQ_INT(bt_sched_new(&bad, &s, &err), BT_ERR_INVALID_ARG);
    CHECK(s == NULL);
    CHECK(strstr(err.msg, "max_seqs 0") != NULL);
    bad = params(4, 128, 64, 64, 2, 256); /* n_ctx > kv_tokens */
    CHECK_EQ_INT(bt_sched_new(&bad, &s, &err), BT_ERR_INVALID_ARG);
    bad = params(4, 4096, 64, 64, 2, 256);
    bad.n_stages = 0;
    CHECK_EQ_INT(bt_sched_new(&bad, &s, &err), BT_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "n_stages 0") != NULL);
    bt_sched_free(NULL);
}

/* A stage failure fails every request, queued or running, with the message. */
static void test_fail_all(void) {
    bt_error err;
    bt_error_init(&err);
    bt_sched_params p = params(2, 4096, 64, 64, 2, 256);
    fake f;
    fake_init(&f, &p);
    bt_request *reqs[4];
    submit_alike(f.s, reqs, 4, 900, 4, 5, p.n_ctx);
    fake_fill(&f, reqs, 4);
    bt_error stage_err;
    bt_error_init(&stage_err);
    bt_error_set(&stage_err, BT_ERR_IO, "stage rank 2 (layers 3-5) is gone");
    int done0 = n_done_calls;
    bt_sched_fail_all(f.s, &stage_err);
    CHECK_EQ_INT(n_done_calls - done0, 4);
    check_failed(reqs, 4, "rank 2");
    CHECK_EQ_INT(bt_sched_n_active(f.s), 0);
    CHECK_EQ_INT(bt_sched_n_inflight(f.s), 0);
    CHECK_EQ_INT(bt_sched_kv_blocks_used(f.s), 0);
    for (int i = 0; i < 4; i++)
        bt_request_free(reqs[i]);
    bt_sched_free(f.s);
}

/* ---- several completions: forks and beams against a simulated stage ---- */

/* The stage as the scheduler must keep it: per slot, the token history (KV) and the seed of
 * the sampling params. Tokens are a hash of (history, seed), so a completion is right only if
 * every op and row reached the right sequence. */
typedef struct sim {
    bt_sched *s;
    int32_t len[MAX_SEQS]; /* -1 = free */
    int32_t hist[MAX_SEQS][MAX_POS];
    uint64_t seed[MAX_SEQS];
    int n_fork, n_free, bad;
    bool beams;
} sim;

static uint64_t hist_hash(const int32_t *h, int32_t n, uint64_t seed) {
    uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (int32_t i = 0; i < n; i++)
        x = (x ^ (uint64_t)h[i]) * 0x100000001B3ULL;
    return x ^ (x >> 29);
}

/* Candidate k (best first) after history h: 4 distinct tokens, logprobs falling with k. */
static void sim_cand(const int32_t *h, int32_t n, uint64_t seed, int k, int32_t *tok, float *lp) {
    uint64_t x = hist_hash(h, n, seed);
    *tok = (int32_t)(3 + (x + (uint64_t)k * 13) % 50);
    *lp = -0.05f - (float)((x >> 8) % 100) / 100.0f - 0.7f * (float)k;
}

/* Sends one batch through the simulated stage and returns its results to the scheduler. */
static bool sim_step(sim *m) {
    bt_sched_batch *b;
    if (!bt_sched_next_batch(m->s, &b))
        return false;
    for (int i = 0; i < b->n_ops; i++) {
        const bt_sched_op *op = &b->ops[i];
        if (op->kind == BT_SCHED_OP_FREE) {
            m->len[op->seq] = -1;
            m->n_free++;
        } else {
            m->n_fork++;
            if (m->len[op->seq] < 0 || m->len[op->dst] >= 0)
                m->bad++;
            m->len[op->dst] = m->len[op->seq];
            m->seed[op->dst] = m->seed[op->seq];
            memcpy(m->hist[op->dst], m->hist[op->seq], sizeof(int32_t) * (size_t)m->len[op->seq]);
        }
    }
    for (int i = 0; i < b->n_new; i++)
        m->seed[b->new_reqs[i]->seq] = b->new_reqs[i]->p.sampling.seed;
    int32_t seq[MAX_BATCH], tok[MAX_BATCH], ttok[MAX_BATCH * 4];
    float lp[MAX_BATCH], tlp[MAX_BATCH * 4];
    uint32_t ntop[MAX_BATCH];
    int n = 0;
    for (int i = 0; i < b->n_rows; i++) {
        int32_t q = b->seq[i];
        if (m->len[q] < 0)
            m->len[q] = 0;
        if (b->pos[i] != m->len[q])
            m->bad++;
        m->hist[q][m->len[q]++] = b->token[i];
        if (!b->want[i])
            continue;
        for (int k = 0; k < 4; k++)
            sim_cand(m->hist[q], m->len[q], m->beams ? 0 : m->seed[q], k, &ttok[n * 4 + k],
                     &tlp[n * 4 + k]);
        seq[n] = q;
        tok[n] = ttok[n * 4];
        lp[n] = tlp[n * 4];
        ntop[n] = 4;
        n++;
    }
    bt_sched_results res = {.step = b->step,
                            .n = n,
                            .seq = seq,
                            .token = tok,
                            .logprob = lp,
                            .n_top = ntop,
                            .top_token = ttok,
                            .top_logprob = tlp};
    bt_error err;
    bt_error_init(&err);
    CHECK_OK(bt_sched_on_results_top(m->s, &res, &err));
    return true;
}

/* Steps until the scheduler has nothing to send, at most max_steps (a bound, not a wait). */
static void sim_run(sim *m, int max_steps) {
    for (int i = 0; i <= max_steps && sim_step(m); i++)
        ;
}

static void sim_init(sim *m, bt_sched_params *p) {
    memset(m, 0, sizeof *m);
    for (int i = 0; i < MAX_SEQS; i++)
        m->len[i] = -1;
    bt_error err;
    bt_error_init(&err);
    CHECK_OK(bt_sched_new(p, &m->s, &err));
}

/* Params of a group: n of best_of sampled branches, or beams (greedy), seeded. */
static bt_request_params group_params(int32_t max_tokens, int n, int best_of, int beam,
                                      uint64_t seed) {
    bt_request_params rp = bt_request_default_params();
    rp.max_tokens = max_tokens;
    rp.ignore_eos = true;
    rp.n = n;
    rp.best_of = best_of;
    rp.beam_width = beam;
    rp.sampling.temperature = beam ? 0.0f : 1.0f;
    rp.sampling.seed = seed;
    rp.sampling.top_logprobs = beam ? 0 : 4;
    return rp;
}

static bt_request *make_group(int32_t n_prompt, int32_t max_tokens, int n, int best_of, int beam) {
    int32_t prompt[MAX_POS];
    for (int32_t i = 0; i < n_prompt; i++)
        prompt[i] = 3 + (i * 7) % 40;
    bt_request_params rp = group_params(max_tokens, n, best_of, beam, 42);
    bt_request *r = NULL;
    bt_error err;
    bt_error_init(&err);
    CHECK_OK(bt_request_new(prompt, n_prompt, &rp, 512, &r, &err));
    return r;
}

/* A request of any kind for test_random_pressure: its prompt and seed from its id. */
static bt_request *make_any(uint64_t id, int32_t n_prompt, int32_t max_tokens, int n, int best_of,
                            int beam, int32_t n_ctx) {
    bt_request_params rp = group_params(max_tokens, n, best_of, beam, id);
    return new_req(id, n_prompt, &rp, n_ctx);
}

static uint64_t rand_u(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

/* A completion's tokens follow the hash chain of its own seed from the prompt. */
static bool chain_ok(const bt_request *c, uint64_t seed) {
    for (int32_t i = c->n_prompt; i < c->n_tokens; i++) {
        int32_t t;
        float lp;
        sim_cand(c->tokens, i, seed, 0, &t, &lp);
        if (t != c->tokens[i] || lp != c->logprobs[i])
            return false;
    }
    return true;
}

static void test_best_of(void) {
    bt_sched_params p = params(8, 1024, MAX_BATCH, 64, 1, 512);
    sim m;
    sim_init(&m, &p);
    bt_request *g = make_group(40, 6, 2, 3, 0), *plain = make_req(7, 10, 5, 512);
    bt_sched_submit(m.s, g);
    bt_sched_submit(m.s, plain);
    int kv_after_fork = -1, steps = 0;
    while (sim_step(&m) && steps++ < 100)
        if (g->forked && kv_after_fork < 0)
            kv_after_fork = bt_sched_kv_blocks_used(m.s);
    CHECK_EQ_INT(m.bad, 0);
    CHECK_EQ_INT(m.n_fork, 2);
    /* 39 shared positions: 2 whole blocks once + 3 branches' copy of the partial block, plus
     * the plain request's block */
    CHECK_EQ_INT(kv_after_fork, 2 + 3 + 1);
    CHECK_EQ_INT(g->state, BT_REQ_DONE);
    CHECK_EQ_INT(g->n_out, 2);
    CHECK_EQ_INT(g->n_branch, 3);
    for (int i = 0; i < 3; i++) {
        const bt_request *c = g->branch[i];
        CHECK_EQ_INT(c->n_generated, 6);
        CHECK_EQ_INT(c->n_prompt, 40);
        CHECK(chain_ok(c, c->p.sampling.seed));
        CHECK(c->n_top && c->n_top[40] == 4);
    }
    CHECK(g->out[0]->logprob_sum >= g->out[1]->logprob_sum);
    CHECK(g->branch[0]->p.sampling.seed != g->branch[1]->p.sampling.seed);
    CHECK_EQ_INT(plain->n_generated, 5);
    CHECK_EQ_INT(bt_sched_kv_blocks_used(m.s), 0);
    CHECK_EQ_INT(bt_sched_n_running(m.s), 0);
    /* every slot is free again: 8 plain requests run at once */
    bt_request *r8[8];
    for (int i = 0; i < 8; i++) {
        r8[i] = make_req(20 + (uint64_t)i, 3, 2, 512);
        bt_sched_submit(m.s, r8[i]);
    }
    bt_sched_batch *b;
    CHECK(bt_sched_next_batch(m.s, &b));
    CHECK_EQ_INT(bt_sched_n_running(m.s), 8);
    bt_sched_free(m.s);
    for (int i = 0; i < 8; i++)
        bt_request_free(r8[i]);
    bt_request_free(g);
    bt_request_free(plain);

    /* A KV cache too small for every branch's copy of the partial block: 4 blocks, the
     * 39-token prefix takes 3, and 4 branches would need 3 more. Nothing in flight would ever
     * free one, so branches 0 and 1 take over (the last free block is branch 1's copy) and
     * branches 2 and 3 are queued, to be computed alone from the prompt as preempted ones
     * are; every branch still follows its own seed's chain (it used to wait for ever). */
    p = params(8, 64, MAX_BATCH, 64, 1, 64);
    sim_init(&m, &p);
    g = make_group(40, 8, 4, 4, 0);
    bt_sched_submit(m.s, g);
    steps = 0;
    int queued_at_fork = -1;
    while (sim_step(&m) && steps++ < 400)
        if (g->forked && queued_at_fork < 0)
            queued_at_fork = g->branch[2]->state == BT_REQ_QUEUED &&
                             g->branch[3]->state == BT_REQ_QUEUED &&
                             g->branch[1]->state == BT_REQ_RUNNING;
    CHECK_EQ_INT(m.bad, 0);
    CHECK_EQ_INT(queued_at_fork, 1);
    CHECK_EQ_INT(m.n_fork, 1);
    CHECK_EQ_INT(g->state, BT_REQ_DONE);
    CHECK_EQ_INT(g->n_out, 4);
    for (int i = 0; i < 4; i++) {
        const bt_request *c = g->branch[i];
        CHECK_EQ_INT(c->n_generated, 8);
        CHECK(chain_ok(c, c->p.sampling.seed));
    }
    CHECK(bt_sched_n_preemptions(m.s) >= 2);
    CHECK_EQ_INT(bt_sched_n_active(m.s), 0);
    CHECK_EQ_INT(bt_sched_kv_blocks_used(m.s), 0);
    bt_sched_free(m.s);
    bt_request_free(g);
}

/* Beams on the simulated stage, fixed length: ops consistent, slots and KV all returned,
 * outputs follow candidate chains and are sorted by score. */
static void test_beams_sim(void) {
    for (int W = 1; W <= 2; W++) {
        bt_sched_params p = params(4, 1024, MAX_BATCH, 64, 2, 512);
        sim m;
        sim_init(&m, &p);
        m.beams = true;
        bt_request *g = make_group(20, 9, W, W, W), *plain = make_req(9, 7, 12, 512);
        bt_sched_submit(m.s, g);
        bt_sched_submit(m.s, plain);
        sim_run(&m, 200);
        CHECK_EQ_INT(m.bad, 0);
        CHECK_EQ_INT(g->state, BT_REQ_DONE);
        CHECK_EQ_INT(g->n_out, W);
        for (int i = 0; i < g->n_out; i++) {
            const bt_request *o = g->out[i];
            CHECK_EQ_INT(o->n_generated, 9);
            CHECK_EQ_INT(o->finish, BT_FINISH_LENGTH);
            double cum = 0;
            for (int32_t k = o->n_prompt; k < o->n_tokens; k++) {
                bool found = false;
                for (int c = 0; c < 4; c++) {
                    int32_t t;
                    float lp;
                    sim_cand(o->tokens, k, 0, c, &t, &lp);
                    if (t == o->tokens[k] && lp == o->logprobs[k])
                        found = true;
                }
                CHECK(found);
                cum += o->logprobs[k];
            }
            CHECK_NEAR(o->logprob_sum, cum, 1e-4);
            if (i > 0)
                CHECK(g->out[i - 1]->score >= o->score);
        }
        if (W == 1)
            CHECK(chain_ok(g->out[0], 0)); /* width 1 is greedy */
        CHECK_EQ_INT(plain->n_generated, 12);
        CHECK_EQ_INT(bt_sched_kv_blocks_used(m.s), 0);
        CHECK_EQ_INT(bt_sched_n_running(m.s), 0);
        bt_sched_free(m.s);
        bt_request_free(g);
        bt_request_free(plain);
    }
    /* A beam step whose fork finds no free block while an older request holds the rest (6
     * blocks: the plain request's 4, the group's prompt 2, the fork 2 more): the step waits
     * until the plain request finishes, then runs (it used to fail the request at once). */
    {
        bt_sched_params p = params(4, 96, MAX_BATCH, 64, 1, 96);
        sim m;
        sim_init(&m, &p);
        m.beams = true;
        bt_request *plain = make_req(9, 50, 10, 96), *g = make_group(20, 8, 2, 2, 2);
        bt_sched_submit(m.s, plain);
        bt_sched_submit(m.s, g);
        sim_run(&m, 400);
        CHECK_EQ_INT(m.bad, 0);
        CHECK_EQ_INT(plain->state, BT_REQ_DONE);
        CHECK_EQ_INT(plain->n_generated, 10);
        CHECK_EQ_INT(g->state, BT_REQ_DONE);
        CHECK_EQ_INT(g->finish, BT_FINISH_LENGTH);
        CHECK_EQ_INT(g->n_out, 2);
        for (int i = 0; i < g->n_out; i++)
            CHECK_EQ_INT(g->out[i]->n_generated, 8);
        CHECK_EQ_INT(bt_sched_n_active(m.s), 0);
        CHECK_EQ_INT(bt_sched_kv_blocks_used(m.s), 0);
        bt_sched_free(m.s);
        bt_request_free(g);
        bt_request_free(plain);
    }
    /* Beams that outgrow the KV cache (2 beams of up to 60 tokens, 4 blocks of 16 tokens):
     * beams are never preempted, so with nothing in flight the group fails with a message
     * (it used to wait for ever, and the engine stopped as stalled); the plain request
     * behind it, preempted for the beams' growth, then completes. */
    {
        bt_sched_params p = params(4, 64, MAX_BATCH, 64, 1, 64);
        sim m;
        sim_init(&m, &p);
        m.beams = true;
        bt_request *g = make_group(20, 40, 2, 2, 2), *plain = make_req(9, 7, 12, 64);
        bt_sched_submit(m.s, g);
        bt_sched_submit(m.s, plain);
        sim_run(&m, 400);
        CHECK_EQ_INT(m.bad, 0);
        CHECK_EQ_INT(g->state, BT_REQ_DONE);
        CHECK_EQ_INT(g->finish, BT_FINISH_ERROR);
        CHECK_EQ_INT(g->error.status, BT_ERR_LIMIT);
        CHECK(strstr(g->error.msg, "found no free block in the 64-token KV cache") != NULL);
        CHECK_EQ_INT(plain->state, BT_REQ_DONE);
        CHECK_EQ_INT(plain->n_generated, 12);
        CHECK_EQ_INT(bt_sched_n_active(m.s), 0);
        CHECK_EQ_INT(bt_sched_kv_blocks_used(m.s), 0);
        bt_sched_free(m.s);
        bt_request_free(g);
        bt_request_free(plain);
    }
    /* A beam group wider than the slots ends at once with an error naming beam_width. */
    bt_sched_params p = params(2, 1024, MAX_BATCH, 64, 1, 512);
    sim m;
    sim_init(&m, &p);
    bt_request *g = make_group(5, 4, 1, 1, 3);
    bt_sched_submit(m.s, g);
    CHECK_EQ_INT(g->state, BT_REQ_DONE);
    CHECK_EQ_INT(g->finish, BT_FINISH_ERROR);
    CHECK(strstr(g->error.msg, "beam_width 3") != NULL);
    CHECK_EQ_INT(bt_sched_n_active(m.s), 0);
    bt_sched_free(m.s);
    bt_request_free(g);
}

/* Cancelling and failing groups mid-run returns every slot and block. */
static void test_group_cancel_fail(void) {
    for (int mode = 0; mode < 4; mode++) {
        bt_sched_params p = params(8, 1024, MAX_BATCH, 16, 2, 512);
        sim m;
        sim_init(&m, &p);
        m.beams = mode >= 2;
        bt_request *g = mode >= 2 ? make_group(30, 20, 2, 2, 3) : make_group(30, 20, 2, 4, 0);
        bt_sched_submit(m.s, g);
        for (int i = 0; i < 6; i++)
            sim_step(&m);
        CHECK(g->forked);
        if (mode % 2 == 0) {
            bt_sched_cancel(m.s, g);
            sim_run(&m, 50);
            CHECK_EQ_INT(g->finish, BT_FINISH_CANCELLED);
        } else {
            bt_error e;
            bt_error_init(&e);
            bt_error_set(&e, BT_ERR_IO, "stage 1 is gone");
            bt_sched_fail_all(m.s, &e);
            CHECK_EQ_INT(g->finish, BT_FINISH_ERROR);
        }
        CHECK_EQ_INT(m.bad, 0);
        CHECK_EQ_INT(g->state, BT_REQ_DONE);
        CHECK_EQ_INT(bt_sched_kv_blocks_used(m.s), 0);
        CHECK_EQ_INT(bt_sched_n_running(m.s), 0);
        CHECK_EQ_INT(bt_sched_n_active(m.s), 0);
        bt_sched_free(m.s);
        bt_request_free(g);
    }
}

/* A stall (requests active, nothing schedulable: no known input reaches it) fails what is
 * active while the stages live on: every request ends with the error, the next batch FREEs
 * every sequence the stage holds, and a request submitted after runs as on a fresh engine. */
static void test_fail_stalled(void) {
    bt_sched_params p = params(8, 1024, MAX_BATCH, 16, 1, 512);
    sim m;
    sim_init(&m, &p);
    bt_request *plain = make_req(3, 40, 30, 512), *g = make_group(30, 20, 2, 4, 0),
               *queued = make_req(4, 10, 5, 512);
    bt_sched_submit(m.s, plain);
    bt_sched_submit(m.s, g);
    for (int i = 0; i < 6; i++)
        sim_step(&m);
    CHECK(g->forked);
    CHECK_EQ_INT(bt_sched_n_inflight(m.s), 0);
    bt_sched_submit(m.s, queued);
    bt_error e;
    bt_error_init(&e);
    bt_error_set(&e, BT_ERR_INTERNAL, "scheduler stalled");
    bt_sched_fail_stalled(m.s, &e);
    bt_request *all[] = {plain, g, queued};
    check_failed(all, 3, "scheduler stalled");
    CHECK_EQ_INT(bt_sched_n_active(m.s), 0);
    CHECK_EQ_INT(bt_sched_kv_blocks_used(m.s), 0);
    int held = 0;
    for (int q = 0; q < MAX_SEQS; q++)
        held += m.len[q] >= 0;
    CHECK(held >= 3);    /* the plain request and the group's branches */
    CHECK(sim_step(&m)); /* the FREEs */
    for (int q = 0; q < MAX_SEQS; q++)
        CHECK_EQ_INT(m.len[q], -1);
    bt_request *after = make_req(5, 20, 12, 512);
    bt_sched_submit(m.s, after);
    sim_run(&m, 100);
    CHECK_EQ_INT(m.bad, 0);
    CHECK_EQ_INT(after->state, BT_REQ_DONE);
    CHECK_EQ_INT(after->n_generated, 12);
    CHECK(chain_ok(after, after->p.sampling.seed));
    CHECK_EQ_INT(bt_sched_kv_blocks_used(m.s), 0);
    bt_sched_free(m.s);
    for (int i = 0; i < 3; i++)
        bt_request_free(all[i]);
    bt_request_free(after);
}

/* Random workloads under KV pressure: plain requests, n/best_of groups and beams of random
 * sizes in small KV caches, small chunks and slots. Whatever the mix, the run ends: every
 * request done, plain ones and branches with all their tokens (preempted and recomputed as
 * needed), a beam group either with its hypotheses or with the KV error, nothing left charged
 * and the simulated stage consistent. A wait for blocks nothing will free shows as a request
 * still active when the scheduler has nothing to send. */
static void test_random_pressure(void) {
    uint64_t rng = 0x5eed;
    int n_beam_fail = 0, n_preempt = 0, n_runs = 3000;
    for (int run = 0; run < n_runs; run++) {
        enum { NR = 8 };
        int kv = 16 * (3 + (int)(rand_u(&rng) % 30)); /* 48 .. 512 tokens */
        int n_ctx = kv < 256 ? kv : 256;
        int max_seqs = 4 + (int)(rand_u(&rng) % 5);
        int chunk = 4 + (int)(rand_u(&rng) % 61);
        bt_sched_params p = params(max_seqs, kv, MAX_BATCH, chunk, 1, n_ctx);
        sim m;
        sim_init(&m, &p);
        m.beams = rand_u(&rng) % 2 == 0;
        bt_request *reqs[NR];
        int n_req = 2 + (int)(rand_u(&rng) % (NR - 1));
        for (int i = 0; i < n_req; i++) {
            int32_t n_prompt = 1 + (int32_t)(rand_u(&rng) % (uint64_t)(n_ctx / 2));
            int32_t max_tokens = 1 + (int32_t)(rand_u(&rng) % 40);
            /* plain, n/best_of, or beams (only in runs where the stage's candidates ignore
             * the seed, as beams need: m.beams) */
            int kind = (int)(rand_u(&rng) % 3);
            int best_of = kind == 1 ? 2 + (int)(rand_u(&rng) % 2) : 1;
            int beam = kind == 2 && m.beams ? 1 + (int)(rand_u(&rng) % 2) : 0;
            reqs[i] =
                make_any(1000 + (uint64_t)(run * NR + i), n_prompt, max_tokens,
                         best_of > 1 ? 1 + (int)(rand_u(&rng) % best_of) : 1, best_of, beam, n_ctx);
            bt_sched_submit(m.s, reqs[i]);
        }
        sim_run(&m, 20000);
        bool ok = m.bad == 0 && bt_sched_n_active(m.s) == 0 && bt_sched_kv_blocks_used(m.s) == 0;
        for (int i = 0; i < n_req && ok; i++) {
            const bt_request *r = reqs[i];
            if (r->state != BT_REQ_DONE)
                ok = false;
            else if (r->finish == BT_FINISH_ERROR)
                ok = r->beam && strstr(r->error.msg, "KV") != NULL && ++n_beam_fail;
            else
                for (int k = 0; k < r->n_out; k++) { /* all its tokens, each its seed's */
                    const bt_request *c = r->out[k];
                    ok = ok && c->n_generated >= 1 &&
                         (c->n_generated == r->p.max_tokens || c->n_tokens == n_ctx) &&
                         (r->beam || chain_ok(c, m.beams ? 0 : c->p.sampling.seed));
                }
        }
        n_preempt += (int)bt_sched_n_preemptions(m.s);
        for (int i = 0; i < n_req && !ok; i++) {
            const bt_request *r = reqs[i];
            fprintf(stderr,
                    "  request %d: prompt %d, max_tokens %d, n %d, best_of %d, beams %d: state %d, "
                    "finish %d, %d completions '%s'\n",
                    i, r->n_prompt, r->p.max_tokens, r->p.n, r->p.best_of, r->p.beam_width,
                    r->state, r->finish, r->n_out, r->error.msg);
        }
        if (!ok)
            check_fail(__FILE__, __LINE__,
                       "run %d (kv %d, n_ctx %d, %d slots, chunk %d): bad %d, %d active, %d "
                       "blocks charged at the end",
                       run, kv, n_ctx, max_seqs, chunk, m.bad, bt_sched_n_active(m.s),
                       bt_sched_kv_blocks_used(m.s));
        else
            bt_check_passed++;
        bt_sched_free(m.s);
        for (int i = 0; i < n_req; i++)
            bt_request_free(reqs[i]);
    }
    printf("random pressure: %d runs, %d preemptions, %d beam groups refused for KV\n", n_runs,
           n_preempt, n_beam_fail);
}

int main(void) {
    test_mixed_load();
    test_decode_spread();
    test_decode_prompt_group();
    test_prefill_chunks();
    test_admission();
    test_preemption();
    test_cancel();
    test_protocol_errors();
    test_zero_tokens_and_params();
    test_fail_all();
    test_best_of();
    test_beams_sim();
    test_group_cancel_fail();
    test_fail_stalled();
    test_random_pressure();
    return check_finish();
}
