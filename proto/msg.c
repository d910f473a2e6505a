/* msg.c - frames around protobuf-c messages, and the arena used to unpack them. */
#include "msg.h"

#include <stdlib.h>
#include <string.h>

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
    case BT_MSG_KIND_END:
        break;
    }
    return NULL;
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
    *out = m;
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
