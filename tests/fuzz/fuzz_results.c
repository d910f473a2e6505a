/*
 * fuzz_results.c - libFuzzer target for the coordinator's check of a SampleResults from the
 * last stage (bt_cluster_check_results: bt_msg_check_sample_results, then the alternatives
 * check_top validates).
 *
 * Input: byte 0 picks max_batch (1..64), bytes 1-2 n_vocab (1..65536, little-endian + 1); the
 * rest is the protobuf part of a SampleResults. It is framed with bt_frame_write_header and
 * received as the coordinator receives it (bt_frame_parse, bt_msg_unpack into an arena), so
 * mutations reach the decoder and the checks without having to forge the header's checksum.
 *
 * A refusal must be BT_ERR_PROTOCOL with a message. An accepted message is used as
 * bt_cluster_poll's callers use it (the token, then each result's n_top alternatives, back
 * to back) against arrays of exactly n_vocab entries and max_batch rows, so an index the
 * check let through lands outside and ASan reports it; the check's promises are asserted
 * with __builtin_trap.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "frame.h"
#include "msg.h"
#include "sampling.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ARENA_BYTES (1u << 20)
#define MAX_MAX_BATCH 64

static bt_arena arena;
static int arena_ready;
static volatile uint8_t sink;

static void use_results(const Baton__SampleResults *r, int max_batch, int n_vocab) {
    uint8_t *vocab = calloc((size_t)n_vocab, 1); /* exactly n_vocab: ASan guards the end */
    uint8_t *rows = calloc((size_t)max_batch, 1);
    if (!vocab || !rows)
        abort();
    if (r->n_seq > (size_t)max_batch || r->n_token != r->n_seq || r->n_logprob != r->n_seq)
        __builtin_trap();
    if (r->n_n_top != 0 && r->n_n_top != r->n_seq)
        __builtin_trap();
    size_t off = 0;
    for (size_t i = 0; i < r->n_seq; i++) {
        rows[i] ^= 1;
        vocab[r->token[i]] ^= 1;
        if (!(r->logprob[i] <= 0.0f))
            __builtin_trap();
        sink ^= (uint8_t)r->seq[i];
        uint32_t n_top = r->n_n_top ? r->n_top[i] : 0;
        if (n_top > BT_MAX_TOP_LOGPROBS || off + n_top > r->n_top_token ||
            off + n_top > r->n_top_logprob)
            __builtin_trap();
        for (uint32_t j = 0; j < n_top; j++, off++) {
            vocab[r->top_token[off]] ^= 1;
            if (!(r->top_logprob[off] <= 0.0f))
                __builtin_trap();
        }
    }
    if (off != r->n_top_token || off != r->n_top_logprob)
        __builtin_trap(); /* alternatives nobody reads: the sums disagree */
    free(vocab);
    free(rows);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!arena_ready) {
        if (bt_arena_init(&arena, ARENA_BYTES, NULL) != BT_OK)
            abort();
        arena_ready = 1;
    }
    if (size < 3)
        return 0;
    int max_batch = 1 + data[0] % MAX_MAX_BATCH;
    int n_vocab = 1 + (data[1] | data[2] << 8);
    size_t body = size - 3;
    uint8_t *frame = malloc(BT_FRAME_HEADER_BYTES + body);
    if (!frame)
        return 0;
    bt_frame_write_header(frame, BT_MSG_SAMPLE_RESULTS, body, 0, 0, 0);
    memcpy(frame + BT_FRAME_HEADER_BYTES, data + 3, body);

    bt_error err;
    bt_error_init(&err);
    bt_frame_view f;
    if (bt_frame_parse(frame, BT_FRAME_HEADER_BYTES + body, &f, &err) != BT_OK)
        __builtin_trap(); /* bt_frame_write_header and bt_frame_parse disagree */
    bt_arena_reset(&arena);
    ProtobufCMessage *m = NULL;
    bt_status st = bt_msg_unpack(&f, BT_MSG_SAMPLE_RESULTS, &arena, &m, &err);
    if (st != BT_OK) {
        if (st != BT_ERR_PROTOCOL || m != NULL || !err.msg[0])
            __builtin_trap();
    } else {
        const Baton__SampleResults *r = (const Baton__SampleResults *)m;
        bt_error_init(&err);
        st = bt_cluster_check_results(r, max_batch, n_vocab, &err);
        if (st == BT_OK)
            use_results(r, max_batch, n_vocab);
        else if (st != BT_ERR_PROTOCOL || err.status != st || !err.msg[0])
            __builtin_trap();
    }
    free(frame);
    return 0;
}
