/* msg.c - frames around protobuf-c messages, and the arena used to unpack them. */
#include "msg.h"

#include <stdlib.h>
#include <string.h>

#include "stage_layout.h" /* BT_SCORE_ROWS */

static void *arena_alloc(void *data, size_t size) {
    bt_arena *a = data;
    size_t off = (a->used + 15) & ~(size_t)15;
    if (off > a->cap || size > a->cap - off)
        return NULL;
    a->used = off + size;
    return a->base + off;
}

static void arena_free(void *data, void *ptr) {
    (void)data;
    (void)ptr; /* released all at once by bt_arena_reset */
}

bt_status bt_arena_init(bt_arena *a, size_t cap, bt_error *err) {
    memset(a, 0, sizeof *a);
    a->base = malloc(cap);
    if (!a->base)
        return bt_error_set(err, BT_ERR_NOMEM, "arena: cannot allocate %zu bytes", cap);
    a->cap = cap;
    a->allocator.alloc = arena_alloc;
    a->allocator.free = arena_free;
    a->allocator.allocator_data = a;
    return BT_OK;
}

void bt_arena_deinit(bt_arena *a) {
    free(a->base);
    memset(a, 0, sizeof *a);
}

void bt_arena_reset(bt_arena *a) {
    a->used = 0;
}

size_t bt_frame_payload_offset(const ProtobufCMessage *msg) {
    return BT_FRAME_HEADER_BYTES + protobuf_c_message_get_packed_size(msg);
}

bt_status bt_frame_finish(void *buf, size_t cap, bt_msg_kind kind, const ProtobufCMessage *msg,
                          size_t payload_len, int codec, int zstd, size_t *frame_len,
                          bt_error *err) {
    size_t pb_len = protobuf_c_message_get_packed_size(msg);
    size_t total = BT_FRAME_HEADER_BYTES + pb_len + payload_len;
    if (total > cap || pb_len > UINT32_MAX || payload_len > UINT32_MAX)
        return bt_error_set(err, BT_ERR_LIMIT, "%s frame of %zu bytes exceeds the %zu-byte limit",
                            bt_msg_kind_name(kind), total, cap);
    uint8_t *p = buf;
    size_t packed = protobuf_c_message_pack(msg, p + BT_FRAME_HEADER_BYTES);
    if (packed != pb_len)
        return bt_error_set(err, BT_ERR_INTERNAL, "%s: packed %zu bytes, expected %zu",
                            bt_msg_kind_name(kind), packed, pb_len);
    bt_frame_write_header(p, kind, pb_len, payload_len, codec, zstd);
    *frame_len = total;
    return BT_OK;
}

static const ProtobufCMessageDescriptor *descriptor_of(bt_msg_kind kind) {
    switch (kind) {
    case BT_MSG_HELLO:
        return &baton__hello__descriptor;
    case BT_MSG_HELLO_REPLY:
        return &baton__hello_reply__descriptor;
    case BT_MSG_STAGE_BATCH:
        return &baton__stage_batch__descriptor;
    case BT_MSG_SAMPLE_RESULTS:
        return &baton__sample_results__descriptor;
    case BT_MSG_HEARTBEAT:
        return &baton__heartbeat__descriptor;
    case BT_MSG_ERROR:
        return &baton__error__descriptor;
    case BT_MSG_SHUTDOWN:
        return &baton__shutdown__descriptor;
    case BT_MSG_STAGE_INFO:
        return &baton__stage_info__descriptor;
    case BT_MSG_PROBE:
        return &baton__probe__descriptor;
    case BT_MSG_PROBE_REPLY:
        return &baton__probe_reply__descriptor;
    case BT_MSG_SLICE_REQUEST:
        return &baton__slice_request__descriptor;
    case BT_MSG_SLICE_CHUNK:
        return &baton__slice_chunk__descriptor;
    case BT_MSG_KIND_END:
        break;
    }
    return NULL;
}

/* protobuf-c keeps the fields it does not know, and packs them again when a stage forwards a
 * StageBatch: that is what lets a peer of the same protocol version append fields. But it
 * also keeps field numbers no encoder can produce, 0 (written as an overlong varint) and
 * numbers above 2^29 - 1, which it would pack into bytes that it then refuses itself, or
 * truncate. Returns the first such field number found in m or its submessages, else -1. */
#define MAX_FIELD_NUMBER 536870911u

