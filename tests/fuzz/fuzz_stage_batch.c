/*
 * fuzz_stage_batch.c - libFuzzer target for a stage's handling of StageBatch messages: its
 * checks against the model, the configuration and the KV state (bt_stage_loop_check_apply:
 * bt_msg_check_stage_batch, sampling parameters, payload presence), its FREE/FORK/TRUNCATE
 * ops and new sampling parameters, then the forward pass that commits the rows to the KV
 * cache, as bt_stage_loop_run does them.
 *
 * The stage is real: a one-layer F32 llama model built in memory (n_embd 32, 2 heads of 16,
 * 1 KV head, vocabulary 64), opened through a checked Hello as the only stage of a pipeline
 * (rank 1 of 2: first and last), with max_batch 16, max_seqs 8 and a 64-token KV cache, so
 * that sequences, forks and the cache fill up within a few messages.
 *
 * Input: up to 8 messages, each a 2-byte little-endian length and that many bytes of the
 * protobuf part of a StageBatch (a short last one takes what is left). Each is framed with
 * bt_frame_write_header and received as the stage receives it. Like the stage role, the
 * first refused message ends the input: a refusal must carry a message and leave every
 * sequence's length within its limits.
 *
 * After each message, and at the end after FREE of every sequence, the cache's accounting is
 * checked: sequence lengths in [0, kv_tokens], free tokens in [0, total], and with every
 * sequence freed all of the cache free again (a FORK or TRUNCATE that leaks or double-frees
 * a block fails here).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "gguf_writer.h"
#include "msg.h"
#include "stage.h"
#include "stage_loop.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { N_EMBD = 32, N_FF = 64, N_HEAD = 2, N_HEAD_KV = 1, HEAD_DIM = 16, N_VOCAB = 64 };
enum { MAX_BATCH = 16, MAX_SEQS = 8, KV_TOKENS = 64, MAX_MESSAGES = 8 };
#define ARENA_BYTES (1u << 20)

static uint8_t *model_buf;
static bt_gguf *model;
static uint8_t model_hash[BT_MODEL_HASH_BYTES];
static bt_arena arena;
static float logits[MAX_SEQS * N_VOCAB];

static void add_f32(bt_gw *w, const char *name, int64_t cols, int64_t rows, float base) {
    size_t n = (size_t)(cols * rows);
    float *x = malloc(n * sizeof *x);
    if (!x)
        abort();
    for (size_t i = 0; i < n; i++) /* deterministic, O(1/sqrt(cols)), norms around 1 */
        x[i] = base + sinf((float)i * 0.7f + (float)cols) / sqrtf((float)cols);
    int64_t ne[2] = {cols, rows};
    if (bt_gw_add_tensor(w, name, rows == 1 ? 1 : 2, ne, BT_TYPE_F32, x, n * sizeof *x) != BT_OK)
        abort();
    free(x);
}

static void build_model(void) {
    bt_gw *w = bt_gw_new();
    if (!w)
        abort();
    bt_gw_add_str(w, "general.architecture", "llama");
    bt_gw_add_u32(w, "llama.block_count", 1);
    bt_gw_add_u32(w, "llama.embedding_length", N_EMBD);
    bt_gw_add_u32(w, "llama.feed_forward_length", N_FF);
    bt_gw_add_u32(w, "llama.attention.head_count", N_HEAD);
    bt_gw_add_u32(w, "llama.attention.head_count_kv", N_HEAD_KV);
    bt_gw_add_u32(w, "llama.rope.dimension_count", HEAD_DIM);
    bt_gw_add_f32(w, "llama.rope.freq_base", 10000.0f);
    bt_gw_add_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    bt_gw_add_u32(w, "llama.context_length", KV_TOKENS);
    bt_gw_add_u32(w, "llama.vocab_size", N_VOCAB);
    add_f32(w, "token_embd.weight", N_EMBD, N_VOCAB, 0.0f);
    add_f32(w, "output_norm.weight", N_EMBD, 1, 1.0f);
    add_f32(w, "blk.0.attn_norm.weight", N_EMBD, 1, 1.0f);
    add_f32(w, "blk.0.attn_q.weight", N_EMBD, N_HEAD * HEAD_DIM, 0.0f);
    add_f32(w, "blk.0.attn_k.weight", N_EMBD, N_HEAD_KV * HEAD_DIM, 0.0f);
    add_f32(w, "blk.0.attn_v.weight", N_EMBD, N_HEAD_KV * HEAD_DIM, 0.0f);
    add_f32(w, "blk.0.attn_output.weight", N_HEAD * HEAD_DIM, N_EMBD, 0.0f);
    add_f32(w, "blk.0.ffn_norm.weight", N_EMBD, 1, 1.0f);
    add_f32(w, "blk.0.ffn_gate.weight", N_EMBD, N_FF, 0.0f);
    add_f32(w, "blk.0.ffn_up.weight", N_EMBD, N_FF, 0.0f);
    add_f32(w, "blk.0.ffn_down.weight", N_FF, N_EMBD, 0.0f);
    size_t n = 0;
    bt_error err;
    bt_error_init(&err);
    if (bt_gw_write_mem(w, &model_buf, &n, NULL) != BT_OK ||
        bt_gguf_open_memory(model_buf, n, &model, &err) != BT_OK) {
        fprintf(stderr, "fuzz_stage_batch: tiny model: %s\n", err.msg);
        abort();
    }
    bt_gw_free(w);
    bt_model_hash(bt_gguf_base(model), bt_gguf_data_offset(model), bt_gguf_file_size(model),
                  model_hash);
    if (bt_arena_init(&arena, ARENA_BYTES, NULL) != BT_OK)
        abort();
}

