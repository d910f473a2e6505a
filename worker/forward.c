/*
 * forward.c - one pass of a stage's layers over a batch of rows.
 *
 * Parallel sections of a layer (each one bt_threadpool_run):
 *   attn_norm (rows) -> q,k,v (weight-row tiles of three matrices) -> rope + KV write (rows)
 *   -> attention ((row, head)) -> wo + residual (tiles) -> ffn_norm (rows)
 *   -> gate,up + SwiGLU (tiles of both) -> down + residual (tiles).
 * Gemma 3 (hparams fields, docs/architecture.md): embeddings scaled, GeGLU for SwiGLU, a
 * sliding window and its own rope cache on local layers, and with post norms each residual
 * product goes to tmp whole, then a row section norms it and adds it (row_post_norm).
 * Row sections with a single task run inline on the calling thread. Every matrix section
 * runs all rows through bt_matmul on q8 activations (see forward.h); the q8 data of a
 * section's input is made by the row section before it (row_prep).
 * Lanes (use_lanes): a decode step of many sequences runs each layer as one section instead,
 * each thread taking its share of the rows through all of the steps above, every weight row.
 * The steps are written once (layer_forward over a `lane`) for both ways.
 */
#include "forward.h"

#include <assert.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "kernels/kernels.h"
#include "llamacpp.h"
#include "log.h"

struct bt_forward {
    const bt_hparams *hp;
    const bt_weights *w;
    bt_kv_cache *kv;
    bt_threadpool *pool;
    int n_threads;
    int max_rows;
    int max_cols; /* max(n_embd, q_dim, n_ff) */
    bt_numerics numerics;
    float *lc_scratch;    /* BT_NUMERICS_LLAMACPP: [n_threads][lc_scratch_floats] for attention */
    float *attn_partials; /* chunk partials of up to BT_ATTN_SPLIT_MAX_ROWS rows (attention.h) */
    size_t lc_scratch_floats;

    /* Run state, [max_rows][...] each, rows in batch order. */
    float *x;    /* [n][n_embd] residual stream */
    float *xn;   /* [n][n_embd] normed input of a matmul */
    float *q;    /* [n][q_dim] */
    float *k;    /* [n][kv_dim] */
    float *v;    /* [n][kv_dim] */
    float *att;  /* [n][q_dim] attention output */
    float *gate; /* [n][n_ff] gate, then act(gate) * up (SiLU or GELU) */
    float *up;   /* [n][n_ff] */
    float *tmp;  /* [n][n_embd] quantized-path product before the residual add */
    float *rope; /* [n][head_dim] cos, sin pairs */
    bt_q8 *xq;   /* [n][max_cols/32] quantized activations */
    uint8_t *xu; /* [n][max_cols] xq's quants + 128, where a prompt tile reads them */

    /* [n][head_dim] the cos, sin pairs at rope_base_swa for the local layers; only when
     * hp->sliding_window (Gemma 3), else NULL. */
    float *rope_swa;

    /* Current pass (valid during bt_forward_run). */
    int n;                    /* rows */
    const int32_t *seq, *pos; /* [n], borrowed from the caller */
    int layer;                /* stage-local */
    bool lanes_logged;        /* the first pass run as lanes was logged (debug) */
};

/* What a row step quantizes for the matrix section after it (row_prep): row r of x, cols
 * values, into fw->xq, and into fw->xu too when xu. x NULL: nothing. */
typedef struct {
    const float *x;
    int cols;
    bool xu;
} q8_prep;

/*
 * How a layer's steps run (see the top of this file). pooled: the whole batch, each step a
 * pool section (row steps split by rows, matrix steps by weight rows). Else one thread's own
 * rows [r0, r1) through every step, every weight row, no section inside (use_lanes).
 */
typedef struct {
    bt_forward *fw;
    int r0, r1;
    bool pooled;
    q8_prep prep;        /* set by set_prep for the row step before a matrix step */
    const float *post_w; /* [n_embd] the post norm row_post_norm applies */
} lane;

/* GELU as ggml evaluates it (GGML_GELU_FP16): the input rounded to f16 indexes a table of the
 * tanh approximation, itself rounded to f16; inputs <= -10 give 0 and >= 10 themselves. Built
 * once, read-only after (pthread_once). */
static float gelu_table[1 << 16];
static pthread_once_t gelu_once = PTHREAD_ONCE_INIT;