static int64_t bad_unknown_field(const ProtobufCMessage *m) {
    for (unsigned i = 0; i < m->n_unknown_fields; i++) {
        uint32_t tag = m->unknown_fields[i].tag;
        if (tag == 0 || tag > MAX_FIELD_NUMBER)
            return tag;
    }
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *fd = &d->fields[i];
        if (fd->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const uint8_t *base = (const uint8_t *)m;
        const ProtobufCMessage *const *sub;
        size_t n = 1;
        if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
            memcpy(&n, base + fd->quantifier_offset, sizeof n);
            const ProtobufCMessage *const *arr;
            memcpy(&arr, base + fd->offset, sizeof arr);
            sub = arr;
        } else {
            sub = (const ProtobufCMessage *const *)(base + fd->offset);
        }
        for (size_t k = 0; k < n; k++) {
            int64_t tag = sub[k] ? bad_unknown_field(sub[k]) : -1;
            if (tag >= 0)
                return tag;
        }
    }
    return -1;
}

bt_status bt_msg_unpack(const bt_frame_view *f, bt_msg_kind kind, bt_arena *a,
                        ProtobufCMessage **out, bt_error *err) {
    *out = NULL;
    if (f->kind != kind)
        return bt_error_set(err, BT_ERR_PROTOCOL, "expected a %s message, got %s",
                            bt_msg_kind_name(kind), bt_msg_kind_name(f->kind));
    const ProtobufCMessageDescriptor *d = descriptor_of(kind);
    if (!d)
        return bt_error_set(err, BT_ERR_PROTOCOL, "message kind %d has no descriptor", kind);
    ProtobufCMessage *m = protobuf_c_message_unpack(d, &a->allocator, f->header_len, f->header);
    if (!m)
        return bt_error_set(err, BT_ERR_PROTOCOL, "%s: %zu protobuf bytes do not decode%s",
                            bt_msg_kind_name(kind), f->header_len,
                            a->used >= a->cap / 2 ? " (or exceed the decode arena)" : "");
    int64_t tag = bad_unknown_field(m);
    if (tag >= 0)
        return bt_error_set(err, BT_ERR_PROTOCOL, "%s: invalid field number %lld",
                            bt_msg_kind_name(kind), (long long)tag);
    *out = m;
    return BT_OK;
}

static bt_status check_limits(const char *what, int max_batch, int max_seqs, int n_vocab,
                              bt_error *err) {
    if (max_batch < 1 || max_seqs < 1 || n_vocab < 1)
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "%s check: limits max_batch %d, max_seqs %d, n_vocab %d must be >= 1",
                            what, max_batch, max_seqs, n_vocab);
    return BT_OK;
}

static const char *op_kind_name(int kind) {
    switch (kind) {
    case BATON__SEQ_OP__KIND__FREE:
        return "FREE";
    case BATON__SEQ_OP__KIND__FORK:
        return "FORK";
    case BATON__SEQ_OP__KIND__TRUNCATE:
        return "TRUNCATE";
    default:
        return NULL;
    }
}

