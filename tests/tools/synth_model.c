/*
 * synth_model.c - writes a synthetic llama-architecture GGUF of a real model's shape, with
 * seeded random weights: for speed, memory and scaling tests of models bigger than the
 * default one. GOOD FOR SPEED AND MEMORY ONLY: the weights are noise, so is the text.
 *
 * usage: synth_model --shape NAME --type q4_0|q4_1|q8_0 [--seed S] [--layers N]
 *                    [--vocab-from GGUF] OUT.gguf
 *        synth_model --arch llama3|qwen2|qwen3|phi3 --vocab-from GGUF [--type T] [--seed S]
 *                    OUT.gguf
 *
 * --arch writes a small model of one family (SYNTH_FAMILIES below) with that family's keys and
 * tensor names as llama.cpp's converter writes them, for checking baton's forward pass of the
 * family against llama.cpp's on the same file (tests/e2e/test_families.sh):
 *   llama3  arch llama, rope base 500000, rope_freqs.weight with Llama 3.1's rope-scaling
 *           factors (factor 8, low 1, high 4, original context 8192), untied output
 *   qwen2   Q/K/V biases, rms eps 1e-6, rope base 1e6, tied output
 *   qwen3   per-head Q/K norms, key_length 64 with n_embd 256 / 8 heads (q width 512 is not
 *           n_embd, as in Qwen 3), no biases, tied output
 *   phi3    fused attn_qkv.weight (Q, K, V rows in that order) and ffn_up.weight holding the
 *           gate rows then the up rows (ggml_swiglu: silu of the first half times the second),
 *           n_head_kv = n_head, untied output
 * The vocabulary (--vocab-from, required here) is the family's: llama-bpe for llama3, qwen2
 * for qwen2 and qwen3, phi-3 for phi3. Values are larger than in --shape files so the model
 * says something distinct: matrices std 0.06, token_embd/output 0.2 (logits of std ~3, so
 * greedy margins are mostly not ties), norm weights 1 + 0.1 N(0,1) and biases 0.5 N(0,1) so a
 * weight applied wrongly shows. --type defaults to q8_0.
 *
 * Shapes (SYNTH_SHAPES below: n_embd, n_ff, n_layer, n_head, n_head_kv, trained context,
 * rope base, rms eps, as the real models' configs have them):
 *   smol-135m       576 /  1536 / 30 /  9 /  3, ctx 8192, rope 100000 (SmolLM2-135M)
 *   tinyllama-1.1b 2048 /  5632 / 22 / 32 /  4, ctx 2048, rope 10000  (TinyLlama-1.1B)
 *   llama2-7b      4096 / 11008 / 32 / 32 / 32, ctx 4096, rope 10000  (Llama-2-7B)
 *   llama3-8b      4096 / 14336 / 32 / 32 /  8, ctx 8192, rope 500000 (Llama-3-8B, GQA)
 * --layers N overrides the layer count (a few-hundred-MiB file from a big shape); a file with
 * fewer layers has the same first layers as the full one (each tensor is seeded by its name).
 *
 * Vocabulary: every tokenizer.* key is copied from --vocab-from (default: $BATON_MODEL, else
 * the default model in $BATON_CACHE or ~/.cache/baton, as deploy/fetch-model.sh puts it), so
 * the vocabulary is that model's (SmolLM2: 49152 tokens, not Llama-2's 32000 or Llama-3's
 * 128256), and token_embd and output.weight are [n_embd, n_vocab] of it. The output is
 * untied (its own output.weight, as the big models have), so the head costs what it costs.
 *
 * Weights: 2-D tensors in --type (token_embd and output too), quantized with ggml's
 * reference formulas (tests/support/quantize_ref.c); norms F32 1.0. Values are approximately
 * normal (Irwin-Hall of 4 uniforms), std 0.02 (the usual initialisation), attn_output and
 * ffn_down 0.02 / sqrt(2 n_layer) so the residual stream stays O(1) through every layer:
 * activations and logits stay finite, so baton generates from it (noise tokens).
 * Deterministic in --seed (default 1): xorshift64* seeded per tensor by splitmix64 of the
 * seed and a hash of the tensor name.
 *
 * general.name says "synthetic <shape>"; baton.synthetic = true marks the file.
 *
 * Memory: the metadata (the copied vocabulary: a few MiB) and one row of floats and of
 * quantized bytes; tensor data is streamed to the file (bt_gw_stream_*), so a 3.6 GiB 7B
 * file takes no more memory than a small one.
 */
#include <errno.h>
#include <stdbool.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "gguf_writer.h"
#include "hparams.h"
#include "quantize_ref.h"
#include "tensor_type.h"

