/*
 * test_msg.c - frames and messages (proto/frame.h, proto/msg.h): packing and parsing round
 * trips, refusal of broken fixed headers, arena limits, and the message checkers
 * bt_msg_check_stage_batch / bt_msg_check_sample_results (valid messages pass, each defect
 * is refused with a message naming the field).
 */
#include <math.h>
#include <string.h>

#include "check.h"
#include "codec.h"
#include "frame.h"
#include "msg.h"
#include "stage_layout.h"

#define MAX_BATCH 512
#define MAX_SEQS 64
#define N_VOCAB 49152

/* st must be `want` and err's message must contain every one of the NULL-ended words. */
static void expect_refused_at(const char *file, int line, bt_status st, const bt_error *err,
                              bt_status want, const char *const *words) {
    if (st != want) {
        check_fail(file, line, "status %s, expected %s (%s)", bt_status_str(st),
                   bt_status_str(want), err->msg);
        return;
    }
    for (int i = 0; words[i]; i++)
        if (!strstr(err->msg, words[i])) {
            check_fail(file, line, "message \"%s\" does not name \"%s\"", err->msg, words[i]);
            return;
        }
    bt_check_passed++;
}
#define EXPECT_REFUSED(st, err, want, ...)                                                         \
    expect_refused_at(__FILE__, __LINE__, (st), (err), (want),                                     \
                      (const char *const[]){__VA_ARGS__, NULL})

/* Two sequences: seq 3 prefills 4 rows (the last sampled), seq 9 decodes one; a FORK, a
 * TRUNCATE and a FREE; sampling params for seq 3. Tests break one field at a time. */
typedef struct fixture {
    Baton__StageBatch b;
    int32_t seq[5], pos[5], token[5];
    protobuf_c_boolean want[5];
    Baton__SeqOp ops[3];
    Baton__SeqOp *op_ptrs[3];
    Baton__SamplingParams sp;
    Baton__SamplingParams *sp_ptrs[1];
} fixture;

static void fixture_init(fixture *x) {
    static const int32_t seq[5] = {3, 3, 3, 3, 9}, pos[5] = {0, 1, 2, 3, 17},
                         token[5] = {1, 9906, 49151, 28, 0};
    static const protobuf_c_boolean want[5] = {0, 0, 0, 1, 1};
    memset(x, 0, sizeof *x);
    baton__stage_batch__init(&x->b);
    memcpy(x->seq, seq, sizeof seq);
    memcpy(x->pos, pos, sizeof pos);
    memcpy(x->token, token, sizeof token);
    memcpy(x->want, want, sizeof want);
    x->b.step = 41;
    x->b.n_seq = x->b.n_pos = x->b.n_token = x->b.n_want = 5;
    x->b.seq = x->seq;
    x->b.pos = x->pos;
    x->b.token = x->token;
    x->b.want = x->want;
    for (int i = 0; i < 3; i++) {
        baton__seq_op__init(&x->ops[i]);
        x->op_ptrs[i] = &x->ops[i];
    }
    x->ops[0].kind = BATON__SEQ_OP__KIND__FORK;
    x->ops[0].seq = 9;
    x->ops[0].dst = 63;
    x->ops[1].kind = BATON__SEQ_OP__KIND__TRUNCATE;
    x->ops[1].seq = 63;
    x->ops[1].n_tokens = 12;
    x->ops[2].kind = BATON__SEQ_OP__KIND__FREE;
    x->ops[2].seq = 0;
    x->ops[2].dst = -7; /* dst means nothing for FREE */
    x->b.n_ops = 3;
    x->b.ops = x->op_ptrs;
    baton__sampling_params__init(&x->sp);
    x->sp.seq = 3;
    x->sp.temperature = 0.7f;
    x->sp.top_k = 40;
    x->sp.seed = 7;
    x->sp_ptrs[0] = &x->sp;
    x->b.n_new_seqs = 1;
    x->b.new_seqs = x->sp_ptrs;
}

