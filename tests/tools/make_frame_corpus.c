/*
 * make_frame_corpus.c - writes the seed corpus of tests/fuzz/fuzz_frame.c: one valid frame
 * of every message kind, packed by the real sending code (bt_frame_finish), plus frames whose
 * header is valid but whose message the checkers must refuse (one defect each), and a few
 * broken fixed headers.
 *
 * Usage: make_frame_corpus OUT_DIR   (e.g. tests/fuzz/corpus/frame)
 * The fuzz target's limits are max_batch 512, max_seqs 64, n_vocab 49152.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "frame.h"
#include "msg.h"

#define FRAME_CAP 8192

static const char *out_dir;
static int n_written;

static int write_file(const char *name, const void *buf, size_t len) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", out_dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "make_frame_corpus: cannot write %s\n", path);
        if (f)
            fclose(f);
        return 1;
    }
    n_written++;
    return 0;
}

/* Packs m with payload_len bytes of payload (a byte ramp) and writes it as `name`. */
static int emit(const char *name, bt_msg_kind kind, const ProtobufCMessage *m, size_t payload_len,
                int codec, int zstd) {
    static uint8_t buf[FRAME_CAP];
    size_t off = bt_frame_payload_offset(m), len;
    if (off + payload_len > sizeof buf) {
        fprintf(stderr, "make_frame_corpus: %s too large\n", name);
        return 1;
    }
    for (size_t i = 0; i < payload_len; i++)
        buf[off + i] = (uint8_t)(i * 7 + 1);
    bt_error err;
    bt_error_init(&err);
    if (bt_frame_finish(buf, sizeof buf, kind, m, payload_len, codec, zstd, &len, &err) != BT_OK) {
        fprintf(stderr, "make_frame_corpus: %s: %s\n", name, err.msg);
        return 1;
    }
    return write_file(name, buf, len);
}

/* A StageBatch of two sequences: seq 3 prefills 4 prompt rows (the last one sampled), seq 9
 * decodes one row; a FORK, a TRUNCATE and a FREE; sampling params of seq 3. Callers break one
 * field at a time. */
typedef struct batch_fixture {
    Baton__StageBatch b;
    int32_t seq[5], pos[5], token[5];
    protobuf_c_boolean want[5];
    int32_t target[5];
    Baton__SeqOp ops[3];
    Baton__SeqOp *op_ptrs[3];
    Baton__SamplingParams sp;
    Baton__SamplingParams *sp_ptrs[1];
} batch_fixture;

static void batch_init(batch_fixture *x) {
    static const int32_t seq[5] = {3, 3, 3, 3, 9}, pos[5] = {0, 1, 2, 3, 17},
                         token[5] = {1, 9906, 49151, 28, 314};
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
    static const struct {
        Baton__SeqOp__Kind kind;
        int32_t seq, dst, n_tokens;
    } ops[3] = {{BATON__SEQ_OP__KIND__FORK, 9, 10, 0},
                {BATON__SEQ_OP__KIND__TRUNCATE, 10, 0, 12},
                {BATON__SEQ_OP__KIND__FREE, 63, 0, 0}};
    for (int i = 0; i < 3; i++) {
        baton__seq_op__init(&x->ops[i]);
        x->ops[i].kind = ops[i].kind;
        x->ops[i].seq = ops[i].seq;
        x->ops[i].dst = ops[i].dst;
        x->ops[i].n_tokens = ops[i].n_tokens;
        x->op_ptrs[i] = &x->ops[i];
    }
    x->b.n_ops = 3;
    x->b.ops = x->op_ptrs;
    baton__sampling_params__init(&x->sp);
    x->sp.seq = 3;
    x->sp.temperature = 0.7f;
    x->sp.top_k = 40;
    x->sp.top_p = 0.95f;
    x->sp.min_p = 0.05f;
    x->sp.seed = 1234567890123ull;
    x->sp_ptrs[0] = &x->sp;
    x->b.n_new_seqs = 1;
    x->b.new_seqs = x->sp_ptrs;
}

static int emit_batch(const char *name, const batch_fixture *x, size_t payload_len) {
    int codec = payload_len ? BT_CODEC_F16 : BT_CODEC_F32;
    return emit(name, BT_MSG_STAGE_BATCH, &x->b.base, payload_len, codec, 0);
}

