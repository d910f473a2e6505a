/*
 * make_tiny_model.c - writes a tiny random llama-arch GGUF with a working byte-level BPE
 * tokenizer, for forward-pass and multi-stage tests.
 *
 * usage: make_tiny_model OUT.gguf [--type q4_1|q8_0|q4_0|q5_0|q5_1|q4_k|q6_k|f16|bf16|f32]
 *                                 [--seed N] [--layers N] [--untied] [--vocab-size N]
 *
 * Shape: n_embd 64, n_ff 128 (256 and 256 for the k-quants, whose block is 256), n_head 4,
 * n_head_kv 2, n_layer 4 by default, context 256, vocab 300, rope base 10000, rms eps 1e-5,
 * tied embeddings (no output.weight) unless --untied. Default type q4_1, seed 1.
 * --vocab-size writes another llama.vocab_size than the tensors have (a broken file, for the
 * tests of refusals).
 * 2-D weights get the requested type; norms stay F32 (llama.cpp's rule).
 *
 * Weights are deterministic in --seed (xorshift64*, approximately normal via the sum of 12
 * uniforms): embeddings and untied output std 2/sqrt(n_embd) (logits of std ~2), q/k/v,
 * gate and up std 1/sqrt(fan_in), attn_output and ffn_down additionally / sqrt(2 n_layer) so
 * the residual stream stays O(1), norms 1 +- 0.1.
 *
 * Tokenizer: "gpt2" model, pre "gpt-2"; ids 0..2 control "<|bos|>" "<|eos|>" "<|pad|>",
 * ids 3..258 the 256 bytes in byte order as GPT-2 byte-to-unicode strings, ids 259..299 the
 * results of the 41 merges below (rank = order). bos 0, eos 1, pad 2, add_bos false.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_writer.h"
#include "quantize_ref.h"
#include "tensor_type.h"

#define N_VOCAB 300
#define N_CONTROL 3
#define N_MERGES 41

static const char *const MERGES[N_MERGES] = {
    "Ġ t", "h e", "i n", "r e", "o n",  "Ġt he", "e r",  "Ġ a", "a n", "o u", "e n",
    "Ġ s", "Ġ w", "a t", "i s", "o r",  "e s",   "i t",  "Ġ o", "Ġ c", "Ġ b", "Ġ f",
    "Ġ p", "e d", "a r", "a l", "Ġ m",  "Ġ h",   "in g", "l l", "l e", "Ġ d", "Ġ i",
    "o m", "s t", "Ġ l", "v e", "Ġa n", "Ġan d", "Ġo f", "Ġt o"};

typedef struct hparams {
    int n_embd, n_ff, n_head, n_head_kv, n_layer, n_ctx;
    bt_type type;
    bool untied;
    uint64_t seed;
    int vocab_size_kv; /* llama.vocab_size written (N_VOCAB unless --vocab-size) */
} hparams;

/* ---- deterministic random numbers ---- */

static uint64_t rng_state;

static uint64_t rng_next(void) {
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static float rng_uniform(void) { /* [0, 1) */
    return (float)(rng_next() >> 40) / (float)(1u << 24);
}

static float rng_normal(void) {
    float s = 0.0f;
    for (int i = 0; i < 12; i++)
        s += rng_uniform();
    return s - 6.0f;
}

/* ---- tokenizer ---- */

static int utf8_put(char *out, unsigned cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2; /* the byte map only reaches U+0143 */
}

/* GPT-2 bytes_to_unicode: printable bytes map to themselves, the other 68 to U+0100+n. */
static unsigned byte_to_cp(unsigned b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))
        return b;
    unsigned n = 0;
    for (unsigned c = 0; c < b; c++)
        if (!((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF)))
            n++;
    return 0x100 + n;
}

