/*
 * make_stage_corpus.c - writes the seed corpora of tests/fuzz/fuzz_stage_batch.c and
 * tests/fuzz/fuzz_results.c, packed by protobuf-c from the messages below: conversations
 * that prefill, decode, fork, truncate and free sequences and fill the KV cache, and
 * messages with one defect each that the stage or the coordinator must refuse.
 *
 * Usage: make_stage_corpus CORPUS_DIR   (tests/fuzz/corpus; writes stage_batch/ and results/,
 * which must exist). Limits are the targets': stage max_batch 16, max_seqs 8, n_vocab 64,
 * 64 KV tokens; results inputs start with max_batch-1 (one byte) and n_vocab-1 (two bytes).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "msg.h"

static const char *root;
static uint8_t buf[1 << 16];
static size_t n_buf;

static int write_file(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s/%s", root, dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, n_buf, f) != n_buf || fclose(f) != 0) {
        fprintf(stderr, "make_stage_corpus: cannot write %s\n", path);
        return 1;
    }
    n_buf = 0;
    return 0;
}

/* Appends m's protobuf bytes, after a 2-byte length when framed (fuzz_stage_batch). */
static void append(const ProtobufCMessage *m, int framed) {
    size_t n = protobuf_c_message_get_packed_size(m);
    if (n_buf + n + 2 > sizeof buf || n > 0xffff)
        abort();
    if (framed) {
        buf[n_buf++] = (uint8_t)(n & 0xff);
        buf[n_buf++] = (uint8_t)(n >> 8);
    }
    n_buf += protobuf_c_message_pack(m, buf + n_buf);
}

/* ---- stage batches ------------------------------------------------------------------- */

typedef struct batch {
    Baton__StageBatch b;
    int32_t seq[16], pos[16], token[16];
    protobuf_c_boolean want[16];
    Baton__SeqOp ops[4], *op_ptrs[4];
    Baton__SamplingParams sp[2], *sp_ptrs[2];
} batch;

static void batch_init(batch *x, uint64_t step) {
    memset(x, 0, sizeof *x);
    baton__stage_batch__init(&x->b);
    x->b.step = step;
    x->b.seq = x->seq;
    x->b.pos = x->pos;
    x->b.token = x->token;
    x->b.want = x->want;
    x->b.ops = x->op_ptrs;
    x->b.new_seqs = x->sp_ptrs;
}

/* n rows of sequence s from position pos; the last one sampled. */
static void rows(batch *x, int s, int pos, int n) {
    for (int i = 0; i < n; i++) {
        size_t r = x->b.n_seq++;
        x->seq[r] = s;
        x->pos[r] = pos + i;
        x->token[r] = (s * 7 + pos + i) % 64;
        x->want[r] = i == n - 1;
    }
    x->b.n_pos = x->b.n_token = x->b.n_want = x->b.n_seq;
}

static void op(batch *x, Baton__SeqOp__Kind kind, int s, int dst, int n_tokens) {
    Baton__SeqOp *o = &x->ops[x->b.n_ops];
    baton__seq_op__init(o);
    o->kind = kind;
    o->seq = s;
    o->dst = dst;
    o->n_tokens = n_tokens;
    x->op_ptrs[x->b.n_ops++] = o;
}

static Baton__SamplingParams *params(batch *x, int s) {
    Baton__SamplingParams *p = &x->sp[x->b.n_new_seqs];
    baton__sampling_params__init(p);
    p->seq = s;
    p->temperature = 0.8f;
    p->top_k = 40;
    p->top_p = 0.95f;
    p->min_p = 0.05f;
    p->typical_p = 1.0f;
    p->repetition_penalty = 1.0f;
    p->seed = 7;
    x->sp_ptrs[x->b.n_new_seqs++] = p;
    return p;
}