/* name, n_embd, n_ff, n_layer, n_head, n_head_kv, n_ctx_train, rope base, rms eps */
#define SYNTH_SHAPES(X)                                                                            \
    X("smol-135m", 576, 1536, 30, 9, 3, 8192, 100000.0f, 1e-5f)                                    \
    X("tinyllama-1.1b", 2048, 5632, 22, 32, 4, 2048, 10000.0f, 1e-5f)                              \
    X("llama2-7b", 4096, 11008, 32, 32, 32, 4096, 10000.0f, 1e-5f)                                 \
    X("llama3-8b", 4096, 14336, 32, 32, 8, 8192, 500000.0f, 1e-5f)

typedef struct synth_shape {
    const char *name;
    int n_embd, n_ff, n_layer, n_head, n_head_kv, n_ctx;
    float rope_base, rms_eps;
} synth_shape;

/* --arch NAME, general.architecture, n_embd, n_ff, n_layer, n_head, n_head_kv, head_dim,
 * n_ctx_train, rope base, rms eps, what the family has (FAM_* flags). */
#define FAM_QKV_BIAS 1u    /* attn_{q,k,v}.bias */
#define FAM_QK_NORM 2u     /* attn_{q,k}_norm.weight */
#define FAM_FUSED 4u       /* attn_qkv.weight; ffn_up.weight holds gate then up */
#define FAM_TIED 8u        /* no output.weight */
#define FAM_ROPE_FREQS 16u /* rope_freqs.weight (Llama 3.1 scaling) */
#define FAM_KEY_LENGTH 32u /* writes attention.key_length/value_length */
#define SYNTH_FAMILIES(X)                                                                          \
    X("llama3", "llama", 256, 640, 4, 8, 2, 32, 8192, 500000.0f, 1e-5f, FAM_ROPE_FREQS)            \
    X("qwen2", "qwen2", 256, 704, 4, 8, 2, 32, 32768, 1000000.0f, 1e-6f, FAM_QKV_BIAS | FAM_TIED)  \
    X("qwen3", "qwen3", 256, 512, 4, 8, 4, 64, 40960, 1000000.0f, 1e-6f,                           \
      FAM_QK_NORM | FAM_TIED | FAM_KEY_LENGTH)                                                     \
    X("phi3", "phi3", 256, 512, 4, 8, 8, 32, 4096, 10000.0f, 1e-5f, FAM_FUSED)

typedef struct synth_family {
    const char *name, *arch;
    int n_embd, n_ff, n_layer, n_head, n_head_kv, head_dim, n_ctx;
    float rope_base, rms_eps;
    unsigned flags;
} synth_family;

static const synth_family FAMILIES[] = {
#define X(nm, ar, e, f, l, h, hkv, d, ctx, rope, eps, fl)                                          \
    {nm, ar, e, f, l, h, hkv, d, ctx, rope, eps, fl},
    SYNTH_FAMILIES(X)
#undef X
};
#define N_FAMILIES (sizeof FAMILIES / sizeof FAMILIES[0])

#define FAM_STD 0.06f     /* matrices */
#define FAM_STD_IO 0.2f   /* token_embd, output */
#define FAM_STD_NORM 0.1f /* around 1 */
#define FAM_STD_BIAS 0.5f

static const synth_shape SHAPES[] = {
#define X(nm, e, f, l, h, hkv, ctx, rope, eps) {nm, e, f, l, h, hkv, ctx, rope, eps},
    SYNTH_SHAPES(X)
#undef X
};
#define N_SHAPES (sizeof SHAPES / sizeof SHAPES[0])

/* The types this tool writes: the ones real llama GGUFs of these sizes come in. */
#define SYNTH_TYPES(X)                                                                             \
    X("q4_0", BT_TYPE_Q4_0, 2)                                                                     \
    X("q4_1", BT_TYPE_Q4_1, 3)                                                                     \
    X("q8_0", BT_TYPE_Q8_0, 7)

typedef struct synth_type {
    const char *name;
    bt_type type;
    uint32_t file_type; /* general.file_type (llama_ftype MOSTLY_*) */
} synth_type;

static const synth_type TYPES[] = {
#define X(nm, t, ft) {nm, t, ft},
    SYNTH_TYPES(X)
#undef X
};
#define N_TYPES (sizeof TYPES / sizeof TYPES[0])

#define WEIGHT_STD 0.02f

/* ---- deterministic random numbers ---- */

typedef struct rng {
    uint64_t s; /* xorshift64* state, never 0 */
} rng;

static uint64_t splitmix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Per tensor: the seed and the name's FNV-1a hash, so a tensor's values do not depend on
 * which tensors come before it (a --layers 4 file is the first 4 layers of the full one). */
