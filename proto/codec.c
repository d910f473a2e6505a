/*
 * codec.c - activation codecs (see codec.h): f32, f16, bf16 and q8 raw encodings, each
 * optionally wrapped in one zstd frame.
 *
 * Raw layouts, little-endian, rows back to back:
 *   f32   n_embd x f32
 *   f16   n_embd x IEEE binary16 (bt_f32_to_half: round to nearest even)
 *   bf16  n_embd x bfloat16 (bt_f32_to_bf16: round to nearest even)
 *   q8    n_embd/32 blocks of { f32 d = amax/127; int8 q[32] = round_even(x/d) } (36 B),
 *         q in [-127, 127]; an all-zero block has d = 0
 *
 * What must hold:
 *   - encode and decode allocate nothing: scratch, the zstd compression workspace (a static
 *     ZSTD_CCtx sized at creation for every batch size up to max_rows) and the ZSTD_DCtx are
 *     made in bt_codec_new;
 *   - decode writes at most n_rows*n_embd floats, with n_rows checked against max_rows, and
 *     the expected raw size computed here, never read from the sender;
 *   - the fast paths (F16C, AVX2) give bit-identical results to the scalar conversions in
 *     common/tensor_type.c (tests/unit/test_codec.c checks it).
 */
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_initStaticCCtx, ZSTD_estimateCCtxSize_usingCParams */
#include "codec.h"

#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "cpu.h"
#include "tensor_type.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "codec.c stores f32/f16 payloads in host order, which must be little-endian"
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CODEC_X86 1
#else
#define CODEC_X86 0
#endif

#define Q8_BLOCK 32
#define Q8_BLOCK_BYTES (4 + Q8_BLOCK)
#define CODEC_MAX_N_EMBD (1 << 20)
#define CODEC_MAX_ROWS (1 << 20)
#define CODEC_MAX_BATCH_BYTES ((size_t)1 << 30) /* f32 bytes of max_rows rows */
#define CODEC_MAX_ZSTD_LEVEL 19

struct bt_codec {
    bt_codec_params p;    /* validated copy */
    size_t scratch_bytes; /* raw f16 bytes of max_rows rows: >= every non-f32 raw size */
    uint8_t *scratch;     /* [scratch_bytes] raw encoding before zstd / after unzstd */
    void *cctx_mem;       /* workspace of the static cctx; NULL when zstd_level == 0 */
    ZSTD_CCtx *cctx;      /* lives in cctx_mem; never allocates */
    ZSTD_DCtx *dctx;      /* always present: a receiver takes zstd whatever its own level */
    bool has_f16c, has_avx2;
};

/* ---- names ---------------------------------------------------------------------------- */

static const char *const kind_names[BT_CODEC_KIND_COUNT] = {"f32", "f16", "bf16", "q8"};

const char *bt_codec_kind_name(bt_codec_kind kind) {
    if ((unsigned)kind >= BT_CODEC_KIND_COUNT)
        return "unknown";
    return kind_names[kind];
}

bt_status bt_codec_kind_parse(const char *name, bt_codec_kind *out, bt_error *err) {
    if (!name)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "codec: kind name is NULL");
    for (int k = 0; k < BT_CODEC_KIND_COUNT; k++) {
        if (strcmp(name, kind_names[k]) == 0) {
            *out = (bt_codec_kind)k;
            return BT_OK;
        }
    }
    return bt_error_set(err, BT_ERR_INVALID_ARG,
                        "codec: unknown kind \"%.64s\" (expected f32, f16, bf16 or q8)", name);
}

/* ---- sizes ---------------------------------------------------------------------------- */

size_t bt_codec_raw_bytes(bt_codec_kind kind, int n_embd, int n_rows) {
    if (n_embd <= 0 || n_rows <= 0)
        return 0;
    size_t n = (size_t)n_embd * (size_t)n_rows;
    switch (kind) {
    case BT_CODEC_F32:
        return n * 4;
    case BT_CODEC_F16:
    case BT_CODEC_BF16:
        return n * 2;
    case BT_CODEC_Q8:
        if (n_embd % Q8_BLOCK != 0)
            return 0;
        return n / Q8_BLOCK * Q8_BLOCK_BYTES;
    case BT_CODEC_KIND_COUNT:
        break;
    }
    return 0;
}

size_t bt_codec_max_encoded_bytes(const bt_codec *c, int n_rows) {
    size_t raw = bt_codec_raw_bytes(c->p.kind, c->p.n_embd, n_rows);
    return c->p.zstd_level > 0 ? ZSTD_compressBound(raw) : raw;
}