static void gelu_table_init(void) {
    const float a = 0.044715f, sqrt_2_over_pi = 0.79788456080286535587989211986876f;
    for (int i = 0; i < (1 << 16); i++) {
        float x = bt_half_to_f32((bt_half)i);
        float y = 0.5f * x * (1.0f + tanhf(sqrt_2_over_pi * x * (1.0f + a * x * x)));
        gelu_table[i] = bt_half_to_f32(bt_f32_to_half(y));
    }
}

/* g[i] = gelu(g[i]) * u[i] for i in [0, n). The table index is the input rounded to f16,
 * converted a run at a time with the cache's row conversion (F16C where the CPU has it; the
 * same bits as bt_f32_to_half). */
static void geglu(float *g, const float *u, int64_t n) {
    bt_half h[256];
    for (int64_t i0 = 0; i0 < n; i0 += 256) {
        int m = n - i0 < 256 ? (int)(n - i0) : 256;
        bt_kv_f32_to_f16(g + i0, h, m);
        for (int k = 0; k < m; k++) {
            float x = g[i0 + k];
            if (x <= -10.0f)
                g[i0 + k] = 0.0f;
            else if (x >= 10.0f)
                g[i0 + k] = x * u[i0 + k];
            else
                g[i0 + k] = gelu_table[h[k]] * u[i0 + k];
        }
    }
}

static void *alloc_floats(size_t n) {
    return aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64);
}

bt_status bt_forward_new(const bt_hparams *hp, const bt_weights *w, bt_kv_cache *kv,
                         bt_threadpool *pool, int max_rows, bt_forward **out, bt_error *err) {
    *out = NULL;
    if (max_rows < 1)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "forward: max_rows %d < 1", max_rows);
    bt_kernels_init();
    bt_forward *fw = calloc(1, sizeof(*fw));
    if (!fw)
        return bt_error_set(err, BT_ERR_NOMEM, "forward: out of memory");
    fw->hp = hp;
    fw->w = w;
    fw->kv = kv;
    fw->pool = pool;
    fw->n_threads = bt_threadpool_n_threads(pool);
    fw->max_rows = max_rows;
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
    if (hp->sliding_window > 0)
        fw->rope_swa = alloc_floats(R * hp->head_dim);
    if (hp->ffn_act == BT_FFN_GELU)
        pthread_once(&gelu_once, gelu_table_init);
    fw->xq = aligned_alloc(64, ((R * (size_t)(fw->max_cols / 32) * sizeof(bt_q8) + 63) / 64) * 64);
    fw->xu = aligned_alloc(64, (R * (size_t)fw->max_cols + 63) / 64 * 64);
    fw->attn_partials = alloc_floats(bt_attention_partials_floats(
        BT_ATTN_SPLIT_MAX_ROWS, bt_kv_cache_params(kv)->max_seq_tokens, hp->n_head, hp->head_dim));
    if (!fw->x || !fw->xn || !fw->q || !fw->k || !fw->v || !fw->att || !fw->gate || !fw->up ||
        !fw->tmp || !fw->rope || !fw->xq || !fw->xu || !fw->attn_partials ||
        (hp->sliding_window > 0 && !fw->rope_swa)) {
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
    free(fw->rope_swa);
    free(fw->xq);
    free(fw->xu);
    free(fw->lc_scratch);
    free(fw->attn_partials);
    free(fw);
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
    if (hp->arch != BT_ARCH_LLAMA)
        return bt_error_set(err, BT_ERR_UNSUPPORTED,
                            "numerics llamacpp: reproduces the llama architecture only, not %s",
                            bt_arch_name(hp->arch));
    if (!bt_lc_head_dim_ok(hp->head_dim))
        return bt_error_set(err, BT_ERR_UNSUPPORTED,
                            "numerics llamacpp: head_dim %d is not a multiple of 64 up to %d",
                            hp->head_dim, BT_LC_MAX_HEAD_DIM);
    if (kv_type != BT_TYPE_F16)
        return bt_error_set(err, BT_ERR_UNSUPPORTED,
                            "numerics llamacpp: needs an f16 KV cache (--kv-type f16), not %s",
                            bt_type_name((uint32_t)kv_type));
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
    return BT_OK;
}

bt_numerics bt_forward_numerics(const bt_forward *fw) {
    return fw->numerics;
}

/* ---- element-wise pieces ---- */

/* GCC/clang vectors (SSE2 on any x86-64): lane-wise IEEE operations, so the same bits as the
 * scalar code they stand for. */
typedef float f32x2 __attribute__((vector_size(8)));
typedef float f32x4 __attribute__((vector_size(16)));
typedef double f64x2 __attribute__((vector_size(16)));