static bt_status check_batch(const fixture *x, bt_error *err) {
    bt_error_init(err);
    return bt_msg_check_stage_batch(&x->b, MAX_BATCH, MAX_SEQS, N_VOCAB, err);
}

static void test_stage_batch_valid(void) {
    fixture x;
    bt_error err;
    fixture_init(&x);
    CHECK_OK(check_batch(&x, &err));
    /* Boundaries: the largest ids allowed. */
    x.seq[4] = MAX_SEQS - 1;
    x.token[4] = N_VOCAB - 1;
    CHECK_OK(check_batch(&x, &err));
    /* Ops only, no rows. */
    x.b.n_seq = x.b.n_pos = x.b.n_token = x.b.n_want = 0;
    CHECK_OK(check_batch(&x, &err));
    /* Nothing wanted at all (a mid-prompt chunk). */
    fixture_init(&x);
    memset(x.want, 0, sizeof x.want);
    CHECK_OK(check_batch(&x, &err));
    /* Exactly max_batch rows of max_seqs sequences, the last row of each wanted. */
    static int32_t seq[MAX_BATCH], zero[MAX_BATCH];
    static protobuf_c_boolean want[MAX_BATCH];
    for (int i = 0; i < MAX_BATCH; i++) {
        seq[i] = i % MAX_SEQS;
        want[i] = i >= MAX_BATCH - MAX_SEQS;
    }
    fixture_init(&x);
    x.b.n_seq = x.b.n_pos = x.b.n_token = x.b.n_want = MAX_BATCH;
    x.b.seq = seq;
    x.b.pos = zero;
    x.b.token = zero;
    x.b.want = want;
    CHECK_OK(check_batch(&x, &err));
}

