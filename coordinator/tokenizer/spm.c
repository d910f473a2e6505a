/*
 * spm.c - SentencePiece-style tokenizer (tokenizer.ggml.model "llama"), as llama.cpp's
 * llm_tokenizer_spm_session (model-format.md 4.8). The caller has already replaced spaces
 * by U+2581 and added the prefix space.
 *
 * Merging: symbols are UTF-8 characters; the adjacent pair whose concatenation is a token
 * with the highest score merges first (ties: leftmost). Every merged symbol is a token by
 * construction, so llama.cpp's rev_merge resegmentation only ever reaches single characters
 * that are not tokens: those become byte tokens <0xNN> (or the one-byte token, else unk).
 */
#include "spm.h"

#include <stdlib.h>
#include <string.h>

typedef struct spm_bigram {
    int32_t left, right;
    float score;
    uint32_t size;
} spm_bigram;

typedef struct spm_work {
    const bt_vocab *v;
    const char *text;
    uint32_t *off, *n;
    int32_t *prev, *next;
    spm_bigram *heap;
    size_t n_heap;
} spm_work;

/* Max-heap order: higher score first, then smaller left. */
static bool spm_before(const spm_bigram *a, const spm_bigram *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

BT_DEFINE_HEAP(spm, spm_work, spm_bigram, spm_before)

static void try_add(spm_work *w, int32_t l, int32_t r) {
    if (l < 0 || r < 0)
        return;
    uint32_t size = w->n[l] + w->n[r]; /* symbols l and r are adjacent in the text */
    int32_t id = bt_vocab_lookup(w->v, w->text + w->off[l], size);
    if (id == BT_TOKEN_NULL)
        return;
    spm_push(w, (spm_bigram){l, r, w->v->score[id], size});
}

static void emit_bytes(const bt_vocab *v, const char *s, size_t n, bt_tok_out *out) {
    static const char hex[] = "0123456789ABCDEF";
    for (size_t j = 0; j < n; j++) {
        unsigned char c = (unsigned char)s[j];
        char buf[6] = {'<', '0', 'x', hex[c >> 4], hex[c & 15], '>'};
        int32_t id = bt_vocab_lookup(v, buf, 6);
        if (id == BT_TOKEN_NULL)
            id = bt_vocab_lookup(v, s + j, 1);
        if (id == BT_TOKEN_NULL)
            id = v->unk; /* llama.cpp would throw here */
        if (id != BT_TOKEN_NULL)
            bt_tok_out_push(out, id);
    }
}

bt_status bt_spm_tokenize(const bt_vocab *v, const char *text, size_t len, bt_tok_out *out,
                          bt_error *err) {
    if (len == 0)
        return BT_OK;
    if (len > INT32_MAX / 4)
        return bt_error_set(err, BT_ERR_LIMIT, "tokenize: fragment of %zu bytes", len);
    spm_work w = {.v = v, .text = text};
    bt_status st = BT_OK;
    w.off = malloc(len * sizeof *w.off);
    w.n = malloc(len * sizeof *w.n);
    w.prev = malloc(len * sizeof *w.prev);
    w.next = malloc(len * sizeof *w.next);
    w.heap = malloc(3 * len * sizeof *w.heap);
    if (!w.off || !w.n || !w.prev || !w.next || !w.heap) {
        st = bt_error_set(err, BT_ERR_NOMEM, "tokenize: spm scratch for %zu bytes", len);
        goto done;
    }
    int32_t ns = 0;
    for (size_t o = 0; o < len;) {
        size_t cl = bt_utf8_len_lead((unsigned char)text[o]);
        if (cl > len - o)
            cl = len - o;
        w.off[ns] = (uint32_t)o;
        w.n[ns] = (uint32_t)cl;
        w.prev[ns] = ns - 1;
        o += cl;
        w.next[ns] = o == len ? -1 : ns + 1;
        ns++;
    }
    for (int32_t i = 1; i < ns; i++)
        try_add(&w, i - 1, i);
    while (w.n_heap > 0) {
        spm_bigram b = spm_pop(&w);
        uint32_t ln = w.n[b.left], rn = w.n[b.right];
        if (ln == 0 || rn == 0 || ln + rn != b.size)
            continue;
        w.n[b.left] = ln + rn;
        w.n[b.right] = 0;
        w.next[b.left] = w.next[b.right];
        if (w.next[b.right] >= 0)
            w.prev[w.next[b.right]] = b.left;
        try_add(&w, w.prev[b.left], b.left);
        try_add(&w, b.left, w.next[b.left]);
    }
    for (int32_t i = 0; i != -1; i = w.next[i]) {
        const char *s = text + w.off[i];
        int32_t id = bt_vocab_lookup(v, s, w.n[i]);
        if (id != BT_TOKEN_NULL)
            bt_tok_out_push(out, id);
        else
            emit_bytes(v, s, w.n[i], out);
    }
done:
    free(w.off);
    free(w.n);
    free(w.prev);
    free(w.next);
    free(w.heap);
    return st;
}