static int add_tokenizer(bt_gw *w) {
    static char storage[N_VOCAB][32];
    const char *tokens[N_VOCAB];
    int32_t types[N_VOCAB];
    const char *controls[N_CONTROL] = {"<|bos|>", "<|eos|>", "<|pad|>"};
    int n = 0;
    for (int i = 0; i < N_CONTROL; i++, n++) {
        snprintf(storage[n], sizeof storage[n], "%s", controls[i]);
        types[n] = 3;
    }
    for (unsigned b = 0; b < 256; b++, n++) {
        int len = utf8_put(storage[n], byte_to_cp(b));
        storage[n][len] = '\0';
        types[n] = 1;
    }
    for (int m = 0; m < N_MERGES; m++, n++) {
        const char *sp = strchr(MERGES[m] + 1, ' ');
        size_t ll = (size_t)(sp - MERGES[m]);
        snprintf(storage[n], sizeof storage[n], "%.*s%s", (int)ll, MERGES[m], sp + 1);
        types[n] = 1;
        /* Both halves must already be tokens and the result must be new. */
        int found_l = 0, found_r = 0;
        for (int t = 0; t < n; t++) {
            if (strlen(storage[t]) == ll && memcmp(storage[t], MERGES[m], ll) == 0)
                found_l = 1;
            if (strcmp(storage[t], sp + 1) == 0)
                found_r = 1;
            if (strcmp(storage[t], storage[n]) == 0) {
                fprintf(stderr, "make_tiny_model: merge '%s' repeats token %d\n", MERGES[m], t);
                return 1;
            }
        }
        if (!found_l || !found_r) {
            fprintf(stderr, "make_tiny_model: merge '%s' uses an unknown token\n", MERGES[m]);
            return 1;
        }
    }
    for (int i = 0; i < N_VOCAB; i++)
        tokens[i] = storage[i];
    bt_gw_add_str(w, "tokenizer.ggml.model", "gpt2");
    bt_gw_add_str(w, "tokenizer.ggml.pre", "gpt-2");
    bt_gw_add_arr_str(w, "tokenizer.ggml.tokens", tokens, N_VOCAB);
    bt_gw_add_arr(w, "tokenizer.ggml.token_type", BT_GGUF_I32, types, N_VOCAB);
    bt_gw_add_arr_str(w, "tokenizer.ggml.merges", MERGES, N_MERGES);
    bt_gw_add_u32(w, "tokenizer.ggml.bos_token_id", 0);
    bt_gw_add_u32(w, "tokenizer.ggml.eos_token_id", 1);
    bt_gw_add_u32(w, "tokenizer.ggml.padding_token_id", 2);
    bt_gw_add_bool(w, "tokenizer.ggml.add_bos_token", false);
    bt_gw_add_bool(w, "tokenizer.ggml.add_eos_token", false);
    return 0;
}

/* ---- weights ---- */

/* Adds tensor `name` of ne = [n_cols, n_rows] (n_rows 1 and n_dims 1 for vectors). */
static int add_weight(bt_gw *w, const char *name, int n_cols, int n_rows, bt_type type, float std,
                      float mean) {
    size_t n = (size_t)n_cols * (size_t)n_rows;
    float *x = malloc(n * sizeof *x);
    size_t row_bytes;
    if (!x || bt_type_row_bytes((uint32_t)type, n_cols, &row_bytes) != BT_OK) {
        fprintf(stderr, "make_tiny_model: %s: %d columns do not fit type %s\n", name, n_cols,
                bt_type_name((uint32_t)type));
        free(x);
        return 1;
    }
    for (size_t i = 0; i < n; i++)
        x[i] = mean + std * (mean != 0.0f ? (2.0f * rng_uniform() - 1.0f) : rng_normal());
    void *q = malloc(row_bytes * (size_t)n_rows);
    size_t n_bytes = 0;
    int rc = 1;
    if (q && bt_quantize_ref(type, x, q, n_cols, n_rows, &n_bytes) == BT_OK) {
        int64_t ne[2] = {n_cols, n_rows};
        rc = bt_gw_add_tensor(w, name, n_rows > 1 ? 2 : 1, ne, (uint32_t)type, q, n_bytes) != BT_OK;
    }
    if (rc)
        fprintf(stderr, "make_tiny_model: cannot quantize %s as %s\n", name,
                bt_type_name((uint32_t)type));
    free(q);
    free(x);
    return rc;
}

static uint32_t file_type_of(bt_type t) {
    switch (t) {
    case BT_TYPE_F32:
        return 0;
    case BT_TYPE_F16:
        return 1;
    case BT_TYPE_Q4_0:
        return 2;
    case BT_TYPE_Q4_1:
        return 3;
    case BT_TYPE_Q8_0:
        return 7;
    case BT_TYPE_Q5_0:
        return 8;
    case BT_TYPE_Q5_1:
        return 9;
    case BT_TYPE_Q4_K:
        return 15; /* MOSTLY_Q4_K_M */
    case BT_TYPE_Q6_K:
        return 18;
    case BT_TYPE_BF16:
        return 32;
    default:
        return 1024; /* GUESSED */
    }
}