static void test_stage_batch_defects(void) {
    fixture x;
    bt_error err;

    fixture_init(&x);
    x.b.n_want = 4;
    EXPECT_REFUSED(check_batch(&x, &err), &err, BT_ERR_PROTOCOL, "StageBatch 41", "want 4");
    fixture_init(&x);
    x.b.n_pos = 6;
    EXPECT_REFUSED(check_batch(&x, &err), &err, BT_ERR_PROTOCOL, "pos 6");
    fixture_init(&x);
    x.b.n_want = 0;
    EXPECT_REFUSED(check_batch(&x, &err), &err, BT_ERR_PROTOCOL, "want 0");
    fixture_init(&x);
    x.b.n_token = 1;
    EXPECT_REFUSED(check_batch(&x, &err), &err, BT_ERR_PROTOCOL, "token 1");

    static int32_t big[MAX_BATCH + 1];
    static protobuf_c_boolean big_b[MAX_BATCH + 1];
    fixture_init(&x);
    x.b.n_seq = x.b.n_pos = x.b.n_token = x.b.n_want = MAX_BATCH + 1;
    x.b.seq = x.b.pos = x.b.token = big;
    x.b.want = big_b;
    EXPECT_REFUSED(check_batch(&x, &err), &err, BT_ERR_PROTOCOL, "513 rows", "max_batch 512");

    fixture_init(&x);
    x.seq[1] = MAX_SEQS;
    EXPECT_REFUSED(check_batch(&x, &err), &err, BT_ERR_PROTOCOL, "row 1", "seq 64", "[0, 64)");
    fixture_init(&x);
    x.seq[4] = -1;
    EXPECT_REFUSED(check_batch(&x, &err), &err, BT_ERR_PROTOCOL, "row 4", "seq -1");
    fixture_init(&x);
    x.token[2] = N_VOCAB;
    EXPECT_REFUSED(check_batch(&x, &err), &err, BT_ERR_PROTOCOL, "row 2", "token 49152",
                   "[0, 49152)");
    fixture_init(&x);
    x.token[0] = -3;
    EXPECT_REFUSED(check_batch(&x, &err), &err, BT_ERR_PROTOCOL, "row 0", "token -3");
    /* want on a row that is not its sequence's last, even with other sequences between. */
    fixture_init(&x);
    x.want[2] = 1;
    EXPECT_REFUSED(check_batch(&x, &err), &err, BT_ERR_PROTOCOL, "row 2", "want", "seq 3");
    fixture_init(&x);
    x.seq[4] = 3;
    x.want[4] = 0;
    EXPECT_REFUSED(check_batch(&x, &err), &err, BT_ERR_PROTOCOL, "row 3", "want", "row 4");

    fixture_init(&x);
    x.ops[1].kind = (Baton__SeqOp__Kind)3;
    EXPECT_REFUSED(check_batch(&x, &err), &err, BT_ERR_PROTOCOL, "op 1", "kind 3");
    fixture_init(&x);
    x.ops[2].kind = (Baton__SeqOp__Kind)-1;
    EXPECT_REFUSED(check_batch(&x, &err), &err, BT_ERR_PROTOCOL, "op 2", "kind -1");
    fixture_init(&x);
    x.ops[2].seq = MAX_SEQS;
    EXPECT_REFUSED(check_batch(&x, &err), &err, BT_ERR_PROTOCOL, "op 2", "FREE", "seq 64");
    fixture_init(&x);
    x.ops[0].seq = -1;
    EXPECT_REFUSED(check_batch(&x, &err), &err, BT_ERR_PROTOCOL, "op 0", "FORK", "seq -1");
    fixture_init(&x);
    x.ops[0].dst = MAX_SEQS;
    EXPECT_REFUSED(check_batch(&x, &err), &err, BT_ERR_PROTOCOL, "op 0", "dst 64");
    fixture_init(&x);
    x.ops[0].dst = -2;
    EXPECT_REFUSED(check_batch(&x, &err), &err, BT_ERR_PROTOCOL, "op 0", "dst -2");
    fixture_init(&x);
    x.ops[1].n_tokens = -1;
    EXPECT_REFUSED(check_batch(&x, &err), &err, BT_ERR_PROTOCOL, "op 1", "TRUNCATE", "n_tokens -1");
    fixture_init(&x);
    x.sp.seq = MAX_SEQS;
    EXPECT_REFUSED(check_batch(&x, &err), &err, BT_ERR_PROTOCOL, "new_seqs 0", "seq 64");
    fixture_init(&x);
    x.sp.seq = -1;
    EXPECT_REFUSED(check_batch(&x, &err), &err, BT_ERR_PROTOCOL, "new_seqs 0", "seq -1");

    /* Prompt scoring targets: empty or one per row, -1 or a token, at most BT_SCORE_ROWS. */
    int32_t target[BT_SCORE_ROWS + 1];
    fixture_init(&x);
    for (int i = 0; i < 5; i++)
        target[i] = i == 2 ? -1 : N_VOCAB - 1 - i;
    x.b.n_target = 5;
    x.b.target = target;
    CHECK_OK(check_batch(&x, &err));
    x.b.n_target = 4;
    EXPECT_REFUSED(check_batch(&x, &err), &err, BT_ERR_PROTOCOL, "target 4");
    x.b.n_target = 5;
    target[1] = N_VOCAB;
    EXPECT_REFUSED(check_batch(&x, &err), &err, BT_ERR_PROTOCOL, "row 1", "target 49152");
    target[1] = -2;
    EXPECT_REFUSED(check_batch(&x, &err), &err, BT_ERR_PROTOCOL, "row 1", "target -2");
    {
        static int32_t rows[BT_SCORE_ROWS + 1];
        for (int i = 0; i <= BT_SCORE_ROWS; i++) {
            rows[i] = 3;
            target[i] = 7;
        }
        fixture_init(&x);
        x.b.n_seq = x.b.n_pos = x.b.n_token = x.b.n_want = x.b.n_target = BT_SCORE_ROWS + 1;
        x.b.seq = x.b.pos = x.b.token = rows;
        static protobuf_c_boolean none[BT_SCORE_ROWS + 1];
        x.b.want = none;
        x.b.target = target;
        EXPECT_REFUSED(check_batch(&x, &err), &err, BT_ERR_PROTOCOL, "65 rows with a target");
        target[0] = -1;
        CHECK_OK(check_batch(&x, &err));
    }

    fixture_init(&x);
    bt_error_init(&err);
    EXPECT_REFUSED(bt_msg_check_stage_batch(&x.b, 0, MAX_SEQS, N_VOCAB, &err), &err,
                   BT_ERR_INVALID_ARG, "max_batch 0");
    bt_error_init(&err);
    EXPECT_REFUSED(bt_msg_check_stage_batch(&x.b, MAX_BATCH, MAX_SEQS, -1, &err), &err,
                   BT_ERR_INVALID_ARG, "n_vocab -1");
    /* err may be NULL. */
    x.seq[0] = 99;
    CHECK_EQ_INT(bt_msg_check_stage_batch(&x.b, MAX_BATCH, MAX_SEQS, N_VOCAB, NULL),
                 BT_ERR_PROTOCOL);
}

