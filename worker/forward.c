/*
 * forward.c - one pass of a stage's layers over a batch of rows.
 *
 * Parallel sections of a layer (each one bt_threadpool_run):
 *   attn_norm (rows) -> q,k,v (weight-row tiles of three matrices) -> rope + KV write (rows)
 *   -> attention ((row, head)) -> wo + residual (tiles) -> ffn_norm (rows)
 *   -> gate,up + SwiGLU (tiles of both) -> down + residual (tiles).
 * Row sections with a single task run inline on the calling thread.
 */
#include "forward.h"

#include <assert.h>
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <strings.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "kernels/kernels.h"
#include "log.h"

#define BLAS_TILE_ROWS 128 /* weight rows per sgemm tile */

struct bt_forward {
    const bt_hparams *hp;
    const bt_weights *w;
    bt_kv_cache *kv;
    bt_threadpool *pool;
    int n_threads;
    int max_rows;
    int max_cols;       /* max(n_embd, q_dim, n_ff) */
    int blas_min_rows;

    /* Run state, [max_rows][...] each. */
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
    float *deq;         /* [n_threads][BLAS_TILE_ROWS * max_cols] dequantized weight tiles */

    /* Current pass (valid during bt_forward_run). */
    int n;
    const int32_t *seq, *pos;
    int layer;          /* stage-local */
};

/* OpenBLAS (DYNAMIC_ARCH) picks its kernels from CPUID at load time and falls back to an
 * SSE3 "Prescott" core on CPUs it does not know (e.g. some VMs). Those kernels are slower than
 * our quantized ones, so sgemm is then used only when asked for explicitly. */
static bool blas_core_is_generic(void)
{
    static const char *generic[] = {"prescott", "core2", "penryn", "dunnington", "nehalem",
                                    "atom", "katmai", "coppermine", "northwood", "banias"};
    const char *core = openblas_get_corename();
    if (!core)
        return true;
    for (size_t i = 0; i < sizeof(generic) / sizeof(generic[0]); i++)
        if (strcasecmp(core, generic[i]) == 0)
            return true;
    return false;
}

static void *alloc_floats(size_t n)
{
    return aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64);
}

bt_status bt_forward_new(const bt_hparams *hp, const bt_weights *w, bt_kv_cache *kv,
                         bt_threadpool *pool, int max_rows, bt_forward **out, bt_error *err)
{
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
    fw->blas_min_rows = BT_FORWARD_BLAS_MIN_ROWS;
    if (bt_kernels_level() != BT_KERNELS_SCALAR && blas_core_is_generic()) {
        static _Atomic int warned = 0;
        fw->blas_min_rows = INT_MAX;
        if (!atomic_exchange(&warned, 1))
            BT_WARN("forward: OpenBLAS uses its generic '%s' kernels on this CPU, so batches "
                    "use the quantized kernels; set OPENBLAS_CORETYPE (e.g. SkylakeX, Haswell) "
                    "for faster prefill", openblas_get_corename());
    }
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
    fw->deq = alloc_floats((size_t)fw->n_threads * BLAS_TILE_ROWS * (size_t)fw->max_cols);
    if (!fw->x || !fw->xn || !fw->q || !fw->k || !fw->v || !fw->att || !fw->gate || !fw->up ||
        !fw->tmp || !fw->rope || !fw->xq || !fw->deq) {
        bt_forward_free(fw);
        return bt_error_set(err, BT_ERR_NOMEM, "forward: cannot allocate scratch for %d rows",
                            max_rows);
    }
    *out = fw;
    return BT_OK;
}

void bt_forward_free(bt_forward *fw)
{
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
    free(fw->deq);
    free(fw);
}

void bt_forward_set_blas_min_rows(bt_forward *fw, int n)
{
    fw->blas_min_rows = n < 1 ? 1 : n;
}

/* ---- element-wise pieces ---- */