/* ---- f16 ------------------------------------------------------------------------------ */

static void f16_encode_scalar(const float *x, uint8_t *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        bt_half h = bt_f32_to_half(x[i]);
        memcpy(out + 2 * i, &h, 2);
    }
}

static void f16_decode_scalar(const uint8_t *in, float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        bt_half h;
        memcpy(&h, in + 2 * i, 2);
        x[i] = bt_half_to_f32(h);
    }
}

#if CODEC_X86
/* vcvtps2ph with an explicit round-to-nearest-even immediate rounds exactly like
 * bt_f32_to_half, NaNs included (quiet bit set, top payload bits kept). */
__attribute__((target("avx,f16c"))) static void f16_encode_f16c(const float *x, uint8_t *out,
                                                                size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(void *)(out + 2 * i), h);
    }
    f16_encode_scalar(x + i, out + 2 * i, n - i);
}

/* vcvtph2ps quiets signalling NaNs, bt_half_to_f32 keeps them: chunks holding one take the
 * scalar path so both give the same bits. */
__attribute__((target("avx,f16c"))) static void f16_decode_f16c(const uint8_t *in, float *x,
                                                                size_t n) {
    const __m128i exp_q = _mm_set1_epi16(0x7E00), snan_exp = _mm_set1_epi16(0x7C00);
    const __m128i man = _mm_set1_epi16(0x03FF), zero = _mm_setzero_si128();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(in + 2 * i));
        __m128i inf_or_snan = _mm_cmpeq_epi16(_mm_and_si128(h, exp_q), snan_exp);
        __m128i man_zero = _mm_cmpeq_epi16(_mm_and_si128(h, man), zero);
        if (_mm_movemask_epi8(_mm_andnot_si128(man_zero, inf_or_snan)) != 0) {
            f16_decode_scalar(in + 2 * i, x + i, 8);
            continue;
        }
        _mm256_storeu_ps(x + i, _mm256_cvtph_ps(h));
    }
    f16_decode_scalar(in + 2 * i, x + i, n - i);
}
#endif

/* ---- bf16 ----------------------------------------------------------------------------- */

/* Same bits as bt_f32_to_bf16, branch-free so that fixed-length chunks vectorize. */
static inline uint16_t bf16_of_bits(uint32_t u) {
    uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    uint32_t quiet_nan = (u >> 16) | 0x40u;
    return (uint16_t)((u & 0x7FFFFFFFu) > 0x7F800000u ? quiet_nan : rounded);
}

static inline void bf16_encode_body(const float *x, uint8_t *out, size_t n) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        uint32_t u[32];
        uint16_t h[32];
        memcpy(u, x + i, sizeof u);
        for (int j = 0; j < 32; j++)
            h[j] = bf16_of_bits(u[j]);
        memcpy(out + 2 * i, h, sizeof h);
    }
    for (; i < n; i++) {
        uint16_t h = bt_f32_to_bf16(x[i]);
        memcpy(out + 2 * i, &h, 2);
    }
}

static inline void bf16_decode_body(const uint8_t *in, float *x, size_t n) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        uint16_t h[32];
        uint32_t u[32];
        memcpy(h, in + 2 * i, sizeof h);
        for (int j = 0; j < 32; j++)
            u[j] = (uint32_t)h[j] << 16;
        memcpy(x + i, u, sizeof u);
    }
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, in + 2 * i, 2);
        x[i] = bt_bf16_to_f32(h);
    }
}

static void bf16_encode_generic(const float *x, uint8_t *out, size_t n) {
    bf16_encode_body(x, out, n);
}
static void bf16_decode_generic(const uint8_t *in, float *x, size_t n) {
    bf16_decode_body(in, x, n);
}

/* ---- q8 ------------------------------------------------------------------------------- */

/* Round half to even for |v| < 2^22 in the default rounding mode (the project never changes
 * it); plain adds, so it vectorizes without SSE4.1. */
static inline float round_even_small(float v) {
    const float magic = 12582912.0f; /* 1.5 * 2^23 */
    return (v + magic) - magic;
}

