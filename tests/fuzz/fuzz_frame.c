/*
 * fuzz_frame.c - libFuzzer target for the wire protocol: frame headers (frame.h), protobuf
 * unpacking into an arena (msg.h) and the message-level checks bt_msg_check_stage_batch and
 * bt_msg_check_sample_results.
 *
 * Each input is used twice:
 * 1. As received: bt_frame_parse, then bt_msg_unpack as the declared kind (and, to be
 *    refused, as every other kind).
 * 2. Repaired: the fixed header is rewritten with bt_frame_write_header (kind, lengths,
 *    codec, flags folded into range, checksum recomputed) in an exact-size heap copy, which
 *    bt_frame_parse must then accept; its protobuf part is unpacked as every message kind.
 *    This way mutations reach the protobuf decoder without having to forge the checksum.
 *
 * Every unpacked message is walked field by field (so ASan sees any pointer that escapes
 * the arena), repacked with bt_frame_finish and unpacked again: the second packing must equal
 * the first, and be at most 3x the received one. A StageBatch / SampleResults that the
 * checkers accept is used the way the stage and the coordinator use it, indexing arrays sized
 * by the limits; the checkers' promises (at most max_seqs wanted rows, ids in range) are
 * asserted with __builtin_trap.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "frame.h"
#include "msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ARENA_BYTES (1u << 20)
#define ROUND_TRIP_ARENA_BYTES (4u << 20) /* canonical bytes never need more than the input */
#define MAX_BATCH 512
#define MAX_SEQS 64
#define N_VOCAB 49152

static bt_arena arena, arena2;
static int arenas_ready;
static volatile uint8_t sink;

/* Arrays sized exactly as the stage and coordinator size them: an index that escapes a
 * checker's promise lands outside and ASan reports it. */
static uint8_t seq_rows[MAX_SEQS];
static uint8_t vocab_seen[N_VOCAB];

static void touch(const void *p, size_t n) {
    const uint8_t *b = p;
    uint8_t x = 0;
    for (size_t i = 0; i < n; i++)
        x ^= b[i];
    sink ^= x;
}

static void touch_str(const char *s) {
    if (s)
        touch(s, strlen(s) + 1);
}

static void walk_stage_batch(const Baton__StageBatch *b) {
    touch(b->seq, b->n_seq * sizeof *b->seq);
    touch(b->pos, b->n_pos * sizeof *b->pos);
    touch(b->token, b->n_token * sizeof *b->token);
    touch(b->want, b->n_want * sizeof *b->want);
    for (size_t i = 0; i < b->n_ops; i++) {
        const Baton__SeqOp *op = b->ops[i];
        sink ^= (uint8_t)((uint32_t)op->kind ^ (uint32_t)op->seq ^ (uint32_t)op->dst ^
                          (uint32_t)op->n_tokens);
    }
    for (size_t i = 0; i < b->n_new_seqs; i++) {
        const Baton__SamplingParams *sp = b->new_seqs[i];
        sink ^= (uint8_t)((uint32_t)sp->seq ^ (uint32_t)sp->top_k ^ (uint32_t)sp->seed);
        touch(&sp->temperature, sizeof sp->temperature);
        touch(&sp->top_p, sizeof sp->top_p);
        touch(&sp->min_p, sizeof sp->min_p);
    }

    bt_error err;
    bt_error_init(&err);
    if (bt_msg_check_stage_batch(b, MAX_BATCH, MAX_SEQS, N_VOCAB, &err) != BT_OK) {
        if (err.status != BT_ERR_PROTOCOL || !err.msg[0])
            __builtin_trap();
        return;
    }
    /* The sampling parameters as the stage takes them: accepted or a protocol error with a
     * message, never a crash. */
    for (size_t i = 0; i < b->n_new_seqs; i++) {
        bt_sampler_params p;
        bt_error_init(&err);
        if (bt_msg_sampling_unpack(b->new_seqs[i], N_VOCAB, &p, &err) != BT_OK &&
            (err.status != BT_ERR_PROTOCOL || !err.msg[0]))
            __builtin_trap();
    }
    /* Use it as the stage does. */
    memset(seq_rows, 0, sizeof seq_rows);
    size_t n_want = 0;
    for (size_t i = 0; i < b->n_seq; i++) {
        seq_rows[b->seq[i]] = 1;
        vocab_seen[b->token[i]] ^= 1;
        sink ^= (uint8_t)((uint32_t)b->pos[i] ^ (uint32_t)b->want[i]);
        n_want += b->want[i] != 0;
    }
    size_t n_distinct = 0;
    for (int s = 0; s < MAX_SEQS; s++)
        n_distinct += seq_rows[s];
    if (n_want > n_distinct || n_want > MAX_SEQS)
        __builtin_trap(); /* results and logits are [max_seqs] on the last stage */
    for (size_t i = 0; i < b->n_ops; i++) {
        seq_rows[b->ops[i]->seq] ^= 1;
        if (b->ops[i]->kind == BATON__SEQ_OP__KIND__FORK)
            seq_rows[b->ops[i]->dst] ^= 1;
    }
    for (size_t i = 0; i < b->n_new_seqs; i++)
        seq_rows[b->new_seqs[i]->seq] ^= 1;
}

