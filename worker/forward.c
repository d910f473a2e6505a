/*
 * forward.c - one pass of a stage's layers over a batch of rows.
 *
 * Parallel sections of a layer (each one bt_threadpool_run):
 *   attn_norm (rows) -> q,k,v (weight-row tiles of three matrices) -> rope + KV write (rows)
 *   -> attention ((row, head)) -> wo + residual (tiles) -> ffn_norm (rows)
 *   -> gate,up + SwiGLU (tiles of both) -> down + residual (tiles).
 * Row sections with a single task run inline on the calling thread. Every matrix section
 * runs the decode rows (internal rows [0, n_dec)) through bt_matmul on q8 activations and the
 * prefill rows [n_dec, n) through sgemm on the q8 round trip (see forward.h); the q8 data of
 * a section's input is made by the row section before it (row_prep).
 */
#include "forward.h"

#include <assert.h>
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <strings.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "kernels/kernels.h"
#include "llamacpp.h"
#include "log.h"

#define BLAS_TILE_ROWS 128 /* weight rows per sgemm tile */

struct bt_forward {
    const bt_hparams *hp;
    const bt_weights *w;
    bt_kv_cache *kv;
    bt_threadpool *pool;
    int n_threads;
    int max_rows;
    int max_cols;   /* max(n_embd, q_dim, n_ff) */
    int sgemm_mode; /* -1 auto, 0 never, 1 always (bt_forward_set_prefill_sgemm) */
    bool sgemm;     /* prefill rows use sgemm */
    bt_numerics numerics;
    float *lc_scratch; /* BT_NUMERICS_LLAMACPP: [n_threads][lc_scratch_floats] for attention */
    size_t lc_scratch_floats;

    /* Run state, [max_rows][...] each, rows in internal order (decode rows first). */
    float *x;           /* [n][n_embd] residual stream */
    float *xn;          /* [n][n_embd] normed input of a matmul */
    float *q;           /* [n][q_dim] */
    float *k;           /* [n][kv_dim] */
    float *v;           /* [n][kv_dim] */
    float *att;         /* [n][q_dim] attention output */
    float *gate;        /* [n][n_ff] gate, then silu(gate) * up */
    float *up;          /* [n][n_ff] */
    float *tmp;         /* [n][n_embd] quantized-path product before the residual add */
    float *rope;        /* [n][head_dim] cos, sin pairs */
    bt_q8 *xq;          /* [n][max_cols/32] quantized activations */
    float *xd;          /* [n][max_cols] q8 round trip of the prefill rows (sgemm input) */
    float *xe;          /* [n][max_cols/32] q8.s - d*sum(qs) per block of the prefill rows */
    float *deq;         /* [n_threads][BLAS_TILE_ROWS * max_cols] dequantized weight tiles */
    float *mins;        /* [n_threads][BLAS_TILE_ROWS * max_cols/32] block mins of a tile */
    int32_t *perm;      /* [max_rows] internal row -> batch row */
    int32_t *inv;       /* [max_rows] batch row -> internal row */
    int32_t *iseq;      /* [max_rows] seq of each internal row */
    int32_t *ipos;      /* [max_rows] pos of each internal row */
    int32_t *head_src;  /* [max_rows] logits row d is computed as head row head_src[d] */
    uint8_t *head_done; /* [max_rows] permutation bookkeeping */
    float *row_tmp;     /* [n_vocab] one logits row, for the in-place permutation */

    /* Current pass (valid during bt_forward_run). */
    int n;                    /* rows */
    int n_dec;                /* internal rows [0, n_dec) are decode rows, [n_dec, n) prefill */
    const int32_t *seq, *pos; /* = iseq, ipos */
    int layer;                /* stage-local */
    /* Input of the current q8 preparation (row_prep). */
    const float *prep_x;
    int prep_cols, prep_n_dec;
};

/* OpenBLAS (DYNAMIC_ARCH) picks its kernels from CPUID at load time and falls back to an
 * SSE3 "Prescott" core on CPUs it does not know (e.g. some VMs). Those kernels are slower than
 * our quantized ones, so prefill rows then take the quantized path unless asked otherwise. */
static bool blas_core_is_generic(void) {
    static const char *generic[] = {"prescott", "core2",  "penryn",     "dunnington", "nehalem",
                                    "atom",     "katmai", "coppermine", "northwood",  "banias"};
    const char *core = openblas_get_corename();
    if (!core)
        return true;
    for (size_t i = 0; i < sizeof(generic) / sizeof(generic[0]); i++)
        if (strcasecmp(core, generic[i]) == 0)
            return true;
    return false;
}

static void *alloc_floats(size_t n) {
    return aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64);
}