/* One row of n (multiple of 32) finite values; false when a value is NaN or Inf. */
static inline bool q8_encode_body(const float *x, uint8_t *out, size_t n) {
    for (size_t b = 0; b < n / Q8_BLOCK; b++) {
        const float *xb = x + b * Q8_BLOCK;
        uint8_t *ob = out + b * Q8_BLOCK_BYTES;
        /* |x| as int32 bits orders like the floats; anything >= the bits of Inf is Inf/NaN */
        int32_t u[Q8_BLOCK], amax_bits = 0;
        memcpy(u, xb, sizeof u);
        for (int j = 0; j < Q8_BLOCK; j++) {
            int32_t a = u[j] & 0x7FFFFFFF;
            amax_bits = a > amax_bits ? a : amax_bits;
        }
        if (amax_bits >= 0x7F800000)
            return false;
        float amax;
        memcpy(&amax, &amax_bits, 4);
        float d = amax / 127.0f;
        if (d * 127.0f > 3.402823466e+38f) /* amax near FLT_MAX: 127*d must stay finite */
            d = nextafterf(d, 0.0f);
        /* x/d, not x*(1/d): 1/d overflows for subnormal d. d == 0 with amax > 0 (underflow)
         * divides by 1 and rounds the tiny values to 0; a subnormal d is coarse (d >= 2/3 of
         * amax/127), so |x/d| stays below 200 and the clamp keeps q in [-127, 127]. */
        float div = d > 0.0f ? d : 1.0f;
        int8_t q[Q8_BLOCK];
        for (int j = 0; j < Q8_BLOCK; j++) {
            int32_t r = (int32_t)round_even_small(xb[j] / div); /* |x/d| < 200 here */
            r = r > 127 ? 127 : r;
            r = r < -127 ? -127 : r;
            q[j] = (int8_t)r;
        }
        memcpy(ob, &d, 4);
        memcpy(ob + 4, q, Q8_BLOCK);
    }
    return true;
}

/* Dequantizes n values (multiple of 32); false (nothing meaningful written for that block
 * on) when a scale is not finite or negative. */
static inline bool q8_decode_body(const uint8_t *in, float *x, size_t n) {
    for (size_t b = 0; b < n / Q8_BLOCK; b++) {
        const uint8_t *ib = in + b * Q8_BLOCK_BYTES;
        float d;
        int8_t q[Q8_BLOCK];
        memcpy(&d, ib, 4);
        if (!(d >= 0.0f && d <= 3.402823466e+38f))
            return false;
        memcpy(q, ib + 4, Q8_BLOCK);
        float *xb = x + b * Q8_BLOCK;
        for (int j = 0; j < Q8_BLOCK; j++)
            xb[j] = (float)q[j] * d;
    }
    return true;
}

static bool q8_encode_generic(const float *x, uint8_t *out, size_t n) {
    return q8_encode_body(x, out, n);
}
static bool q8_decode_generic(const uint8_t *in, float *x, size_t n) {
    return q8_decode_body(in, x, n);
}

#if CODEC_X86
/* The same C compiled for AVX2: the compiler vectorizes the fixed 32-element loops. The
 * target has no FMA, so nothing is contracted and results equal the generic build. */
__attribute__((target("avx2"))) static void bf16_encode_avx2(const float *x, uint8_t *out,
                                                             size_t n) {
    bf16_encode_body(x, out, n);
}
__attribute__((target("avx2"))) static void bf16_decode_avx2(const uint8_t *in, float *x,
                                                             size_t n) {
    bf16_decode_body(in, x, n);
}
__attribute__((target("avx2"))) static bool q8_encode_avx2(const float *x, uint8_t *out, size_t n) {
    return q8_encode_body(x, out, n);
}
__attribute__((target("avx2"))) static bool q8_decode_avx2(const uint8_t *in, float *x, size_t n) {
    return q8_decode_body(in, x, n);
}
#endif

/* ---- dispatch ------------------------------------------------------------------------- */

static void f16_encode(const bt_codec *c, const float *x, uint8_t *out, size_t n) {
#if CODEC_X86
    if (c->has_f16c) {
        f16_encode_f16c(x, out, n);
        return;
    }
#endif
    (void)c;
    f16_encode_scalar(x, out, n);
}

static void f16_decode(const bt_codec *c, const uint8_t *in, float *x, size_t n) {
#if CODEC_X86
    if (c->has_f16c) {
        f16_decode_f16c(in, x, n);
        return;
    }
#endif
    (void)c;
    f16_decode_scalar(in, x, n);
}

static void bf16_encode(const bt_codec *c, const float *x, uint8_t *out, size_t n) {
#if CODEC_X86
    if (c->has_avx2) {
        bf16_encode_avx2(x, out, n);
        return;
    }
#endif
    (void)c;
    bf16_encode_generic(x, out, n);
}

