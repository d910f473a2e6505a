/*
 * test_codec.c - activation codecs: round trips of every kind with and without zstd on
 * activation-shaped data, exactness against the scalar conversions of tensor_type.h, the q8
 * error bound, and refusal of every malformed payload (status and no write past the rows).
 */
#include <stdint.h>
#include <string.h>
#include <zstd.h>

#include "check.h"
#include "codec.h"
#include "tensor_type.h"

#define N_EMBD 576
#define MAX_ROWS 512
#define GUARD 64 /* floats after the rows that decode must never touch */
#define GUARD_BITS 0x7FBADBADu

static const int zstd_levels[] = {0, 1, 3, 19};
#define N_LEVELS ((int)(sizeof zstd_levels / sizeof zstd_levels[0]))

/* ---- data ------------------------------------------------------------------------------ */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rng_next(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_unit(void) { /* (0, 1) */
    return ((double)(rng_next() >> 11) + 0.5) / 9007199254740992.0;
}

/* Mostly N(0,1), one value in ~150 an outlier of +-50 (like a residual stream). */
static void fill_activations(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double g = sqrt(-2.0 * log(rng_unit())) * cos(6.283185307179586 * rng_unit());
        if (rng_next() % 150 == 0)
            g = (rng_next() & 1) ? 50.0 : -50.0;
        x[i] = (float)g;
    }
}

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float float_of(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void guard_set(float *x, size_t n) {
    for (int i = 0; i < GUARD; i++)
        x[n + (size_t)i] = float_of(GUARD_BITS);
}

static int guard_ok(const float *x, size_t n) {
    for (int i = 0; i < GUARD; i++)
        if (bits_of(x[n + (size_t)i]) != GUARD_BITS)
            return 0;
    return 1;
}

static bt_codec *codec_make(bt_codec_kind kind, int level, int n_embd, int max_rows) {
    bt_codec_params p = {.kind = kind, .zstd_level = level, .n_embd = n_embd, .max_rows = max_rows};
    bt_codec *c = NULL;
    bt_error err;
    bt_error_init(&err);
    bt_status st = bt_codec_new(&p, &c, &err);
    if (st != BT_OK)
        check_fail(__FILE__, __LINE__, "bt_codec_new(%s, zstd %d, %d, %d): %s",
                   bt_codec_kind_name(kind), level, n_embd, max_rows, err.msg);
    return c;
}

/* ---- what each kind must give ------------------------------------------------------------ */

/* Checks y (decoded) against x (input) for `kind`; returns the number of mismatches. */
static int check_values(bt_codec_kind kind, const float *x, const float *y, int n_embd,
                        int n_rows) {
    size_t n = (size_t)n_embd * (size_t)n_rows;
    int bad = 0;
    switch (kind) {
    case BT_CODEC_F32:
        bad = memcmp(x, y, n * 4) != 0;
        break;
    case BT_CODEC_F16:
        for (size_t i = 0; i < n; i++)
            bad += bits_of(y[i]) != bits_of(bt_half_to_f32(bt_f32_to_half(x[i])));
        break;
    case BT_CODEC_BF16:
        for (size_t i = 0; i < n; i++)
            bad += bits_of(y[i]) != bits_of(bt_bf16_to_f32(bt_f32_to_bf16(x[i])));
        break;
    case BT_CODEC_Q8:
        for (size_t b = 0; b < n / 32; b++) {
            float amax = 0.0f;
            for (int j = 0; j < 32; j++)
                amax = fmaxf(amax, fabsf(x[b * 32 + (size_t)j]));
            double d = amax / 127.0f;
            /* d/2, plus the rounding of x/d and of q*d (a few ulps of the value) */
            double tol = d * 0.5 * (1.0 + 1e-5) + 1e-30;
            for (int j = 0; j < 32; j++) {
                size_t i = b * 32 + (size_t)j;
                bad += !(fabs((double)y[i] - (double)x[i]) <= tol);
            }
        }
        break;
    default:
        bad = 1;
    }
    return bad;
}

/* ---- tests ------------------------------------------------------------------------------ */

static float *xin, *xout;
static uint8_t *enc;
static size_t enc_cap;

static void test_names(void) {
    for (int k = 0; k < BT_CODEC_KIND_COUNT; k++) {
        bt_codec_kind got = BT_CODEC_KIND_COUNT;
        CHECK_OK(bt_codec_kind_parse(bt_codec_kind_name((bt_codec_kind)k), &got, &err_));
        CHECK_EQ_INT(got, k);
    }
    bt_codec_kind got;
    bt_error err;
    bt_error_init(&err);
    CHECK_EQ_INT(bt_codec_kind_parse("q4", &got, &err), BT_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "q4") != NULL);
    CHECK_EQ_INT(bt_codec_kind_parse(NULL, &got, NULL), BT_ERR_INVALID_ARG);
    CHECK(strcmp(bt_codec_kind_name(BT_CODEC_KIND_COUNT), "unknown") == 0);
    CHECK(strcmp(bt_codec_kind_name(BT_CODEC_BF16), "bf16") == 0);
}

