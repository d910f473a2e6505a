/* vocab_map.c - the vocabulary's lookup tables: string hashing, UTF-8 helpers, the token
 * text -> id map and the BPE merge -> rank map (see vocab_map.h). Calls nothing above it. */
#include "vocab_map.h"

#include <stdlib.h>
#include <string.h>

/* ---- hashing and UTF-8 ---- */

uint32_t bt_vocab_hash(const char *s, size_t n, uint32_t h) {
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

size_t bt_utf8_len_lead(unsigned char c) {
    static const size_t lookup[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[c >> 4];
}

size_t bt_utf8_decode(const unsigned char *s, size_t n, uint32_t *cpt) {
    if (n == 0)
        return 0;
    unsigned char c = s[0];
    if (c < 0x80) {
        *cpt = c;
        return 1;
    }
    size_t len;
    uint32_t cp, min;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, cp = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, cp = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    *cpt = cp;
    return len;
}

size_t bt_utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- hash maps ---- */

bt_status bt_strmap_init(bt_strmap *m, uint64_t n, bt_error *err) {
    uint32_t cap = 16;
    while ((uint64_t)cap < 2 * n + 1) {
        if (cap >= (1u << 30))
            return bt_error_set(err, BT_ERR_LIMIT, "vocab: %llu entries is too many",
                                (unsigned long long)n);
        cap <<= 1;
    }
    m->slots = malloc((size_t)cap * sizeof *m->slots);
    if (!m->slots)
        return bt_error_set(err, BT_ERR_NOMEM, "vocab: hash map of %u slots", cap);
    memset(m->slots, 0xff, (size_t)cap * sizeof *m->slots);
    m->cap = cap;
    return BT_OK;
}

int32_t bt_vocab_lookup(const bt_vocab *v, const char *s, size_t n) {
    const bt_strmap *m = &v->token_map;
    uint32_t mask = m->cap - 1;
    uint32_t i = bt_vocab_hash(s, n, BT_HASH_SEED) & mask;
    for (;;) {
        int32_t id = m->slots[i];
        if (id < 0)
            return BT_TOKEN_NULL;
        if (v->text[id].len == n && memcmp(v->text[id].ptr, s, n) == 0)
            return id;
        i = (i + 1) & mask;
    }
}

int32_t bt_vocab_merge_rank(const bt_vocab *v, const char *l, size_t ln, const char *r, size_t rn) {
    const bt_strmap *m = &v->merge_map;
    if (!m->slots)
        return -1;
    uint32_t mask = m->cap - 1;
    uint32_t h = bt_vocab_hash(l, ln, BT_HASH_SEED);
    h = bt_vocab_hash(" ", 1, h);
    h = bt_vocab_hash(r, rn, h);
    for (uint32_t i = h & mask;; i = (i + 1) & mask) {
        int32_t k = m->slots[i];
        if (k < 0)
            return -1;
        bt_str s = v->merge[k];
        if (s.len == ln + 1 + rn && v->merge_split[k] == ln && memcmp(s.ptr, l, ln) == 0 &&
            memcmp(s.ptr + ln + 1, r, rn) == 0)
            return k;
    }
}