static void bf16_decode(const bt_codec *c, const uint8_t *in, float *x, size_t n) {
#if CODEC_X86
    if (c->has_avx2) {
        bf16_decode_avx2(in, x, n);
        return;
    }
#endif
    (void)c;
    bf16_decode_generic(in, x, n);
}

static bool q8_encode(const bt_codec *c, const float *x, uint8_t *out, size_t n) {
#if CODEC_X86
    if (c->has_avx2)
        return q8_encode_avx2(x, out, n);
#endif
    (void)c;
    return q8_encode_generic(x, out, n);
}

static bool q8_decode(const bt_codec *c, const uint8_t *in, float *x, size_t n) {
#if CODEC_X86
    if (c->has_avx2)
        return q8_decode_avx2(in, x, n);
#endif
    (void)c;
    return q8_decode_generic(in, x, n);
}

/* ---- lifecycle ------------------------------------------------------------------------ */

/* Workspace a static cctx needs to compress any raw batch of 1..max_rows rows at `level`:
 * zstd picks its parameters from the source size, so take the largest over every size. */
static size_t cctx_workspace_bytes(const bt_codec_params *p) {
    size_t best = 0;
    for (int r = 1; r <= p->max_rows; r++) {
        size_t raw = bt_codec_raw_bytes(p->kind, p->n_embd, r);
        ZSTD_compressionParameters cp = ZSTD_getCParams(p->zstd_level, raw, 0);
        size_t need = ZSTD_estimateCCtxSize_usingCParams(cp);
        if (need > best)
            best = need;
    }
    return best;
}

bt_status bt_codec_new(const bt_codec_params *p, bt_codec **out, bt_error *err) {
    *out = NULL;
    if (!p)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "codec: params is NULL");
    if ((unsigned)p->kind >= BT_CODEC_KIND_COUNT)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "codec: kind %d unknown", (int)p->kind);
    if (p->zstd_level < 0 || p->zstd_level > CODEC_MAX_ZSTD_LEVEL)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "codec: zstd_level %d not in [0, %d]",
                            p->zstd_level, CODEC_MAX_ZSTD_LEVEL);
    if (p->n_embd < 1 || p->n_embd > CODEC_MAX_N_EMBD)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "codec: n_embd %d not in [1, %d]", p->n_embd,
                            CODEC_MAX_N_EMBD);
    if (p->kind == BT_CODEC_Q8 && p->n_embd % Q8_BLOCK != 0)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "codec q8: n_embd %d is not a multiple of %d",
                            p->n_embd, Q8_BLOCK);
    if (p->max_rows < 1 || p->max_rows > CODEC_MAX_ROWS)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "codec: max_rows %d not in [1, %d]",
                            p->max_rows, CODEC_MAX_ROWS);
    if (bt_codec_raw_bytes(BT_CODEC_F32, p->n_embd, p->max_rows) > CODEC_MAX_BATCH_BYTES)
        return bt_error_set(err, BT_ERR_LIMIT,
                            "codec: n_embd %d x max_rows %d is over the %zu-byte batch limit",
                            p->n_embd, p->max_rows, CODEC_MAX_BATCH_BYTES);

    bt_codec *c = calloc(1, sizeof *c);
    if (!c)
        return bt_error_set(err, BT_ERR_NOMEM, "codec: out of memory");
    c->p = *p;
    c->scratch_bytes = bt_codec_raw_bytes(BT_CODEC_F16, p->n_embd, p->max_rows);
    c->scratch = malloc(c->scratch_bytes);
    c->dctx = ZSTD_createDCtx();
    if (!c->scratch || !c->dctx)
        goto nomem;
    if (p->zstd_level > 0) {
        size_t ws = cctx_workspace_bytes(p);
        c->cctx_mem = malloc(ws);
        if (!c->cctx_mem)
            goto nomem;
        c->cctx = ZSTD_initStaticCCtx(c->cctx_mem, ws);
        if (!c->cctx) {
            bt_codec_free(c);
            return bt_error_set(err, BT_ERR_INTERNAL, "codec: zstd static cctx (%zu B) refused",
                                ws);
        }
        size_t r = ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_compressionLevel, p->zstd_level);
        if (ZSTD_isError(r)) {
            bt_codec_free(c);
            return bt_error_set(err, BT_ERR_INVALID_ARG, "codec: zstd_level %d: %s", p->zstd_level,
                                ZSTD_getErrorName(r));
        }
    }