static void test_sizes_and_params(void) {
    CHECK_EQ_INT(bt_codec_raw_bytes(BT_CODEC_F32, 576, 7), 576 * 7 * 4);
    CHECK_EQ_INT(bt_codec_raw_bytes(BT_CODEC_F16, 576, 7), 576 * 7 * 2);
    CHECK_EQ_INT(bt_codec_raw_bytes(BT_CODEC_BF16, 576, 7), 576 * 7 * 2);
    CHECK_EQ_INT(bt_codec_raw_bytes(BT_CODEC_Q8, 576, 7), 18 * 36 * 7);
    CHECK_EQ_INT(bt_codec_raw_bytes(BT_CODEC_Q8, 100, 1), 0);
    CHECK_EQ_INT(bt_codec_raw_bytes(BT_CODEC_F32, 576, 0), 0);
    CHECK_EQ_INT(bt_codec_raw_bytes(BT_CODEC_KIND_COUNT, 576, 1), 0);

    bt_error err;
    bt_error_init(&err);
    bt_codec *c = (bt_codec *)1;
    bt_codec_params p = {.kind = BT_CODEC_Q8, .zstd_level = 0, .n_embd = 100, .max_rows = 4};
    CHECK_EQ_INT(bt_codec_new(&p, &c, &err), BT_ERR_INVALID_ARG);
    CHECK(c == NULL);
    CHECK(strstr(err.msg, "n_embd") != NULL);
    p = (bt_codec_params){.kind = BT_CODEC_F16, .zstd_level = 20, .n_embd = 64, .max_rows = 4};
    CHECK_EQ_INT(bt_codec_new(&p, &c, &err), BT_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "zstd_level") != NULL);
    p.zstd_level = -1;
    CHECK_EQ_INT(bt_codec_new(&p, &c, &err), BT_ERR_INVALID_ARG);
    p = (bt_codec_params){.kind = BT_CODEC_F16, .zstd_level = 0, .n_embd = 64, .max_rows = 0};
    CHECK_EQ_INT(bt_codec_new(&p, &c, &err), BT_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "max_rows") != NULL);
    p = (bt_codec_params){.kind = BT_CODEC_F16, .zstd_level = 0, .n_embd = 0, .max_rows = 4};
    CHECK_EQ_INT(bt_codec_new(&p, &c, &err), BT_ERR_INVALID_ARG);
    p = (bt_codec_params){.kind = (bt_codec_kind)7, .zstd_level = 0, .n_embd = 64, .max_rows = 4};
    CHECK_EQ_INT(bt_codec_new(&p, &c, &err), BT_ERR_INVALID_ARG);
    CHECK_EQ_INT(bt_codec_new(NULL, &c, &err), BT_ERR_INVALID_ARG);
    p = (bt_codec_params){
        .kind = BT_CODEC_F32, .zstd_level = 0, .n_embd = 1 << 20, .max_rows = 1 << 20};
    CHECK_EQ_INT(bt_codec_new(&p, &c, &err), BT_ERR_LIMIT);
    bt_codec_free(NULL);

    /* encode-side refusals */
    c = codec_make(BT_CODEC_F16, 0, 64, 4);
    float x[64 * 4] = {0};
    uint8_t out[64 * 4 * 4];
    size_t n_out = 0;
    CHECK_EQ_INT(bt_codec_encode(c, x, 0, out, sizeof out, &n_out, &err), BT_ERR_INVALID_ARG);
    CHECK_EQ_INT(bt_codec_encode(c, x, 5, out, sizeof out, &n_out, &err), BT_ERR_INVALID_ARG);
    CHECK_EQ_INT(bt_codec_encode(c, x, 2, out, 64 * 2 * 2 - 1, &n_out, &err), BT_ERR_LIMIT);
    CHECK_OK(bt_codec_encode(c, x, 2, out, 64 * 2 * 2, &n_out, &err_));
    CHECK_EQ_INT(n_out, 64 * 2 * 2);
    CHECK_EQ_INT(bt_codec_max_encoded_bytes(c, 3), 64 * 3 * 2);
    bt_codec_free(c);
    c = codec_make(BT_CODEC_F32, 3, 64, 4);
    CHECK(bt_codec_max_encoded_bytes(c, 4) >= 64 * 4 * 4);
    for (int i = 0; i < 64 * 4; i++)
        x[i] = (float)rng_unit();
    CHECK_EQ_INT(bt_codec_encode(c, x, 4, out, 16, &n_out, &err), BT_ERR_LIMIT);
    bt_codec_free(c);
}