static void test_sample_results(void) {
    int32_t seq[3] = {3, 9, 12}, token[3] = {42, 0, N_VOCAB - 1};
    float logprob[3] = {-0.25f, 0.0f, -INFINITY};
    Baton__SampleResults r = BATON__SAMPLE_RESULTS__INIT;
    r.step = 41;
    r.n_seq = r.n_token = r.n_logprob = 3;
    r.seq = seq;
    r.token = token;
    r.logprob = logprob;
    bt_error err;
    bt_error_init(&err);
    CHECK_OK(bt_msg_check_sample_results(&r, MAX_BATCH, N_VOCAB, &err));
    r.n_seq = r.n_token = r.n_logprob = 0;
    CHECK_OK(bt_msg_check_sample_results(&r, MAX_BATCH, N_VOCAB, &err));
    /* target_logprob: log-probabilities, at most max_batch of them. */
    float tlp[3] = {-1.5f, 0.0f, -INFINITY};
    r.n_target_logprob = 3;
    r.target_logprob = tlp;
    CHECK_OK(bt_msg_check_sample_results(&r, MAX_BATCH, N_VOCAB, &err));
    EXPECT_REFUSED(bt_msg_check_sample_results(&r, 2, N_VOCAB, &err), &err, BT_ERR_PROTOCOL,
                   "3 target_logprob", "max_batch 2");
    tlp[1] = NAN;
    EXPECT_REFUSED(bt_msg_check_sample_results(&r, MAX_BATCH, N_VOCAB, &err), &err, BT_ERR_PROTOCOL,
                   "target_logprob[1]");
    r.n_target_logprob = 0;

    r.n_seq = r.n_token = r.n_logprob = 3;
    r.n_token = 2;
    EXPECT_REFUSED(bt_msg_check_sample_results(&r, MAX_BATCH, N_VOCAB, &err), &err, BT_ERR_PROTOCOL,
                   "SampleResults 41", "token 2");
    r.n_token = 3;
    r.n_logprob = 4;
    EXPECT_REFUSED(bt_msg_check_sample_results(&r, MAX_BATCH, N_VOCAB, &err), &err, BT_ERR_PROTOCOL,
                   "logprob 4");
    r.n_logprob = 3;
    EXPECT_REFUSED(bt_msg_check_sample_results(&r, 2, N_VOCAB, &err), &err, BT_ERR_PROTOCOL,
                   "3 results", "max_batch 2");
    token[1] = N_VOCAB;
    EXPECT_REFUSED(bt_msg_check_sample_results(&r, MAX_BATCH, N_VOCAB, &err), &err, BT_ERR_PROTOCOL,
                   "result 1", "token 49152");
    token[1] = -1;
    EXPECT_REFUSED(bt_msg_check_sample_results(&r, MAX_BATCH, N_VOCAB, &err), &err, BT_ERR_PROTOCOL,
                   "result 1", "token -1");
    token[1] = 0;
    logprob[0] = 0.5f;
    EXPECT_REFUSED(bt_msg_check_sample_results(&r, MAX_BATCH, N_VOCAB, &err), &err, BT_ERR_PROTOCOL,
                   "result 0", "logprob 0.5");
    logprob[0] = NAN;
    EXPECT_REFUSED(bt_msg_check_sample_results(&r, MAX_BATCH, N_VOCAB, &err), &err, BT_ERR_PROTOCOL,
                   "result 0", "logprob nan");
    logprob[0] = -1.0f;
    EXPECT_REFUSED(bt_msg_check_sample_results(&r, MAX_BATCH, 0, &err), &err, BT_ERR_INVALID_ARG,
                   "n_vocab 0");
}

