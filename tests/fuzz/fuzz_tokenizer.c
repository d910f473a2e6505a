/*
 * fuzz_tokenizer.c - libFuzzer target for the tokenizer (prompt text is untrusted input).
 *
 * On the first call it builds three small vocabularies in memory with the gguf_writer (no
 * files outside the repository): byte-level BPE with pre "smollm" (control tokens
 * <|endoftext|> <|im_start|> <|im_end|>, the 256 GPT-2 byte tokens, a user-defined
 * <tool_call>, a few dozen merges), the same tokens with pre "llama-bpe" and add_bos, and a
 * SentencePiece "llama" vocabulary with scores, byte fallback <0x00>..<0xFF> and
 * U+2581-prefixed pieces. They stay open for the life of the process.
 *
 * Input: byte 0 selects the vocabulary (% 3) and the flags (bit 2 add_special, bit 3
 * parse_special, bit 4 unparse_special, bit 5 remove_special); the rest is the text.
 *
 * Invariants (each documented in vocab.h / detok.h):
 *  - bt_tokenize succeeds or says BT_ERR_LIMIT; every id is in [0, n_tokens); with a tiny
 *    cap it says BT_ERR_LIMIT with the same needed count and writes no more than cap ids;
 *  - bt_detokenize with a short buffer says BT_ERR_LIMIT and the size needed, then fits;
 *  - streaming the ids through bt_detok (push, flush) gives exactly the concatenated pieces
 *    with every ill-formed UTF-8 subpart replaced by U+FFFD (a reference decoder below),
 *    so its output is always valid UTF-8; a short out buffer says BT_ERR_LIMIT and leaves
 *    the state unchanged;
 *  - byte-level BPE is lossless: for valid UTF-8 text, with consistent special-token flags,
 *    the concatenated pieces equal the text, and so does bt_detokenize where the
 *    pre-tokenizer has no clean_spaces pass (smollm);
 *  - as the user message of a ChatML conversation (smollm vocabulary, the text up to its
 *    first NUL), bt_chat_tokenize gives exactly the template's three control ids whatever
 *    the text spells, unless parse_special_in_content; ids are in range.
 * A violation calls __builtin_trap() so libFuzzer (and the corpus replay) report it.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "detok.h"
#include "gguf.h"
#include "gguf_writer.h"
#include "status.h"
#include "vocab.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK_OR_TRAP(c)                                                                           \
    do {                                                                                           \
        if (!(c))                                                                                  \
            __builtin_trap();                                                                      \
    } while (0)

enum { VOCAB_SMOLLM, VOCAB_LLAMA_BPE, VOCAB_SPM, N_VOCABS };

#define MAX_IDS 16384 /* ids per input; larger inputs exercise only the LIMIT path */
#define MAX_TOKENS 512
#define TOKEN_BYTES 48

typedef struct built {
    uint8_t *file; /* the GGUF bytes; outlive gguf */
    bt_gguf *gguf; /* outlives vocab */
    bt_vocab *vocab;
} built;

static built g_vocabs[N_VOCABS];
static bool g_ready;

/* ---- building the vocabularies ---- */

typedef struct tok_list {
    char text[MAX_TOKENS][TOKEN_BYTES];
    const char *ptr[MAX_TOKENS];
    int32_t type[MAX_TOKENS];
    float score[MAX_TOKENS];
    int n;
} tok_list;

static int tok_add(tok_list *t, const char *text, int32_t type, float score) {
    if (t->n >= MAX_TOKENS || strlen(text) >= TOKEN_BYTES)
        __builtin_trap(); /* the tables below are ours */
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->text[i], text) == 0)
            return i;
    strcpy(t->text[t->n], text);
    t->ptr[t->n] = t->text[t->n];
    t->type[t->n] = type;
    t->score[t->n] = score;
    return t->n++;
}