static int emit_stage(void) {
    int bad = 0;
    batch x;
    /* prompt of 4, then two decode steps */
    batch_init(&x, 1);
    params(&x, 0);
    rows(&x, 0, 0, 4);
    append(&x.b.base, 1);
    for (int i = 0; i < 2; i++) {
        batch_init(&x, 2 + (uint64_t)i);
        rows(&x, 0, 4 + i, 1);
        append(&x.b.base, 1);
    }
    bad |= write_file("stage_batch", "prefill_decode");

    /* two sequences; fork 0 -> 2, truncate the fork, free 0, decode both survivors */
    batch_init(&x, 1);
    params(&x, 0);
    params(&x, 1);
    rows(&x, 0, 0, 6);
    rows(&x, 1, 0, 3);
    append(&x.b.base, 1);
    batch_init(&x, 2);
    op(&x, BATON__SEQ_OP__KIND__FORK, 0, 2, 0);
    op(&x, BATON__SEQ_OP__KIND__TRUNCATE, 2, 0, 3);
    rows(&x, 2, 3, 1);
    rows(&x, 1, 3, 1);
    append(&x.b.base, 1);
    batch_init(&x, 3);
    op(&x, BATON__SEQ_OP__KIND__FREE, 0, 0, 0);
    op(&x, BATON__SEQ_OP__KIND__TRUNCATE, 1, 0, 0);
    rows(&x, 2, 4, 1);
    rows(&x, 1, 0, 2);
    append(&x.b.base, 1);
    bad |= write_file("stage_batch", "fork_truncate_free");

    /* prompts of 16 on seqs 0..4: the fifth does not fit the 64-token cache (BT_ERR_LIMIT) */
    for (int s = 0; s < 5; s++) {
        batch_init(&x, 1 + (uint64_t)s);
        params(&x, s);
        rows(&x, s, 0, 16);
        append(&x.b.base, 1);
    }
    bad |= write_file("stage_batch", "fill_cache");

    /* forks sharing blocks, one of them grown past the shared part, then freed in turn */
    batch_init(&x, 1);
    params(&x, 0);
    rows(&x, 0, 0, 16);
    append(&x.b.base, 1);
    batch_init(&x, 2);
    op(&x, BATON__SEQ_OP__KIND__FORK, 0, 1, 0);
    op(&x, BATON__SEQ_OP__KIND__FORK, 0, 2, 0);
    op(&x, BATON__SEQ_OP__KIND__TRUNCATE, 2, 0, 9);
    rows(&x, 1, 16, 1);
    rows(&x, 2, 9, 1);
    append(&x.b.base, 1);
    batch_init(&x, 3);
    op(&x, BATON__SEQ_OP__KIND__FREE, 0, 0, 0);
    op(&x, BATON__SEQ_OP__KIND__FREE, 1, 0, 0);
    rows(&x, 2, 10, 1);
    append(&x.b.base, 1);
    bad |= write_file("stage_batch", "fork_shared_blocks");

    /* defects, one each */
    batch_init(&x, 1);
    params(&x, 0);
    rows(&x, 0, 0, 3);
    append(&x.b.base, 1);
    batch_init(&x, 2);
    params(&x, 1);
    rows(&x, 1, 0, 2);
    op(&x, BATON__SEQ_OP__KIND__FORK, 0, 1, 0);
    append(&x.b.base, 1);
    bad |= write_file("stage_batch", "bad_fork_into_busy_seq");

    batch_init(&x, 1);
    rows(&x, 3, 5, 2);
    append(&x.b.base, 1);
    bad |= write_file("stage_batch", "bad_pos_gap");

    batch_init(&x, 1);
    params(&x, 0)->top_p = 2.0f;
    rows(&x, 0, 0, 1);
    append(&x.b.base, 1);
    bad |= write_file("stage_batch", "bad_params_top_p");

    batch_init(&x, 1);
    op(&x, BATON__SEQ_OP__KIND__TRUNCATE, 0, 0, 5);
    append(&x.b.base, 1);
    bad |= write_file("stage_batch", "bad_truncate_past_end");

    batch_init(&x, 1);
    rows(&x, 0, 0, 1);
    x.token[0] = 64;
    append(&x.b.base, 1);
    bad |= write_file("stage_batch", "bad_token_n_vocab");
    return bad;
}

/* ---- sample results ------------------------------------------------------------------ */

static int emit_result(const char *name, const Baton__SampleResults *r, int max_batch,
                       int n_vocab) {
    buf[0] = (uint8_t)(max_batch - 1);
    buf[1] = (uint8_t)((n_vocab - 1) & 0xff);
    buf[2] = (uint8_t)((n_vocab - 1) >> 8);
    n_buf = 3;
    append(&r->base, 0);
    return write_file("results", name);
}

static int emit_results(void) {
    int32_t seq[3] = {3, 9, 12}, token[3] = {42, 0, 63};
    float logprob[3] = {-0.25f, 0.0f, -17.5f};
    uint32_t n_top[3] = {2, 0, 1};
    int32_t top_token[3] = {42, 7, 63};
    float top_logprob[3] = {-0.25f, -1.5f, -17.5f};
    Baton__SampleResults r = BATON__SAMPLE_RESULTS__INIT;
    r.step = 41;
    r.n_seq = r.n_token = r.n_logprob = 3;
    r.seq = seq;
    r.token = token;
    r.logprob = logprob;
    r.compute_us = 12345;
    int bad = emit_result("results_plain", &r, 16, 64);
    r.n_n_top = 3;
    r.n_top = n_top;
    r.n_top_token = r.n_top_logprob = 3;
    r.top_token = top_token;
    r.top_logprob = top_logprob;
    bad |= emit_result("results_top", &r, 16, 64);
    bad |= emit_result("bad_top_token_n_vocab", &r, 16, 63);
    bad |= emit_result("bad_more_results_than_max_batch", &r, 2, 64);
    r.n_n_top = 2;
    bad |= emit_result("bad_n_top_count", &r, 16, 64);
    r.n_n_top = 3;
    n_top[1] = 21;
    bad |= emit_result("bad_n_top_over_20", &r, 16, 64);
    n_top[1] = 1;
    bad |= emit_result("bad_n_top_sum", &r, 16, 64);
    n_top[1] = 0;
    top_logprob[1] = 0.5f;
    bad |= emit_result("bad_top_logprob_positive", &r, 16, 64);
    top_logprob[1] = -1.5f;
    r.n_top_logprob = 2;
    bad |= emit_result("bad_top_logprob_short", &r, 16, 64);
    return bad;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    root = argv[1];
    return emit_stage() | emit_results();
}