static bool auto_sgemm(void) {
    if (bt_kernels_level() == BT_KERNELS_SCALAR || !blas_core_is_generic())
        return true;
    static _Atomic int warned = 0;
    if (!atomic_exchange(&warned, 1))
        BT_WARN("forward: OpenBLAS uses its generic '%s' kernels on this CPU, so prompt rows "
                "use the quantized kernels; set OPENBLAS_CORETYPE (e.g. SkylakeX, Haswell) "
                "for faster prefill",
                openblas_get_corename());
    return false;
}

bt_status bt_forward_new(const bt_hparams *hp, const bt_weights *w, bt_kv_cache *kv,
                         bt_threadpool *pool, int max_rows, bt_forward **out, bt_error *err) {
    *out = NULL;
    if (max_rows < 1)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "forward: max_rows %d < 1", max_rows);
    bt_kernels_init();
    openblas_set_num_threads(1);
    bt_forward *fw = calloc(1, sizeof(*fw));
    if (!fw)
        return bt_error_set(err, BT_ERR_NOMEM, "forward: out of memory");
    fw->hp = hp;
    fw->w = w;
    fw->kv = kv;
    fw->pool = pool;
    fw->n_threads = bt_threadpool_n_threads(pool);
    fw->max_rows = max_rows;
    fw->sgemm_mode = -1;
    fw->sgemm = auto_sgemm();
    int E = hp->n_embd, Q = bt_hparams_q_dim(hp), KV = bt_hparams_kv_dim(hp), F = hp->n_ff;
    fw->max_cols = E > Q ? E : Q;
    fw->max_cols = fw->max_cols > F ? fw->max_cols : F;
    size_t R = (size_t)max_rows;
    fw->x = alloc_floats(R * E);
    fw->xn = alloc_floats(R * E);
    fw->q = alloc_floats(R * Q);
    fw->k = alloc_floats(R * KV);
    fw->v = alloc_floats(R * KV);
    fw->att = alloc_floats(R * Q);
    fw->gate = alloc_floats(R * F);
    fw->up = alloc_floats(R * F);
    fw->tmp = alloc_floats(R * E);
    fw->rope = alloc_floats(R * hp->head_dim);
    fw->xq = aligned_alloc(64, ((R * (size_t)(fw->max_cols / 32) * sizeof(bt_q8) + 63) / 64) * 64);
    fw->xd = alloc_floats(R * (size_t)fw->max_cols);
    fw->xe = alloc_floats(R * (size_t)(fw->max_cols / 32));
    fw->deq = alloc_floats((size_t)fw->n_threads * BLAS_TILE_ROWS * (size_t)fw->max_cols);
    fw->mins = alloc_floats((size_t)fw->n_threads * BLAS_TILE_ROWS * (size_t)(fw->max_cols / 32));
    fw->perm = malloc(R * sizeof(int32_t));
    fw->inv = malloc(R * sizeof(int32_t));
    fw->iseq = malloc(R * sizeof(int32_t));
    fw->ipos = malloc(R * sizeof(int32_t));
    fw->head_src = malloc(R * sizeof(int32_t));
    fw->head_done = malloc(R);
    fw->row_tmp = alloc_floats((size_t)(hp->n_vocab > 0 ? hp->n_vocab : 1));
    if (!fw->x || !fw->xn || !fw->q || !fw->k || !fw->v || !fw->att || !fw->gate || !fw->up ||
        !fw->tmp || !fw->rope || !fw->xq || !fw->xd || !fw->xe || !fw->deq || !fw->mins ||
        !fw->perm || !fw->inv || !fw->iseq || !fw->ipos || !fw->head_src || !fw->head_done ||
        !fw->row_tmp) {
        bt_forward_free(fw);
        return bt_error_set(err, BT_ERR_NOMEM, "forward: cannot allocate scratch for %d rows",
                            max_rows);
    }
    *out = fw;
    return BT_OK;
}

void bt_forward_free(bt_forward *fw) {
    if (!fw)
        return;
    free(fw->x);
    free(fw->xn);
    free(fw->q);
    free(fw->k);
    free(fw->v);
    free(fw->att);
    free(fw->gate);
    free(fw->up);
    free(fw->tmp);
    free(fw->rope);
    free(fw->xq);
    free(fw->xd);
    free(fw->xe);
    free(fw->deq);
    free(fw->mins);
    free(fw->perm);
    free(fw->inv);
    free(fw->iseq);
    free(fw->ipos);
    free(fw->head_src);
    free(fw->head_done);
    free(fw->row_tmp);
    free(fw->lc_scratch);
    free(fw);
}

void bt_forward_set_prefill_sgemm(bt_forward *fw, int mode) {
    fw->sgemm_mode = mode < 0 ? -1 : mode > 0;
    fw->sgemm = fw->numerics == BT_NUMERICS_FAST && (mode < 0 ? auto_sgemm() : mode > 0);
}