/* sum(x^2), each square a float added in double. The llamacpp numerics add them in order, as
 * ggml does: one chain of n dependent adds. The fast numerics keep 8 partial sums (element i
 * in sum i % 8, the tail in sum 0) added in a fixed tree: the same bits on every CPU and in
 * every batch, and 3x faster. The float mean rounded from either is nearly always the same. */
static double sum_squares(const float *x, int n, bool in_order) {
    if (in_order) {
        double sum = 0.0;
        for (int i = 0; i < n; i++)
            sum += (double)(x[i] * x[i]);
        return sum;
    }
    f64x2 p[4] = {{0, 0}, {0, 0}, {0, 0}, {0, 0}}; /* sum j in lane j % 2 of p[j / 2] */
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
            f32x2 v;
            memcpy(&v, x + i + 2 * j, sizeof v);
            p[j] += __builtin_convertvector(v * v, f64x2);
        }
    double p0 = p[0][0];
    for (; i < n; i++)
        p0 += (double)(x[i] * x[i]);
    return ((p0 + p[2][0]) + (p[0][1] + p[2][1])) + ((p[1][0] + p[3][0]) + (p[1][1] + p[3][1]));
}

/* y = x / sqrt(mean(x^2) + eps) * w, with the model's eps; y may be x. */
static void rmsnorm(const bt_forward *fw, float *y, const float *x, const float *w, int n) {
    float mean = (float)(sum_squares(x, n, fw->numerics == BT_NUMERICS_LLAMACPP) / n);
    float scale = 1.0f / sqrtf(mean + fw->hp->rms_eps);
    int i = 0;
    for (; i + 4 <= n; i += 4) { /* four at a time: the loop does not vectorize as y may be x */
        f32x4 xv, wv;
        memcpy(&xv, x + i, sizeof xv);
        memcpy(&wv, w + i, sizeof wv);
        xv = (xv * scale) * wv;
        memcpy(y + i, &xv, sizeof xv);
    }
    for (; i < n; i++)
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

/* Pair j of each head turns by angle j of cs: elements (2j, 2j+1), or (j, j + D/2) when neox. */
static void rope_apply(float *x, const float *cs, int n_heads, int D, bool neox) {
    int stride = neox ? D / 2 : 1, n_pairs = D / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * D;
        for (int j = 0; j < n_pairs; j++) {
            int i0 = neox ? j : 2 * j;
            float x0 = v[i0], x1 = v[i0 + stride], c = cs[2 * j], s = cs[2 * j + 1];
            v[i0] = x0 * c - x1 * s;
            v[i0 + stride] = x0 * s + x1 * c;
        }
    }
}

/* ---- row sections ---- */

typedef void (*row_fn)(const lane *ln, int row);

typedef struct {
    const lane *ln;
    row_fn fn;
    int n;
    int chunk;
} rows_ctx;

static void rows_task(void *p, int task, int thread) {
    (void)thread;
    rows_ctx *c = p;
    int r1 = (task + 1) * c->chunk < c->n ? (task + 1) * c->chunk : c->n;
    for (int r = task * c->chunk; r < r1; r++)
        c->fn(c->ln, r);
}