#if CODEC_X86
    c->has_f16c = bt_cpu_has(BT_CPU_AVX) && bt_cpu_has(BT_CPU_F16C);
    c->has_avx2 = bt_cpu_has(BT_CPU_AVX2);
#endif
    *out = c;
    return BT_OK;

nomem:
    bt_codec_free(c);
    return bt_error_set(err, BT_ERR_NOMEM, "codec: out of memory for n_embd %d x max_rows %d",
                        p->n_embd, p->max_rows);
}

void bt_codec_free(bt_codec *c) {
    if (!c)
        return;
    ZSTD_freeDCtx(c->dctx);
    free(c->cctx_mem); /* a static cctx is its workspace */
    free(c->scratch);
    free(c);
}

/* ---- encode / decode ------------------------------------------------------------------ */

/* Raw encoding of n_rows rows of the codec's own kind (not f32) into out[0..raw). */
static bt_status encode_raw(bt_codec *c, const float *x, int n_rows, uint8_t *out, bt_error *err) {
    size_t n_embd = (size_t)c->p.n_embd;
    size_t n = n_embd * (size_t)n_rows;
    switch (c->p.kind) {
    case BT_CODEC_F32:
        memcpy(out, x, n * 4);
        return BT_OK;
    case BT_CODEC_F16:
        f16_encode(c, x, out, n);
        return BT_OK;
    case BT_CODEC_BF16:
        bf16_encode(c, x, out, n);
        return BT_OK;
    case BT_CODEC_Q8: {
        size_t row_bytes = n_embd / Q8_BLOCK * Q8_BLOCK_BYTES;
        for (int r = 0; r < n_rows; r++) {
            if (!q8_encode(c, x + (size_t)r * n_embd, out + (size_t)r * row_bytes, n_embd))
                return bt_error_set(err, BT_ERR_INVALID_ARG,
                                    "codec q8: row %d holds a NaN or Inf (q8 needs finite "
                                    "values; use f32, f16 or bf16)",
                                    r);
        }
        return BT_OK;
    }
    case BT_CODEC_KIND_COUNT:
        break;
    }
    return bt_error_set(err, BT_ERR_INTERNAL, "codec: kind %d", (int)c->p.kind);
}

bt_status bt_codec_encode(bt_codec *c, const float *x, int n_rows, void *out, size_t cap,
                          size_t *n_out, bt_error *err) {
    if (n_rows < 1 || n_rows > c->p.max_rows)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "codec encode: n_rows %d not in [1, %d]",
                            n_rows, c->p.max_rows);
    size_t raw = bt_codec_raw_bytes(c->p.kind, c->p.n_embd, n_rows);
    if (c->p.zstd_level == 0) {
        if (cap < raw)
            return bt_error_set(err, BT_ERR_LIMIT,
                                "codec encode: cap %zu < %zu bytes for %d rows of %s", cap, raw,
                                n_rows, kind_names[c->p.kind]);
        bt_status st = encode_raw(c, x, n_rows, out, err);
        if (st == BT_OK)
            *n_out = raw;
        return st;
    }
    const void *src = x; /* f32 is its own raw encoding */
    if (c->p.kind != BT_CODEC_F32) {
        assert(raw <= c->scratch_bytes);
        bt_status st = encode_raw(c, x, n_rows, c->scratch, err);
        if (st != BT_OK)
            return st;
        src = c->scratch;
    }
    size_t z = ZSTD_compress2(c->cctx, out, cap, src, raw);
    if (ZSTD_isError(z)) {
        bt_status st =
            ZSTD_getErrorCode(z) == ZSTD_error_dstSize_tooSmall ? BT_ERR_LIMIT : BT_ERR_INTERNAL;
        return bt_error_set(err, st, "codec encode: zstd level %d, %zu -> cap %zu: %s",
                            c->p.zstd_level, raw, cap, ZSTD_getErrorName(z));
    }
    *n_out = z;
    return BT_OK;
}

/* Unwraps one zstd frame of in[0..len) into dst[0..expected); BT_ERR_PROTOCOL unless it
 * is exactly one frame of exactly `expected` bytes. */