/* layer -1: the output matrix. */
static bt_status lc_check_matrix(const bt_matrix *m, const char *what, int layer, bt_error *err) {
    if (bt_lc_type_ok(m->type))
        return BT_OK;
    char where[32] = "";
    if (layer >= 0)
        snprintf(where, sizeof where, " of layer %d", layer);
    return bt_error_set(err, BT_ERR_UNSUPPORTED,
                        "numerics llamacpp: %s%s is %s; only q4_1 and q8_0 weights are reproduced",
                        what, where, bt_type_name((uint32_t)m->type));
}

bt_status bt_forward_check_numerics(const bt_hparams *hp, const bt_weights *w, bt_type kv_type,
                                    bt_numerics n, bt_error *err) {
    if (n == BT_NUMERICS_FAST)
        return BT_OK;
    if ((unsigned)n > BT_NUMERICS_MAX)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "numerics %d unknown", (int)n);
    if (!bt_lc_cpu_ok())
        return bt_error_set(err, BT_ERR_UNSUPPORTED,
                            "numerics llamacpp: this CPU lacks AVX2, FMA or F16C");
    if (!bt_lc_head_dim_ok(hp->head_dim))
        return bt_error_set(err, BT_ERR_UNSUPPORTED,
                            "numerics llamacpp: head_dim %d is not a multiple of 64 up to %d",
                            hp->head_dim, BT_LC_MAX_HEAD_DIM);
    if (kv_type != BT_TYPE_F16)
        return bt_error_set(err, BT_ERR_UNSUPPORTED, "numerics llamacpp: needs an f16 KV cache");
    bt_status st = BT_OK;
    for (int li = 0; st == BT_OK && li < w->layer_end - w->layer_begin; li++) {
        const bt_layer_weights *l = &w->layers[li];
        int g = w->layer_begin + li;
        const struct {
            const bt_matrix *m;
            const char *name;
        } mats[] = {{&l->wq, "attn_q"},      {&l->wk, "attn_k"},       {&l->wv, "attn_v"},
                    {&l->wo, "attn_output"}, {&l->w_gate, "ffn_gate"}, {&l->w_up, "ffn_up"},
                    {&l->w_down, "ffn_down"}};
        for (size_t i = 0; st == BT_OK && i < sizeof(mats) / sizeof(mats[0]); i++)
            st = lc_check_matrix(mats[i].m, mats[i].name, g, err);
    }
    if (st == BT_OK && w->has_head)
        st = lc_check_matrix(&w->output, "output", -1, err);
    return st;
}

bt_status bt_forward_set_numerics(bt_forward *fw, bt_numerics n, bt_error *err) {
    if (n == BT_NUMERICS_LLAMACPP && fw->numerics != n) {
        bt_status st =
            bt_forward_check_numerics(fw->hp, fw->w, bt_kv_cache_params(fw->kv)->type, n, err);
        if (st != BT_OK)
            return st;
        const bt_hparams *hp = fw->hp;
        size_t per_thread = bt_lc_attention_scratch(hp->n_head / hp->n_head_kv, hp->head_dim,
                                                    bt_kv_cache_params(fw->kv)->max_seq_tokens);
        float *scratch = alloc_floats((size_t)fw->n_threads * per_thread);
        if (!scratch)
            return bt_error_set(err, BT_ERR_NOMEM, "forward: cannot allocate attention scratch");
        free(fw->lc_scratch);
        fw->lc_scratch = scratch;
        fw->lc_scratch_floats = per_thread;
    }
    fw->numerics = n;
    bt_forward_set_prefill_sgemm(fw, fw->sgemm_mode);
    return BT_OK;
}

bt_numerics bt_forward_numerics(const bt_forward *fw) {
    return fw->numerics;
}

int bt_forward_prefill_sgemm(const bt_forward *fw) {
    return fw->sgemm;
}

/* ---- element-wise pieces ---- */

/* y = x / sqrt(mean(x^2) + eps) * w, the sum in double as ggml does. */
static void rmsnorm(float *y, const float *x, const float *w, int n, float eps) {
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += (double)(x[i] * x[i]);
    float mean = (float)(sum / n);
    float scale = 1.0f / sqrtf(mean + eps);
    for (int i = 0; i < n; i++)
        y[i] = (x[i] * scale) * w[i];
}

/* cos/sin of position p for each pair, as ggml's rope cache (theta multiplied iteratively). */
static void rope_cache(float *cs, int pos, int D, float base, float freq_scale,
                       const float *freq_factors) {
    float theta_scale = powf(base, -2.0f / (float)D);
    float theta = (float)pos;
    for (int i = 0; i < D; i += 2) {
        float ff = freq_factors ? freq_factors[i / 2] : 1.0f;
        float t = freq_scale * (theta / ff);
        cs[i] = cosf(t);
        cs[i + 1] = sinf(t);
        theta *= theta_scale;
    }
}