/* A StageBatch with a payload survives bt_frame_finish -> bt_frame_parse -> bt_msg_unpack. */
static void test_round_trip(void) {
    fixture x;
    fixture_init(&x);
    static uint8_t buf[4096];
    size_t off = bt_frame_payload_offset(&x.b.base), len = 0;
    for (size_t i = 0; i < 100; i++)
        buf[off + i] = (uint8_t)(i * 3);
    bt_error err;
    bt_error_init(&err);
    CHECK_OK(bt_frame_finish(buf, sizeof buf, BT_MSG_STAGE_BATCH, &x.b.base, 100, BT_CODEC_Q8, 1,
                             &len, &err));
    CHECK_EQ_INT(len, off + 100);
    bt_frame_view f;
    CHECK_OK(bt_frame_parse(buf, len, &f, &err));
    CHECK_EQ_INT(f.kind, BT_MSG_STAGE_BATCH);
    CHECK_EQ_INT(f.codec, BT_CODEC_Q8);
    CHECK_EQ_INT(f.zstd, 1);
    CHECK_EQ_INT(f.payload_len, 100);
    CHECK(f.payload == buf + off && f.payload[99] == (uint8_t)(99 * 3));

    bt_arena a;
    CHECK_OK(bt_arena_init(&a, 1 << 16, &err));
    ProtobufCMessage *m = NULL;
    CHECK_OK(bt_msg_unpack(&f, BT_MSG_STAGE_BATCH, &a, &m, &err));
    if (m) {
        const Baton__StageBatch *b = (const Baton__StageBatch *)m;
        CHECK_EQ_INT(b->step, 41);
        CHECK_EQ_INT(b->n_seq, 5);
        CHECK(b->n_seq == 5 && memcmp(b->token, x.token, sizeof x.token) == 0);
        CHECK(b->n_want == 5 && b->want[3] && b->want[4] && !b->want[0]);
        CHECK(b->n_ops == 3 && b->ops[0]->kind == BATON__SEQ_OP__KIND__FORK &&
              b->ops[0]->dst == 63 && b->ops[1]->n_tokens == 12);
        CHECK(b->n_new_seqs == 1 && b->new_seqs[0]->top_k == 40);
        CHECK_OK(bt_msg_check_stage_batch(b, MAX_BATCH, MAX_SEQS, N_VOCAB, &err));
    }
    /* Opened as another kind: refused, naming both. */
    bt_arena_reset(&a);
    EXPECT_REFUSED(bt_msg_unpack(&f, BT_MSG_SAMPLE_RESULTS, &a, &m, &err), &err, BT_ERR_PROTOCOL,
                   "SampleResults", "StageBatch");
    CHECK(m == NULL);
    bt_arena_deinit(&a);

    /* An arena too small for the message: a protocol error, not an allocation. */
    CHECK_OK(bt_arena_init(&a, 64, &err));
    EXPECT_REFUSED(bt_msg_unpack(&f, BT_MSG_STAGE_BATCH, &a, &m, &err), &err, BT_ERR_PROTOCOL,
                   "StageBatch");
    CHECK(a.used <= a.cap);
    bt_arena_deinit(&a);

    /* A buffer too small to pack into. */
    EXPECT_REFUSED(
        bt_frame_finish(buf, off + 99, BT_MSG_STAGE_BATCH, &x.b.base, 100, 0, 0, &len, &err), &err,
        BT_ERR_LIMIT, "StageBatch");
}