static rng rng_for(uint64_t seed, const char *name) {
    uint64_t h = 0xCBF29CE484222325ULL;
    for (const char *p = name; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001B3ULL;
    return (rng){splitmix64(seed ^ splitmix64(h)) | 1};
}

static uint64_t rng_next(rng *r) {
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Approximately N(0, 1): the sum of four 16-bit uniforms from one draw (variance 1/3),
 * scaled. One draw per value keeps a 7B file's 6.7e9 values to seconds. */
static float rng_normal(rng *r) {
    uint64_t x = rng_next(r);
    float s = (float)(x & 0xFFFF) + (float)((x >> 16) & 0xFFFF) + (float)((x >> 32) & 0xFFFF) +
              (float)(x >> 48);
    return (s / 65536.0f - 2.0f) * 1.7320508f;
}

/* ---- the file ---- */

/* One tensor to write: GGUF ne = [n_cols, n_rows]; values fill + std N(0,1) (F32 norms of
 * --shape files: fill 1, std 0); rope_freqs: Llama 3.1's factors, not random. */
typedef struct synth_tensor {
    char name[64];
    int64_t n_cols, n_rows;
    int n_dims;
    bt_type type;
    float std, fill;
    bool rope_freqs;
    float rope_base; /* for rope_freqs */
    size_t row_bytes;
} synth_tensor;

typedef struct synth_opts {
    const synth_family *family; /* --arch; NULL for --shape */
    synth_shape fam_shape;      /* the family's shape, pointed to by shape under --arch */
    const synth_shape *shape;
    const synth_type *type;
    int n_layer;
    uint64_t seed;
    const char *vocab_from;
    const char *out;
} synth_opts;

/* Copies the value of kv i (a tokenizer.* key) of `src` into w with the same GGUF type. */
static int copy_kv(bt_gw *w, const bt_gguf *src, size_t i, const char *key) {
    bt_error err;
    bt_error_init(&err);
    bt_gguf_type t = bt_gguf_kv_type(src, i);
    bt_gw_buf v = {0};
    bt_status st = BT_OK;
    switch (t) {
    case BT_GGUF_U8:
    case BT_GGUF_I8:
    case BT_GGUF_U16:
    case BT_GGUF_I16:
    case BT_GGUF_U32:
    case BT_GGUF_I32:
    case BT_GGUF_U64:
    case BT_GGUF_I64:
    case BT_GGUF_BOOL: {
        static const size_t width[BT_GGUF_TYPE_COUNT] = {
            [BT_GGUF_U8] = 1,  [BT_GGUF_I8] = 1,  [BT_GGUF_U16] = 2,
            [BT_GGUF_I16] = 2, [BT_GGUF_U32] = 4, [BT_GGUF_I32] = 4,
            [BT_GGUF_U64] = 8, [BT_GGUF_I64] = 8, [BT_GGUF_BOOL] = 1};
        int64_t x; /* a U64 above INT64_MAX is refused here (no tokenizer key has one) */
        if ((st = bt_gguf_get_i64(src, key, &x, &err)) != BT_OK)
            break;
        uint64_t u = (uint64_t)x;
        for (size_t b = 0; b < width[t]; b++)
            bt_gw_buf_u8(&v, (uint8_t)(u >> (8 * b)));
        break;
    }
    case BT_GGUF_F32: {
        float x;
        if ((st = bt_gguf_get_f32(src, key, &x, &err)) == BT_OK)
            bt_gw_buf_bytes(&v, &x, sizeof x);
        break;
    }
    case BT_GGUF_STRING: {
        bt_str s;
        if ((st = bt_gguf_get_str(src, key, &s, &err)) == BT_OK)
            bt_gw_buf_strn(&v, s.ptr, s.len);
        break;
    }
    case BT_GGUF_ARRAY: {
        bt_gguf_type et = bt_gguf_kv_arr_type(src, i);
        uint64_t n;
        bt_gw_buf_u32(&v, (uint32_t)et);
        if (et == BT_GGUF_STRING) {
            if ((st = bt_gguf_get_arr_str_len(src, key, &n, &err)) != BT_OK)
                break;
            bt_gw_buf_u64(&v, n);
            for (uint64_t k = 0; k < n; k++) {
                bt_str s = bt_gguf_get_arr_str(src, key, k);
                bt_gw_buf_strn(&v, s.ptr, s.len);
            }
        } else {
            const void *data;
            if ((st = bt_gguf_get_arr(src, key, et, &data, &n, &err)) != BT_OK)
                break;
            bt_gw_buf_u64(&v, n);
            bt_gw_buf_bytes(&v, data, (size_t)n * bt_gguf_type_size(et));
        }
        break;
    }
    default: /* F64: no tokenizer key has one; refuse rather than round it */
        st = bt_error_set(&err, BT_ERR_UNSUPPORTED, "key %s has type %s, which is not copied", key,
                          bt_gguf_type_name(t));
        break;
    }
    if (st == BT_OK && v.oom)
        st = bt_error_set(&err, BT_ERR_NOMEM, "out of memory copying %s", key);
    if (st == BT_OK)
        st = bt_gw_add_raw(w, key, (uint32_t)t, v.data, v.len);
    bt_gw_buf_free(&v);
    if (st != BT_OK) {
        fprintf(stderr, "synth_model: copying the vocabulary: %s\n",
                err.msg[0] ? err.msg : bt_status_str(st));
        return 1;
    }
    return 0;
}

/* Every tokenizer.* key of the vocabulary file, in its order; *n_vocab from its tokens. */
static int add_vocab(bt_gw *w, const char *path, int *n_vocab) {
    bt_error err;
    bt_error_init(&err);
    bt_gguf *src;
    if (bt_gguf_open(path, &src, &err) != BT_OK) {
        fprintf(stderr, "synth_model: --vocab-from %s: %s\n", path, err.msg);
        return 1;
    }
    uint64_t n = 0;
    if (bt_gguf_get_arr_str_len(src, "tokenizer.ggml.tokens", &n, &err) != BT_OK || n == 0 ||
        n > BT_HPARAMS_MAX_VOCAB) {
        fprintf(stderr, "synth_model: --vocab-from %s has no usable tokenizer.ggml.tokens (%s)\n",
                path, err.msg[0] ? err.msg : "empty or too long");
        bt_gguf_free(src);
        return 1;
    }
    *n_vocab = (int)n;
    int rc = 0;
    for (size_t i = 0; i < bt_gguf_n_kv(src) && !rc; i++) {
        bt_str k = bt_gguf_kv_key(src, i);
        char key[256];
        if (k.len < 10 || memcmp(k.ptr, "tokenizer.", 10) != 0)
            continue;
        if (k.len >= sizeof key) {
            fprintf(stderr, "synth_model: --vocab-from %s: key %.40s... is too long\n", path,
                    k.ptr);
            rc = 1;
            break;
        }
        memcpy(key, k.ptr, k.len);
        key[k.len] = '\0';
        rc = copy_kv(w, src, i, key);
    }
    bt_gguf_free(src);
    return rc;
}

static void plan_one(synth_tensor *t, const char *name, int64_t n_cols, int64_t n_rows,
                     bt_type type, float std) {
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_cols = n_cols;
    t->n_rows = n_rows;
    t->n_dims = n_rows > 1 ? 2 : 1;
    t->type = type;
    t->std = std;
    t->fill = n_rows == 1 ? 1.0f : 0.0f; /* norms around 1, matrices around 0 */
    t->rope_freqs = false;
}

/* Llama 3.1's rope frequency factors for head dimension D and base (convert_hf_to_gguf.py,
 * LlamaModel.generate_extra_tensors: factor 8, low_freq_factor 1, high_freq_factor 4,
 * original_max_position_embeddings 8192): 1 for short wavelengths, 8 for long ones, a smooth
 * blend between. */
static void llama31_rope_factors(float *out, int D, float base) {
    const double factor = 8.0, low = 1.0, high = 4.0, old_ctx = 8192.0;
    const double low_wavelen = old_ctx / low, high_wavelen = old_ctx / high;
    for (int i = 0; i < D / 2; i++) {
        double freq = 1.0 / pow((double)base, (double)(2 * i) / (double)D);
        double wavelen = 2.0 * 3.14159265358979323846 / freq;
        if (wavelen < high_wavelen)
            out[i] = 1.0f;
        else if (wavelen > low_wavelen)
            out[i] = (float)factor;
        else {
            double smooth = (old_ctx / wavelen - low) / (high - low);
            out[i] = (float)(1.0 / ((1.0 - smooth) / factor + smooth));
        }
    }
}

/* The tensor list of a --arch family file in llama.cpp's order. */
static size_t plan_family(const synth_opts *o, int n_vocab, synth_tensor *ts) {
    const synth_family *f = o->family;
    const int E = f->n_embd, F = f->n_ff, D = f->head_dim;
    const int QD = f->n_head * D, KVD = f->n_head_kv * D;
    const float s_res = FAM_STD / sqrtf(2.0f * (float)f->n_layer);
    const bt_type q = o->type->type;
    size_t n = 0;
    plan_one(&ts[n++], "token_embd.weight", E, n_vocab, q, FAM_STD_IO);
    if (f->flags & FAM_ROPE_FREQS) {
        plan_one(&ts[n], "rope_freqs.weight", D / 2, 1, BT_TYPE_F32, 0.0f);
        ts[n].rope_base = f->rope_base;
        ts[n++].rope_freqs = true;
    }
    plan_one(&ts[n++], "output_norm.weight", E, 1, BT_TYPE_F32, FAM_STD_NORM);
    if (!(f->flags & FAM_TIED))
        plan_one(&ts[n++], "output.weight", E, n_vocab, q, FAM_STD_IO);
    for (int l = 0; l < f->n_layer; l++) {
        char nm[64];
#define NAME(suffix) (snprintf(nm, sizeof nm, "blk.%d." suffix, l), nm)
#define BIAS(t) ((t)->fill = 0.0f, (t)->std = FAM_STD_BIAS) /* t evaluated twice */
        plan_one(&ts[n++], NAME("attn_norm.weight"), E, 1, BT_TYPE_F32, FAM_STD_NORM);
        if (f->flags & FAM_FUSED) {
            plan_one(&ts[n++], NAME("attn_qkv.weight"), E, QD + 2 * KVD, q, FAM_STD);
        } else {
            plan_one(&ts[n++], NAME("attn_q.weight"), E, QD, q, FAM_STD);
            plan_one(&ts[n++], NAME("attn_k.weight"), E, KVD, q, FAM_STD);
            plan_one(&ts[n++], NAME("attn_v.weight"), E, KVD, q, FAM_STD);
        }
        if (f->flags & FAM_QKV_BIAS) {
            plan_one(&ts[n], NAME("attn_q.bias"), QD, 1, BT_TYPE_F32, 0.0f);
            BIAS(&ts[n]);
            n++;
            plan_one(&ts[n], NAME("attn_k.bias"), KVD, 1, BT_TYPE_F32, 0.0f);
            BIAS(&ts[n]);
            n++;
            plan_one(&ts[n], NAME("attn_v.bias"), KVD, 1, BT_TYPE_F32, 0.0f);
            BIAS(&ts[n]);
            n++;
        }
        if (f->flags & FAM_QK_NORM) {
            plan_one(&ts[n++], NAME("attn_q_norm.weight"), D, 1, BT_TYPE_F32, FAM_STD_NORM);
            plan_one(&ts[n++], NAME("attn_k_norm.weight"), D, 1, BT_TYPE_F32, FAM_STD_NORM);
        }
        plan_one(&ts[n++], NAME("attn_output.weight"), QD, E, q, s_res);
        plan_one(&ts[n++], NAME("ffn_norm.weight"), E, 1, BT_TYPE_F32, FAM_STD_NORM);
        if (f->flags & FAM_FUSED) {
            plan_one(&ts[n++], NAME("ffn_up.weight"), E, 2 * F, q, FAM_STD);
        } else {
            plan_one(&ts[n++], NAME("ffn_gate.weight"), E, F, q, FAM_STD);
            plan_one(&ts[n++], NAME("ffn_up.weight"), E, F, q, FAM_STD);
        }
        plan_one(&ts[n++], NAME("ffn_down.weight"), F, E, q, s_res);
#undef BIAS
#undef NAME
    }
    return n;
}

/* The family's hyper-parameters under its architecture's name, as convert_hf_to_gguf.py
 * writes them. */
static int add_family_hparams(bt_gw *w, const synth_opts *o, int n_vocab) {
    const synth_family *f = o->family;
    char name[96], k[96];
    snprintf(name, sizeof name, "synthetic %s (random weights, family's vocabulary)", f->name);
#define KEY(suffix) (snprintf(k, sizeof k, "%s.%s", f->arch, suffix), k)
    bt_gw_add_str(w, "general.architecture", f->arch);
    bt_gw_add_str(w, "general.name", name);
    bt_gw_add_u32(w, "general.file_type", o->type->file_type);
    bt_gw_add_u32(w, "general.quantization_version", 2);
    bt_gw_add_bool(w, "baton.synthetic", true);
    bt_gw_add_str(w, "baton.synthetic.shape", f->name);
    bt_gw_add_u64(w, "baton.synthetic.seed", o->seed);
    bt_gw_add_u32(w, KEY("block_count"), (uint32_t)f->n_layer);
    bt_gw_add_u32(w, KEY("context_length"), (uint32_t)f->n_ctx);
    bt_gw_add_u32(w, KEY("embedding_length"), (uint32_t)f->n_embd);
    bt_gw_add_u32(w, KEY("feed_forward_length"), (uint32_t)f->n_ff);
    bt_gw_add_u32(w, KEY("attention.head_count"), (uint32_t)f->n_head);
    bt_gw_add_u32(w, KEY("attention.head_count_kv"), (uint32_t)f->n_head_kv);
    if (f->flags & FAM_KEY_LENGTH) {
        bt_gw_add_u32(w, KEY("attention.key_length"), (uint32_t)f->head_dim);
        bt_gw_add_u32(w, KEY("attention.value_length"), (uint32_t)f->head_dim);
    }
    bt_gw_add_f32(w, KEY("rope.freq_base"), f->rope_base);
    bt_gw_add_f32(w, KEY("attention.layer_norm_rms_epsilon"), f->rms_eps);
    bt_gw_add_u32(w, KEY("rope.dimension_count"), (uint32_t)f->head_dim);
    int rc = bt_gw_add_u32(w, KEY("vocab_size"), (uint32_t)n_vocab) != BT_OK;
#undef KEY
    return rc;
}

/* The tensor list in file order (llama.cpp's: embedding, output norm, output, layers). */
static size_t plan_tensors(const synth_opts *o, int n_vocab, synth_tensor *ts) {
    const synth_shape *sh = o->shape;
    const int E = sh->n_embd, F = sh->n_ff, D = sh->n_embd / sh->n_head;
    const int QD = sh->n_head * D, KVD = sh->n_head_kv * D;
    const float s_res = WEIGHT_STD / sqrtf(2.0f * (float)o->n_layer);
    const bt_type q = o->type->type;
    size_t n = 0;
    plan_one(&ts[n++], "token_embd.weight", E, n_vocab, q, WEIGHT_STD);
    plan_one(&ts[n++], "output_norm.weight", E, 1, BT_TYPE_F32, 0.0f);
    plan_one(&ts[n++], "output.weight", E, n_vocab, q, WEIGHT_STD);
    for (int l = 0; l < o->n_layer; l++) {
        char nm[64];
#define NAME(suffix) (snprintf(nm, sizeof nm, "blk.%d." suffix, l), nm)
        plan_one(&ts[n++], NAME("attn_norm.weight"), E, 1, BT_TYPE_F32, 0.0f);
        plan_one(&ts[n++], NAME("attn_q.weight"), E, QD, q, WEIGHT_STD);
        plan_one(&ts[n++], NAME("attn_k.weight"), E, KVD, q, WEIGHT_STD);
        plan_one(&ts[n++], NAME("attn_v.weight"), E, KVD, q, WEIGHT_STD);
        plan_one(&ts[n++], NAME("attn_output.weight"), QD, E, q, s_res);
        plan_one(&ts[n++], NAME("ffn_norm.weight"), E, 1, BT_TYPE_F32, 0.0f);
        plan_one(&ts[n++], NAME("ffn_gate.weight"), E, F, q, WEIGHT_STD);
        plan_one(&ts[n++], NAME("ffn_up.weight"), E, F, q, WEIGHT_STD);
        plan_one(&ts[n++], NAME("ffn_down.weight"), F, E, q, s_res);
#undef NAME
    }
    return n;
}

static int add_hparams(bt_gw *w, const synth_opts *o, int n_vocab) {
    const synth_shape *sh = o->shape;
    char name[96];
    snprintf(name, sizeof name, "synthetic %s (random weights: speed and memory only)", sh->name);
    bt_gw_add_str(w, "general.architecture", "llama");
    bt_gw_add_str(w, "general.name", name);
    bt_gw_add_u32(w, "general.file_type", o->type->file_type);
    bt_gw_add_u32(w, "general.quantization_version", 2);
    bt_gw_add_bool(w, "baton.synthetic", true);
    bt_gw_add_str(w, "baton.synthetic.shape", sh->name);
    bt_gw_add_u64(w, "baton.synthetic.seed", o->seed);
    bt_gw_add_u32(w, "llama.block_count", (uint32_t)o->n_layer);
    bt_gw_add_u32(w, "llama.context_length", (uint32_t)sh->n_ctx);
    bt_gw_add_u32(w, "llama.embedding_length", (uint32_t)sh->n_embd);
    bt_gw_add_u32(w, "llama.feed_forward_length", (uint32_t)sh->n_ff);
    bt_gw_add_u32(w, "llama.attention.head_count", (uint32_t)sh->n_head);
    bt_gw_add_u32(w, "llama.attention.head_count_kv", (uint32_t)sh->n_head_kv);
    bt_gw_add_f32(w, "llama.rope.freq_base", sh->rope_base);
    bt_gw_add_f32(w, "llama.attention.layer_norm_rms_epsilon", sh->rms_eps);
    bt_gw_add_u32(w, "llama.rope.dimension_count", (uint32_t)(sh->n_embd / sh->n_head));
    return bt_gw_add_u32(w, "llama.vocab_size", (uint32_t)n_vocab) != BT_OK;
}

/* Generates, quantizes and streams tensor t row by row. */
static int write_tensor(bt_gw_stream *s, const synth_tensor *t, uint64_t seed, float *row,
                        void *qrow) {
    rng r = rng_for(seed, t->name);
    bt_error err;
    bt_error_init(&err);
    for (int64_t i = 0; i < t->n_rows; i++) {
        if (t->rope_freqs)
            llama31_rope_factors(row, (int)t->n_cols * 2, t->rope_base);
        else
            for (int64_t c = 0; c < t->n_cols; c++)
                row[c] = t->std > 0.0f ? t->fill + t->std * rng_normal(&r) : t->fill;
        bt_status st = bt_quantize_row_ref(t->type, row, qrow, t->n_cols);
        if (st == BT_OK)
            st = bt_gw_stream_write(s, qrow, t->row_bytes, &err);
        if (st != BT_OK) {
            fprintf(stderr, "synth_model: %s row %lld: %s\n", t->name, (long long)i,
                    err.msg[0] ? err.msg : bt_status_str(st));
            return 1;
        }
    }
    return 0;
}

static int synth(const synth_opts *o) {
    bt_gw *w = bt_gw_new();
    int n_vocab = 0, rc = 1;
    synth_tensor *ts = NULL;
    float *row = NULL;
    void *qrow = NULL;
    bt_gw_stream *s = NULL;
    bool created = false; /* o->out is ours to remove on failure */
    bt_error err;
    bt_error_init(&err);
    if (!w)
        goto out;
    /* hparams first (llama.cpp's order), the vocabulary's size known only after the copy:
     * read it twice rather than reorder the keys. */
    {
        bt_gguf *g;
        uint64_t n;
        if (bt_gguf_open(o->vocab_from, &g, &err) != BT_OK) {
            fprintf(stderr, "synth_model: --vocab-from %s: %s\n", o->vocab_from, err.msg);
            goto out;
        }
        if (bt_gguf_get_arr_str_len(g, "tokenizer.ggml.tokens", &n, &err) == BT_OK)
            n_vocab = (int)n;
        bt_gguf_free(g);
    }
    if ((o->family ? add_family_hparams(w, o, n_vocab) : add_hparams(w, o, n_vocab)) ||
        add_vocab(w, o->vocab_from, &n_vocab))
        goto out;
    size_t max_tensors = 4 + 14 * (size_t)o->n_layer;
    ts = calloc(max_tensors, sizeof *ts);
    if (!ts)
        goto out;
    size_t n_t = o->family ? plan_family(o, n_vocab, ts) : plan_tensors(o, n_vocab, ts);
    int64_t max_cols = 0;
    size_t max_row = 0;
    for (size_t i = 0; i < n_t; i++) {
        synth_tensor *t = &ts[i];
        if (bt_type_row_bytes((uint32_t)t->type, t->n_cols, &t->row_bytes) != BT_OK) {
            fprintf(stderr, "synth_model: %s: %lld columns do not fit type %s\n", t->name,
                    (long long)t->n_cols, bt_type_name((uint32_t)t->type));
            goto out;
        }
        int64_t ne[2] = {t->n_cols, t->n_rows};
        bt_gw_add_tensor_info(w, t->name, (uint32_t)t->n_dims, ne, (uint32_t)t->type,
                              t->row_bytes * (size_t)t->n_rows);
        max_cols = t->n_cols > max_cols ? t->n_cols : max_cols;
        max_row = t->row_bytes > max_row ? t->row_bytes : max_row;
    }
    row = malloc((size_t)max_cols * sizeof *row);
    qrow = malloc(max_row);
    if (!row || !qrow) {
        fprintf(stderr, "synth_model: out of memory\n");
        goto out;
    }
    bt_gw_layout layout;
    if (bt_gw_stream_open(w, o->out, &s, &layout, &err) != BT_OK) {
        fprintf(stderr, "synth_model: %s\n", err.msg);
        goto out;
    }
    created = true;
    for (size_t i = 0; i < n_t; i++)
        if (write_tensor(s, &ts[i], o->seed, row, qrow))
            goto out;
    bt_status st = bt_gw_stream_close(s, &err);
    s = NULL;
    if (st != BT_OK) {
        fprintf(stderr, "synth_model: %s\n", err.msg);
        goto out;
    }
    const synth_shape *sh = o->shape;
    printf("wrote %s: synthetic %s, n_embd %d n_ff %d n_layer %d n_head %d n_head_kv %d, "
           "vocab %d from %s, %s, seed %llu, %zu bytes (metadata %zu)\n",
           o->out, sh->name, sh->n_embd, sh->n_ff, o->n_layer, sh->n_head, sh->n_head_kv, n_vocab,
           o->vocab_from, o->type->name, (unsigned long long)o->seed, layout.size,
           layout.data_start);
    rc = 0;
out:
    if (s)
        bt_gw_stream_close(s, &err);
    if (rc && created)
        unlink(o->out); /* no partial file left behind */
    free(row);
    free(qrow);
    free(ts);
    bt_gw_free(w);
    return rc;
}

static int usage(void) {
    fprintf(stderr, "usage: synth_model --shape NAME --type q4_0|q4_1|q8_0 [--seed S] "
                    "[--layers N] [--vocab-from GGUF] OUT.gguf\n"
                    "       synth_model --arch FAMILY --vocab-from GGUF [--type T] [--seed S] "
                    "OUT.gguf\n  shapes:");
    for (size_t i = 0; i < N_SHAPES; i++)
        fprintf(stderr, " %s", SHAPES[i].name);
    fprintf(stderr, "\n  families:");
    for (size_t i = 0; i < N_FAMILIES; i++)
        fprintf(stderr, " %s", FAMILIES[i].name);
    fprintf(stderr, "\n");
    return 2;
}

static const char *default_vocab(char *buf, size_t n) {
    const char *m = getenv("BATON_MODEL");
    if (m && *m)
        return m;
    const char *cache = getenv("BATON_CACHE");
    const char *home = getenv("HOME");
    if (cache && *cache)
        snprintf(buf, n, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", cache);
    else if (home && *home)
        snprintf(buf, n, "%s/.cache/baton/SmolLM2-135M-Instruct.Q4_1.gguf", home);
    else
        return NULL;
    return buf;
}

int main(int argc, char **argv) {
    synth_opts o = {.seed = 1};
    const char *shape = NULL, *type = NULL, *arch = NULL;
    char vocab_buf[4096];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--shape") == 0 && val) {
            shape = val;
            i++;
        } else if (strcmp(a, "--arch") == 0 && val) {
            arch = val;
            i++;
        } else if (strcmp(a, "--type") == 0 && val) {
            type = val;
            i++;
        } else if (strcmp(a, "--seed") == 0 && val) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(val, &end, 0);
            if (errno || end == val || *end || val[0] == '-') {
                fprintf(stderr, "synth_model: --seed '%s' is not an unsigned integer\n", val);
                return 2;
            }
            o.seed = v;
            i++;
        } else if (strcmp(a, "--layers") == 0 && val) {
            char *end;
            long v = strtol(val, &end, 10);
            if (end == val || *end || v < 1 || v > BT_HPARAMS_MAX_LAYERS) {
                fprintf(stderr, "synth_model: --layers '%s' must be 1..%d\n", val,
                        BT_HPARAMS_MAX_LAYERS);
                return 2;
            }
            o.n_layer = (int)v;
            i++;
        } else if (strcmp(a, "--vocab-from") == 0 && val) {
            o.vocab_from = val;
            i++;
        } else if (a[0] != '-' && !o.out) {
            o.out = a;
        } else {
            fprintf(stderr, "synth_model: unexpected argument '%s'\n", a);
            return usage();
        }
    }
    if (arch) {
        if (shape || o.n_layer) {
            fprintf(stderr, "synth_model: --arch fixes the shape; --shape and --layers do not "
                            "go with it\n");
            return 2;
        }
        for (size_t i = 0; i < N_FAMILIES; i++)
            if (strcmp(arch, FAMILIES[i].name) == 0)
                o.family = &FAMILIES[i];
        if (!o.family) {
            fprintf(stderr, "synth_model: unknown --arch '%s' (known:", arch);
            for (size_t i = 0; i < N_FAMILIES; i++)
                fprintf(stderr, " %s", FAMILIES[i].name);
            fprintf(stderr, ")\n");
            return 2;
        }
        if (!o.vocab_from) {
            fprintf(stderr,
                    "synth_model: --arch %s needs --vocab-from (the family's vocabulary "
                    "GGUF)\n",
                    arch);
            return 2;
        }
        const synth_family *f = o.family;
        o.fam_shape = (synth_shape){f->name,      f->n_embd, f->n_ff,      f->n_layer, f->n_head,
                                    f->n_head_kv, f->n_ctx,  f->rope_base, f->rms_eps};
        o.shape = &o.fam_shape;
        shape = f->name;
        if (!type)
            type = "q8_0";
    }
    if (!shape || !type || !o.out)
        return usage();
    for (size_t i = 0; i < N_SHAPES && !o.family; i++)
        if (strcmp(shape, SHAPES[i].name) == 0)
            o.shape = &SHAPES[i];
    if (!o.shape) {
        fprintf(stderr, "synth_model: unknown --shape '%s' (known:", shape);
        for (size_t i = 0; i < N_SHAPES; i++)
            fprintf(stderr, " %s", SHAPES[i].name);
        fprintf(stderr, ")\n");
        return 2;
    }
    for (size_t i = 0; i < N_TYPES; i++)
        if (strcmp(type, TYPES[i].name) == 0)
            o.type = &TYPES[i];
    if (!o.type) {
        fprintf(stderr, "synth_model: unknown --type '%s' (known:", type);
        for (size_t i = 0; i < N_TYPES; i++)
            fprintf(stderr, " %s", TYPES[i].name);
        fprintf(stderr, ")\n");
        return 2;
    }
    if (!o.n_layer)
        o.n_layer = o.shape->n_layer;
    if (!o.vocab_from && !(o.vocab_from = default_vocab(vocab_buf, sizeof vocab_buf))) {
        fprintf(stderr, "synth_model: no --vocab-from, and neither BATON_MODEL, BATON_CACHE "
                        "nor HOME is set\n");
        return 2;
    }
    return synth(&o);
}