static void rope_apply(float *x, const float *cs, int n_heads, int D) {
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * D;
        for (int i = 0; i < D; i += 2) {
            float x0 = v[i], x1 = v[i + 1], c = cs[i], s = cs[i + 1];
            v[i] = x0 * c - x1 * s;
            v[i + 1] = x0 * s + x1 * c;
        }
    }
}

/* ---- row sections ---- */

typedef void (*row_fn)(bt_forward *fw, int row);

typedef struct {
    bt_forward *fw;
    row_fn fn;
    int n;
    int chunk;
} rows_ctx;

static void rows_task(void *p, int task, int thread) {
    (void)thread;
    rows_ctx *c = p;
    int r1 = (task + 1) * c->chunk < c->n ? (task + 1) * c->chunk : c->n;
    for (int r = task * c->chunk; r < r1; r++)
        c->fn(c->fw, r);
}

/* fn(fw, r) for r in [0, n), spread over the pool. */
static void run_rows(bt_forward *fw, row_fn fn, int n) {
    rows_ctx c = {fw, fn, n, 1};
    int n_tasks = n;
    if (n > 4 * fw->n_threads) {
        c.chunk = (n + 4 * fw->n_threads - 1) / (4 * fw->n_threads);
        n_tasks = (n + c.chunk - 1) / c.chunk;
    }
    bt_threadpool_run(fw->pool, rows_task, &c, n_tasks);
}

/* Weights whose product runs on q8 activations (everything but the float types). */
static bool is_quantized(const bt_matrix *w) {
    return w->type != BT_TYPE_F32 && w->type != BT_TYPE_F16 && w->type != BT_TYPE_BF16;
}

/* Quantizes row r of prep_x to xq; a prefill row going to sgemm also gets its q8 round trip
 * x' = qs * d in xd (llama.cpp's activation quantization, applied before the sgemm). */
static void row_prep(bt_forward *fw, int r) {
    int C = fw->prep_cols, nb = C / 32;
    bt_q8 *q = fw->xq + (size_t)r * (size_t)nb;
    bt_quantize_q8(fw->prep_x + (size_t)r * C, q, C);
    if (fw->sgemm && r >= fw->prep_n_dec) {
        float *xd = fw->xd + (size_t)r * C, *xe = fw->xe + (size_t)r * nb;
        for (int b = 0; b < nb; b++) {
            int sum = 0;
            for (int j = 0; j < 32; j++) {
                xd[b * 32 + j] = (float)q[b].qs[j] * q[b].d;
                sum += q[b].qs[j];
            }
            xe[b] = q[b].s - q[b].d * (float)sum;
        }
    }
}

static void set_prep(bt_forward *fw, const float *x, int cols, int n_dec) {
    fw->prep_x = x;
    fw->prep_cols = cols;
    fw->prep_n_dec = n_dec;
}

static void prepare_rows(bt_forward *fw, const float *x, int n, int n_dec, int cols) {
    set_prep(fw, x, cols, n_dec);
    run_rows(fw, row_prep, n);
}

static void row_attn_norm(bt_forward *fw, int r) {
    const bt_layer_weights *l = &fw->w->layers[fw->layer];
    int E = fw->hp->n_embd;
    rmsnorm(fw->xn + (size_t)r * E, fw->x + (size_t)r * E, l->attn_norm, E, fw->hp->rms_eps);
    if (fw->prep_x)
        row_prep(fw, r);
}

static void row_ffn_norm(bt_forward *fw, int r) {
    const bt_layer_weights *l = &fw->w->layers[fw->layer];
    int E = fw->hp->n_embd;
    rmsnorm(fw->xn + (size_t)r * E, fw->x + (size_t)r * E, l->ffn_norm, E, fw->hp->rms_eps);
    if (fw->prep_x)
        row_prep(fw, r);
}

static void row_rope_cache(bt_forward *fw, int r) {
    const bt_hparams *hp = fw->hp;
    rope_cache(fw->rope + (size_t)r * hp->head_dim, fw->pos[r], hp->head_dim, hp->rope_base,
               hp->rope_freq_scale, fw->w->rope_freqs);
}