/* Every kind x zstd level x rows: size, values, guard; then decode by a receiver whose own
 * kind and level differ (the frame header decides). */
static void test_round_trips(void) {
    static const int rows_list[] = {1, 7, MAX_ROWS};
    for (int k = 0; k < BT_CODEC_KIND_COUNT; k++) {
        for (int l = 0; l < N_LEVELS; l++) {
            bt_codec *c = codec_make((bt_codec_kind)k, zstd_levels[l], N_EMBD, MAX_ROWS);
            bt_codec *rx = codec_make((bt_codec_kind)((k + 1) % BT_CODEC_KIND_COUNT),
                                      zstd_levels[(l + 1) % N_LEVELS], N_EMBD, MAX_ROWS);
            if (!c || !rx)
                continue;
            for (int r = 0; r < 3; r++) {
                int n_rows = rows_list[r];
                size_t n = (size_t)n_rows * N_EMBD;
                fill_activations(xin, n);
                size_t n_out = 0;
                CHECK_OK(bt_codec_encode(c, xin, n_rows, enc, enc_cap, &n_out, &err_));
                CHECK(n_out <= bt_codec_max_encoded_bytes(c, n_rows));
                if (zstd_levels[l] == 0)
                    CHECK_EQ_INT(n_out, bt_codec_raw_bytes((bt_codec_kind)k, N_EMBD, n_rows));
                int z = zstd_levels[l] > 0;
                bt_codec *dec[2] = {c, rx};
                for (int d = 0; d < 2; d++) {
                    memset(xout, 0, n * 4);
                    guard_set(xout, n);
                    CHECK_OK(bt_codec_decode(dec[d], (bt_codec_kind)k, z, enc, n_out, n_rows, xout,
                                             &err_));
                    int bad = check_values((bt_codec_kind)k, xin, xout, N_EMBD, n_rows);
                    if (bad)
                        check_fail(__FILE__, __LINE__, "%s zstd %d rows %d decoder %d: %d bad",
                                   bt_codec_kind_name((bt_codec_kind)k), zstd_levels[l], n_rows, d,
                                   bad);
                    else
                        bt_check_passed++;
                    CHECK(guard_ok(xout, n));
                }
            }
            bt_codec_free(c);
            bt_codec_free(rx);
        }
    }
}

/* f16/bf16 fast paths against the scalar conversions on every half and on special and
 * random f32 bit patterns (NaN payloads, ties, subnormals, overflow). */