/* Rewrites the fixed header's checksum (FNV-1a of bytes 0..19, frame.h) after a patch. */
static void resum(uint8_t *p) {
    uint32_t h = 2166136261u;
    for (int i = 0; i < 20; i++)
        h = (h ^ p[i]) * 16777619u;
    for (int i = 0; i < 4; i++)
        p[20 + i] = (uint8_t)(h >> (8 * i));
}

static void test_parse_refusals(void) {
    Baton__Heartbeat hb = BATON__HEARTBEAT__INIT;
    hb.rank = 2;
    hb.busy_us = 1000;
    uint8_t good[64], buf[65];
    size_t len = 0;
    bt_error err;
    bt_error_init(&err);
    CHECK_OK(bt_frame_finish(good, sizeof good, BT_MSG_HEARTBEAT, &hb.base, 0, 0, 0, &len, &err));
    bt_frame_view f;
    CHECK_OK(bt_frame_parse(good, len, &f, &err));

    EXPECT_REFUSED(bt_frame_parse(good, BT_FRAME_HEADER_BYTES - 1, &f, &err), &err, BT_ERR_PROTOCOL,
                   "shorter than the header");
    EXPECT_REFUSED(bt_frame_parse(good, len - 1, &f, &err), &err, BT_ERR_PROTOCOL, "header_len");
    memcpy(buf, good, len);
    buf[len] = 0;
    EXPECT_REFUSED(bt_frame_parse(buf, len + 1, &f, &err), &err, BT_ERR_PROTOCOL, "payload_len");
    memcpy(buf, good, len);
    buf[0] ^= 1;
    EXPECT_REFUSED(bt_frame_parse(buf, len, &f, &err), &err, BT_ERR_PROTOCOL, "magic");
    memcpy(buf, good, len);
    buf[9] ^= 1; /* header_len changed without the checksum */
    EXPECT_REFUSED(bt_frame_parse(buf, len, &f, &err), &err, BT_ERR_PROTOCOL, "checksum");

    /* Fields rewritten with a valid checksum. */
    size_t pb = len - BT_FRAME_HEADER_BYTES;
    memcpy(buf, good, len);
    char want[64];
    bt_frame_write_header(buf, BT_MSG_KIND_END, pb, 0, 0, 0);
    snprintf(want, sizeof want, "kind %d", (int)BT_MSG_KIND_END);
    EXPECT_REFUSED(bt_frame_parse(buf, len, &f, &err), &err, BT_ERR_PROTOCOL, want);
    bt_frame_write_header(buf, BT_MSG_KIND_END - 1, pb, 0, 0, 0); /* the last kind */
    CHECK_OK(bt_frame_parse(buf, len, &f, &err));
    CHECK_EQ_INT(f.kind, BT_MSG_KIND_END - 1);
    bt_frame_write_header(buf, (bt_msg_kind)0, pb, 0, 0, 0);
    EXPECT_REFUSED(bt_frame_parse(buf, len, &f, &err), &err, BT_ERR_PROTOCOL, "kind 0");
    bt_frame_write_header(buf, BT_MSG_HEARTBEAT, pb, 0, BT_CODEC_KIND_COUNT, 0);
    EXPECT_REFUSED(bt_frame_parse(buf, len, &f, &err), &err, BT_ERR_PROTOCOL, "codec");
    bt_frame_write_header(buf, BT_MSG_HEARTBEAT, 0xffffffffu, 0xffffffffu, 0, 0);
    EXPECT_REFUSED(bt_frame_parse(buf, len, &f, &err), &err, BT_ERR_PROTOCOL, "4294967295");
    bt_frame_write_header(buf, BT_MSG_HEARTBEAT, pb, 0, 0, 0);
    CHECK_OK(bt_frame_parse(buf, len, &f, &err));
    /* Version, flags and reserved, with the checksum recomputed. */
    buf[4] = BT_PROTOCOL_VERSION - 1;
    resum(buf);
    snprintf(want, sizeof want, "version %d", BT_PROTOCOL_VERSION - 1);
    EXPECT_REFUSED(bt_frame_parse(buf, len, &f, &err), &err, BT_ERR_PROTOCOL, want);
    buf[4] = BT_PROTOCOL_VERSION;
    buf[17] = 2;
    resum(buf);
    EXPECT_REFUSED(bt_frame_parse(buf, len, &f, &err), &err, BT_ERR_PROTOCOL, "zstd 2");
    buf[17] = 0;
    buf[19] = 1;
    resum(buf);
    EXPECT_REFUSED(bt_frame_parse(buf, len, &f, &err), &err, BT_ERR_PROTOCOL, "reserved 256");
    buf[19] = 0;
    resum(buf);
    CHECK_OK(bt_frame_parse(buf, len, &f, &err));
}