/* Rope on q and k, then K and V into the cache slot of (seq, pos). */
static void row_rope_store(bt_forward *fw, int r) {
    const bt_hparams *hp = fw->hp;
    int D = hp->head_dim, Q = bt_hparams_q_dim(hp), KV = bt_hparams_kv_dim(hp);
    const float *cs = fw->rope + (size_t)r * D;
    float *k = fw->k + (size_t)r * KV, *v = fw->v + (size_t)r * KV;
    if (fw->numerics == BT_NUMERICS_LLAMACPP) {
        bt_lc_rope(fw->q + (size_t)r * Q, cs, hp->n_head, D);
        bt_lc_rope(k, cs, hp->n_head_kv, D);
    } else {
        rope_apply(fw->q + (size_t)r * Q, cs, hp->n_head, D);
        rope_apply(k, cs, hp->n_head_kv, D);
    }
    int pos = fw->pos[r];
    int block = bt_kv_seq_table(fw->kv, fw->seq[r])[pos / BT_KV_BLOCK_TOKENS];
    bt_kv_store(fw->kv, fw->layer, block, pos % BT_KV_BLOCK_TOKENS, k, v);
}

/* ---- matrix sections ---- */

typedef enum { MM_PLAIN, MM_RESIDUAL, MM_SWIGLU } mm_mode;

typedef struct {
    const bt_matrix *w;
    const float *bias; /* [w->n_rows] or NULL */
    float *y;          /* [n][ldy] */
    int64_t ldy;
} mm_out;

typedef struct {
    bt_forward *fw;
    mm_mode mode;
    int n_tok; /* rows [0, n_dec) decode path, [n_dec, n_tok) prefill path */
    int n_dec;
    const float *x;  /* [n_tok][n_cols] */
    const bt_q8 *xq; /* [n_tok][n_cols/32] (quantized weights) */
    const float *xd; /* [n_tok][n_cols] q8 round trip, rows >= n_dec (quantized weights) */
    bool sgemm;      /* the prefill rows go through sgemm (else bt_matmul with the rest) */
    int n_jobs;      /* MM_SWIGLU: jobs[0] gate, jobs[1] up, tiled together */
    mm_out jobs[3];
    int chunk;    /* weight rows per task */
    int tasks[3]; /* tasks of each job */
} mm_ctx;

/* Rows [t0, t1) through the quantized kernels: y[t][r0..r1) = W[r0..r1) . x[t]. */
static void mm_q8(const mm_ctx *c, const bt_matrix *w, float *y, int64_t ldy, int t0, int t1,
                  int64_t r0, int64_t r1) {
    if (t1 <= t0)
        return;
    int64_t K = w->n_cols;
    if (c->fw->numerics == BT_NUMERICS_LLAMACPP)
        bt_lc_matmul(w->type, w->data, w->row_bytes, K, c->xq + (size_t)t0 * (size_t)(K / 32),
                     t1 - t0, y + t0 * ldy, ldy, r0, r1);
    else
        bt_matmul(w->type, w->data, w->row_bytes, K, c->x + (size_t)t0 * K,
                  c->xq + (size_t)t0 * (size_t)(K / 32), t1 - t0, y + t0 * ldy, ldy, r0, r1);
}

/* Prefill rows [n_dec, n_tok) through sgemm on a dequantized tile: y = beta y + W x'. */
static void mm_sgemm(const mm_ctx *c, const bt_matrix *w, float *y, int64_t ldy, float beta,
                     int64_t r0, int64_t r1, int thread) {
    int64_t K = w->n_cols;
    int m = c->n_tok - c->n_dec;
    const float *b;
    if (w->type == BT_TYPE_F32) {
        b = (const float *)((const char *)w->data + (size_t)r0 * w->row_bytes);
    } else {
        float *deq = c->fw->deq + (size_t)thread * BLAS_TILE_ROWS * (size_t)c->fw->max_cols;
        bt_dequant_rows(w->type, w->data, w->row_bytes, K, r0, r1, deq);
        b = deq;
    }
    const float *a = (is_quantized(w) ? c->xd : c->x) + (size_t)c->n_dec * K;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, (int)(r1 - r0), (int)K, 1.0f, a, (int)K,
                b, (int)K, beta, y + c->n_dec * ldy + r0, (int)ldy);
    if (w->type == BT_TYPE_Q4_1 || w->type == BT_TYPE_Q5_1) {
        /* The q8 kernels take a block's min term as m * s with s = fp16(d * sum(qs)) (ggml's
         * q8_1); the sgemm above took m * sum(qs * d). Add m * (s - d * sum(qs)) per block:
         * a product 32 times smaller than the main one. m is the fp16 after d in both
         * block layouts. */
        int nb = (int)(K / 32);
        size_t block_bytes =
            w->type == BT_TYPE_Q4_1 ? sizeof(bt_block_q4_1) : sizeof(bt_block_q5_1);
        float *mins =
            c->fw->mins + (size_t)thread * BLAS_TILE_ROWS * (size_t)(c->fw->max_cols / 32);
        for (int64_t r = r0; r < r1; r++) {
            const char *row = (const char *)w->data + (size_t)r * w->row_bytes;
            for (int bi = 0; bi < nb; bi++) {
                bt_half mh;
                memcpy(&mh, row + (size_t)bi * block_bytes + sizeof(bt_half), sizeof(mh));
                mins[(r - r0) * nb + bi] = bt_half_to_f32(mh);
            }
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, (int)(r1 - r0), nb, 1.0f,
                    c->fw->xe + (size_t)c->n_dec * nb, nb, mins, nb, 1.0f, y + c->n_dec * ldy + r0,
                    (int)ldy);
    }
}