/* y = x / sqrt(mean(x^2) + eps) * w, the sum in double as ggml does. */
static void rmsnorm(float *y, const float *x, const float *w, int n, float eps)
{
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
                       const float *freq_factors)
{
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

static void rope_apply(float *x, const float *cs, int n_heads, int D)
{
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
    int chunk;
} rows_ctx;

static void rows_task(void *p, int task, int thread)
{
    (void)thread;
    rows_ctx *c = p;
    int r1 = (task + 1) * c->chunk < c->fw->n ? (task + 1) * c->chunk : c->fw->n;
    for (int r = task * c->chunk; r < r1; r++)
        c->fn(c->fw, r);
}

static void run_rows(bt_forward *fw, row_fn fn)
{
    rows_ctx c = {fw, fn, 1};
    int n_tasks = fw->n;
    if (fw->n > 4 * fw->n_threads) {
        c.chunk = (fw->n + 4 * fw->n_threads - 1) / (4 * fw->n_threads);
        n_tasks = (fw->n + c.chunk - 1) / c.chunk;
    }
    bt_threadpool_run(fw->pool, rows_task, &c, n_tasks);
}

static bool use_blas(const bt_forward *fw, int n_tok)
{
    return n_tok >= fw->blas_min_rows;
}

static void quantize_row(bt_forward *fw, const float *x, int row, int n_cols)
{
    bt_quantize_q8(x, fw->xq + (size_t)row * (size_t)(n_cols / 32), n_cols);
}

static void row_attn_norm(bt_forward *fw, int r)
{
    const bt_layer_weights *l = &fw->w->layers[fw->layer];
    int E = fw->hp->n_embd;
    rmsnorm(fw->xn + (size_t)r * E, fw->x + (size_t)r * E, l->attn_norm, E, fw->hp->rms_eps);
    if (!use_blas(fw, fw->n))
        quantize_row(fw, fw->xn + (size_t)r * E, r, E);
}

static void row_ffn_norm(bt_forward *fw, int r)
{
    const bt_layer_weights *l = &fw->w->layers[fw->layer];
    int E = fw->hp->n_embd;
    rmsnorm(fw->xn + (size_t)r * E, fw->x + (size_t)r * E, l->ffn_norm, E, fw->hp->rms_eps);
    if (!use_blas(fw, fw->n))
        quantize_row(fw, fw->xn + (size_t)r * E, r, E);
}

static void row_rope_cache(bt_forward *fw, int r)
{
    const bt_hparams *hp = fw->hp;
    rope_cache(fw->rope + (size_t)r * hp->head_dim, fw->pos[r], hp->head_dim, hp->rope_base,
               hp->rope_freq_scale, fw->w->rope_freqs);
}

/* Rope on q and k, then K and V into the cache slot of (seq, pos). */
static void row_rope_store(bt_forward *fw, int r)
{
    const bt_hparams *hp = fw->hp;
    int D = hp->head_dim, Q = bt_hparams_q_dim(hp), KV = bt_hparams_kv_dim(hp);
    const float *cs = fw->rope + (size_t)r * D;
    float *k = fw->k + (size_t)r * KV, *v = fw->v + (size_t)r * KV;
    rope_apply(fw->q + (size_t)r * Q, cs, hp->n_head, D);
    rope_apply(k, cs, hp->n_head_kv, D);
    int pos = fw->pos[r];
    int block = bt_kv_seq_table(fw->kv, fw->seq[r])[pos / BT_KV_BLOCK_TOKENS];
    int slot = pos % BT_KV_BLOCK_TOKENS;
    float *kb = bt_kv_block_k(fw->kv, fw->layer, block);
    float *vb = bt_kv_block_v(fw->kv, fw->layer, block);
    for (int g = 0; g < hp->n_head_kv; g++) {
        size_t off = ((size_t)g * BT_KV_BLOCK_TOKENS + (size_t)slot) * (size_t)D;
        memcpy(kb + off, k + (size_t)g * D, sizeof(float) * (size_t)D);
        memcpy(vb + off, v + (size_t)g * D, sizeof(float) * (size_t)D);
    }
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
    const float *x;    /* [n_tok][n_cols] */
    const bt_q8 *xq;   /* [n_tok][n_cols/32] (quantized path) */
    bool blas;
    int n_jobs;        /* MM_SWIGLU: jobs[0] gate, jobs[1] up, tiled together */
    mm_out jobs[3];
    int chunk;         /* weight rows per task */
    int tasks[3];      /* tasks of each job */
} mm_ctx;

/* y[t][r0..r1) = W[r0..r1) . x[t] (beta 0) or += (beta 1) for all tokens. */
static void mm_rows(const mm_ctx *c, const bt_matrix *w, float *y, int64_t ldy, float beta,
                    int64_t r0, int64_t r1, int thread)
{
    int64_t K = w->n_cols;
    if (c->blas) {
        const float *b;
        if (w->type == BT_TYPE_F32) {
            b = (const float *)((const char *)w->data + (size_t)r0 * w->row_bytes);
        } else {
            float *deq = c->fw->deq + (size_t)thread * BLAS_TILE_ROWS * (size_t)c->fw->max_cols;
            bt_dequant_rows(w->type, w->data, w->row_bytes, K, r0, r1, deq);
            b = deq;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, c->n_tok, (int)(r1 - r0), (int)K,
                    1.0f, c->x, (int)K, b, (int)K, beta, y + r0, (int)ldy);
    } else {
        assert(beta == 0.0f);
        bt_matmul(w->type, w->data, w->row_bytes, K, c->x, c->xq, c->n_tok, y, ldy, r0, r1);
    }
}

static void add_bias(float *y, int64_t ldy, int n_tok, const float *bias, int64_t r0, int64_t r1)
{
    for (int t = 0; t < n_tok; t++)
        for (int64_t r = r0; r < r1; r++)
            y[t * ldy + r] += bias[r];
}

static void mm_task(void *p, int task, int thread)
{
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
        mm_rows(c, o->w, o->y, o->ldy, 0.0f, r0, r1, thread);
        if (o->bias)
            add_bias(o->y, o->ldy, n, o->bias, r0, r1);
        break;
    case MM_RESIDUAL:
        /* o->y is the residual stream: += W x (+ bias). */
        if (c->blas && !o->bias) {
            mm_rows(c, o->w, o->y, o->ldy, 1.0f, r0, r1, thread);
        } else {
            float *tmp = c->fw->tmp;
            mm_rows(c, o->w, tmp, o->ldy, 0.0f, r0, r1, thread);
            for (int t = 0; t < n; t++)
                for (int64_t r = r0; r < r1; r++)
                    o->y[t * o->ldy + r] += tmp[t * o->ldy + r] + (o->bias ? o->bias[r] : 0.0f);
        }
        break;
    case MM_SWIGLU: {
        const mm_out *g = &c->jobs[0], *u = &c->jobs[1];
        mm_rows(c, g->w, g->y, g->ldy, 0.0f, r0, r1, thread);
        mm_rows(c, u->w, u->y, u->ldy, 0.0f, r0, r1, thread);
        for (int t = 0; t < n; t++) {
            float *gy = g->y + t * g->ldy, *uy = u->y + t * u->ldy;
            for (int64_t r = r0; r < r1; r++)
                gy[r] = gy[r] / (1.0f + expf(-gy[r])) * uy[r];
        }
        break;
    }
    }
}