static void walk_sample_results(const Baton__SampleResults *r) {
    touch(r->seq, r->n_seq * sizeof *r->seq);
    touch(r->token, r->n_token * sizeof *r->token);
    touch(r->logprob, r->n_logprob * sizeof *r->logprob);
    bt_error err;
    bt_error_init(&err);
    if (bt_msg_check_sample_results(r, MAX_BATCH, N_VOCAB, &err) != BT_OK) {
        if (err.status != BT_ERR_PROTOCOL || !err.msg[0])
            __builtin_trap();
        return;
    }
    if (r->n_seq > MAX_BATCH)
        __builtin_trap();
    for (size_t i = 0; i < r->n_seq; i++) {
        vocab_seen[r->token[i]] ^= 1;
        if (!(r->logprob[i] <= 0.0f))
            __builtin_trap();
        sink ^= (uint8_t)r->seq[i];
    }
}

static void walk(bt_msg_kind kind, const ProtobufCMessage *m) {
    switch (kind) {
    case BT_MSG_HELLO: {
        const Baton__Hello *h = (const Baton__Hello *)m;
        touch(h->model_hash.data, h->model_hash.len);
        touch(&h->protocol_version, sizeof h->protocol_version);
        touch(&h->heartbeat_ms, sizeof h->heartbeat_ms);
        break;
    }
    case BT_MSG_HELLO_REPLY: {
        const Baton__HelloReply *r = (const Baton__HelloReply *)m;
        touch(r->model_hash.data, r->model_hash.len);
        touch_str(r->hostname);
        touch(&r->rss_bytes, sizeof r->rss_bytes);
        break;
    }
    case BT_MSG_STAGE_BATCH:
        walk_stage_batch((const Baton__StageBatch *)m);
        break;
    case BT_MSG_SAMPLE_RESULTS:
        walk_sample_results((const Baton__SampleResults *)m);
        break;
    case BT_MSG_HEARTBEAT: {
        const Baton__Heartbeat *h = (const Baton__Heartbeat *)m;
        touch(&h->busy_us, sizeof h->busy_us);
        break;
    }
    case BT_MSG_ERROR:
        touch_str(((const Baton__Error *)m)->message);
        break;
    case BT_MSG_SHUTDOWN:
        touch(&((const Baton__Shutdown *)m)->reason, sizeof(uint32_t));
        break;
    case BT_MSG_STAGE_INFO: {
        const Baton__StageInfo *si = (const Baton__StageInfo *)m;
        touch_str(si->hostname);
        touch(&si->mem_budget_bytes, sizeof si->mem_budget_bytes);
        break;
    }
    case BT_MSG_PROBE: {
        const Baton__Probe *p = (const Baton__Probe *)m;
        touch(p->types, p->n_types * sizeof *p->types);
        touch(&p->min_ms, sizeof p->min_ms);
        break;
    }
    case BT_MSG_PROBE_REPLY: {
        const Baton__ProbeReply *r = (const Baton__ProbeReply *)m;
        touch(&r->wall_us, sizeof r->wall_us);
        break;
    }
    case BT_MSG_SLICE_REQUEST: {
        const Baton__SliceRequest *r = (const Baton__SliceRequest *)m;
        touch(r->model_hash.data, r->model_hash.len);
        touch(&r->layer_end, sizeof r->layer_end);
        break;
    }
    case BT_MSG_SLICE_CHUNK: {
        const Baton__SliceChunk *c = (const Baton__SliceChunk *)m;
        touch(&c->hash, sizeof c->hash);
        touch(&c->total_bytes, sizeof c->total_bytes);
        break;
    }
    case BT_MSG_KIND_END:
        __builtin_trap();
    }
}

/* Packs m into a fresh frame; returns it (malloc'd, *len bytes) or traps. */
static uint8_t *pack(bt_msg_kind kind, const ProtobufCMessage *m, size_t *len) {
    size_t cap = bt_frame_payload_offset(m);
    uint8_t *buf = malloc(cap);
    bt_error err;
    bt_error_init(&err);
    if (!buf || bt_frame_finish(buf, cap, kind, m, 0, 0, 0, len, &err) != BT_OK || *len != cap)
        __builtin_trap();
    return buf;
}