static bt_status unzstd(bt_codec *c, const void *in, size_t len, void *dst, size_t expected,
                        const char *kind, bt_error *err) {
    unsigned long long declared = ZSTD_getFrameContentSize(in, len);
    if (declared == ZSTD_CONTENTSIZE_ERROR)
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "codec decode %s: zstd payload (%zu B) is not a zstd frame", kind, len);
    if (declared != ZSTD_CONTENTSIZE_UNKNOWN && declared != expected)
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "codec decode %s: zstd content size %llu != expected %zu", kind,
                            declared, expected);
    size_t frame = ZSTD_findFrameCompressedSize(in, len);
    if (ZSTD_isError(frame))
        return bt_error_set(err, BT_ERR_PROTOCOL, "codec decode %s: zstd frame (%zu B): %s", kind,
                            len, ZSTD_getErrorName(frame));
    if (frame != len)
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "codec decode %s: zstd payload len %zu != frame size %zu", kind, len,
                            frame);
    size_t got = ZSTD_decompressDCtx(c->dctx, dst, expected, in, len);
    if (ZSTD_isError(got))
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "codec decode %s: zstd payload (expected %zu B raw): %s", kind,
                            expected, ZSTD_getErrorName(got));
    if (got != expected)
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "codec decode %s: zstd decompressed size %zu != expected %zu", kind,
                            got, expected);
    return BT_OK;
}

bt_status bt_codec_decode(bt_codec *c, bt_codec_kind kind, int zstd, const void *in, size_t len,
                          int n_rows, float *x, bt_error *err) {
    if ((unsigned)kind >= BT_CODEC_KIND_COUNT)
        return bt_error_set(err, BT_ERR_PROTOCOL, "codec decode: kind %d unknown", (int)kind);
    const char *name = kind_names[kind];
    if (zstd != 0 && zstd != 1)
        return bt_error_set(err, BT_ERR_PROTOCOL, "codec decode %s: zstd flag %d not 0 or 1", name,
                            zstd);
    if (n_rows < 1 || n_rows > c->p.max_rows)
        return bt_error_set(err, BT_ERR_PROTOCOL, "codec decode %s: n_rows %d not in [1, %d]", name,
                            n_rows, c->p.max_rows);
    if (kind == BT_CODEC_Q8 && c->p.n_embd % Q8_BLOCK != 0)
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "codec decode q8: model n_embd %d is not a multiple of %d", c->p.n_embd,
                            Q8_BLOCK);
    size_t expected = bt_codec_raw_bytes(kind, c->p.n_embd, n_rows);
    size_t n = (size_t)c->p.n_embd * (size_t)n_rows;
    if (!in && len > 0)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "codec decode %s: payload is NULL", name);

    const uint8_t *raw = in;
    if (zstd) {
        /* f32 decompresses straight into x, which holds exactly `expected` bytes */
        uint8_t *dst = kind == BT_CODEC_F32 ? (uint8_t *)x : c->scratch;
        assert(kind == BT_CODEC_F32 || expected <= c->scratch_bytes);
        bt_status st = unzstd(c, in, len, dst, expected, name, err);
        if (st != BT_OK)
            return st;
        if (kind == BT_CODEC_F32)
            return BT_OK;
        raw = c->scratch;
    } else if (len != expected) {
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "codec decode %s: payload len %zu != expected %zu for n_rows %d x "
                            "n_embd %d",
                            name, len, expected, n_rows, c->p.n_embd);
    }

    switch (kind) {
    case BT_CODEC_F32:
        memcpy(x, raw, n * 4);
        return BT_OK;
    case BT_CODEC_F16:
        f16_decode(c, raw, x, n);
        return BT_OK;
    case BT_CODEC_BF16:
        bf16_decode(c, raw, x, n);
        return BT_OK;
    case BT_CODEC_Q8:
        if (!q8_decode(c, raw, x, n)) {
            /* find the block to name it; the refused batch is discarded by the caller */
            for (size_t b = 0; b < n / Q8_BLOCK; b++) {
                float d;
                memcpy(&d, raw + b * Q8_BLOCK_BYTES, 4);
                if (!(d >= 0.0f && d <= 3.402823466e+38f))
                    return bt_error_set(
                        err, BT_ERR_PROTOCOL,
                        "codec decode q8: scale %g of row %zu block %zu is not finite and >= 0",
                        (double)d, b / ((size_t)c->p.n_embd / Q8_BLOCK),
                        b % ((size_t)c->p.n_embd / Q8_BLOCK));
            }
            return bt_error_set(err, BT_ERR_INTERNAL, "codec decode q8: scale check");
        }
        return BT_OK;
    case BT_CODEC_KIND_COUNT:
        break;
    }
    return bt_error_set(err, BT_ERR_INTERNAL, "codec decode: kind %d", (int)kind);
}