static void run_mm(bt_forward *fw, mm_mode mode, int n_tok, const float *x, int n_jobs,
                   const mm_out *jobs)
{
    mm_ctx c;
    memset(&c, 0, sizeof(c));
    c.fw = fw;
    c.mode = mode;
    c.n_tok = n_tok;
    c.x = x;
    c.xq = fw->xq;
    c.blas = use_blas(fw, n_tok);
    c.n_jobs = mode == MM_SWIGLU ? 1 : n_jobs; /* gate and up share the tiles */
    memcpy(c.jobs, jobs, sizeof(mm_out) * (size_t)n_jobs);
    int64_t total = 0;
    for (int j = 0; j < c.n_jobs; j++)
        total += jobs[j].w->n_rows;
    if (c.blas) {
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

static void attn_task(void *p, int task, int thread)
{
    (void)thread;
    bt_attention_task(p, task);
}

static void quantize_rows(bt_forward *fw, const float *x, int n, int n_cols)
{
    for (int r = 0; r < n; r++)
        quantize_row(fw, x + (size_t)r * n_cols, r, n_cols);
}

static void layer_forward(bt_forward *fw, int li)
{
    const bt_hparams *hp = fw->hp;
    const bt_layer_weights *l = &fw->w->layers[li];
    int n = fw->n, E = hp->n_embd, Q = bt_hparams_q_dim(hp), KV = bt_hparams_kv_dim(hp);
    int F = hp->n_ff;
    fw->layer = li;

    run_rows(fw, row_attn_norm);
    mm_out qkv[3] = {{&l->wq, l->bq, fw->q, Q}, {&l->wk, l->bk, fw->k, KV},
                     {&l->wv, l->bv, fw->v, KV}};
    run_mm(fw, MM_PLAIN, n, fw->xn, 3, qkv);
    run_rows(fw, row_rope_store);

    bt_attn_args a = {fw->kv, li, n, fw->seq, fw->pos, fw->q, fw->att,
                      hp->n_head, hp->n_head_kv, hp->head_dim};
    bt_threadpool_run(fw->pool, attn_task, &a, bt_attention_n_tasks(&a));

    if (!use_blas(fw, n))
        quantize_rows(fw, fw->att, n, Q);
    mm_out wo = {&l->wo, l->bo, fw->x, E};
    run_mm(fw, MM_RESIDUAL, n, fw->att, 1, &wo);

    run_rows(fw, row_ffn_norm);
    mm_out gu[2] = {{&l->w_gate, NULL, fw->gate, F}, {&l->w_up, NULL, fw->up, F}};
    run_mm(fw, MM_SWIGLU, n, fw->xn, 2, gu);

    if (!use_blas(fw, n))
        quantize_rows(fw, fw->gate, n, F);
    mm_out down = {&l->w_down, NULL, fw->x, E};
    run_mm(fw, MM_RESIDUAL, n, fw->gate, 1, &down);
}

void bt_forward_run(bt_forward *fw, int n_rows, const int32_t *seq, const int32_t *pos,
                    const int32_t *tokens, const float *act_in, float *act_out,
                    const int32_t *out_rows, int n_out, float *logits)
{
    const bt_hparams *hp = fw->hp;
    const bt_weights *w = fw->w;
    int E = hp->n_embd;
    assert(n_rows >= 1 && n_rows <= fw->max_rows);
    fw->n = n_rows;
    fw->seq = seq;
    fw->pos = pos;

    if (act_in) {
        memcpy(fw->x, act_in, sizeof(float) * (size_t)n_rows * E);
    } else {
        assert(w->has_embd);
        const bt_matrix *te = &w->token_embd;
        for (int r = 0; r < n_rows; r++)
            bt_dequant_rows(te->type, te->data, te->row_bytes, te->n_cols, tokens[r],
                            tokens[r] + 1, fw->x + (size_t)r * E);
    }
    run_rows(fw, row_rope_cache);
    for (int li = 0; li < w->layer_end - w->layer_begin; li++)
        layer_forward(fw, li);

    if (act_out)
        memcpy(act_out, fw->x, sizeof(float) * (size_t)n_rows * E);
    if (!w->has_head || n_out == 0)
        return;
    /* Final norm of the wanted rows only (llama.cpp inp_out_ids), then the head. */
    for (int i = 0; i < n_out; i++)
        rmsnorm(fw->xn + (size_t)i * E, fw->x + (size_t)out_rows[i] * E, w->output_norm, E,
                hp->rms_eps);
    if (!use_blas(fw, n_out))
        quantize_rows(fw, fw->xn, n_out, E);
    mm_out head = {&w->output, NULL, logits, hp->n_vocab};
    run_mm(fw, MM_PLAIN, n_out, fw->xn, 1, &head);
}