/* pack(unpack(x)) is canonical: unpacking it again and packing gives the same bytes. It can
 * be longer than x: a lone element sent unpacked gains a length byte when packed (one per
 * repeated field), and protobuf-c accepts a negative int32 in 5 varint bytes but writes the
 * 10 the spec asks for (so a submessage's length prefix may grow too). A stage forwarding a
 * crafted StageBatch can thus need up to ~2.5x its protobuf bytes; bt_frame_finish refuses
 * what no longer fits (BT_ERR_LIMIT). The bound below catches anything worse. */
static void round_trip(bt_msg_kind kind, const ProtobufCMessage *m, size_t received_len) {
    size_t len1, len2, slack = 0;
    for (unsigned i = 0; i < m->descriptor->n_fields; i++)
        slack += m->descriptor->fields[i].label == PROTOBUF_C_LABEL_REPEATED;
    uint8_t *a = pack(kind, m, &len1);
    if (len1 - BT_FRAME_HEADER_BYTES > 3 * received_len + slack)
        __builtin_trap();
    bt_frame_view f;
    ProtobufCMessage *m2;
    bt_error err;
    bt_error_init(&err);
    bt_arena_reset(&arena2);
    if (bt_frame_parse(a, len1, &f, &err) != BT_OK ||
        bt_msg_unpack(&f, kind, &arena2, &m2, &err) != BT_OK)
        __builtin_trap();
    uint8_t *b = pack(kind, m2, &len2);
    if (len1 != len2 || memcmp(a, b, len1) != 0)
        __builtin_trap();
    free(a);
    free(b);
}

static void unpack_and_walk(const bt_frame_view *f, bt_msg_kind kind) {
    ProtobufCMessage *m;
    bt_error err;
    bt_error_init(&err);
    bt_arena_reset(&arena);
    bt_status st = bt_msg_unpack(f, kind, &arena, &m, &err);
    if (f->kind != kind) {
        if (st == BT_OK)
            __builtin_trap(); /* a message is only ever opened as its declared kind */
        return;
    }
    if (st != BT_OK) {
        if (st != BT_ERR_PROTOCOL || m != NULL)
            __builtin_trap();
        return;
    }
    walk(kind, m);
    round_trip(kind, m, f->header_len);
}

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!arenas_ready) {
        if (bt_arena_init(&arena, ARENA_BYTES, NULL) != BT_OK ||
            bt_arena_init(&arena2, ROUND_TRIP_ARENA_BYTES, NULL) != BT_OK)
            abort();
        arenas_ready = 1;
    }
    bt_error err;
    bt_error_init(&err);
    bt_frame_view f;

    /* 1. As received. */
    if (bt_frame_parse(data, size, &f, &err) == BT_OK) {
        if (f.header != data + BT_FRAME_HEADER_BYTES || f.payload != f.header + f.header_len ||
            BT_FRAME_HEADER_BYTES + f.header_len + f.payload_len != size)
            __builtin_trap();
        touch(f.payload, f.payload_len);
        unpack_and_walk(&f, f.kind);
        bt_msg_kind other = f.kind == BT_MSG_HELLO ? BT_MSG_SHUTDOWN : BT_MSG_HELLO;
        unpack_and_walk(&f, other);
    } else if (err.status != BT_ERR_PROTOCOL || !err.msg[0]) {
        __builtin_trap();
    }

    /* 2. Repaired header, protobuf part opened as every kind. */
    if (size < BT_FRAME_HEADER_BYTES)
        return 0;
    uint8_t *copy = malloc(size);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    size_t body = size - BT_FRAME_HEADER_BYTES;
    size_t payload_len = get_u32(data + 12) % ((uint64_t)body + 1);
    unsigned kind = data[6] | (unsigned)data[7] << 8;
    if (kind < BT_MSG_HELLO || kind >= BT_MSG_KIND_END)
        kind = BT_MSG_HELLO + kind % (BT_MSG_KIND_END - BT_MSG_HELLO);
    while (!bt_msg_kind_known(kind)) /* the gaps of the enum */
        kind = kind + 1 < BT_MSG_KIND_END ? kind + 1 : BT_MSG_HELLO;
    bt_frame_write_header(copy, (bt_msg_kind)kind, body - payload_len, payload_len,
                          data[16] % BT_CODEC_KIND_COUNT, data[17] & 1);
    if (bt_frame_parse(copy, size, &f, &err) != BT_OK || f.kind != (bt_msg_kind)kind ||
        f.header_len != body - payload_len)
        __builtin_trap(); /* bt_frame_write_header and bt_frame_parse disagree */
    for (int k = BT_MSG_HELLO; k < BT_MSG_KIND_END; k++) {
        if (!bt_msg_kind_known((unsigned)k))
            continue;
        f.kind = (bt_msg_kind)k;
        unpack_and_walk(&f, (bt_msg_kind)k);
    }
    free(copy);
    return 0;
}