/* y[t][r0..r1) = W[r0..r1) . x[t] for every row t, each by its path. */
static void mm_rows(const mm_ctx *c, const bt_matrix *w, float *y, int64_t ldy, int64_t r0,
                    int64_t r1, int thread) {
    if (c->sgemm) {
        mm_q8(c, w, y, ldy, 0, c->n_dec, r0, r1);
        if (c->n_tok > c->n_dec)
            mm_sgemm(c, w, y, ldy, 0.0f, r0, r1, thread);
    } else {
        mm_q8(c, w, y, ldy, 0, c->n_tok, r0, r1);
    }
}

static void add_rows(float *y, const float *tmp, int64_t ldy, int t0, int t1, const float *bias,
                     int64_t r0, int64_t r1) {
    for (int t = t0; t < t1; t++)
        for (int64_t r = r0; r < r1; r++)
            y[t * ldy + r] += tmp[t * ldy + r] + (bias ? bias[r] : 0.0f);
}

static void mm_task(void *p, int task, int thread) {
    mm_ctx *c = p;
    int j = 0;
    while (task >= c->tasks[j]) {
        task -= c->tasks[j];
        j++;
    }
    const mm_out *o = &c->jobs[j];
    int64_t r0 = (int64_t)task * c->chunk;
    int64_t r1 = r0 + c->chunk < o->w->n_rows ? r0 + c->chunk : o->w->n_rows;
    int n = c->n_tok;
    switch (c->mode) {
    case MM_PLAIN:
        mm_rows(c, o->w, o->y, o->ldy, r0, r1, thread);
        if (o->bias)
            for (int t = 0; t < n; t++)
                for (int64_t r = r0; r < r1; r++)
                    o->y[t * o->ldy + r] += o->bias[r];
        break;
    case MM_RESIDUAL: {
        /* o->y is the residual stream: += W x (+ bias). */
        float *tmp = c->fw->tmp;
        if (c->sgemm && !o->bias) {
            mm_q8(c, o->w, tmp, o->ldy, 0, c->n_dec, r0, r1);
            add_rows(o->y, tmp, o->ldy, 0, c->n_dec, NULL, r0, r1);
            if (n > c->n_dec)
                mm_sgemm(c, o->w, o->y, o->ldy, 1.0f, r0, r1, thread);
        } else {
            mm_rows(c, o->w, tmp, o->ldy, r0, r1, thread);
            add_rows(o->y, tmp, o->ldy, 0, n, o->bias, r0, r1);
        }
        break;
    }
    case MM_SWIGLU: {
        const mm_out *g = &c->jobs[0], *u = &c->jobs[1];
        mm_rows(c, g->w, g->y, g->ldy, r0, r1, thread);
        mm_rows(c, u->w, u->y, u->ldy, r0, r1, thread);
        for (int t = 0; t < n; t++) {
            float *gy = g->y + t * g->ldy, *uy = u->y + t * u->ldy;
            if (c->fw->numerics == BT_NUMERICS_LLAMACPP) {
                bt_lc_swiglu(gy + r0, uy + r0, r1 - r0);
                continue;
            }
            for (int64_t r = r0; r < r1; r++)
                gy[r] = gy[r] / (1.0f + expf(-gy[r])) * uy[r];
        }
        break;
    }
    }
}

/* Whether a section's input needs q8 activations (some job has quantized weights). */
static bool jobs_need_q8(int n_jobs, const mm_out *jobs) {
    for (int j = 0; j < n_jobs; j++)
        if (is_quantized(jobs[j].w))
            return true;
    return false;
}

