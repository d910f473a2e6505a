/*
 * msg.h - building and opening frames around the protobuf-c messages of baton.proto.
 *
 * Sending: bt_frame_payload_offset() says where the raw payload goes in the caller's frame
 * buffer; the caller encodes activations there, then bt_frame_finish() packs the protobuf
 * header and the fixed header in front of them. No copy of the payload is made.
 *
 * Receiving: bt_frame_parse() (frame.h) checks the fixed header; bt_msg_unpack() unpacks the
 * protobuf part with memory from a bt_arena (a fixed buffer reset once per step), so
 * decoding allocates nothing and a hostile length cannot exhaust memory: when the arena is
 * full the unpack fails with BT_ERR_PROTOCOL.
 *
 * Threading: an arena is confined to its thread.
 */
#ifndef BT_MSG_H
#define BT_MSG_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "baton.pb-c.h"
#include "frame.h"
#include "sampling.h"
#include "status.h"

typedef struct bt_arena {
    uint8_t *base; /* owned (bt_arena_init allocates, bt_arena_deinit frees) */
    size_t cap, used;
    ProtobufCAllocator allocator;
} bt_arena;

bt_status bt_arena_init(bt_arena *a, size_t cap, bt_error *err);
void bt_arena_deinit(bt_arena *a);
void bt_arena_reset(bt_arena *a);

/* Offset of the payload in a frame whose protobuf part is msg. */
size_t bt_frame_payload_offset(const ProtobufCMessage *msg);

/* Packs msg and the fixed header into buf (the payload, payload_len bytes, is already at
 * bt_frame_payload_offset(msg)). *frame_len = total bytes. BT_ERR_LIMIT when cap is short. */
bt_status bt_frame_finish(void *buf, size_t cap, bt_msg_kind kind, const ProtobufCMessage *msg,
                          size_t payload_len, int codec, int zstd, size_t *frame_len,
                          bt_error *err);

/* Unpacks the protobuf part of a parsed frame, expecting `kind`. The message lives in the
 * arena until its next reset. BT_ERR_PROTOCOL naming the message when the kind differs or the
 * bytes do not decode. */
bt_status bt_msg_unpack(const bt_frame_view *f, bt_msg_kind kind, bt_arena *a,
                        ProtobufCMessage **out, bt_error *err);

/* Message-level checks that need no model or KV state, so that the receiver and the fuzz
 * target (tests/fuzz/fuzz_frame.c) run the same code. Both are pure: they read the message
 * and write only err. BT_ERR_PROTOCOL naming the row or op, the field and its value;
 * BT_ERR_INVALID_ARG when a limit is < 1.
 *
 * bt_msg_check_stage_batch: row arrays (seq, pos, token, want; target empty or one per row)
 * of equal length and at most max_batch rows; seq in [0, max_seqs); token in [0, n_vocab);
 * target -1 or in [0, n_vocab), at most BT_SCORE_ROWS of them set; a wanted row is its
 * sequence's last row in the batch (so a batch has at most max_seqs wanted rows); op kinds
 * known, op seq (and a FORK's dst) in [0, max_seqs), n_tokens >= 0; new_seqs ids in
 * [0, max_seqs). Left to the stage: sampling parameter values, the payload length, and
 * positions against the KV state. Cost O(rows * wanted rows), no allocation. */
bt_status bt_msg_check_stage_batch(const Baton__StageBatch *b, int max_batch, int max_seqs,
                                   int n_vocab, bt_error *err);

/* bt_msg_check_sample_results: seq, token and logprob arrays of equal length, at most
 * max_batch results; token in [0, n_vocab); logprob a number <= 0 (a log-probability); at
 * most max_batch target_logprob, each a number <= 0. Left to the scheduler: the step, the
 * number of results (and of target_logprob) and their seq ids, which it compares with the
 * batch it sent. */
bt_status bt_msg_check_sample_results(const Baton__SampleResults *r, int max_batch, int n_vocab,
                                      bt_error *err);

/* The sampling parameters of a new sequence, both directions; the scalar fields are copied
 * by expanding BT_SAMPLER_PARAM_LIST (common/sampling.h), so a parameter is not copied by
 * hand. pack: sp borrows p's stop_token_ids and the caller's bias_tok/bias_val
 * [BT_MAX_LOGIT_BIAS] (both must outlive sp's use); seq and n_prompt are the caller's.
 * unpack: checks the list lengths, then bt_sampler_params_validate against n_vocab with the
 * same range checks as the coordinator; BT_ERR_PROTOCOL naming the seq and the field. */
void bt_msg_sampling_pack(const bt_sampler_params *p, Baton__SamplingParams *sp, int32_t *bias_tok,
                          float *bias_val);
bt_status bt_msg_sampling_unpack(const Baton__SamplingParams *sp, int32_t n_vocab,
                                 bt_sampler_params *p, bt_error *err);

/* The model identity checked in the handshake: FNV-1a 64 over the GGUF's bytes before the
 * data section (header, metadata, tensor directory) and the file size, 16 bytes. */
#define BT_MODEL_HASH_BYTES 16
void bt_model_hash(const void *file, size_t data_offset, size_t file_size,
                   uint8_t out[BT_MODEL_HASH_BYTES]);

#endif
