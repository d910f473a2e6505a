/*
 * fuzz_codec.c - libFuzzer target for the activation codecs.
 *
 * Input: byte 0 = kind (bits 0-2, 4..7 are out of range) | zstd flag (bits 3-4, 2 and 3 are
 * invalid) | model n_embd choice (bits 5-7); byte 1 = n_rows (mod 20; 0 and > MAX_ROWS are
 * invalid); the rest is the payload.
 *
 * 1. The payload is decoded as it is: decode must refuse it or fill exactly n_rows*n_embd
 *    floats (x is a heap block of exactly that size, so ASan sees any write past it).
 * 2. The payload bytes, read as f32 rows, are encoded with the chosen kind (and zstd level 1
 *    when the flag is 1) and decoded again: f32 must be bit-exact, f16/bf16 must equal the
 *    scalar conversions, q8 must stay within d/2 or refuse non-finite input. A violation
 *    aborts, so the fuzzer reports it.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "tensor_type.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ROWS 16
static const int embd_choices[8] = {32, 64, 96, 576, 8, 100, 1, 31};

static bt_codec *decoders[8];                         /* per n_embd: f32, no zstd */
static bt_codec *encoders[8][BT_CODEC_KIND_COUNT][2]; /* per n_embd, kind, zstd */
static volatile float sink;

static bt_codec *codec_get(int e, bt_codec_kind kind, int level) {
    bt_codec **slot = level < 0 ? &decoders[e] : &encoders[e][kind][level > 0];
    if (!*slot) {
        bt_codec_params p = {.kind = level < 0 ? BT_CODEC_F32 : kind,
                             .zstd_level = level < 0 ? 0 : level,
                             .n_embd = embd_choices[e],
                             .max_rows = MAX_ROWS};
        if (bt_codec_new(&p, slot, NULL) != BT_OK)
            *slot = NULL;
    }
    return *slot;
}

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static void round_trip(int e, bt_codec_kind kind, int zstd, const uint8_t *payload, size_t len,
                       int n_rows) {
    int n_embd = embd_choices[e];
    size_t row_bytes = (size_t)n_embd * 4;
    if (n_rows > (int)(len / row_bytes))
        n_rows = (int)(len / row_bytes);
    if (n_rows < 1)
        return;
    bt_codec *enc = codec_get(e, kind, zstd ? 1 : 0);
    bt_codec *dec = codec_get(e, kind, -1);
    if (!enc) { /* only q8 with n_embd not a multiple of 32 may be refused */
        if (kind != BT_CODEC_Q8 || n_embd % 32 == 0)
            abort();
        return;
    }
    size_t n = (size_t)n_rows * (size_t)n_embd;
    float *x = malloc(n * 4), *y = malloc(n * 4);
    size_t cap = bt_codec_max_encoded_bytes(enc, n_rows);
    uint8_t *buf = malloc(cap);
    if (!x || !y || !buf || !dec)
        abort();
    memcpy(x, payload, n * 4);
    size_t n_out = 0;
    bt_status st = bt_codec_encode(enc, x, n_rows, buf, cap, &n_out, NULL);
    if (st != BT_OK) {
        int finite = 1;
        for (size_t i = 0; i < n; i++)
            finite &= isfinite(x[i]) != 0;
        if (kind != BT_CODEC_Q8 || st != BT_ERR_INVALID_ARG || finite)
            abort();
        goto done;
    }
    if (bt_codec_decode(dec, kind, zstd ? 1 : 0, buf, n_out, n_rows, y, NULL) != BT_OK)
        abort();
    for (size_t i = 0; i < n; i++) {
        uint32_t want;
        switch (kind) {
        case BT_CODEC_F32:
            want = bits_of(x[i]);
            break;
        case BT_CODEC_F16:
            want = bits_of(bt_half_to_f32(bt_f32_to_half(x[i])));
            break;
        case BT_CODEC_BF16:
            want = bits_of(bt_bf16_to_f32(bt_f32_to_bf16(x[i])));
            break;
        default: {
            size_t b0 = i / 32 * 32;
            float amax = 0.0f;
            for (size_t j = b0; j < b0 + 32; j++)
                amax = fmaxf(amax, fabsf(x[j]));
            double d = amax / 127.0f;
            /* d/2, plus the float roundings: x/d is rounded before it is rounded to q
             * (|x/d| <= 127.5: 127.5 * 2^-24 of d, so a tie like 125.5 can be a value just
             * below it) and q*d is rounded (127 * 2^-24 of d), together < 2e-5 d; a subnormal
             * d may be below amax/127, and the clamp at 127 then costs up to 127 subnormal
             * steps / 2 (< 1e-43) */
            double tol = d * (0.5 + 2e-5) + 1e-43;
            if (!(fabs((double)y[i] - (double)x[i]) <= tol))
                abort();
            want = bits_of(y[i]);
        }
        }
        if (bits_of(y[i]) != want)
            abort();
    }
done:
    free(x);
    free(y);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2)
        return 0;
    int kind = data[0] & 7;
    int zstd = (data[0] >> 3) & 3;
    int e = data[0] >> 5;
    int n_rows = data[1] % 20;
    const uint8_t *payload = data + 2;
    size_t len = size - 2;

    bt_codec *dec = codec_get(e, BT_CODEC_F32, -1);
    if (!dec)
        abort();
    size_t n_x = (size_t)embd_choices[e] * (n_rows >= 1 && n_rows <= MAX_ROWS ? n_rows : 1);
    float *x = malloc(n_x * 4);
    if (!x)
        abort();
    /* a copy, so a read past the payload is a heap overflow too */
    uint8_t *in = malloc(len ? len : 1);
    if (!in)
        abort();
    memcpy(in, payload, len);
    bt_status st = bt_codec_decode(dec, (bt_codec_kind)kind, zstd, in, len, n_rows, x, NULL);
    if (st == BT_OK) {
        if (kind >= BT_CODEC_KIND_COUNT || zstd > 1 || n_rows < 1 || n_rows > MAX_ROWS)
            abort();
        float s = 0.0f;
        for (size_t i = 0; i < n_x; i++)
            s += x[i];
        sink = s;
    } else if (st != BT_ERR_PROTOCOL) {
        abort();
    }
    free(x);
    free(in);
    if (kind < BT_CODEC_KIND_COUNT && zstd <= 1 && n_rows >= 1 && n_rows <= MAX_ROWS)
        round_trip(e, (bt_codec_kind)kind, zstd, payload, len, n_rows);
    return 0;
}