bt_status bt_msg_check_stage_batch(const Baton__StageBatch *b, int max_batch, int max_seqs,
                                   int n_vocab, bt_error *err) {
    bt_status st = check_limits("StageBatch", max_batch, max_seqs, n_vocab, err);
    if (st != BT_OK)
        return st;
    unsigned long long step = (unsigned long long)b->step;
    size_t n = b->n_seq;
    if (n > (size_t)max_batch)
        return bt_error_set(err, BT_ERR_PROTOCOL, "StageBatch %llu: %zu rows > max_batch %d", step,
                            n, max_batch);
    if (b->n_pos != n || b->n_token != n || b->n_want != n ||
        (b->n_target != 0 && b->n_target != n))
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "StageBatch %llu: row arrays differ in length (seq %zu, pos %zu, "
                            "token %zu, want %zu, target %zu)",
                            step, n, b->n_pos, b->n_token, b->n_want, b->n_target);
    size_t n_scored = 0;
    for (size_t i = 0; i < b->n_target; i++) {
        if (b->target[i] < -1 || b->target[i] >= n_vocab)
            return bt_error_set(err, BT_ERR_PROTOCOL,
                                "StageBatch %llu row %zu: target %d not -1 or in [0, %d)", step, i,
                                b->target[i], n_vocab);
        n_scored += b->target[i] >= 0;
    }
    if (n_scored > BT_SCORE_ROWS)
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "StageBatch %llu: %zu rows with a target > BT_SCORE_ROWS %d", step,
                            n_scored, BT_SCORE_ROWS);
    for (size_t i = 0; i < n; i++) {
        if (b->seq[i] < 0 || b->seq[i] >= max_seqs)
            return bt_error_set(err, BT_ERR_PROTOCOL,
                                "StageBatch %llu row %zu: seq %d not in [0, %d)", step, i,
                                b->seq[i], max_seqs);
        if (b->token[i] < 0 || b->token[i] >= n_vocab)
            return bt_error_set(err, BT_ERR_PROTOCOL,
                                "StageBatch %llu row %zu: token %d not in [0, %d)", step, i,
                                b->token[i], n_vocab);
        /* A sampled row must be its sequence's last row in the batch: the last stage keeps
         * one logits row per wanted row, [max_seqs][n_vocab]. */
        if (b->want[i])
            for (size_t j = i + 1; j < n; j++)
                if (b->seq[j] == b->seq[i])
                    return bt_error_set(err, BT_ERR_PROTOCOL,
                                        "StageBatch %llu row %zu: want set, but seq %d has a "
                                        "later row %zu",
                                        step, i, b->seq[i], j);
    }
    for (size_t i = 0; i < b->n_ops; i++) {
        const Baton__SeqOp *op = b->ops[i];
        const char *kind = op_kind_name((int)op->kind);
        if (!kind)
            return bt_error_set(err, BT_ERR_PROTOCOL, "StageBatch %llu op %zu: unknown kind %d",
                                step, i, (int)op->kind);
        if (op->seq < 0 || op->seq >= max_seqs)
            return bt_error_set(err, BT_ERR_PROTOCOL,
                                "StageBatch %llu op %zu (%s): seq %d not in [0, %d)", step, i, kind,
                                op->seq, max_seqs);
        if (op->kind == BATON__SEQ_OP__KIND__FORK && (op->dst < 0 || op->dst >= max_seqs))
            return bt_error_set(err, BT_ERR_PROTOCOL,
                                "StageBatch %llu op %zu (FORK): dst %d not in [0, %d)", step, i,
                                op->dst, max_seqs);
        if (op->n_tokens < 0)
            return bt_error_set(err, BT_ERR_PROTOCOL,
                                "StageBatch %llu op %zu (%s): n_tokens %d < 0", step, i, kind,
                                op->n_tokens);
    }
    for (size_t i = 0; i < b->n_new_seqs; i++) {
        const Baton__SamplingParams *sp = b->new_seqs[i];
        if (sp->seq < 0 || sp->seq >= max_seqs)
            return bt_error_set(err, BT_ERR_PROTOCOL,
                                "StageBatch %llu new_seqs %zu: seq %d not in [0, %d)", step, i,
                                sp->seq, max_seqs);
    }
    return BT_OK;
}

bt_status bt_msg_check_sample_results(const Baton__SampleResults *r, int max_batch, int n_vocab,
                                      bt_error *err) {
    bt_status st = check_limits("SampleResults", max_batch, 1, n_vocab, err);
    if (st != BT_OK)
        return st;
    unsigned long long step = (unsigned long long)r->step;
    size_t n = r->n_seq;
    if (r->n_token != n || r->n_logprob != n)
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "SampleResults %llu: arrays differ in length (seq %zu, token %zu, "
                            "logprob %zu)",
                            step, n, r->n_token, r->n_logprob);
    if (n > (size_t)max_batch)
        return bt_error_set(err, BT_ERR_PROTOCOL, "SampleResults %llu: %zu results > max_batch %d",
                            step, n, max_batch);
    if (r->n_target_logprob > (size_t)max_batch)
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "SampleResults %llu: %zu target_logprob > max_batch %d", step,
                            r->n_target_logprob, max_batch);
    for (size_t i = 0; i < r->n_target_logprob; i++)
        if (!(r->target_logprob[i] <= 0.0f))
            return bt_error_set(err, BT_ERR_PROTOCOL,
                                "SampleResults %llu: target_logprob[%zu] %g is not <= 0", step, i,
                                (double)r->target_logprob[i]);
    for (size_t i = 0; i < n; i++) {
        if (r->token[i] < 0 || r->token[i] >= n_vocab)
            return bt_error_set(err, BT_ERR_PROTOCOL,
                                "SampleResults %llu result %zu: token %d not in [0, %d)", step, i,
                                r->token[i], n_vocab);
        if (!(r->logprob[i] <= 0.0f)) /* NaN fails too */
            return bt_error_set(err, BT_ERR_PROTOCOL,
                                "SampleResults %llu result %zu: logprob %g is not <= 0", step, i,
                                (double)r->logprob[i]);
    }
    return BT_OK;
}