static int add_model(bt_gw *w, const hparams *hp) {
    const int E = hp->n_embd, F = hp->n_ff, H = hp->n_head, HKV = hp->n_head_kv;
    const int D = E / H;
    bt_gw_add_str(w, "general.architecture", "llama");
    bt_gw_add_str(w, "general.name", "baton tiny llama");
    bt_gw_add_u32(w, "general.file_type", file_type_of(hp->type));
    bt_gw_add_u32(w, "general.quantization_version", 2);
    bt_gw_add_u32(w, "llama.block_count", (uint32_t)hp->n_layer);
    bt_gw_add_u32(w, "llama.context_length", (uint32_t)hp->n_ctx);
    bt_gw_add_u32(w, "llama.embedding_length", (uint32_t)E);
    bt_gw_add_u32(w, "llama.feed_forward_length", (uint32_t)F);
    bt_gw_add_u32(w, "llama.attention.head_count", (uint32_t)H);
    bt_gw_add_u32(w, "llama.attention.head_count_kv", (uint32_t)HKV);
    bt_gw_add_f32(w, "llama.rope.freq_base", 10000.0f);
    bt_gw_add_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    bt_gw_add_u32(w, "llama.rope.dimension_count", (uint32_t)D);
    bt_gw_add_u32(w, "llama.vocab_size", (uint32_t)hp->vocab_size_kv);
    if (add_tokenizer(w))
        return 1;

    const float s_embd = 2.0f / sqrtf((float)E);
    const float s_in = 1.0f / sqrtf((float)E);
    const float s_res = 1.0f / sqrtf(2.0f * (float)hp->n_layer);
    int rc = 0;
    rc |= add_weight(w, "token_embd.weight", E, N_VOCAB, hp->type, s_embd, 0.0f);
    rc |= add_weight(w, "output_norm.weight", E, 1, BT_TYPE_F32, 0.1f, 1.0f);
    if (hp->untied)
        rc |= add_weight(w, "output.weight", E, N_VOCAB, hp->type, s_embd, 0.0f);
    for (int l = 0; l < hp->n_layer && !rc; l++) {
        char name[64];
#define NAME(suffix) (snprintf(name, sizeof name, "blk.%d." suffix, l), name)
        rc |= add_weight(w, NAME("attn_norm.weight"), E, 1, BT_TYPE_F32, 0.1f, 1.0f);
        rc |= add_weight(w, NAME("attn_q.weight"), E, H * D, hp->type, s_in, 0.0f);
        rc |= add_weight(w, NAME("attn_k.weight"), E, HKV * D, hp->type, s_in, 0.0f);
        rc |= add_weight(w, NAME("attn_v.weight"), E, HKV * D, hp->type, s_in, 0.0f);
        rc |= add_weight(w, NAME("attn_output.weight"), H * D, E, hp->type,
                         s_res / sqrtf((float)(H * D)), 0.0f);
        rc |= add_weight(w, NAME("ffn_norm.weight"), E, 1, BT_TYPE_F32, 0.1f, 1.0f);
        rc |= add_weight(w, NAME("ffn_gate.weight"), E, F, hp->type, s_in, 0.0f);
        rc |= add_weight(w, NAME("ffn_up.weight"), E, F, hp->type, s_in, 0.0f);
        rc |= add_weight(w, NAME("ffn_down.weight"), F, E, hp->type, s_res / sqrtf((float)F), 0.0f);
#undef NAME
    }
    return rc;
}

static int usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s OUT.gguf [--type q4_1|q8_0|q4_0|q5_0|q5_1|q4_k|q6_k|f16|bf16|f32]\n"
            "       [--seed N] [--layers N] [--untied] [--vocab-size N]\n",
            argv0);
    return 2;
}

int main(int argc, char **argv) {
    hparams hp = {.n_embd = 64,
                  .n_ff = 128,
                  .n_head = 4,
                  .n_head_kv = 2,
                  .n_layer = 4,
                  .n_ctx = 256,
                  .type = BT_TYPE_Q4_1,
                  .untied = false,
                  .seed = 1,
                  .vocab_size_kv = N_VOCAB};
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--type") == 0 && i + 1 < argc) {
            if (bt_quantize_type_from_name(argv[++i], &hp.type) != BT_OK) {
                fprintf(stderr, "make_tiny_model: unknown --type %s\n", argv[i]);
                return 2;
            }
        } else if (strcmp(a, "--seed") == 0 && i + 1 < argc) {
            hp.seed = strtoull(argv[++i], NULL, 0);
        } else if (strcmp(a, "--layers") == 0 && i + 1 < argc) {
            char *end;
            long n = strtol(argv[++i], &end, 10);
            if (*end || n < 1 || n > 256) {
                fprintf(stderr, "make_tiny_model: --layers must be 1..256\n");
                return 2;
            }
            hp.n_layer = (int)n;
        } else if (strcmp(a, "--untied") == 0) {
            hp.untied = true;
        } else if (strcmp(a, "--vocab-size") == 0 && i + 1 < argc) {
            hp.vocab_size_kv = atoi(argv[++i]);
        } else if (a[0] != '-' && !out) {
            out = a;
        } else {
            return usage(argv[0]);
        }
    }
    if (!out)
        return usage(argv[0]);
    if (hp.type == BT_TYPE_Q4_K || hp.type == BT_TYPE_Q6_K) {
        hp.n_embd = 256;
        hp.n_ff = 256;
    }
    /* splitmix64 of the seed, so every seed (0 included) gives a non-zero xorshift state */
    uint64_t z = hp.seed + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    rng_state = (z ^ (z >> 31)) | 1;

    bt_gw *w = bt_gw_new();
    if (!w)
        return 1;
    int rc = add_model(w, &hp);
    bt_error err;
    bt_error_init(&err);
    if (!rc && bt_gw_write_file(w, out, &err) != BT_OK) {
        fprintf(stderr, "make_tiny_model: %s\n", err.msg);
        rc = 1;
    }
    bt_gw_free(w);
    if (!rc)
        printf("wrote %s: llama n_embd %d n_ff %d n_layer %d vocab %d type %s%s seed %llu\n", out,
               hp.n_embd, hp.n_ff, hp.n_layer, N_VOCAB, bt_type_name((uint32_t)hp.type),
               hp.untied ? " untied" : "", (unsigned long long)hp.seed);
    return rc;
}
