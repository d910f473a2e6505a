/*
 * detok.c - incremental UTF-8-safe detokenizer (see detok.h).
 */
#include "detok.h"

#include <string.h>

void bt_detok_init(bt_detok *d, const bt_vocab *vocab, bool special) {
    memset(d, 0, sizeof *d);
    d->vocab = vocab;
    d->special = special;
}

size_t bt_detok_out_max(const bt_vocab *vocab) {
    return 3 * (bt_vocab_max_piece_bytes(vocab) + 4);
}

/* The stream being decoded: held bytes, then the new piece. */
typedef struct stream {
    const unsigned char *held;
    size_t n_held;
    const unsigned char *piece;
    size_t n;
} stream;

static unsigned char at(const stream *s, size_t i) {
    return i < s->n_held ? s->held[i] : s->piece[i - s->n_held];
}

/* Decodes the stream; writes to out when non-NULL. Returns the output size and, in *keep,
 * the index from which bytes are an incomplete character to hold back. */
static size_t decode(const stream *s, bool final, char *out, size_t *keep) {
    static const char fffd[3] = {'\xef', '\xbf', '\xbd'};
    size_t total = s->n_held + s->n, i = 0, k = 0;
    *keep = total;
    while (i < total) {
        unsigned char c = at(s, i);
        if (c < 0x80) {
            if (out)
                out[k] = (char)c;
            k++, i++;
            continue;
        }
        size_t len;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0)
                lo = 0xA0;
            if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0)
                lo = 0x90;
            if (c == 0xF4)
                hi = 0x8F;
        } else {
            if (out)
                memcpy(out + k, fffd, 3);
            k += 3, i++;
            continue;
        }
        size_t m = 1;
        while (m < len && i + m < total) {
            unsigned char b = at(s, i + m);
            if (b < (m == 1 ? lo : 0x80) || b > (m == 1 ? hi : 0xBF))
                break;
            m++;
        }
        if (m == len) {
            if (out)
                for (size_t j = 0; j < len; j++)
                    out[k + j] = (char)at(s, i + j);
            k += len, i += len;
        } else if (i + m == total && !final) {
            *keep = i; /* may still complete */
            break;
        } else {
            if (out)
                memcpy(out + k, fffd, 3);
            k += 3, i += m;
        }
    }
    return k;
}

static bt_status run(bt_detok *d, const unsigned char *piece, size_t n, bool final, char *out,
                     size_t cap, size_t *n_out) {
    stream s = {d->pending, d->n_pending, piece, n};
    size_t keep;
    size_t need = decode(&s, final, NULL, &keep);
    *n_out = need;
    if (need > cap)
        return BT_ERR_LIMIT;
    decode(&s, final, out, &keep);
    size_t total = s.n_held + s.n;
    unsigned char tail[4];
    size_t nt = total - keep;
    for (size_t j = 0; j < nt; j++)
        tail[j] = at(&s, keep + j);
    memcpy(d->pending, tail, nt);
    d->n_pending = (uint8_t)nt;
    return BT_OK;
}

bt_status bt_detok_push(bt_detok *d, int32_t id, char *out, size_t cap, size_t *n_out) {
    *n_out = 0;
    const bt_vocab *v = d->vocab;
    if (id < 0 || id >= bt_vocab_n_tokens(v))
        return BT_ERR_RANGE;
    bt_str p = bt_vocab_token_piece(v, id, d->special);
    if (p.len == 0)
        return BT_OK;
    return run(d, (const unsigned char *)p.ptr, p.len, false, out, cap, n_out);
}

bt_status bt_detok_flush(bt_detok *d, char *out, size_t cap, size_t *n_out) {
    *n_out = 0;
    bt_status st = run(d, NULL, 0, true, out, cap, n_out);
    if (st == BT_OK)
        d->n_pending = 0;
    return st;
}
