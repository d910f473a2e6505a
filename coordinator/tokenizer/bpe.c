/*
 * bpe.c - byte-level BPE (tokenizer.ggml.model "gpt2"): pre-tokenizer regexes run with
 * PCRE2 (UTF + UCP, JIT when available), the GPT-2 byte map, and rank-based merging of each
 * pre-token, as llama.cpp's llm_tokenizer_bpe_session (model-format.md 4.3-4.5).
 *
 * Split semantics (llama.cpp unicode_regex_split): the regexes of a pre-tokenizer run in
 * sequence; each refines every piece of the previous one, and every match and every gap
 * between matches becomes a piece. A regex only sees its own piece.
 * `\s` is spelled out as llama.cpp's whitespace set (PCRE2's UCP \s differs on U+0085).
 * Invalid UTF-8 bytes become U+FFFD before splitting, as llama.cpp's unicode_cpts_from_utf8,
 * so PCRE2 always gets valid UTF-8.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "bpe.h"

#include <stdlib.h>
#include <string.h>

#define WS                                                                                         \
    "\\t-\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}"       \
    "\\x{3000}"
#define RX_S "[" WS "]"
#define RX_NOT_S "[^" WS "]"

static const char RX_GPT2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS
                              "\\p{L}\\p{N}]+|" RX_S "+(?!" RX_NOT_S ")";
static const char RX_LLAMA3[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1,3}| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*|" RX_S "*[\\r\\n]+|" RX_S "+(?!" RX_NOT_S
    ")|" RX_S "+";
static const char RX_QWEN2[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*|" RX_S "*[\\r\\n]+|" RX_S "+(?!" RX_NOT_S ")|" RX_S
    "+";
static const char RX_DIGIT[] = "\\p{N}";
static const char RX_DEF_PUNCT[] = "[\\p{P}\\$\\+<=>\\^~\\|]+";
static const char RX_DEF_NUM[] = "\\p{N}+";
static const char RX_DEF_3DIG[] = "[0-9][0-9][0-9]";

typedef enum pre_family { PRE_DEFAULT, PRE_GPT2, PRE_LLAMA3, PRE_SMOLLM, PRE_QWEN2 } pre_family;

/* Pre-tokenizer names accepted, with llama.cpp's flags for each (llama-vocab.cpp load). */
static const struct pre_entry {
    const char *name;
    pre_family family;
    bool clean_spaces;
    bool ignore_merges;
    bool add_bos;
} k_pre[] = {
    {"default", PRE_DEFAULT, true, false, false},
    {"llama3", PRE_LLAMA3, true, true, true},
    {"llama-v3", PRE_LLAMA3, true, true, true},
    {"llama-bpe", PRE_LLAMA3, true, true, true},
    {"falcon3", PRE_LLAMA3, true, true, true},
    {"falcon-h1", PRE_LLAMA3, true, true, true},
    {"pixtral", PRE_LLAMA3, true, true, true},
    {"midm-2.0", PRE_LLAMA3, true, true, true},
    {"lfm2", PRE_LLAMA3, true, true, true},
    {"dbrx", PRE_LLAMA3, true, false, false},
    {"smaug-bpe", PRE_LLAMA3, true, false, false},
    {"gpt-2", PRE_GPT2, true, false, false},
    {"phi-2", PRE_GPT2, true, false, false},
    {"jina-es", PRE_GPT2, true, false, false},
    {"jina-de", PRE_GPT2, true, false, false},
    {"gigachat", PRE_GPT2, true, false, false},
    {"jina-v2-es", PRE_GPT2, true, false, false},
    {"jina-v2-de", PRE_GPT2, true, false, false},
    {"a.x-4.0", PRE_GPT2, true, false, false},
    {"mellum", PRE_GPT2, true, false, false},
    {"mpt", PRE_GPT2, true, false, false},
    {"olmo", PRE_GPT2, true, false, false},
    {"jais", PRE_GPT2, true, false, false},
    {"exaone4", PRE_GPT2, true, false, false},
    {"trillion", PRE_GPT2, false, false, false},
    {"granite-docling", PRE_GPT2, false, false, false},
    {"starcoder", PRE_SMOLLM, true, false, false},
    {"refact", PRE_SMOLLM, true, false, false},
    {"codeshell", PRE_SMOLLM, true, false, false},
    {"exaone", PRE_SMOLLM, true, false, false},
    {"minerva-7b", PRE_SMOLLM, true, false, false},
    {"mellum2", PRE_SMOLLM, true, false, false},
    {"command-r", PRE_SMOLLM, false, false, false},
    {"smollm", PRE_SMOLLM, false, false, false},
    {"qwen2", PRE_QWEN2, false, false, false},
    {"deepseek-r1-qwen", PRE_QWEN2, false, false, false},
    {"kormo", PRE_QWEN2, false, false, false},
    {"f2llmv2", PRE_QWEN2, false, false, false},
    {"hunyuan", PRE_QWEN2, false, false, false},
    {"solar-open", PRE_QWEN2, false, false, false},
    {"stablelm2", PRE_QWEN2, true, false, false},
    {"megrez", PRE_QWEN2, true, false, false},
};