/* One matrix section over rows [0, n_tok) of x (q8 data in fw->xq / fw->xd prepared). */
static void run_mm(bt_forward *fw, mm_mode mode, int n_tok, int n_dec, const float *x, int n_jobs,
                   const mm_out *jobs) {
    mm_ctx c;
    memset(&c, 0, sizeof(c));
    c.fw = fw;
    c.mode = mode;
    c.n_tok = n_tok;
    c.n_dec = fw->sgemm ? n_dec : n_tok;
    c.x = x;
    c.xq = fw->xq;
    c.xd = fw->xd;
    c.sgemm = fw->sgemm && c.n_dec < n_tok;
    c.n_jobs = mode == MM_SWIGLU ? 1 : n_jobs; /* gate and up share the tiles */
    memcpy(c.jobs, jobs, sizeof(mm_out) * (size_t)n_jobs);
    int64_t total = 0;
    for (int j = 0; j < c.n_jobs; j++)
        total += jobs[j].w->n_rows;
    if (c.sgemm) {
        c.chunk = BLAS_TILE_ROWS;
    } else {
        /* About 4 tasks per thread for balance, in multiples of 16 rows. */
        int64_t per = (total + 4 * fw->n_threads - 1) / (4 * fw->n_threads);
        per = (per + 15) / 16 * 16;
        c.chunk = (int)(per < 16 ? 16 : per);
    }
    int n_tasks = 0;
    for (int j = 0; j < c.n_jobs; j++) {
        c.tasks[j] = (int)((jobs[j].w->n_rows + c.chunk - 1) / c.chunk);
        n_tasks += c.tasks[j];
    }
    bt_threadpool_run(fw->pool, mm_task, &c, n_tasks);
}

static void attn_task(void *p, int task, int thread) {
    (void)thread;
    bt_attention_task(p, task);
}

/* BT_NUMERICS_LLAMACPP attention: one task per (row, KV head), its whole query group. */
static void lc_attn_task(void *p, int task, int thread) {
    bt_forward *fw = p;
    const bt_hparams *hp = fw->hp;
    int row = task / hp->n_head_kv, g = task % hp->n_head_kv, D = hp->head_dim;
    int group = hp->n_head / hp->n_head_kv;
    size_t off = (size_t)row * (size_t)bt_hparams_q_dim(hp) + (size_t)g * group * (size_t)D;
    bt_lc_attention(fw->kv, fw->layer, fw->seq[row], fw->pos[row], g, D, group, fw->q + off,
                    fw->n >= 2, fw->lc_scratch + (size_t)thread * fw->lc_scratch_floats,
                    fw->att + off);
}

/* Query heads per attention task: the whole GQA group (each K/V tile converted once), split
 * only when that leaves fewer than two tasks per thread. */
static int attn_heads_per_task(const bt_forward *fw) {
    const bt_hparams *hp = fw->hp;
    int group = hp->n_head / hp->n_head_kv;
    int hpt = group < BT_ATTN_MAX_TASK_HEADS ? group : BT_ATTN_MAX_TASK_HEADS;
    while (hpt > 1 && fw->n * hp->n_head_kv * ((group + hpt - 1) / hpt) < 2 * fw->n_threads)
        hpt = (hpt + 1) / 2;
    return hpt;
}

static void layer_forward(bt_forward *fw, int li) {
    const bt_hparams *hp = fw->hp;
    const bt_layer_weights *l = &fw->w->layers[li];
    int n = fw->n, nd = fw->n_dec, E = hp->n_embd, Q = bt_hparams_q_dim(hp);
    int KV = bt_hparams_kv_dim(hp), F = hp->n_ff;
    fw->layer = li;

    mm_out qkv[3] = {
        {&l->wq, l->bq, fw->q, Q}, {&l->wk, l->bk, fw->k, KV}, {&l->wv, l->bv, fw->v, KV}};
    set_prep(fw, jobs_need_q8(3, qkv) ? fw->xn : NULL, E, nd);
    run_rows(fw, row_attn_norm, n);
    run_mm(fw, MM_PLAIN, n, nd, fw->xn, 3, qkv);
    run_rows(fw, row_rope_store, n);

    bt_attn_args a = {fw->kv,
                      li,
                      n,
                      fw->seq,
                      fw->pos,
                      fw->q,
                      fw->att,
                      hp->n_head,
                      hp->n_head_kv,
                      hp->head_dim,
                      attn_heads_per_task(fw)};
    if (fw->numerics == BT_NUMERICS_LLAMACPP)
        bt_threadpool_run(fw->pool, lc_attn_task, fw, n * hp->n_head_kv);
    else
        bt_threadpool_run(fw->pool, attn_task, &a, bt_attention_n_tasks(&a));

    mm_out wo = {&l->wo, l->bo, fw->x, E};
    if (jobs_need_q8(1, &wo))
        prepare_rows(fw, fw->att, n, nd, Q);
    run_mm(fw, MM_RESIDUAL, n, nd, fw->att, 1, &wo);

    mm_out gu[2] = {{&l->w_gate, NULL, fw->gate, F}, {&l->w_up, NULL, fw->up, F}};
    set_prep(fw, jobs_need_q8(2, gu) ? fw->xn : NULL, E, nd);
    run_rows(fw, row_ffn_norm, n);
    run_mm(fw, MM_SWIGLU, n, nd, fw->xn, 2, gu);

    mm_out down = {&l->w_down, NULL, fw->x, E};
    if (jobs_need_q8(1, &down))
        prepare_rows(fw, fw->gate, n, nd, F);
    run_mm(fw, MM_RESIDUAL, n, nd, fw->gate, 1, &down);
}