/* fn(ln, r) for the lane's rows: a pooled lane's [0, n) spread over the pool. */
static void run_rows(const lane *ln, row_fn fn) {
    if (!ln->pooled) {
        for (int r = ln->r0; r < ln->r1; r++)
            fn(ln, r);
        return;
    }
    bt_forward *fw = ln->fw;
    int n = ln->r1;
    rows_ctx c = {ln, fn, n, 1};
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

/* The first q8 block of row r of cols values in fw->xq (times 32: its first byte in fw->xu).
 * A lane's rows lie contiguous from its first row's place at the widest width, so lanes in
 * different steps of a layer never meet; a pooled lane's are simply row after row. */
static size_t lane_q8_block(const lane *ln, int r, int cols) {
    return (size_t)ln->r0 * (size_t)(ln->fw->max_cols / 32) +
           (size_t)(r - ln->r0) * (size_t)(cols / 32);
}

/* Quantizes row r of the lane's prep.x to xq (and xu). */
static void row_prep(const lane *ln, int r) {
    bt_forward *fw = ln->fw;
    int C = ln->prep.cols;
    size_t b = lane_q8_block(ln, r, C);
    bt_quantize_q8(ln->prep.x + (size_t)r * C, fw->xq + b, C);
    if (ln->prep.xu)
        bt_q8_plus_128(fw->xq + b, fw->xu + 32 * b, C / 32);
}

static void row_attn_norm(const lane *ln, int r) {
    bt_forward *fw = ln->fw;
    const bt_layer_weights *l = &fw->w->layers[fw->layer];
    int E = fw->hp->n_embd;
    rmsnorm(fw, fw->xn + (size_t)r * E, fw->x + (size_t)r * E, l->attn_norm, E);
    if (ln->prep.x)
        row_prep(ln, r);
}

static void row_ffn_norm(const lane *ln, int r) {
    bt_forward *fw = ln->fw;
    const bt_layer_weights *l = &fw->w->layers[fw->layer];
    int E = fw->hp->n_embd;
    rmsnorm(fw, fw->xn + (size_t)r * E, fw->x + (size_t)r * E, l->ffn_norm, E);
    if (ln->prep.x)
        row_prep(ln, r);
}

/* Post norms (hp->post_norms): x += rmsnorm(tmp) * w, w the layer's post-attention or
 * post-FFN norm in the lane's post_w. */
static void row_post_norm(const lane *ln, int r) {
    bt_forward *fw = ln->fw;
    int E = fw->hp->n_embd;
    float *t = fw->tmp + (size_t)r * E, *x = fw->x + (size_t)r * E;
    rmsnorm(fw, t, t, ln->post_w, E);
    for (int i = 0; i < E; i++)
        x[i] = t[i] + x[i];
}

static void row_rope_cache(const lane *ln, int r) {
    bt_forward *fw = ln->fw;
    const bt_hparams *hp = fw->hp;
    rope_cache(fw->rope + (size_t)r * hp->head_dim, fw->pos[r], hp->head_dim, hp->rope_base,
               hp->rope_freq_scale, fw->w->rope_freqs);
    /* Local layers: their own base and no scaling (llama.cpp's rope_freq_*_train_swa). */
    if (fw->rope_swa)
        rope_cache(fw->rope_swa + (size_t)r * hp->head_dim, fw->pos[r], hp->head_dim,
                   hp->rope_base_swa, 1.0f, fw->w->rope_freqs);
}

/* Whether the current layer attends over a sliding window. */
static bool layer_is_swa(const bt_forward *fw) {
    return bt_hparams_is_swa(fw->hp, fw->w->layer_begin + fw->layer);
}

/* RMS norm of each of n_heads heads of x in place (per-head Q/K norms). */
static void head_norm(const bt_forward *fw, float *x, const float *w, int n_heads, int D) {
    for (int h = 0; h < n_heads; h++)
        rmsnorm(fw, x + (size_t)h * D, x + (size_t)h * D, w, D);
}

/* Q/K norms where the model has them, rope on q and k, then K and V into the cache slot of
 * (seq, pos). */
static void row_rope_store(const lane *ln, int r) {
    bt_forward *fw = ln->fw;
    const bt_hparams *hp = fw->hp;
    const bt_layer_weights *l = &fw->w->layers[fw->layer];
    int D = hp->head_dim, Q = bt_hparams_q_dim(hp), KV = bt_hparams_kv_dim(hp);
    const float *cs = (layer_is_swa(fw) ? fw->rope_swa : fw->rope) + (size_t)r * D;
    float *k = fw->k + (size_t)r * KV, *v = fw->v + (size_t)r * KV;
    if (l->q_norm)
        head_norm(fw, fw->q + (size_t)r * Q, l->q_norm, hp->n_head, D);
    if (l->k_norm)
        head_norm(fw, k, l->k_norm, hp->n_head_kv, D);
    if (fw->numerics == BT_NUMERICS_LLAMACPP) {
        bt_lc_rope(fw->q + (size_t)r * Q, cs, hp->n_head, D);
        bt_lc_rope(k, cs, hp->n_head_kv, D);
    } else {
        rope_apply(fw->q + (size_t)r * Q, cs, hp->n_head, D, hp->rope_neox);
        rope_apply(k, cs, hp->n_head_kv, D, hp->rope_neox);
    }
    int pos = fw->pos[r];
    int block = bt_kv_layer_table(fw->kv, fw->layer, fw->seq[r])[pos / BT_KV_BLOCK_TOKENS];
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
    int n_tok;
    const float *x;    /* [n_tok][n_cols] (float weights) */
    const bt_q8 *xq;   /* [n_tok][n_cols/32] (quantized weights) */
    const uint8_t *xu; /* xq + 128 (bt_matmul's xu) or NULL */
    float *tmp;        /* [n_tok][ldy] MM_RESIDUAL's product before the add */
    int n_jobs;        /* MM_SWIGLU: jobs[0] gate, jobs[1] up, tiled together */
    mm_out jobs[3];
    int chunk;    /* weight rows per task */
    int tasks[3]; /* tasks of each job */
} mm_ctx;

/* y[t][r0..r1) = W[r0..r1) . x[t] for every row t. */
static void mm_rows(const mm_ctx *c, const bt_matrix *w, float *y, int64_t ldy, int64_t r0,
                    int64_t r1) {
    int64_t K = w->n_cols;
    if (c->fw->numerics == BT_NUMERICS_LLAMACPP)
        bt_lc_matmul(w->type, w->data, w->row_bytes, K, c->xq, c->n_tok, y, ldy, r0, r1);
    else if (w->packed)
        bt_matmul_packed(w->type, w->packed, w->row_bytes, K, c->xq, c->xu, c->n_tok, y, ldy, r0,
                         r1);
    else
        bt_matmul(w->type, w->data, w->row_bytes, K, c->x, c->xq, c->xu, c->n_tok, y, ldy, r0, r1);
}

/* y[t][r] += tmp[t][r] + bias[r] (0 without), rows [t0, t1), columns [r0, r1). Four columns
 * per step in one statement group, which -O2 packs into one SSE operation each (its loop
 * vectorizer declines loops that need an epilogue). */
static void add_rows(float *restrict y, const float *restrict tmp, int64_t ldy, int t0, int t1,
                     const float *restrict bias, int64_t r0, int64_t r1) {
    for (int t = t0; t < t1; t++) {
        float *restrict yt = y + t * ldy;
        const float *restrict tt = tmp + t * ldy;
        int64_t r = r0;
        if (bias)
            for (; r + 4 <= r1; r += 4) {
                yt[r] += tt[r] + bias[r];
                yt[r + 1] += tt[r + 1] + bias[r + 1];
                yt[r + 2] += tt[r + 2] + bias[r + 2];
                yt[r + 3] += tt[r + 3] + bias[r + 3];
            }
        else
            for (; r + 4 <= r1; r += 4) {
                yt[r] += tt[r] + 0.0f;
                yt[r + 1] += tt[r + 1] + 0.0f;
                yt[r + 2] += tt[r + 2] + 0.0f;
                yt[r + 3] += tt[r + 3] + 0.0f;
            }
        for (; r < r1; r++)
            yt[r] += tt[r] + (bias ? bias[r] : 0.0f);
    }
}

static void mm_task(void *p, int task, int thread) {
    (void)thread;
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
        mm_rows(c, o->w, o->y, o->ldy, r0, r1);
        if (o->bias)
            for (int t = 0; t < n; t++)
                for (int64_t r = r0; r < r1; r++)
                    o->y[t * o->ldy + r] += o->bias[r];
        break;
    case MM_RESIDUAL: {
        /* o->y is the residual stream: += W x (+ bias). */
        mm_rows(c, o->w, c->tmp, o->ldy, r0, r1);
        add_rows(o->y, c->tmp, o->ldy, 0, n, o->bias, r0, r1);
        break;
    }
    case MM_SWIGLU: {
        const mm_out *g = &c->jobs[0], *u = &c->jobs[1];
        mm_rows(c, g->w, g->y, g->ldy, r0, r1);
        mm_rows(c, u->w, u->y, u->ldy, r0, r1);
        for (int t = 0; t < n; t++) {
            float *gy = g->y + t * g->ldy, *uy = u->y + t * u->ldy;
            /* bt_swiglu is llama.cpp's SwiGLU in both numerics (llamacpp.h) */
            if (c->fw->hp->ffn_act == BT_FFN_GELU) {
                geglu(gy + r0, uy + r0, r1 - r0);
                continue;
            }
            bt_swiglu(gy + r0, uy + r0, r1 - r0);
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

/* What the row step before a matrix step prepares for its jobs: the q8 rows of x if a job's
 * weights are quantized (else nothing: prep.x NULL), and their xu if a job's prompt tile reads
 * it at the lane's row count (bt_matmul_wants_xu), made once there instead of in every task. */
static void set_prep(lane *ln, const float *x, int cols, int n_jobs, const mm_out *jobs) {
    ln->prep.x = jobs_need_q8(n_jobs, jobs) ? x : NULL;
    ln->prep.cols = cols;
    ln->prep.xu = false;
    for (int j = 0; j < n_jobs && ln->fw->numerics != BT_NUMERICS_LLAMACPP; j++)
        ln->prep.xu |= bt_matmul_wants_xu(jobs[j].w->type, ln->r1 - ln->r0);
}

/* set_prep, then its row step alone. */
static void prepare_rows(lane *ln, const float *x, int cols, int n_jobs, const mm_out *jobs) {
    set_prep(ln, x, cols, n_jobs, jobs);
    if (ln->prep.x)
        run_rows(ln, row_prep);
}

/* One matrix step over the lane's rows of x (q8 data in fw->xq made by the row step set_prep
 * prepared, for these jobs): a pooled lane's split by weight rows over the pool, else every
 * weight row on this thread. */
static void run_mm(const lane *ln, mm_mode mode, const float *x, int n_jobs, const mm_out *jobs) {
    bt_forward *fw = ln->fw;
    int r0 = ln->r0, cols = ln->prep.cols;
    mm_ctx c;
    memset(&c, 0, sizeof(c));
    c.fw = fw;
    c.mode = mode;
    c.n_tok = ln->r1 - r0;
    c.x = x + (size_t)r0 * (size_t)jobs[0].w->n_cols;
    size_t b = lane_q8_block(ln, r0, cols);
    c.xq = fw->xq + b;
    c.xu = ln->prep.x && ln->prep.xu ? fw->xu + 32 * b : NULL;
    c.tmp = fw->tmp + (size_t)r0 * (size_t)jobs[0].ldy;
    c.n_jobs = mode == MM_SWIGLU ? 1 : n_jobs; /* gate and up share the tiles */
    memcpy(c.jobs, jobs, sizeof(mm_out) * (size_t)n_jobs);
    int64_t total = 0, widest = 0;
    for (int j = 0; j < n_jobs; j++) {
        c.jobs[j].y += (size_t)r0 * (size_t)jobs[j].ldy;
        if (j < c.n_jobs)
            total += jobs[j].w->n_rows;
        widest = jobs[j].w->n_rows > widest ? jobs[j].w->n_rows : widest;
    }
    c.chunk = (int)(ln->pooled ? bt_forward_rows_per_task(total, fw->n_threads) : widest);
    int n_tasks = 0;
    for (int j = 0; j < c.n_jobs; j++) {
        c.tasks[j] = (int)((jobs[j].w->n_rows + c.chunk - 1) / c.chunk);
        n_tasks += c.tasks[j];
    }
    if (ln->pooled) {
        bt_threadpool_run(fw->pool, mm_task, &c, n_tasks);
        return;
    }
    for (int i = 0; i < n_tasks; i++)
        mm_task(&c, i, 0);
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

/* Whether attention runs a task per chunk (attention.h): a pooled lane of a few rows, one of
 * them longer than a chunk, and more than one thread. Either way the bits are the same. */
static bool attn_split(const lane *ln) {
    const bt_forward *fw = ln->fw;
    if (!ln->pooled || fw->n > BT_ATTN_SPLIT_MAX_ROWS || fw->n_threads < 2)
        return false;
    for (int r = 0; r < fw->n; r++)
        if (bt_attention_n_chunks(fw->pos[r]) > 1)
            return true;
    return false;
}

/* Query heads per attention task: the whole GQA group (each K/V row converted once), split
 * only in a pooled lane, when that leaves fewer than two tasks per thread and the rows are not
 * chunked. */
static int attn_heads_per_task(const lane *ln, bool split) {
    const bt_forward *fw = ln->fw;
    const bt_hparams *hp = fw->hp;
    int group = hp->n_head / hp->n_head_kv;
    int hpt = group < BT_ATTN_MAX_TASK_HEADS ? group : BT_ATTN_MAX_TASK_HEADS;
    while (ln->pooled && !split && hpt > 1 &&
           fw->n * hp->n_head_kv * ((group + hpt - 1) / hpt) < 2 * fw->n_threads)
        hpt = (hpt + 1) / 2;
    return hpt;
}

/* Rows per attention task of a pooled lane without the chunk split: consecutive rows (a
 * prompt's) share each chunk's K/V while it is in cache; as many as keep at least 4 tasks per
 * thread. A thread's own lane: 1 (its rows are each of another sequence). */
static int attn_rows_per_task(const lane *ln, bool split, int heads_per_task) {
    const bt_forward *fw = ln->fw;
    const bt_hparams *hp = fw->hp;
    if (split || !ln->pooled)
        return 1;
    int group = hp->n_head / hp->n_head_kv;
    int per_rows = hp->n_head_kv * ((group + heads_per_task - 1) / heads_per_task);
    int r = 1;
    while (2 * r <= BT_ATTN_MAX_TASK_ROWS &&
           (fw->n + 2 * r - 1) / (2 * r) * per_rows >= 4 * fw->n_threads)
        r *= 2;
    return r;
}

/* Attention of the lane's rows into fw->att. A pooled lane's tasks go over the pool; a
 * thread's own rows (each of another sequence, use_lanes) take whole GQA groups, in order. */
static void run_attention(const lane *ln) {
    bt_forward *fw = ln->fw;
    const bt_hparams *hp = fw->hp;
    int n = ln->r1 - ln->r0, Q = bt_hparams_q_dim(hp);
    if (fw->numerics == BT_NUMERICS_LLAMACPP) {
        assert(ln->pooled);
        bt_threadpool_run(fw->pool, lc_attn_task, fw, n * hp->n_head_kv);
        return;
    }
    bool split = attn_split(ln);
    int hpt = attn_heads_per_task(ln, split);
    bt_attn_args a = {.kv = fw->kv,
                      .layer = fw->layer,
                      .n_rows = n,
                      .seq = fw->seq + ln->r0,
                      .pos = fw->pos + ln->r0,
                      .q = fw->q + (size_t)ln->r0 * (size_t)Q,
                      .out = fw->att + (size_t)ln->r0 * (size_t)Q,
                      .n_head = hp->n_head,
                      .n_head_kv = hp->n_head_kv,
                      .head_dim = hp->head_dim,
                      .heads_per_task = hpt,
                      .rows_per_task = attn_rows_per_task(ln, split, hpt),
                      .partials = split ? fw->attn_partials : NULL,
                      .scale = hp->attn_scale,
                      .window = layer_is_swa(fw) ? hp->sliding_window : 0};
    if (!ln->pooled) {
        for (int t = 0, nt = bt_attention_n_tasks(&a); t < nt; t++)
            bt_attention_task(&a, t);
        return;
    }
    if (split)
        a.kv_heads_per_task = bt_attention_split_kv_heads(&a, fw->n_threads);
    bt_threadpool_run(fw->pool, attn_task, &a, bt_attention_n_tasks(&a));
    bt_attention_merge(&a);
}

/* x += W in, or with post norms x += rmsnorm(W in) * post_w (W in made whole in fw->tmp,
 * where o->y points, before a row step norms and adds it). */
static void residual_mm(lane *ln, const float *in, const mm_out *o, const float *post_w) {
    if (!ln->fw->hp->post_norms) {
        run_mm(ln, MM_RESIDUAL, in, 1, o);
        return;
    }
    run_mm(ln, MM_PLAIN, in, 1, o);
    ln->post_w = post_w;
    run_rows(ln, row_post_norm);
}

/* Layer fw->layer over the lane's rows. */
static void layer_forward(lane *ln) {
    bt_forward *fw = ln->fw;
    const bt_hparams *hp = fw->hp;
    const bt_layer_weights *l = &fw->w->layers[fw->layer];
    int E = hp->n_embd, Q = bt_hparams_q_dim(hp);
    int KV = bt_hparams_kv_dim(hp), F = hp->n_ff;

    mm_out qkv[3] = {
        {&l->wq, l->bq, fw->q, Q}, {&l->wk, l->bk, fw->k, KV}, {&l->wv, l->bv, fw->v, KV}};
    set_prep(ln, fw->xn, E, 3, qkv);
    run_rows(ln, row_attn_norm);
    run_mm(ln, MM_PLAIN, fw->xn, 3, qkv);
    run_rows(ln, row_rope_store);
    run_attention(ln);

    mm_out wo = {&l->wo, l->bo, hp->post_norms ? fw->tmp : fw->x, E};
    prepare_rows(ln, fw->att, Q, 1, &wo);
    residual_mm(ln, fw->att, &wo, l->post_attn_norm);

    mm_out gu[2] = {{&l->w_gate, NULL, fw->gate, F}, {&l->w_up, NULL, fw->up, F}};
    set_prep(ln, fw->xn, E, 2, gu);
    run_rows(ln, row_ffn_norm);
    run_mm(ln, MM_SWIGLU, fw->xn, 2, gu);

    mm_out down = {&l->w_down, NULL, hp->post_norms ? fw->tmp : fw->x, E};
    prepare_rows(ln, fw->gate, F, 1, &down);
    residual_mm(ln, fw->gate, &down, l->post_ffn_norm);
}

/* Task t of a lanes section: thread t's share of the rows through layer fw->layer. */
static void lane_task(void *p, int task, int thread) {
    (void)thread;
    bt_forward *fw = p;
    lane ln = {.fw = fw,
               .r0 = (int)((int64_t)fw->n * task / fw->n_threads),
               .r1 = (int)((int64_t)fw->n * (task + 1) / fw->n_threads)};
    if (ln.r0 < ln.r1)
        layer_forward(&ln);
}

/* Whether the layers run as lanes: each thread takes its share of the rows through a whole
 * layer, every weight row, and the layer ends with the one section's barrier, against ten
 * sections per layer pooled. That needs:
 *   - rows that do not read each other's K/V: each of another sequence (a decode step of many
 *     streams; forks write their own blocks, bt_kv_seq_reserve copies shared ones first);
 *   - a prompt tile's worth of rows per thread (BT_PROMPT_GROUP), so that each weight
 *     block unpacked serves as many rows as pooled;
 *   - the fast numerics (the llamacpp numerics' attention differs with the batch).
 * The threads read each weight soon after each other, so the second read comes from the
 * shared cache. Same bits either way: each output is computed whole by the same kernels. */
static bool use_lanes(const bt_forward *fw) {
    if (fw->numerics != BT_NUMERICS_FAST || fw->n_threads < 2 ||
        fw->n < BT_PROMPT_GROUP * fw->n_threads)
        return false;
    for (int r = 1; r < fw->n; r++)
        for (int s = 0; s < r; s++)
            if (fw->seq[r] == fw->seq[s])
                return false;
    return true;
}

/* Logits of the wanted rows, in out_rows order: final norm of those rows only (llama.cpp's
 * inp_out_ids), then the output matrix. */
static void run_head(bt_forward *fw, const int32_t *out_rows, int n_out, float *logits) {
    const bt_hparams *hp = fw->hp;
    const bt_weights *w = fw->w;
    int E = hp->n_embd;
    for (int d = 0; d < n_out; d++)
        rmsnorm(fw, fw->xn + (size_t)d * E, fw->x + (size_t)out_rows[d] * E, w->output_norm, E);
    mm_out head = {&w->output, NULL, logits, hp->n_vocab};
    lane ln = {.fw = fw, .r0 = 0, .r1 = n_out, .pooled = true};
    prepare_rows(&ln, fw->xn, E, 1, &head);
    run_mm(&ln, MM_PLAIN, fw->xn, 1, &head);
    if (hp->logit_softcap > 0.0f) {
        float c = hp->logit_softcap;
        for (size_t i = 0; i < (size_t)n_out * (size_t)hp->n_vocab; i++)
            logits[i] = tanhf(logits[i] * (1.0f / c)) * c;
    }
}

void bt_forward_run(bt_forward *fw, int n_rows, const int32_t *seq, const int32_t *pos,
                    const int32_t *tokens, const float *act_in, float *act_out,
                    const int32_t *out_rows, int n_out, float *logits) {
    const bt_hparams *hp = fw->hp;
    const bt_weights *w = fw->w;
    int E = hp->n_embd;
    assert(n_rows >= 1 && n_rows <= fw->max_rows);
    fw->n = n_rows;
    fw->seq = seq;
    fw->pos = pos;

    if (act_in) {
        memcpy(fw->x, act_in, sizeof(float) * (size_t)E * (size_t)n_rows);
    } else {
        assert(w->has_embd);
        const bt_matrix *te = &w->token_embd;
        for (int i = 0; i < n_rows; i++)
            if (te->packed)
                bt_dequant_rows_packed(te->type, te->packed, te->row_bytes, te->n_cols, tokens[i],
                                       tokens[i] + 1, fw->x + (size_t)i * E);
            else
                bt_dequant_rows(te->type, te->data, te->row_bytes, te->n_cols, tokens[i],
                                tokens[i] + 1, fw->x + (size_t)i * E);
        if (hp->embd_scale != 1.0f) /* ggml_scale: one float product per element */
            for (size_t i = 0; i < (size_t)n_rows * (size_t)E; i++)
                fw->x[i] *= hp->embd_scale;
    }
    lane all = {.fw = fw, .r0 = 0, .r1 = n_rows, .pooled = true};
    run_rows(&all, row_rope_cache);
    bool lanes = use_lanes(fw);
    if (lanes && !fw->lanes_logged) {
        BT_DEBUG("forward: a pass of %d rows runs as %d lanes, one section per layer", n_rows,
                 fw->n_threads);
        fw->lanes_logged = true;
    }
    for (int li = 0; li < w->layer_end - w->layer_begin; li++) {
        fw->layer = li;
        if (lanes)
            bt_threadpool_run(fw->pool, lane_task, fw, fw->n_threads);
        else
            layer_forward(&all);
    }

    if (act_out)
        memcpy(act_out, fw->x, sizeof(float) * (size_t)E * (size_t)n_rows);
    if (w->has_head && n_out > 0)
        run_head(fw, out_rows, n_out, logits);
}