bt_status bt_bpe_init(bt_vocab *v, const char *pre, bt_error *err) {
    const struct pre_entry *e = NULL;
    for (size_t i = 0; i < sizeof k_pre / sizeof k_pre[0]; i++)
        if (strcmp(k_pre[i].name, pre) == 0)
            e = &k_pre[i];
    if (!e)
        return bt_error_set(err, BT_ERR_UNSUPPORTED,
                            "vocab: unknown pre-tokenizer type '%s' (tokenizer.ggml.pre)", pre);
    const char *rx[BT_PRE_MAX_REGEX];
    int n = 0;
    switch (e->family) {
    case PRE_DEFAULT:
        rx[n++] = RX_DEF_PUNCT;
        rx[n++] = RX_GPT2;
        rx[n++] = RX_DEF_NUM;
        rx[n++] = RX_DEF_3DIG;
        break;
    case PRE_GPT2:
        rx[n++] = RX_GPT2;
        break;
    case PRE_LLAMA3:
        rx[n++] = RX_LLAMA3;
        break;
    case PRE_SMOLLM:
        rx[n++] = RX_DIGIT;
        rx[n++] = RX_GPT2;
        break;
    case PRE_QWEN2:
        rx[n++] = RX_QWEN2;
        break;
    }
    v->clean_spaces = e->clean_spaces;
    v->ignore_merges = e->ignore_merges;
    v->add_bos = e->add_bos;
    for (int i = 0; i < n; i++) {
        int code;
        PCRE2_SIZE at;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)rx[i], PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_UCP, &code, &at, NULL);
        if (!re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(code, msg, sizeof msg);
            return bt_error_set(err, BT_ERR_INTERNAL, "vocab: pre '%s' regex %d at %zu: %s", pre, i,
                                (size_t)at, (const char *)msg);
        }
        (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* interpreter when JIT fails */
        v->regex[v->n_regex++] = re;
    }
    return BT_OK;
}

void bt_bpe_deinit(bt_vocab *v) {
    for (int i = 0; i < v->n_regex; i++)
        pcre2_code_free(v->regex[i]);
    v->n_regex = 0;
}

typedef struct span {
    uint32_t start, end;
} span;

typedef struct bigram {
    int32_t left, right;
    int32_t rank;
    uint32_t ln, rn; /* symbol lengths when pushed: stale when they changed */
} bigram;

/* Scratch of one bt_bpe_tokenize call. */
typedef struct bpe_work {
    const bt_vocab *v;
    char *word;        /* byte-mapped pre-token */
    uint32_t *off, *n; /* [max symbols] symbol byte offset and length in word */
    int32_t *prev, *next;
    bigram *heap;
    size_t n_heap;
} bpe_work;