void bt_msg_sampling_pack(const bt_sampler_params *p, Baton__SamplingParams *sp, int32_t *bias_tok,
                          float *bias_val) {
#define PACK(kind, field, ...) sp->field = p->field;
    BT_SAMPLER_PARAM_LIST(PACK)
#undef PACK
    int nb = p->n_logit_bias < 0                   ? 0
             : p->n_logit_bias > BT_MAX_LOGIT_BIAS ? BT_MAX_LOGIT_BIAS
                                                   : p->n_logit_bias; /* validated */
    for (int j = 0; j < nb; j++) {
        bias_tok[j] = p->logit_bias[j].token;
        bias_val[j] = p->logit_bias[j].bias;
    }
    sp->n_logit_bias_token = sp->n_logit_bias_value = (size_t)nb;
    sp->logit_bias_token = bias_tok;
    sp->logit_bias_value = bias_val;
    int ns = p->n_stop_token_ids < 0                       ? 0
             : p->n_stop_token_ids > BT_MAX_STOP_TOKEN_IDS ? BT_MAX_STOP_TOKEN_IDS
                                                           : p->n_stop_token_ids;
    sp->n_stop_token_ids = (size_t)ns;
    sp->stop_token_ids = (int32_t *)p->stop_token_ids; /* protobuf-c only reads it */
}

bt_status bt_msg_sampling_unpack(const Baton__SamplingParams *sp, int32_t n_vocab,
                                 bt_sampler_params *p, bt_error *err) {
    if (sp->n_logit_bias_token != sp->n_logit_bias_value)
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "seq %d: logit_bias_token has %zu entries, logit_bias_value %zu",
                            sp->seq, sp->n_logit_bias_token, sp->n_logit_bias_value);
    if (sp->n_logit_bias_token > BT_MAX_LOGIT_BIAS)
        return bt_error_set(err, BT_ERR_PROTOCOL, "seq %d: logit_bias has %zu entries, at most %d",
                            sp->seq, sp->n_logit_bias_token, BT_MAX_LOGIT_BIAS);
    if (sp->n_stop_token_ids > BT_MAX_STOP_TOKEN_IDS)
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "seq %d: stop_token_ids has %zu entries, at most %d", sp->seq,
                            sp->n_stop_token_ids, BT_MAX_STOP_TOKEN_IDS);
    *p = bt_sampler_default_params();
#define UNPACK(kind, field, ...) p->field = sp->field;
    BT_SAMPLER_PARAM_LIST(UNPACK)
#undef UNPACK
    p->n_logit_bias = (int32_t)sp->n_logit_bias_token;
    for (size_t i = 0; i < sp->n_logit_bias_token; i++)
        p->logit_bias[i] =
            (bt_logit_bias){.token = sp->logit_bias_token[i], .bias = sp->logit_bias_value[i]};
    p->n_stop_token_ids = (int32_t)sp->n_stop_token_ids;
    for (size_t i = 0; i < sp->n_stop_token_ids; i++)
        p->stop_token_ids[i] = sp->stop_token_ids[i];
    /* A peer's bad value is a protocol error, whatever the validator called it. */
    if (bt_sampler_params_validate(p, n_vocab, err) != BT_OK) {
        bt_error_wrap(err, "seq %d", sp->seq);
        if (err)
            err->status = BT_ERR_PROTOCOL;
        return BT_ERR_PROTOCOL;
    }
    return BT_OK;
}

void bt_model_hash(const void *file, size_t data_offset, size_t file_size,
                   uint8_t out[BT_MODEL_HASH_BYTES]) {
    const uint8_t *p = file;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < data_offset; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    for (int i = 0; i < 8; i++) {
        out[i] = (uint8_t)(h >> (8 * i));
        out[8 + i] = (uint8_t)((uint64_t)file_size >> (8 * i));
    }
}