/* Unknown fields: kept (a peer may append fields within a version), except field numbers no
 * encoder produces, which protobuf-c would repack into bytes it refuses (found by fuzzing). */
static void test_unknown_fields(void) {
    static const struct {
        const char *name;
        uint8_t pb[12];
        size_t n;
        int ok;
    } cases[] = {
        {"field 100, varint 7", {0xa0, 0x06, 0x07, 0x08, 0x02}, 5, 1},
        {"field 0 as overlong varint", {0x80, 0x00, 0x35, 0x08, 0x02}, 5, 0},
        {"field 2^29", {0x80, 0x80, 0x80, 0x80, 0x10, 0x01}, 6, 0},
    };
    bt_arena a;
    bt_error err;
    bt_error_init(&err);
    CHECK_OK(bt_arena_init(&a, 1 << 12, &err));
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        uint8_t frame[64], again[64];
        memcpy(frame + BT_FRAME_HEADER_BYTES, cases[c].pb, cases[c].n);
        bt_frame_write_header(frame, BT_MSG_HEARTBEAT, cases[c].n, 0, 0, 0);
        bt_frame_view f;
        ProtobufCMessage *m = NULL;
        CHECK_OK(bt_frame_parse(frame, BT_FRAME_HEADER_BYTES + cases[c].n, &f, &err));
        bt_arena_reset(&a);
        bt_status st = bt_msg_unpack(&f, BT_MSG_HEARTBEAT, &a, &m, &err);
        if (!cases[c].ok) {
            EXPECT_REFUSED(st, &err, BT_ERR_PROTOCOL, "Heartbeat", "invalid field number");
            continue;
        }
        CHECK_EQ_INT(st, BT_OK);
        if (st != BT_OK)
            continue;
        CHECK_EQ_INT(((Baton__Heartbeat *)m)->rank, 2);
        CHECK_EQ_INT(m->n_unknown_fields, 1);
        /* Forwarded as it came (protobuf-c packs known fields first). */
        size_t len = 0;
        CHECK_OK(bt_frame_finish(again, sizeof again, BT_MSG_HEARTBEAT, m, 0, 0, 0, &len, &err));
        CHECK_EQ_INT(len, BT_FRAME_HEADER_BYTES + cases[c].n);
        CHECK(memcmp(again + BT_FRAME_HEADER_BYTES, "\x08\x02\xa0\x06\x07", 5) == 0);
    }
    bt_arena_deinit(&a);
}

int main(void) {
    test_stage_batch_valid();
    test_stage_batch_defects();
    test_sample_results();
    test_round_trip();
    test_parse_refusals();
    test_unknown_fields();
    return check_finish();
}