static void test_exact_conversions(void) {
    enum { E = 256, R = 256, N = E * R };
    bt_codec *f16 = codec_make(BT_CODEC_F16, 0, E, R);
    bt_codec *bf16 = codec_make(BT_CODEC_BF16, 0, E, R);
    if (!f16 || !bf16)
        return;
    /* decode: all 65536 halves and all 65536 bfloat16s */
    for (uint32_t i = 0; i < N; i++) {
        uint16_t h = (uint16_t)i;
        memcpy(enc + 2 * i, &h, 2);
    }
    CHECK_OK(bt_codec_decode(f16, BT_CODEC_F16, 0, enc, (size_t)N * 2, R, xout, &err_));
    int bad = 0;
    for (uint32_t i = 0; i < N; i++)
        bad += bits_of(xout[i]) != bits_of(bt_half_to_f32((bt_half)i));
    CHECK_EQ_INT(bad, 0);
    CHECK_OK(bt_codec_decode(f16, BT_CODEC_BF16, 0, enc, (size_t)N * 2, R, xout, &err_));
    bad = 0;
    for (uint32_t i = 0; i < N; i++)
        bad += bits_of(xout[i]) != bits_of(bt_bf16_to_f32((uint16_t)i));
    CHECK_EQ_INT(bad, 0);

    /* encode: specials, then random bit patterns and random values near half ties */
    static const uint32_t specials[] = {
        0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00001, 0x7F800001,
        0x7FA00000, 0xFF812345, 0x7FFFFFFF, 0x00000001, 0x807FFFFF, 0x33000000, 0x33000001,
        0x337FFFFF, 0x38800000, 0x387FFFFF, 0x477FE000, 0x477FEFFF, 0x477FF000, 0x477FFFFF,
        0x3F801000, 0x3F803000, 0x3F800FFF, 0x3F808000, 0x3F818000, 0x7F7FFFFF, 0x7F7F8000,
        0x3F7FFFFF, 0x3FFF8000, 0xBFFF8000, 0x00800000, 0x387FC000, 0x33800000, 0x3380C000};
    for (int pass = 0; pass < 17; pass++) {
        for (uint32_t i = 0; i < N; i++) {
            uint32_t u = (uint32_t)rng_next();
            if (pass == 0)
                u = specials[i % (sizeof specials / sizeof specials[0])];
            else if (pass % 2 == 0) /* exact f16/bf16 ties and neighbours */
                u = (u & 0xFFFFE000u) | (0x1000u + ((u >> 13) % 3) - 1);
            xin[i] = float_of(u);
        }
        size_t n_out = 0;
        CHECK_OK(bt_codec_encode(f16, xin, R, enc, enc_cap, &n_out, &err_));
        bad = 0;
        for (uint32_t i = 0; i < N; i++) {
            uint16_t h;
            memcpy(&h, enc + 2 * i, 2);
            bad += h != bt_f32_to_half(xin[i]);
        }
        CHECK_EQ_INT(bad, 0);
        CHECK_OK(bt_codec_encode(bf16, xin, R, enc, enc_cap, &n_out, &err_));
        bad = 0;
        for (uint32_t i = 0; i < N; i++) {
            uint16_t h;
            memcpy(&h, enc + 2 * i, 2);
            bad += h != bt_f32_to_bf16(xin[i]);
        }
        CHECK_EQ_INT(bad, 0);
    }
    bt_codec_free(f16);
    bt_codec_free(bf16);
}

/* Non-finite activations: kept by f32/f16/bf16, refused by q8 encode; q8 zero blocks. */
static void test_non_finite(void) {
    bt_error err;
    bt_error_init(&err);
    for (int k = 0; k < BT_CODEC_KIND_COUNT; k++) {
        bt_codec *c = codec_make((bt_codec_kind)k, 0, 64, 2);
        if (!c)
            continue;
        float x[128], y[128 + GUARD];
        fill_activations(x, 128);
        x[3] = INFINITY;
        x[70] = NAN;
        x[71] = -INFINITY;
        size_t n_out = 0;
        bt_status st = bt_codec_encode(c, x, 2, enc, enc_cap, &n_out, &err);
        if (k == BT_CODEC_Q8) {
            CHECK_EQ_INT(st, BT_ERR_INVALID_ARG);
            CHECK(strstr(err.msg, "row 0") != NULL);
            for (int i = 0; i < 128; i++)
                x[i] = i < 32 ? 0.0f : (i < 64 ? -0.0f : x[i]);
            x[3] = 0.0f;
            x[70] = 1e-40f;            /* subnormal */
            x[71] = 3e38f;             /* near FLT_MAX */
            x[100] = 3.402823466e+38f; /* FLT_MAX: 127*d must not overflow to Inf */
            x[101] = -3.402823466e+38f;
            CHECK_OK(bt_codec_encode(c, x, 2, enc, enc_cap, &n_out, &err_));
            guard_set(y, 128);
            CHECK_OK(bt_codec_decode(c, BT_CODEC_Q8, 0, enc, n_out, 2, y, &err_));
            CHECK(guard_ok(y, 128));
            CHECK_EQ_INT(check_values(BT_CODEC_Q8, x, y, 64, 2), 0);
            for (int i = 0; i < 64; i++)
                CHECK(y[i] == 0.0f);
            CHECK(isfinite(y[100]) && isfinite(y[101]));
        } else {
            CHECK_EQ_INT(st, BT_OK);
            CHECK_OK(bt_codec_decode(c, (bt_codec_kind)k, 0, enc, n_out, 2, y, &err_));
            CHECK(isinf(y[3]) && y[3] > 0);
            CHECK(isnan(y[70]));
            CHECK(isinf(y[71]) && y[71] < 0);
        }
        bt_codec_free(c);
    }
}