static bool byte_printable(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

/* GPT-2 bytes_to_unicode of raw bytes s[0..n) into out (NUL-terminated). */
static void byte_map(const char *s, size_t n, char *out, size_t cap) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned b = (unsigned char)s[i], cp = b;
        if (!byte_printable(b)) {
            unsigned m = 0;
            for (unsigned c = 0; c < b; c++)
                m += !byte_printable(c);
            cp = 0x100 + m;
        }
        if (k + 3 > cap)
            __builtin_trap();
        if (cp < 0x80) {
            out[k++] = (char)cp;
        } else {
            out[k++] = (char)(0xC0 | (cp >> 6));
            out[k++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    out[k] = '\0';
}

/* Raw-byte merges (left, right); both halves are tokens by the time each is added. */
static const char *const BPE_MERGES[][2] = {
    {" ", "t"},       {"h", "e"},       {"i", "n"},       {"r", "e"},       {"o", "n"},
    {" t", "he"},     {"e", "r"},       {" ", "a"},       {"a", "n"},       {"o", "u"},
    {"e", "n"},       {" ", "s"},       {" ", "w"},       {"a", "t"},       {"i", "s"},
    {"o", "r"},       {"e", "s"},       {"i", "t"},       {" ", "o"},       {" ", "c"},
    {"e", "d"},       {"in", "g"},      {"l", "l"},       {" ", "i"},       {" a", "n"},
    {" an", "d"},     {"i", "m"},       {"\n", "\n"},     {" ", " "},       {"  ", "  "},
    {"\t", "\t"},     {"1", "2"},       {"12", "3"},      {"\xc3", "\xa9"}, {"\xf0", "\x9f"},
    {"\xe4", "\xb8"}, {"\xd0", "\xbf"}, {"\xd1", "\x80"}, {"<", "|"},       {"|", ">"},
    {"'", "s"},       {" h", "e"},      {"l", "o"},       {"ll", "o"},      {"he", "llo"},
    {" he", "llo"},   {"\r", "\n"},     {".", "."},       {"..", "."},      {"0", "0"},
};
#define N_BPE_MERGES (sizeof BPE_MERGES / sizeof BPE_MERGES[0])

static bt_status build_bpe(bt_gw *w, bool llama3) {
    static tok_list t; /* large: keep it off the stack */
    memset(&t, 0, sizeof t);
    const char *controls_smollm[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    const char *controls_llama3[] = {"<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"};
    const char *const *controls = llama3 ? controls_llama3 : controls_smollm;
    for (int i = 0; i < 3; i++)
        tok_add(&t, controls[i], 3, 0.0f);
    char buf[TOKEN_BYTES];
    for (unsigned b = 0; b < 256; b++) {
        char c = (char)b;
        byte_map(&c, 1, buf, sizeof buf);
        tok_add(&t, buf, 1, 0.0f);
    }
    static char merge_text[N_BPE_MERGES][2 * TOKEN_BYTES];
    const char *merges[N_BPE_MERGES];
    for (size_t m = 0; m < N_BPE_MERGES; m++) {
        char l[TOKEN_BYTES], r[TOKEN_BYTES], lr[TOKEN_BYTES];
        char raw[TOKEN_BYTES];
        byte_map(BPE_MERGES[m][0], strlen(BPE_MERGES[m][0]), l, sizeof l);
        byte_map(BPE_MERGES[m][1], strlen(BPE_MERGES[m][1]), r, sizeof r);
        snprintf(raw, sizeof raw, "%s%s", BPE_MERGES[m][0], BPE_MERGES[m][1]);
        byte_map(raw, strlen(raw), lr, sizeof lr);
        snprintf(merge_text[m], sizeof merge_text[m], "%s %s", l, r);
        merges[m] = merge_text[m];
        tok_add(&t, lr, 1, 0.0f);
    }
    tok_add(&t, "<tool_call>", 4, 0.0f); /* USER_DEFINED: always parsed, stored as is */
    bt_gw_add_str(w, "tokenizer.ggml.model", "gpt2");
    bt_gw_add_str(w, "tokenizer.ggml.pre", llama3 ? "llama-bpe" : "smollm");
    bt_gw_add_arr_str(w, "tokenizer.ggml.tokens", t.ptr, (uint64_t)t.n);
    bt_gw_add_arr(w, "tokenizer.ggml.token_type", BT_GGUF_I32, t.type, (uint64_t)t.n);
    bt_gw_add_arr_str(w, "tokenizer.ggml.merges", merges, N_BPE_MERGES);
    bt_gw_add_u32(w, "tokenizer.ggml.bos_token_id", llama3 ? 0 : 1);
    bt_gw_add_u32(w, "tokenizer.ggml.eos_token_id", llama3 ? 1 : 2);
    bt_gw_add_u32(w, "tokenizer.ggml.padding_token_id", llama3 ? 1 : 0);
    bt_gw_add_bool(w, "tokenizer.ggml.add_bos_token", llama3);
    return bt_gw_add_bool(w, "tokenizer.ggml.add_eos_token", false);
}

/* SentencePiece pieces, best score first ("\xe2\x96\x81" is U+2581). */
#define SP "\xe2\x96\x81" /* U+2581 */
/* clang-format off */
static const char *const SPM_PIECES[] = {
    SP, SP "t", "he", SP "the", "in", "er", SP "a",
    SP "h", SP "w", "ll", "llo", SP "he", SP "hello",
    "or", "ld", SP "wor", SP "world", SP SP,
    "\xc3\xa9", "\xe6\x97\xa5", "\xe6\x9c\xac", "\xe6\x97\xa5\xe6\x9c\xac",
    SP "\xe6\x97\xa5\xe6\x9c\xac", "\xf0\x9f\x98\x80", "12", "123", "ing", SP "is",
    "\xd0\xbf", "\xd1\x80", "\xd0\xbf\xd1\x80",
};
/* clang-format on */
#define N_SPM_PIECES (sizeof SPM_PIECES / sizeof SPM_PIECES[0])

static bt_status build_spm(bt_gw *w) {
    static tok_list t;
    memset(&t, 0, sizeof t);
    tok_add(&t, "<unk>", 2, 0.0f);
    tok_add(&t, "<s>", 3, 0.0f);
    tok_add(&t, "</s>", 3, 0.0f);
    char buf[16];
    for (unsigned b = 0; b < 256; b++) {
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        tok_add(&t, buf, 6, 0.0f);
    }
    tok_add(&t, "<|im_start|>", 3, 0.0f);
    float score = -1.0f;
    for (size_t i = 0; i < N_SPM_PIECES; i++, score -= 1.0f)
        tok_add(&t, SPM_PIECES[i], 1, score);
    /* single characters, so every merge of the pieces above has its halves */
    for (const char *c = "abcdefghijklmnopqrstuvwxyz0123456789.,!?"; *c; c++, score -= 1.0f) {
        char s[2] = {*c, 0};
        tok_add(&t, s, 1, score);
    }
    bt_gw_add_str(w, "tokenizer.ggml.model", "llama");
    bt_gw_add_arr_str(w, "tokenizer.ggml.tokens", t.ptr, (uint64_t)t.n);
    bt_gw_add_arr(w, "tokenizer.ggml.scores", BT_GGUF_F32, t.score, (uint64_t)t.n);
    bt_gw_add_arr(w, "tokenizer.ggml.token_type", BT_GGUF_I32, t.type, (uint64_t)t.n);
    bt_gw_add_u32(w, "tokenizer.ggml.bos_token_id", 1);
    bt_gw_add_u32(w, "tokenizer.ggml.eos_token_id", 2);
    bt_gw_add_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    bt_gw_add_bool(w, "tokenizer.ggml.add_bos_token", true);
    return bt_gw_add_bool(w, "tokenizer.ggml.add_eos_token", false);
}

static void build_all(void) {
    for (int k = 0; k < N_VOCABS; k++) {
        bt_gw *w = bt_gw_new();
        CHECK_OR_TRAP(w);
        bt_status st = k == VOCAB_SPM ? build_spm(w) : build_bpe(w, k == VOCAB_LLAMA_BPE);
        size_t size = 0;
        if (st == BT_OK)
            st = bt_gw_write_mem(w, &g_vocabs[k].file, &size, NULL);
        bt_gw_free(w);
        CHECK_OR_TRAP(st == BT_OK);
        bt_error err;
        bt_error_init(&err);
        CHECK_OR_TRAP(bt_gguf_open_memory(g_vocabs[k].file, size, &g_vocabs[k].gguf, &err) ==
                      BT_OK);
        CHECK_OR_TRAP(bt_vocab_load(g_vocabs[k].gguf, &g_vocabs[k].vocab, &err) == BT_OK);
    }
    g_ready = true;
}

/* ---- reference UTF-8 sanitizer (Unicode "maximal subpart" U+FFFD substitution) ---- */

/* Valid range of the k-th byte (k >= 1) of a sequence led by `lead`. */
static void cont_range(unsigned lead, int k, unsigned *lo, unsigned *hi) {
    *lo = 0x80, *hi = 0xBF;
    if (k != 1)
        return;
    if (lead == 0xE0)
        *lo = 0xA0;
    else if (lead == 0xED)
        *hi = 0x9F;
    else if (lead == 0xF0)
        *lo = 0x90;
    else if (lead == 0xF4)
        *hi = 0x8F;
}

static int seq_len(unsigned b) {
    if (b < 0x80)
        return 1;
    if (b >= 0xC2 && b <= 0xDF)
        return 2;
    if (b >= 0xE0 && b <= 0xEF)
        return 3;
    if (b >= 0xF0 && b <= 0xF4)
        return 4;
    return 0;
}

/* Writes the sanitized s[0..n) to out (room for 3 n bytes); returns its length. */
static size_t utf8_sanitize(const unsigned char *s, size_t n, char *out) {
    size_t k = 0, i = 0;
    while (i < n) {
        int len = seq_len(s[i]);
        if (len == 0) {
            memcpy(out + k, "\xef\xbf\xbd", 3), k += 3, i++;
            continue;
        }
        int j = 1;
        for (; j < len && i + (size_t)j < n; j++) {
            unsigned lo, hi;
            cont_range(s[i], j, &lo, &hi);
            if (s[i + (size_t)j] < lo || s[i + (size_t)j] > hi)
                break;
        }
        if (j == len) {
            memcpy(out + k, s + i, (size_t)len), k += (size_t)len;
        } else {
            memcpy(out + k, "\xef\xbf\xbd", 3), k += 3;
        }
        i += (size_t)j;
    }
    return k;
}

static bool utf8_valid(const unsigned char *s, size_t n, char *scratch) {
    return utf8_sanitize(s, n, scratch) == n && memcmp(scratch, s, n) == 0;
}

/* ---- one input ---- */

static int32_t g_ids[MAX_IDS + 8];

/* Streams ids through bt_detok into out; returns the byte count. */
static size_t stream_ids(const bt_vocab *v, const int32_t *ids, size_t n, bool special, char *out,
                         size_t out_cap) {
    bt_detok d;
    bt_detok_init(&d, v, special);
    size_t step_max = bt_detok_out_max(v), total = 0, got = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK_OR_TRAP(total + step_max <= out_cap);
        if (i % 7 == 3) {
            /* probe the LIMIT path: nothing written, state unchanged */
            bt_detok before = d;
            bt_status st = bt_detok_push(&d, ids[i], out + total, 0, &got);
            if (st == BT_ERR_LIMIT) {
                CHECK_OR_TRAP(got > 0 && got <= step_max);
                CHECK_OR_TRAP(memcmp(&before, &d, sizeof d) == 0);
            } else {
                CHECK_OR_TRAP(st == BT_OK && got == 0);
                continue;
            }
        }
        CHECK_OR_TRAP(bt_detok_push(&d, ids[i], out + total, step_max, &got) == BT_OK);
        CHECK_OR_TRAP(got <= step_max);
        total += got;
    }
    CHECK_OR_TRAP(bt_detok_push(&d, -1, out + total, step_max, &got) == BT_ERR_RANGE);
    CHECK_OR_TRAP(bt_detok_push(&d, bt_vocab_n_tokens(v), out + total, step_max, &got) ==
                  BT_ERR_RANGE);
    CHECK_OR_TRAP(total + 3 <= out_cap);
    CHECK_OR_TRAP(bt_detok_flush(&d, out + total, 3, &got) == BT_OK && got <= 3);
    total += got;
    CHECK_OR_TRAP(d.n_pending == 0);
    return total;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_ready)
        build_all();
    if (size == 0)
        return 0;
    const bt_vocab *v = g_vocabs[data[0] % N_VOCABS].vocab;
    bool is_bpe = bt_vocab_kind_get(v) == BT_VOCAB_BPE;
    bool add_special = data[0] & 4, parse_special = data[0] & 8;
    bool unparse_special = data[0] & 16, remove_special = data[0] & 32;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    int32_t n_tokens = bt_vocab_n_tokens(v);
    bt_error err;
    bt_error_init(&err);

    /* tokenize into the fixed buffer; a canary after cap must survive */
    size_t n = 0;
    for (size_t i = 0; i < 8; i++)
        g_ids[MAX_IDS + i] = INT32_MIN;
    bt_status st = bt_tokenize(v, text, len, add_special, parse_special, g_ids, MAX_IDS, &n, &err);
    for (size_t i = 0; i < 8; i++)
        CHECK_OR_TRAP(g_ids[MAX_IDS + i] == INT32_MIN);
    if (st == BT_ERR_LIMIT) {
        CHECK_OR_TRAP(n > MAX_IDS);
        return 0;
    }
    CHECK_OR_TRAP(st == BT_OK && n <= MAX_IDS);
    for (size_t i = 0; i < n; i++)
        CHECK_OR_TRAP(g_ids[i] >= 0 && g_ids[i] < n_tokens);
    if (len > 0)
        CHECK_OR_TRAP(n > 0);

    /* tiny cap: BT_ERR_LIMIT with the same needed count, nothing written past cap */
    int32_t small[3] = {INT32_MIN, INT32_MIN, INT32_MIN};
    size_t cap = data[0] % 3; /* 0..2 */
    size_t n_small = 0;
    st = bt_tokenize(v, text, len, add_special, parse_special, small, cap, &n_small, &err);
    CHECK_OR_TRAP(n_small == n);
    CHECK_OR_TRAP(st == (n > cap ? BT_ERR_LIMIT : BT_OK));
    for (size_t i = cap; i < 3; i++)
        CHECK_OR_TRAP(small[i] == INT32_MIN);
    for (size_t i = 0; i < cap && i < n; i++)
        CHECK_OR_TRAP(small[i] >= 0 && small[i] < n_tokens);

    /* concatenated pieces (bt_token_to_piece and the borrowed variant agree) */
    size_t max_piece = bt_vocab_max_piece_bytes(v);
    size_t pieces_cap = n * max_piece + 1;
    char *pieces = malloc(pieces_cap);
    char *detok = malloc(pieces_cap);
    size_t ref_cap = 3 * (pieces_cap > len ? pieces_cap : len) + 3;
    char *ref = malloc(ref_cap);
    char *streamed = malloc(3 * pieces_cap + bt_detok_out_max(v) + 3);
    CHECK_OR_TRAP(pieces && detok && ref && streamed);
    size_t n_pieces = 0;
    for (size_t i = 0; i < n; i++) {
        size_t got = 0;
        st = bt_token_to_piece(v, g_ids[i], unparse_special, pieces + n_pieces, max_piece, &got);
        CHECK_OR_TRAP(st == BT_OK && got <= max_piece);
        bt_str p = bt_vocab_token_piece(v, g_ids[i], unparse_special);
        CHECK_OR_TRAP(p.len == got && memcmp(p.ptr, pieces + n_pieces, got) == 0);
        n_pieces += got;
    }

    /* whole-sequence detokenize: LIMIT with the needed size when short, then it fits */
    char one;
    size_t need = 0, n_detok = 0;
    st = bt_detokenize(v, g_ids, n, remove_special, unparse_special, &one, 0, &need, &err);
    CHECK_OR_TRAP(st == BT_OK || st == BT_ERR_LIMIT);
    CHECK_OR_TRAP(st == BT_OK ? need == 0 : need > 0);
    CHECK_OR_TRAP(need <= n_pieces);
    st = bt_detokenize(v, g_ids, n, remove_special, unparse_special, detok, need, &n_detok, &err);
    CHECK_OR_TRAP(st == BT_OK && n_detok <= need);

    /* streaming detokenizer == sanitized concatenation of the pieces */
    size_t n_stream = stream_ids(v, g_ids, n, unparse_special, streamed,
                                 3 * pieces_cap + bt_detok_out_max(v) + 3);
    size_t n_ref = utf8_sanitize((const unsigned char *)pieces, n_pieces, ref);
    CHECK_OR_TRAP(n_stream == n_ref && memcmp(streamed, ref, n_ref) == 0);

    /* byte-level BPE is lossless for valid UTF-8 when the special flags match */
    bool specials_kept = parse_special ? unparse_special : true;
    if (is_bpe && add_special == remove_special && specials_kept &&
        utf8_valid((const unsigned char *)text, len, ref)) {
        /* pieces keep a BOS that bt_detokenize's remove_special drops */
        size_t skip = 0;
        if (add_special && bt_vocab_add_bos(v)) {
            CHECK_OR_TRAP(n > 0 && g_ids[0] == bt_vocab_bos(v));
            skip = unparse_special ? bt_vocab_token_piece(v, g_ids[0], true).len : 0;
        }
        CHECK_OR_TRAP(n_pieces - skip == len && memcmp(pieces + skip, text, len) == 0);
        if (strcmp(bt_vocab_pre_name(v), "smollm") == 0)
            CHECK_OR_TRAP(n_detok == len && memcmp(detok, text, len) == 0);
    }
    free(pieces);
    free(detok);
    free(ref);
    free(streamed);

    /* chat content never forges a marker (the opt-in may) */
    if (data[0] % N_VOCABS == VOCAB_SMOLLM) {
        char *content = malloc(len + 1);
        CHECK_OR_TRAP(content);
        memcpy(content, text, len);
        content[len] = '\0';
        bt_chat_template tpl = {.kind = BT_CHAT_CHATML};
        bt_chat_msg msg = {"user", content};
        bt_chat_params cp = bt_chat_default_params();
        cp.parse_special_in_content = parse_special;
        st = bt_chat_tokenize(&tpl, v, &msg, 1, &cp, g_ids, MAX_IDS, &n, &err);
        CHECK_OR_TRAP(st == BT_OK || (st == BT_ERR_LIMIT && n > MAX_IDS));
        size_t n_ctl = 0;
        for (size_t i = 0; st == BT_OK && i < n; i++) {
            CHECK_OR_TRAP(g_ids[i] >= 0 && g_ids[i] < n_tokens);
            n_ctl += bt_vocab_is_control(v, g_ids[i]);
        }
        CHECK_OR_TRAP(st != BT_OK || parse_special || n_ctl == 3);
        free(content);
    }
    return 0;
}