static int emit_batches(void) {
    int bad = 0;
    batch_fixture x;
    batch_init(&x);
    bad |= emit_batch("stage_batch_first", &x, 0);
    batch_init(&x);
    bad |= emit_batch("stage_batch_f16_payload", &x, 5 * 16 * 2);
    batch_init(&x); /* empty batch: ops only */
    x.b.n_seq = x.b.n_pos = x.b.n_token = x.b.n_want = 0;
    bad |= emit_batch("stage_batch_ops_only", &x, 0);
    /* One defect each; the checker must name the field. */
    batch_init(&x);
    x.b.n_want = 4;
    bad |= emit_batch("bad_batch_want_short", &x, 0);
    batch_init(&x);
    x.seq[1] = 64;
    bad |= emit_batch("bad_batch_seq_max_seqs", &x, 0);
    batch_init(&x);
    x.seq[0] = -1;
    bad |= emit_batch("bad_batch_seq_negative", &x, 0);
    batch_init(&x);
    x.token[2] = 49152;
    bad |= emit_batch("bad_batch_token_n_vocab", &x, 0);
    batch_init(&x);
    x.want[1] = 1;
    bad |= emit_batch("bad_batch_want_not_last", &x, 0);
    batch_init(&x);
    x.ops[0].kind = (Baton__SeqOp__Kind)3;
    bad |= emit_batch("bad_batch_op_kind", &x, 0);
    batch_init(&x);
    x.ops[0].dst = 64;
    bad |= emit_batch("bad_batch_fork_dst", &x, 0);
    batch_init(&x);
    x.ops[1].n_tokens = -5;
    bad |= emit_batch("bad_batch_truncate_n_tokens", &x, 0);
    batch_init(&x);
    x.sp.seq = 70;
    bad |= emit_batch("bad_batch_new_seqs_seq", &x, 0);
    /* Prompt scoring (protocol 3): a target per row, -1 where none. */
    static const int32_t target[5] = {9906, 49151, 28, -1, -1};
    batch_init(&x);
    memcpy(x.target, target, sizeof target);
    x.b.n_target = 5;
    x.b.target = x.target;
    bad |= emit_batch("stage_batch_targets", &x, 0);
    x.target[1] = 49152;
    bad |= emit_batch("bad_batch_target_n_vocab", &x, 0);
    x.target[1] = -2;
    bad |= emit_batch("bad_batch_target_negative", &x, 0);
    x.target[1] = 49151;
    x.b.n_target = 4;
    bad |= emit_batch("bad_batch_target_short", &x, 0);
    return bad;
}

static int emit_results(void) {
    int32_t seq[3] = {3, 9, 12}, token[3] = {42, 0, 49151};
    float logprob[3] = {-0.25f, 0.0f, -17.5f};
    Baton__SampleResults r = BATON__SAMPLE_RESULTS__INIT;
    r.step = 41;
    r.n_seq = r.n_token = r.n_logprob = 3;
    r.seq = seq;
    r.token = token;
    r.logprob = logprob;
    r.compute_us = 12345;
    int bad = emit("sample_results", BT_MSG_SAMPLE_RESULTS, &r.base, 0, 0, 0);
    r.n_logprob = 2;
    bad |= emit("bad_results_logprob_short", BT_MSG_SAMPLE_RESULTS, &r.base, 0, 0, 0);
    r.n_logprob = 3;
    token[1] = 49152;
    bad |= emit("bad_results_token_n_vocab", BT_MSG_SAMPLE_RESULTS, &r.base, 0, 0, 0);
    token[1] = 0;
    logprob[2] = 0.5f;
    bad |= emit("bad_results_logprob_positive", BT_MSG_SAMPLE_RESULTS, &r.base, 0, 0, 0);
    logprob[2] = -17.5f;
    float target_lp[3] = {-3.5f, -0.0f, -11.25f};
    r.n_target_logprob = 3;
    r.target_logprob = target_lp;
    bad |= emit("sample_results_targets", BT_MSG_SAMPLE_RESULTS, &r.base, 0, 0, 0);
    target_lp[1] = 0.125f;
    bad |= emit("bad_results_target_logprob_positive", BT_MSG_SAMPLE_RESULTS, &r.base, 0, 0, 0);
    return bad;
}