/* Internal order: decode rows, then prefill rows (each in batch order) when prefill rows
 * take sgemm; the batch order otherwise. */
static void order_rows(bt_forward *fw, int n, const int32_t *seq, const int32_t *pos,
                       const uint8_t *prefill) {
    int k = 0;
    if (fw->sgemm && prefill) {
        for (int r = 0; r < n; r++)
            if (!prefill[r])
                fw->perm[k++] = r;
        fw->n_dec = k;
        for (int r = 0; r < n; r++)
            if (prefill[r])
                fw->perm[k++] = r;
    } else {
        for (int r = 0; r < n; r++)
            fw->perm[r] = r;
        fw->n_dec = n;
    }
    for (int i = 0; i < n; i++) {
        fw->inv[fw->perm[i]] = i;
        fw->iseq[i] = seq[fw->perm[i]];
        fw->ipos[i] = pos[fw->perm[i]];
    }
    fw->seq = fw->iseq;
    fw->pos = fw->ipos;
}

/* Logits of the wanted rows: head rows ordered decode first (two contiguous classes), then
 * the logits rows permuted in place back to batch order. */
static void run_head(bt_forward *fw, const int32_t *out_rows, int n_out, float *logits) {
    const bt_hparams *hp = fw->hp;
    const bt_weights *w = fw->w;
    int E = hp->n_embd, V = hp->n_vocab, j = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int d = 0; d < n_out; d++) {
            int dec = fw->inv[out_rows[d]] < fw->n_dec;
            if (dec == (pass == 0))
                fw->head_src[d] = j++;
        }
    int n_dec = 0;
    for (int d = 0; d < n_out; d++) {
        int i = fw->head_src[d];
        int r = fw->inv[out_rows[d]];
        n_dec += r < fw->n_dec;
        /* Final norm of the wanted rows only (llama.cpp inp_out_ids). */
        rmsnorm(fw->xn + (size_t)i * E, fw->x + (size_t)r * E, w->output_norm, E, hp->rms_eps);
    }
    mm_out head = {&w->output, NULL, logits, V};
    if (jobs_need_q8(1, &head))
        prepare_rows(fw, fw->xn, n_out, n_dec, E);
    run_mm(fw, MM_PLAIN, n_out, n_dec, fw->xn, 1, &head);
    /* Row head_src[d] of logits belongs at d: follow the cycles with one spare row. */
    memset(fw->head_done, 0, (size_t)n_out);
    for (int s = 0; s < n_out; s++) {
        if (fw->head_done[s])
            continue;
        if (fw->head_src[s] == s) {
            fw->head_done[s] = 1;
            continue;
        }
        memcpy(fw->row_tmp, logits + (size_t)s * V, sizeof(float) * (size_t)V);
        int d = s;
        while (fw->head_src[d] != s) {
            memcpy(logits + (size_t)d * V, logits + (size_t)fw->head_src[d] * V,
                   sizeof(float) * (size_t)V);
            fw->head_done[d] = 1;
            d = fw->head_src[d];
        }
        memcpy(logits + (size_t)d * V, fw->row_tmp, sizeof(float) * (size_t)V);
        fw->head_done[d] = 1;
    }
}

void bt_forward_run(bt_forward *fw, int n_rows, const int32_t *seq, const int32_t *pos,
                    const uint8_t *prefill, const int32_t *tokens, const float *act_in,
                    float *act_out, const int32_t *out_rows, int n_out, float *logits) {
    const bt_hparams *hp = fw->hp;
    const bt_weights *w = fw->w;
    int E = hp->n_embd;
    assert(n_rows >= 1 && n_rows <= fw->max_rows);
    fw->n = n_rows;
    order_rows(fw, n_rows, seq, pos, prefill);

    for (int i = 0; i < n_rows; i++) {
        int r = fw->perm[i];
        if (act_in) {
            memcpy(fw->x + (size_t)i * E, act_in + (size_t)r * E, sizeof(float) * (size_t)E);
        } else {
            assert(w->has_embd);
            const bt_matrix *te = &w->token_embd;
            bt_dequant_rows(te->type, te->data, te->row_bytes, te->n_cols, tokens[r], tokens[r] + 1,
                            fw->x + (size_t)i * E);
        }
    }
    run_rows(fw, row_rope_cache, n_rows);
    for (int li = 0; li < w->layer_end - w->layer_begin; li++)
        layer_forward(fw, li);

    if (act_out)
        for (int i = 0; i < n_rows; i++)
            memcpy(act_out + (size_t)fw->perm[i] * E, fw->x + (size_t)i * E,
                   sizeof(float) * (size_t)E);
    if (w->has_head && n_out > 0)
        run_head(fw, out_rows, n_out, logits);
}
