/*
 * frame.h - the unit of transfer between ranks:
 *
 *   +------------------------+---------------------------+------------------------------+
 *   | fixed header (24 B)    | protobuf message          | raw payload (activations)    |
 *   | magic, version, kind,  | header_len bytes, one of  | payload_len bytes, encoded   |
 *   | lengths, codec         | baton.proto's messages    | by proto/codec.h             |
 *   +------------------------+---------------------------+------------------------------+
 *
 * Fixed header, little-endian:
 *   u32 magic        "BTN1" (0x314e5442)
 *   u16 version      BT_PROTOCOL_VERSION
 *   u16 kind         bt_msg_kind (which message the protobuf part holds)
 *   u32 header_len   protobuf bytes
 *   u32 payload_len  raw payload bytes
 *   u8  codec        bt_codec_kind of the payload (0 when there is none)
 *   u8  zstd         1 when the payload is zstd-compressed
 *   u16 reserved     0
 *   u32 checksum     FNV-1a of the 20 bytes before it
 *
 * Decoding validates the fixed header against the received length before the protobuf
 * part is unpacked (kind known, lengths add up exactly, codec known, reserved zero,
 * checksum). The message-level checks (counts, shapes, sequence ids) live with the code
 * that acts on each message (frame_msgs.c, the stage loop, the scheduler).
 */
#ifndef BT_FRAME_H
#define BT_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define BT_PROTOCOL_VERSION 6
#define BT_FRAME_MAGIC 0x314e5442u
#define BT_FRAME_HEADER_BYTES 24

typedef enum bt_msg_kind {
    BT_MSG_HELLO = 1,
    BT_MSG_HELLO_REPLY = 2,
    BT_MSG_STAGE_BATCH = 3,
    BT_MSG_SAMPLE_RESULTS = 4,
    BT_MSG_HEARTBEAT = 5,
    BT_MSG_ERROR = 6,
    BT_MSG_SHUTDOWN = 7,
    BT_MSG_STAGE_INFO = 8,    /* protocol 4 */
    BT_MSG_SLICE_REQUEST = 9, /* protocol 5: a stage asks for its slice of the model */
    BT_MSG_SLICE_CHUNK = 10,  /* protocol 5: one chunk of it, zstd bytes as the payload */
    BT_MSG_PROBE = 11,        /* protocol 5: --split measured */
    BT_MSG_PROBE_REPLY = 12,  /* protocol 5 */
    BT_MSG_KIND_END           /* one past the last; values are only appended */
} bt_msg_kind;

/* "Hello", ...; "unknown" for a value that is not a kind of this protocol. */
const char *bt_msg_kind_name(bt_msg_kind kind);
/* Whether v is a kind of this protocol. */
bool bt_msg_kind_known(unsigned v);

typedef struct bt_frame_view {
    bt_msg_kind kind;
    const uint8_t *header; /* protobuf bytes, header_len */
    size_t header_len;
    const uint8_t *payload; /* raw payload, payload_len */
    size_t payload_len;
    int codec;
    int zstd;
} bt_frame_view;

/* Validates the fixed header of buf[0..len) and splits it; BT_ERR_PROTOCOL naming the
 * field otherwise. The view borrows buf. */
bt_status bt_frame_parse(const void *buf, size_t len, bt_frame_view *out, bt_error *err);

/* Writes a fixed header for the given parts into out[0..BT_FRAME_HEADER_BYTES). */
void bt_frame_write_header(void *out, bt_msg_kind kind, size_t header_len, size_t payload_len,
                           int codec, int zstd);

#endif