static int emit_control(void) {
    uint8_t hash[BT_MODEL_HASH_BYTES];
    static const char gguf[] = "GGUF\3\0\0\0 pretend header and metadata";
    bt_model_hash(gguf, sizeof gguf, 270000000, hash);
    int bad = 0;

    Baton__Hello h = BATON__HELLO__INIT;
    h.protocol_version = BT_PROTOCOL_VERSION;
    h.stage_index = 1;
    h.n_stages = 3;
    h.layer_begin = 10;
    h.layer_end = 20;
    h.model_hash.data = hash;
    h.model_hash.len = sizeof hash;
    h.codec = 1;
    h.zstd_level = 3;
    h.max_batch = 512;
    h.max_seqs = 64;
    h.kv_tokens = 65536;
    h.heartbeat_ms = 500;
    bad |= emit("hello", BT_MSG_HELLO, &h.base, 0, 0, 0);

    Baton__HelloReply r = BATON__HELLO_REPLY__INIT;
    r.protocol_version = BT_PROTOCOL_VERSION;
    r.rank = 2;
    r.model_hash.data = hash;
    r.model_hash.len = sizeof hash;
    r.layer_begin = 10;
    r.layer_end = 20;
    r.weight_bytes = 90000000;
    r.kv_bytes = 1u << 30;
    r.kv_tokens = 65536;
    r.rss_bytes = 1200000000;
    r.hostname = "node-07.cluster.example";
    bad |= emit("hello_reply", BT_MSG_HELLO_REPLY, &r.base, 0, 0, 0);

    Baton__StageInfo si = BATON__STAGE_INFO__INIT;
    si.protocol_version = BT_PROTOCOL_VERSION;
    si.rank = 2;
    si.mem_budget_bytes = 3ull << 30;
    si.mem_source = 2;
    si.hostname = "node-07.cluster.example";
    bad |= emit("stage_info", BT_MSG_STAGE_INFO, &si.base, 0, 0, 0);

    /* Probe of a SmolLM2 layer (q4_1 matrices, q8_0 down), and its reply. */
    uint32_t probe_types[7] = {3, 3, 3, 3, 3, 3, 8};
    Baton__Probe pr = BATON__PROBE__INIT;
    pr.n_embd = 576;
    pr.q_dim = 576;
    pr.kv_dim = 192;
    pr.n_ff = 1536;
    pr.n_types = 7;
    pr.types = probe_types;
    pr.threads = 2;
    pr.rows = 4;
    pr.min_ms = 400;
    bad |= emit("probe", BT_MSG_PROBE, &pr.base, 0, 0, 0);
    Baton__ProbeReply prr = BATON__PROBE_REPLY__INIT;
    prr.rank = 2;
    prr.passes = 342;
    prr.wall_us = 401234;
    prr.cpu_us = 200817;
    bad |= emit("probe_reply", BT_MSG_PROBE_REPLY, &prr.base, 0, 0, 0);

    static uint8_t model_hash[BT_MODEL_HASH_BYTES] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    Baton__SliceRequest sr = BATON__SLICE_REQUEST__INIT;
    sr.rank = 2;
    sr.model_hash.data = model_hash;
    sr.model_hash.len = sizeof model_hash;
    sr.layer_begin = 15;
    sr.layer_end = 30;
    bad |= emit("slice_request", BT_MSG_SLICE_REQUEST, &sr.base, 0, 0, 0);

    Baton__SliceChunk sc = BATON__SLICE_CHUNK__INIT;
    sc.offset = 4u << 20;
    sc.raw_len = 1u << 20;
    sc.hash = 0x0123456789abcdefull;
    sc.total_bytes = 65107744;
    sc.index = 4;
    sc.n_chunks = 52;
    bad |= emit("slice_chunk", BT_MSG_SLICE_CHUNK, &sc.base, 0, 0, 0);

    Baton__Heartbeat hb = BATON__HEARTBEAT__INIT;
    hb.rank = 3;
    hb.busy_us = 987654321;
    hb.kv_tokens_free = 4096;
    bad |= emit("heartbeat", BT_MSG_HEARTBEAT, &hb.base, 0, 0, 0);

    Baton__Error e = BATON__ERROR__INIT;
    e.rank = 2;
    e.status = BT_ERR_PROTOCOL;
    e.message = "StageBatch 41 row 2: token 50000 not in [0, 49152)";
    bad |= emit("error", BT_MSG_ERROR, &e.base, 0, 0, 0);

    Baton__Shutdown s = BATON__SHUTDOWN__INIT;
    s.reason = 1;
    bad |= emit("shutdown", BT_MSG_SHUTDOWN, &s.base, 0, 0, 0);
    Baton__Shutdown empty = BATON__SHUTDOWN__INIT;
    bad |= emit("shutdown_empty", BT_MSG_SHUTDOWN, &empty.base, 0, 0, 0);
    return bad;
}

/* Fixed headers that bt_frame_parse must refuse. */
static int emit_bad_headers(void) {
    Baton__Heartbeat hb = BATON__HEARTBEAT__INIT;
    hb.rank = 1;
    uint8_t buf[64] = {0};
    size_t len;
    bt_error err;
    bt_error_init(&err);
    if (bt_frame_finish(buf, sizeof buf, BT_MSG_HEARTBEAT, &hb.base, 0, 0, 0, &len, &err) != BT_OK)
        return 1;
    int bad = write_file("bad_header_truncated", buf, BT_FRAME_HEADER_BYTES - 1);
    uint8_t tmp[64];
    memcpy(tmp, buf, len);
    tmp[21] ^= 0x40;
    bad |= write_file("bad_header_checksum", tmp, len);
    bad |= write_file("bad_header_trailing_byte", buf, len + 1 <= sizeof buf ? len + 1 : len);
    memcpy(tmp, buf, len);
    bt_frame_write_header(tmp, BT_MSG_KIND_END, len - BT_FRAME_HEADER_BYTES, 0, 0, 0);
    bad |= write_file("bad_header_kind", tmp, len);
    memcpy(tmp, buf, len);
    bt_frame_write_header(tmp, BT_MSG_HEARTBEAT, 0xffffffffu, 0xffffffffu, 0, 0);
    bad |= write_file("bad_header_lengths", tmp, len);
    return bad;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
        return 2;
    }
    out_dir = argv[1];
    int bad = emit_control() | emit_batches() | emit_results() | emit_bad_headers();
    printf("make_frame_corpus: wrote %d files to %s\n", n_written, out_dir);
    return bad ? 1 : 0;
}