/* Calls decode and checks the status, that err names `field`, and that nothing was written
 * past the rows (the rows themselves may be garbage after a refusal). */
static void expect_refused(bt_codec *c, int kind, int zstd, const void *in, size_t len, int n_rows,
                           const char *field, int line) {
    size_t room = (size_t)MAX_ROWS * N_EMBD;
    size_t n = n_rows > 0 && n_rows <= MAX_ROWS ? (size_t)n_rows * N_EMBD : room;
    guard_set(xout, n);
    bt_error err;
    bt_error_init(&err);
    bt_status st = bt_codec_decode(c, (bt_codec_kind)kind, zstd, in, len, n_rows, xout, &err);
    if (st != BT_ERR_PROTOCOL)
        check_fail(__FILE__, line, "decode kind %d zstd %d len %zu rows %d: %s, want protocol",
                   kind, zstd, len, n_rows, bt_status_str(st));
    else if (field && !strstr(err.msg, field))
        check_fail(__FILE__, line, "message \"%s\" does not name \"%s\"", err.msg, field);
    else
        bt_check_passed++;
    if (!guard_ok(xout, n))
        check_fail(__FILE__, line, "decode wrote past %zu floats", n);
}

#define REFUSED(c, kind, zstd, in, len, rows, field)                                               \
    expect_refused(c, kind, zstd, in, len, rows, field, __LINE__)

static size_t zstd_of(const void *src, size_t n, int with_size, uint8_t *dst, size_t cap) {
    ZSTD_CCtx *z = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(z, ZSTD_c_compressionLevel, 3);
    ZSTD_CCtx_setParameter(z, ZSTD_c_contentSizeFlag, with_size);
    size_t r;
    if (with_size) {
        r = ZSTD_compress2(z, dst, cap, src, n);
    } else { /* streaming without a pledged size: the header carries no content size */
        ZSTD_inBuffer in = {src, n, 0};
        ZSTD_outBuffer out = {dst, cap, 0};
        r = ZSTD_compressStream2(z, &out, &in, ZSTD_e_end);
        r = r == 0 ? out.pos : (size_t)-1;
    }
    ZSTD_freeCCtx(z);
    if (ZSTD_isError(r))
        check_fail(__FILE__, __LINE__, "test zstd: %s", ZSTD_getErrorName(r));
    return r;
}

