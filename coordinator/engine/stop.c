/* stop.c - stop-string matching over streamed text (see stop.h). */
#include "stop.h"

#include <string.h>

void bt_stop_init(bt_stop *m, const char (*stop)[BT_STOP_MAX_BYTES + 1], int n_stop) {
    m->stop = stop;
    m->n_stop = n_stop;
    m->matched = false;
    m->include_match = false;
    m->n_hold = 0;
}

/* Earliest start of any stop string in t[0..n), or n when none occurs; *len_out = the
 * length of the string found there. */
static size_t find_stop(const bt_stop *m, const char *t, size_t n, size_t *len_out) {
    size_t best = n;
    *len_out = 0;
    for (int i = 0; i < m->n_stop; i++) {
        size_t len = strlen(m->stop[i]);
        for (size_t p = 0; p + len <= n && p < best; p++)
            if (memcmp(t + p, m->stop[i], len) == 0) {
                best = p;
                *len_out = len;
                break;
            }
    }
    return best;
}

/* Length of the longest suffix of t[0..n) that is a proper prefix of some stop string. */
static size_t held_suffix(const bt_stop *m, const char *t, size_t n) {
    size_t best = 0;
    for (int i = 0; i < m->n_stop; i++) {
        size_t len = strlen(m->stop[i]);
        size_t k = len - 1 < n ? len - 1 : n;
        for (; k > best; k--)
            if (memcmp(t + n - k, m->stop[i], k) == 0) {
                best = k;
                break;
            }
    }
    return best;
}

bool bt_stop_push(bt_stop *m, const char *in, size_t n, char *out, size_t *n_out) {
    *n_out = 0;
    if (m->matched)
        return true;
    if (m->n_stop == 0) {
        memcpy(out, in, n);
        *n_out = n;
        return false;
    }
    while (n > 0) {
        /* The hold is < BT_STOP_MAX_BYTES, so a piece of that size always fits. */
        size_t take = n < BT_STOP_MAX_BYTES ? n : BT_STOP_MAX_BYTES;
        memcpy(m->buf + m->n_hold, in, take);
        size_t len = m->n_hold + take;
        in += take;
        n -= take;
        size_t hit_len;
        size_t at = find_stop(m, m->buf, len, &hit_len);
        if (at < len) {
            size_t keep = at + (m->include_match ? hit_len : 0); /* within buf[0..len) */
            memcpy(out + *n_out, m->buf, keep);
            *n_out += keep;
            m->n_hold = 0;
            m->matched = true;
            return true;
        }
        size_t hold = held_suffix(m, m->buf, len);
        memcpy(out + *n_out, m->buf, len - hold);
        *n_out += len - hold;
        memmove(m->buf, m->buf + len - hold, hold);
        m->n_hold = hold;
    }
    return false;
}

void bt_stop_flush(bt_stop *m, char *out, size_t *n_out) {
    *n_out = 0;
    if (m->matched)
        return;
    memcpy(out, m->buf, m->n_hold);
    *n_out = m->n_hold;
    m->n_hold = 0;
}