static bool bigram_before(const bigram *a, const bigram *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

BT_DEFINE_HEAP(heap, bpe_work, bigram, bigram_before)

static void add_bigram(bpe_work *w, int32_t l, int32_t r) {
    if (l < 0 || r < 0)
        return;
    int32_t rank =
        bt_vocab_merge_rank(w->v, w->word + w->off[l], w->n[l], w->word + w->off[r], w->n[r]);
    if (rank < 0)
        return;
    heap_push(w, (bigram){l, r, rank, w->n[l], w->n[r]});
}

/* Merges one byte-mapped word w->word[0..len) and emits its ids. */
static void bpe_word(bpe_work *w, size_t len, bt_tok_out *out) {
    const bt_vocab *v = w->v;
    if (v->ignore_merges) {
        int32_t id = bt_vocab_lookup(v, w->word, len);
        if (id != BT_TOKEN_NULL) {
            bt_tok_out_push(out, id);
            return;
        }
    }
    int32_t ns = 0;
    for (size_t o = 0; o < len;) {
        size_t cl = bt_utf8_len_lead((unsigned char)w->word[o]);
        if (cl > len - o)
            cl = len - o;
        w->off[ns] = (uint32_t)o;
        w->n[ns] = (uint32_t)cl;
        w->prev[ns] = ns - 1;
        o += cl;
        w->next[ns] = o == len ? -1 : ns + 1;
        ns++;
    }
    w->n_heap = 0;
    for (int32_t i = 1; i < ns; i++)
        add_bigram(w, i - 1, i);
    while (w->n_heap > 0) {
        bigram b = heap_pop(w);
        if (w->n[b.left] == 0 || w->n[b.right] == 0 || w->n[b.left] != b.ln ||
            w->n[b.right] != b.rn)
            continue; /* outdated: one side was merged since */
        w->n[b.left] += w->n[b.right];
        w->n[b.right] = 0;
        w->next[b.left] = w->next[b.right];
        if (w->next[b.right] >= 0)
            w->prev[w->next[b.right]] = b.left;
        add_bigram(w, w->prev[b.left], b.left);
        add_bigram(w, b.left, w->next[b.left]);
    }
    for (int32_t i = 0; ns > 0 && i != -1; i = w->next[i]) {
        if (w->n[i] == 0)
            continue;
        const char *s = w->word + w->off[i];
        int32_t id = bt_vocab_lookup(v, s, w->n[i]);
        if (id != BT_TOKEN_NULL) {
            bt_tok_out_push(out, id);
            continue;
        }
        /* Not a token (incomplete vocabulary): llama.cpp emits each byte of the mapped text
         * that is itself a token. */
        for (uint32_t j = 0; j < w->n[i]; j++) {
            int32_t bid = bt_vocab_lookup(v, s + j, 1);
            if (bid != BT_TOKEN_NULL)
                bt_tok_out_push(out, bid);
        }
    }
}

/* Replaces each byte that does not start a valid UTF-8 sequence by U+FFFD. Returns the
 * valid text: `text` itself when it was valid, else a buffer in *owned (caller frees). */
static const char *sanitize(const char *text, size_t len, size_t *out_len, char **owned) {
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    uint32_t cp;
    while (i < len) {
        size_t l = bt_utf8_decode(s + i, len - i, &cp);
        if (l == 0)
            break;
        i += l;
    }
    *owned = NULL;
    if (i == len) {
        *out_len = len;
        return text;
    }
    char *b = malloc(3 * len);
    if (!b)
        return NULL;
    memcpy(b, text, i);
    size_t k = i;
    while (i < len) {
        size_t l = bt_utf8_decode(s + i, len - i, &cp);
        if (l == 0) {
            memcpy(b + k, "\xef\xbf\xbd", 3);
            k += 3;
            i += 1;
        } else {
            memcpy(b + k, s + i, l);
            k += l;
            i += l;
        }
    }
    *owned = b;
    *out_len = k;
    return b;
}

bt_status bt_bpe_tokenize(const bt_vocab *v, const char *text, size_t len, bt_tok_out *out,
                          bt_error *err) {
    if (len == 0)
        return BT_OK;
    if (len > UINT32_MAX / 4)
        return bt_error_set(err, BT_ERR_LIMIT, "tokenize: fragment of %zu bytes", len);
    bt_status st = BT_OK;
    char *owned = NULL;
    size_t n;
    const char *s = sanitize(text, len, &n, &owned);
    span *a = NULL, *b = NULL;
    pcre2_match_data *md = NULL;
    pcre2_match_context *mctx = NULL;
    pcre2_jit_stack *jstack = NULL;
    bpe_work w = {.v = v};
    if (!s)
        return bt_error_set(err, BT_ERR_NOMEM, "tokenize: %zu bytes of scratch", 3 * len);

    a = malloc((n + 1) * sizeof *a);
    b = malloc((n + 1) * sizeof *b);
    md = pcre2_match_data_create(4, NULL);
    mctx = pcre2_match_context_create(NULL);
    jstack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, NULL);
    if (!a || !b || !md || !mctx || !jstack) {
        st = bt_error_set(err, BT_ERR_NOMEM, "tokenize: split scratch for %zu bytes", n);
        goto done;
    }
    pcre2_jit_stack_assign(mctx, NULL, jstack);

    size_t na = 1;
    a[0] = (span){0, (uint32_t)n};
    for (int r = 0; r < v->n_regex; r++) {
        size_t nb = 0;
        for (size_t p = 0; p < na; p++) {
            PCRE2_SPTR sub = (PCRE2_SPTR)(s + a[p].start);
            size_t sub_len = a[p].end - a[p].start;
            size_t gap = 0, pos = 0;
            while (pos < sub_len) {
                int rc = pcre2_match(v->regex[r], sub, sub_len, pos, PCRE2_NO_UTF_CHECK, md, mctx);
                if (rc == PCRE2_ERROR_NOMATCH)
                    break;
                if (rc < 0) {
                    PCRE2_UCHAR msg[256];
                    pcre2_get_error_message(rc, msg, sizeof msg);
                    st = bt_error_set(err, BT_ERR_INTERNAL, "tokenize: regex %d: %s", r,
                                      (const char *)msg);
                    goto done;
                }
                PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
                size_t ms = ov[0], me = ov[1];
                if (me <= ms) { /* empty match: not a piece; search on from the next char */
                    pos = ms + bt_utf8_len_lead(sub[ms]);
                    continue;
                }
                if (ms > gap)
                    b[nb++] = (span){a[p].start + (uint32_t)gap, a[p].start + (uint32_t)ms};
                b[nb++] = (span){a[p].start + (uint32_t)ms, a[p].start + (uint32_t)me};
                gap = pos = me;
            }
            if (gap < sub_len)
                b[nb++] = (span){a[p].start + (uint32_t)gap, a[p].end};
        }
        span *t = a;
        a = b;
        b = t;
        na = nb;
    }

    size_t max_piece = 0;
    for (size_t p = 0; p < na; p++)
        if (a[p].end - a[p].start > max_piece)
            max_piece = a[p].end - a[p].start;
    /* Each input byte maps to one symbol of at most 2 bytes; each merge pushes at most two
     * bigrams, so the heap holds < 3 per symbol. */
    w.word = malloc(2 * max_piece + 1);
    w.off = malloc((max_piece + 1) * sizeof *w.off);
    w.n = malloc((max_piece + 1) * sizeof *w.n);
    w.prev = malloc((max_piece + 1) * sizeof *w.prev);
    w.next = malloc((max_piece + 1) * sizeof *w.next);
    w.heap = malloc((3 * max_piece + 3) * sizeof *w.heap);
    if (!w.word || !w.off || !w.n || !w.prev || !w.next || !w.heap) {
        st = bt_error_set(err, BT_ERR_NOMEM, "tokenize: merge scratch for %zu bytes", max_piece);
        goto done;
    }
    for (size_t p = 0; p < na; p++) {
        size_t wl = 0;
        for (uint32_t i = a[p].start; i < a[p].end; i++) {
            unsigned char c = (unsigned char)s[i];
            memcpy(w.word + wl, v->byte_utf8[c], v->byte_utf8_len[c]);
            wl += v->byte_utf8_len[c];
        }
        bpe_word(&w, wl, out);
    }

done:
    free(w.word);
    free(w.off);
    free(w.n);
    free(w.prev);
    free(w.next);
    free(w.heap);
    pcre2_jit_stack_free(jstack);
    pcre2_match_context_free(mctx);
    pcre2_match_data_free(md);
    free(a);
    free(b);
    free(owned);
    return st;
}