static void test_malformed(void) {
    const int rows = 7;
    bt_codec *c = codec_make(BT_CODEC_F16, 0, N_EMBD, MAX_ROWS);
    if (!c)
        return;
    uint8_t *z = malloc(enc_cap);
    fill_activations(xin, (size_t)rows * N_EMBD);
    for (int k = 0; k < BT_CODEC_KIND_COUNT; k++) {
        size_t raw = bt_codec_raw_bytes((bt_codec_kind)k, N_EMBD, rows);
        bt_codec *e = codec_make((bt_codec_kind)k, 0, N_EMBD, MAX_ROWS);
        size_t n_out = 0;
        CHECK_OK(bt_codec_encode(e, xin, rows, enc, enc_cap, &n_out, &err_));
        bt_codec_free(e);
        /* lengths and rows */
        REFUSED(c, k, 0, enc, raw - 1, rows, "len");
        REFUSED(c, k, 0, enc, raw + 1, rows, "len");
        REFUSED(c, k, 0, enc, 0, rows, "len");
        REFUSED(c, k, 0, NULL, 0, rows, "len");
        REFUSED(c, k, 0, enc, raw, rows + 1, "len");
        REFUSED(c, k, 0, enc, raw, rows - 1, "len");
        REFUSED(c, k, 0, enc, raw, 0, "n_rows");
        REFUSED(c, k, 0, enc, raw, -3, "n_rows");
        REFUSED(c, k, 0, enc, raw, MAX_ROWS + 1, "n_rows");
        /* zstd: garbage, truncated, wrong content size (declared or not), two frames */
        REFUSED(c, k, 1, enc, raw, rows, "zstd");
        size_t zn = zstd_of(enc, raw, 1, z, enc_cap);
        CHECK_OK(bt_codec_decode(c, (bt_codec_kind)k, 1, z, zn, rows, xout, &err_));
        REFUSED(c, k, 2, z, zn, rows, "zstd flag");
        REFUSED(c, k, -1, z, zn, rows, "zstd flag");
        REFUSED(c, k, 1, z, zn - 1, rows, "zstd");
        /* a skippable frame after the data frame: zstd itself would accept it */
        memcpy(z + zn, "\x50\x2a\x4d\x18\x04\x00\x00\x00SKIP", 12);
        REFUSED(c, k, 1, z, zn + 12, rows, "frame size");
        REFUSED(c, k, 1, z, 3, rows, "zstd");
        REFUSED(c, k, 1, z, 0, rows, "zstd");
        z[zn] = 0;
        REFUSED(c, k, 1, z, zn + 1, rows, "zstd");
        memcpy(z + zn, z, zn); /* a second copy of the frame after the first */
        REFUSED(c, k, 1, z, 2 * zn, rows, "zstd");
        REFUSED(c, k, 1, z, zn, rows + 1, "zstd");
        REFUSED(c, k, 1, z, zn, rows - 1, "zstd");
        memcpy(xout, enc, raw); /* one byte more / less than expected */
        ((uint8_t *)xout)[raw] = 0x55;
        zn = zstd_of(xout, raw + 1, 1, z, enc_cap);
        REFUSED(c, k, 1, z, zn, rows, "zstd content size");
        zn = zstd_of(xout, raw - 1, 1, z, enc_cap);
        REFUSED(c, k, 1, z, zn, rows, "zstd content size");
        zn = zstd_of(enc, raw, 0, z, enc_cap); /* no declared size: the cap decides */
        CHECK(ZSTD_getFrameContentSize(z, zn) == ZSTD_CONTENTSIZE_UNKNOWN);
        CHECK_OK(bt_codec_decode(c, (bt_codec_kind)k, 1, z, zn, rows, xout, &err_));
        memcpy(xout, enc, raw);
        zn = zstd_of(xout, raw + 4096, 0, z, enc_cap);
        REFUSED(c, k, 1, z, zn, rows, "zstd");
        zn = zstd_of(xout, raw - 1, 0, z, enc_cap);
        REFUSED(c, k, 1, z, zn, rows, "zstd decompressed size");
        for (size_t i = 0; i < 256; i++) /* random bytes after a valid magic */
            z[i] = (uint8_t)rng_next();
        memcpy(z, "\x28\xb5\x2f\xfd", 4);
        REFUSED(c, k, 1, z, 256, rows, "zstd");
    }
    /* kind out of range */
    REFUSED(c, BT_CODEC_KIND_COUNT, 0, enc, 100, 1, "kind");
    REFUSED(c, -1, 0, enc, 100, 1, "kind");
    REFUSED(c, 200, 1, enc, 100, 1, "kind");
    /* q8 scales: NaN, Inf, negative; q8 on a model whose n_embd is not a multiple of 32 */
    bt_codec *q = codec_make(BT_CODEC_Q8, 0, N_EMBD, MAX_ROWS);
    size_t n_out = 0;
    CHECK_OK(bt_codec_encode(q, xin, rows, enc, enc_cap, &n_out, &err_));
    static const float bad_scales[] = {NAN, INFINITY, -INFINITY, -1.0f, -1e-30f};
    for (int i = 0; i < 5; i++) {
        float save;
        size_t at = 36 * 40; /* row 2, block 4 */
        memcpy(&save, enc + at, 4);
        memcpy(enc + at, &bad_scales[i], 4);
        REFUSED(c, BT_CODEC_Q8, 0, enc, n_out, rows, "row 2 block 4");
        size_t zn = zstd_of(enc, n_out, 1, z, enc_cap);
        REFUSED(c, BT_CODEC_Q8, 1, z, zn, rows, "scale");
        memcpy(enc + at, &save, 4);
    }
    CHECK_OK(bt_codec_decode(c, BT_CODEC_Q8, 0, enc, n_out, rows, xout, &err_));
    bt_codec_free(q);
    bt_codec *odd = codec_make(BT_CODEC_F32, 0, 100, 4);
    REFUSED(odd, BT_CODEC_Q8, 0, enc, 0, 1, "n_embd");
    bt_codec_free(odd);
    free(z);
    bt_codec_free(c);
}

int main(void) {
    size_t n = (size_t)MAX_ROWS * N_EMBD;
    xin = malloc(n * 4);
    xout = malloc((n + GUARD) * 4);
    enc_cap = ZSTD_compressBound(n * 4) * 2 + 8192;
    enc = malloc(enc_cap);
    if (!xin || !xout || !enc)
        return 1;
    test_names();
    test_sizes_and_params();
    test_round_trips();
    test_exact_conversions();
    test_non_finite();
    test_malformed();
    free(xin);
    free(xout);
    free(enc);
    return check_finish();
}