static bt_stage_loop *open_stage(void) {
    Baton__Hello h = BATON__HELLO__INIT;
    h.protocol_version = BT_PROTOCOL_VERSION;
    h.stage_index = 0;
    h.n_stages = 1;
    h.layer_begin = 0;
    h.layer_end = 1;
    h.model_hash.data = model_hash;
    h.model_hash.len = sizeof model_hash;
    h.max_batch = MAX_BATCH;
    h.max_seqs = MAX_SEQS;
    h.kv_tokens = KV_TOKENS;
    h.heartbeat_ms = 1000;
    bt_stage_loop *L;
    bt_error err;
    bt_error_init(&err);
    if (bt_stage_loop_open(model, &h, 1, 2, &L, &err) != BT_OK) {
        fprintf(stderr, "fuzz_stage_batch: Hello refused: %s\n", err.msg);
        abort();
    }
    return L;
}

static void check_accounting(const bt_stage *st) {
    int total = bt_stage_kv_tokens_total(st), free_tokens = bt_stage_kv_tokens_free(st);
    if (total < KV_TOKENS || free_tokens < 0 || free_tokens > total)
        __builtin_trap();
    for (int s = 0; s < MAX_SEQS; s++) {
        int len = bt_stage_seq_len(st, s);
        if (len < 0 || len > total)
            __builtin_trap();
    }
}

/* What the loop does after the ops: the rows through the stage (first and last: tokens in,
 * logits of the wanted rows out). */
static bt_status forward(bt_stage *st, const Baton__StageBatch *b, bt_error *err) {
    if (b->n_seq == 0)
        return BT_OK;
    uint8_t want[MAX_BATCH];
    for (size_t i = 0; i < b->n_seq; i++)
        want[i] = (uint8_t)(b->want[i] != 0);
    bt_batch batch = {
        .n_rows = (int)b->n_seq, .seq = b->seq, .pos = b->pos, .token = b->token, .logits = want};
    bt_status s = bt_stage_forward(st, &batch, NULL, NULL, logits, err);
    if (s == BT_OK)
        for (int i = 0; i < MAX_SEQS * N_VOCAB; i++)
            if (!isfinite(logits[i]))
                __builtin_trap();
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!model)
        build_model();
    bt_stage_loop *L = open_stage();
    bt_stage *st = bt_stage_loop_stage(L);
    for (int m = 0; m < MAX_MESSAGES && size >= 2; m++) {
        size_t len = (size_t)(data[0] | data[1] << 8);
        data += 2;
        size -= 2;
        if (len > size)
            len = size;
        uint8_t *frame = malloc(BT_FRAME_HEADER_BYTES + len);
        if (!frame)
            abort();
        bt_frame_write_header(frame, BT_MSG_STAGE_BATCH, len, 0, 0, 0);
        memcpy(frame + BT_FRAME_HEADER_BYTES, data, len);
        data += len;
        size -= len;

        bt_error err;
        bt_error_init(&err);
        bt_frame_view f;
        if (bt_frame_parse(frame, BT_FRAME_HEADER_BYTES + len, &f, &err) != BT_OK)
            __builtin_trap(); /* bt_frame_write_header and bt_frame_parse disagree */
        bt_arena_reset(&arena);
        ProtobufCMessage *msg = NULL;
        bt_status s = bt_msg_unpack(&f, BT_MSG_STAGE_BATCH, &arena, &msg, &err);
        if (s == BT_OK) {
            const Baton__StageBatch *b = (const Baton__StageBatch *)msg;
            s = bt_stage_loop_check_apply(L, &f, b, &err);
            if (s == BT_OK)
                s = forward(st, b, &err);
        }
        free(frame);
        check_accounting(st);
        if (s != BT_OK) {
            if (err.status != s || !err.msg[0])
                __builtin_trap(); /* a refusal names what was wrong */
            break;                /* the stage role stops at its first error */
        }
    }
    for (int s = 0; s < MAX_SEQS; s++)
        bt_stage_seq_free(st, s);
    check_accounting(st);
    if (bt_stage_kv_tokens_free(st) != bt_stage_kv_tokens_total(st))
        __builtin_trap(); /* blocks leaked by the ops */
    bt_stage_loop_close(L);
    return 0;
}
