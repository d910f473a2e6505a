/* frame.c - fixed frame header: write and validate (see frame.h). */
#include "frame.h"

#include <string.h>

#include "codec.h"

const char *bt_msg_kind_name(bt_msg_kind kind) {
    switch (kind) {
    case BT_MSG_HELLO:
        return "Hello";
    case BT_MSG_HELLO_REPLY:
        return "HelloReply";
    case BT_MSG_STAGE_BATCH:
        return "StageBatch";
    case BT_MSG_SAMPLE_RESULTS:
        return "SampleResults";
    case BT_MSG_HEARTBEAT:
        return "Heartbeat";
    case BT_MSG_ERROR:
        return "Error";
    case BT_MSG_SHUTDOWN:
        return "Shutdown";
    case BT_MSG_STAGE_INFO:
        return "StageInfo";
    case BT_MSG_PROBE:
        return "Probe";
    case BT_MSG_PROBE_REPLY:
        return "ProbeReply";
    case BT_MSG_SLICE_REQUEST:
        return "SliceRequest";
    case BT_MSG_SLICE_CHUNK:
        return "SliceChunk";
    case BT_MSG_KIND_END:
        break;
    }
    return "unknown";
}

bool bt_msg_kind_known(unsigned v) {
    return v >= BT_MSG_HELLO && v < BT_MSG_KIND_END;
}

static void put_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint16_t get_u16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}
static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint32_t fnv1a(const uint8_t *p, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

void bt_frame_write_header(void *out, bt_msg_kind kind, size_t header_len, size_t payload_len,
                           int codec, int zstd) {
    uint8_t *p = out;
    put_u32(p + 0, BT_FRAME_MAGIC);
    put_u16(p + 4, BT_PROTOCOL_VERSION);
    put_u16(p + 6, (uint16_t)kind);
    put_u32(p + 8, (uint32_t)header_len);
    put_u32(p + 12, (uint32_t)payload_len);
    p[16] = (uint8_t)codec;
    p[17] = (uint8_t)(zstd != 0);
    put_u16(p + 18, 0);
    put_u32(p + 20, fnv1a(p, 20));
}

bt_status bt_frame_parse(const void *buf, size_t len, bt_frame_view *out, bt_error *err) {
    const uint8_t *p = buf;
    memset(out, 0, sizeof *out);
    if (len < BT_FRAME_HEADER_BYTES)
        return bt_error_set(err, BT_ERR_PROTOCOL, "frame: %zu bytes, shorter than the header", len);
    if (get_u32(p) != BT_FRAME_MAGIC)
        return bt_error_set(err, BT_ERR_PROTOCOL, "frame: bad magic 0x%08x", get_u32(p));
    if (get_u32(p + 20) != fnv1a(p, 20))
        return bt_error_set(err, BT_ERR_PROTOCOL, "frame: header checksum mismatch");
    uint16_t version = get_u16(p + 4);
    if (version != BT_PROTOCOL_VERSION)
        return bt_error_set(err, BT_ERR_PROTOCOL, "frame: protocol version %u, expected %u",
                            version, BT_PROTOCOL_VERSION);
    uint16_t kind = get_u16(p + 6);
    if (!bt_msg_kind_known(kind))
        return bt_error_set(err, BT_ERR_PROTOCOL, "frame: unknown message kind %u", kind);
    uint64_t header_len = get_u32(p + 8), payload_len = get_u32(p + 12);
    if ((uint64_t)BT_FRAME_HEADER_BYTES + header_len + payload_len != len)
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "frame: header_len %llu + payload_len %llu do not add up to the "
                            "%zu bytes received",
                            (unsigned long long)header_len, (unsigned long long)payload_len, len);
    if (p[16] >= BT_CODEC_KIND_COUNT)
        return bt_error_set(err, BT_ERR_PROTOCOL, "frame: unknown codec %u", p[16]);
    if (p[17] > 1 || get_u16(p + 18) != 0)
        return bt_error_set(err, BT_ERR_PROTOCOL, "frame: bad flags (zstd %u, reserved %u)", p[17],
                            get_u16(p + 18));
    out->kind = (bt_msg_kind)kind;
    out->header = p + BT_FRAME_HEADER_BYTES;
    out->header_len = (size_t)header_len;
    out->payload = out->header + header_len;
    out->payload_len = (size_t)payload_len;
    out->codec = p[16];
    out->zstd = p[17];
    return BT_OK;
}
