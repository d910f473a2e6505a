/*
 * test_tokenizer.c - the tokenizer against llama.cpp's test vectors (shared/testdata/vocab),
 * the SmolLM2 golden vectors (tests/data/golden, made with llama-cpp-python), and unit
 * checks on in-memory vocabularies: unknown pre-tokenizer / model errors, parse_special,
 * the incremental detokenizer, invalid UTF-8, speed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "detok.h"
#include "gguf.h"
#include "gguf_writer.h"
#include "vocab.h"

static char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)sz + 1);
    if (b && fread(b, 1, (size_t)sz, f) != (size_t)sz) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) {
        b[sz] = 0;
        *n = (size_t)sz;
    }
    return b;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Concatenated pieces (special = false), what a streaming client would print. */
static size_t raw_pieces(const bt_vocab *v, const int32_t *ids, size_t n, char *buf) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bt_str p = bt_vocab_token_piece(v, ids[i], false);
        memcpy(buf + k, p.ptr, p.len);
        k += p.len;
    }
    return k;
}

/* Streams ids through bt_detok one by one and returns the text. */
static size_t stream_detok(const bt_vocab *v, const int32_t *ids, size_t n, char *buf,
                           bool special) {
    bt_detok d;
    bt_detok_init(&d, v, special);
    size_t k = 0, m = 0;
    size_t cap = bt_detok_out_max(v);
    for (size_t i = 0; i < n; i++) {
        CHECK_OK(bt_detok_push(&d, ids[i], buf + k, cap, &m));
        k += m;
    }
    CHECK_OK(bt_detok_flush(&d, buf + k, cap, &m));
    return k + m;
}

typedef struct vec_opts {
    bool parse_special;
    bool clean_spaces; /* the vocab cleans spaces on full decode */
    bool strip_prefix; /* SPM: the first piece carries the prefix space */
} vec_opts;

/* Runs one .inp/.out pair; returns the number of matching tests, *n_tests the count. */
static int run_vectors(const char *label, const bt_vocab *v, const char *inp_path,
                       const char *out_path, vec_opts o, int *n_tests) {
    size_t ni, no;
    char *inp = read_all(inp_path, &ni);
    char *out = read_all(out_path, &no);
    *n_tests = 0;
    if (!inp || !out) { /* shipped with the repository: missing is a failure */
        check_fail(__FILE__, __LINE__, "%s: %s or %s not readable", label, inp_path, out_path);
        free(inp);
        free(out);
        return -1;
    }
    const char *sep = "\n__ggml_vocab_test__\n";
    size_t sl = strlen(sep);
    int match = 0, shown = 0;
    size_t ipos = 0, opos = 0;
    size_t cap = 1 << 16;
    int32_t *ids = malloc(cap * sizeof *ids);
    int32_t *want = malloc(cap * sizeof *want);
    char *text = malloc(1 << 20);
    while (ipos < ni) {
        const char *s = inp + ipos;
        const char *e = strstr(s, sep);
        size_t len = e ? (size_t)(e - s) : ni - ipos;
        ipos += len + (e ? sl : 0);
        /* expected ids: one line */
        size_t nw = 0;
        const char *line = out + opos;
        const char *le = memchr(line, '\n', no - opos);
        size_t ll = le ? (size_t)(le - line) : no - opos;
        opos += ll + (le ? 1 : 0);
        for (size_t j = 0; j < ll;) {
            while (j < ll && line[j] == ' ')
                j++;
            if (j >= ll)
                break;
            want[nw++] = (int32_t)strtol(line + j, NULL, 10);
            while (j < ll && line[j] != ' ')
                j++;
        }
        (*n_tests)++;
        size_t n = 0;
        bt_error err;
        bt_error_init(&err);
        bt_status st = bt_tokenize(v, s, len, false, o.parse_special, ids, cap, &n, &err);
        bool ok = st == BT_OK && n == nw && memcmp(ids, want, n * sizeof *ids) == 0;
        if (ok) {
            match++;
        } else if (shown++ < 4) {
            printf("  %s mismatch on '%.*s' (st %s %s)\n    want:", label, (int)len, s,
                   bt_status_str(st), err.msg);
            for (size_t j = 0; j < nw; j++)
                printf(" %d", want[j]);
            printf("\n    got: ");
            for (size_t j = 0; j < n && j < cap; j++)
                printf(" %d", ids[j]);
            printf("\n");
        }
        CHECK(ok);
        if (st != BT_OK)
            continue;
        /* Round trip. Streaming pieces give back the input bytes (all test strings are valid
         * UTF-8); SPM puts a prefix space before the first piece. */
        size_t k = raw_pieces(v, ids, n, text);
        const char *got = text;
        if (o.strip_prefix && k > 0 && got[0] == ' ')
            got++, k--;
        if (!o.parse_special) {
            bool rt = k == len && memcmp(got, s, len) == 0;
            if (!rt)
                printf("  %s round trip differs on '%.*s': '%.*s'\n", label, (int)len, s, (int)k,
                       got);
            CHECK(rt);
            size_t ks = stream_detok(v, ids, n, text, false);
            got = text;
            if (o.strip_prefix && ks > 0 && got[0] == ' ')
                got++, ks--;
            CHECK(ks == len && memcmp(got, s, len) == 0);
        }
        /* Full decode: exact where the vocab does not clean spaces. */
        size_t kd = 0;
        CHECK_OK(bt_detokenize(v, ids, n, false, o.parse_special, text, 1 << 20, &kd, NULL));
        if (!o.clean_spaces) {
            bool rt = kd == len && memcmp(text, s, len) == 0;
            if (!rt)
                printf("  %s detokenize differs on '%.*s': '%.*s'\n", label, (int)len, s, (int)kd,
                       text);
            CHECK(rt);
        }
    }
    printf("%s: %d/%d match\n", label, match, *n_tests);
    free(ids);
    free(want);
    free(text);
    free(inp);
    free(out);
    return match;
}

static void check_llama_vectors(const char *dir, const char *name, vec_opts o, const char *pre) {
    char path[4096], inp[4200], outp[4200];
    snprintf(path, sizeof path, "%s/testdata/vocab/ggml-vocab-%s.gguf", dir, name);
    snprintf(inp, sizeof inp, "%s.inp", path);
    snprintf(outp, sizeof outp, "%s.out", path);
    bt_gguf *g = NULL;
    bt_vocab *v = NULL;
    bt_error err;
    bt_error_init(&err);
    if (bt_gguf_open(path, &g, &err) != BT_OK) {
        printf("FAIL open %s: %s\n", path, err.msg);
        CHECK(0);
        return;
    }
    bt_status st = bt_vocab_load(g, &v, &err);
    if (st != BT_OK)
        printf("FAIL load %s: %s\n", path, err.msg);
    CHECK_EQ_INT(st, BT_OK);
    if (v) {
        CHECK(strcmp(bt_vocab_pre_name(v), pre) == 0);
        int n;
        int m = run_vectors(name, v, inp, outp, o, &n);
        CHECK_EQ_INT(m, 46);
    }
    bt_vocab_free(v);
    bt_gguf_free(g);
}

/* Chat markers of issue #13's vocabularies with parse_special (tests/data/golden/
 * vocab-NAME-special.*, from tests/tools/make_vocab_goldens.py): Phi-3's specials strip the
 * whitespace after them (RSTRIP, set from general.name as llama.cpp does). Ids only: the
 * stripped whitespace does not come back on decode. */
static void check_special_goldens(const char *dir, const char *name) {
    const char *data = check_data_dir("vocab special goldens");
    if (!data)
        return;
    char path[4096], inp[4200], outp[4200];
    snprintf(path, sizeof path, "%s/testdata/vocab/ggml-vocab-%s.gguf", dir, name);
    snprintf(inp, sizeof inp, "%s/golden/vocab-%s-special.inp", data, name);
    snprintf(outp, sizeof outp, "%s/golden/vocab-%s-special.out", data, name);
    bt_gguf *g = NULL;
    bt_vocab *v = NULL;
    bt_error err;
    bt_error_init(&err);
    if (bt_gguf_open(path, &g, &err) != BT_OK || bt_vocab_load(g, &v, &err) != BT_OK) {
        check_fail(__FILE__, __LINE__, "%s: %s", path, err.msg);
        bt_gguf_free(g);
        return;
    }
    char label[64];
    snprintf(label, sizeof label, "%s-special", name);
    int n;
    int m = run_vectors(label, v, inp, outp, (vec_opts){true, true, false}, &n);
    CHECK_EQ_INT(m, n);
    CHECK(n >= 7);
    bt_vocab_free(v);
    bt_gguf_free(g);
}

/* ---- synthetic vocabularies ---- */

/* A byte-level BPE vocab: the 256 mapped bytes, "ab", "abc", "<|im_start|>" (CONTROL) and
 * "<tool>" (USER_DEFINED). */
static uint8_t *make_bpe_gguf_extra(const char *model, const char *pre, const char *const *extra,
                                    size_t *size) {
    static char store[300][16];
    const char *toks[320];
    int32_t types[320];
    int n = 0, m = 0;
    for (int b = 0; b < 256; b++) {
        uint32_t cp;
        if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))
            cp = (uint32_t)b;
        else
            cp = 0x100u + (uint32_t)m++;
        char *s = store[n];
        if (cp < 0x80) {
            s[0] = (char)cp, s[1] = 0;
        } else {
            s[0] = (char)(0xC0 | (cp >> 6)), s[1] = (char)(0x80 | (cp & 0x3F)), s[2] = 0;
        }
        toks[n] = s;
        types[n++] = 1;
    }
    toks[n] = "ab", types[n++] = 1;           /* 256 */
    toks[n] = "abc", types[n++] = 1;          /* 257 */
    toks[n] = "<|im_start|>", types[n++] = 3; /* 258 */
    toks[n] = "<tool>", types[n++] = 4;       /* 259 */
    toks[n] = "<|im_end|>", types[n++] = 3;   /* 260 */
    for (size_t i = 0; extra && extra[i] && n < 320; i++)
        toks[n] = extra[i], types[n++] = 1; /* 261... */
    const char *merges[] = {"a b", "ab c"};
    bt_gw *w = bt_gw_new();
    bt_gw_add_str(w, "general.architecture", "llama");
    bt_gw_add_str(w, "tokenizer.ggml.model", model);
    if (pre)
        bt_gw_add_str(w, "tokenizer.ggml.pre", pre);
    bt_gw_add_arr_str(w, "tokenizer.ggml.tokens", toks, (uint64_t)n);
    bt_gw_add_arr(w, "tokenizer.ggml.token_type", BT_GGUF_I32, types, (uint64_t)n);
    bt_gw_add_arr_str(w, "tokenizer.ggml.merges", merges, 2);
    bt_gw_add_u32(w, "tokenizer.ggml.eos_token_id", 260);
    uint8_t *buf = NULL;
    if (bt_gw_write_mem(w, &buf, size, NULL) != BT_OK)
        buf = NULL;
    bt_gw_free(w);
    return buf;
}

static uint8_t *make_bpe_gguf(const char *model, const char *pre, size_t *size) {
    return make_bpe_gguf_extra(model, pre, NULL, size);
}

/* Splits of the llama3 and qwen2 regexes, seen through whole-piece tokens: with
 * ignore_merges (llama3) a piece that is a token is emitted as is; without merges every
 * other piece falls apart into byte tokens. */
static void test_pre_families(void) {
    /* Byte-mapped: 'Ġ' is U+0120 (space), 'Ċ' U+010A (newline). */
    const char *pieces[] = {"Hello", "123", "456", "\xc4\xa0world", "'s", "\xc4\x8a\xc4\x8a", NULL};
    const char *text = "Hello 123456 world's\n\n";
    const char *names[] = {"llama-bpe", "qwen2",  "deepseek-r1-qwen", "default", "gpt-2",
                           "command-r", "smollm", "llama3",           "dbrx"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        size_t sz;
        uint8_t *buf = make_bpe_gguf_extra("gpt2", names[k], pieces, &sz);
        bt_gguf *g = NULL;
        bt_vocab *v = NULL;
        bt_error err;
        bt_error_init(&err);
        CHECK_OK(bt_gguf_open_memory(buf, sz, &g, NULL));
        bt_status st = bt_vocab_load(g, &v, &err);
        if (st != BT_OK)
            printf("FAIL pre %s: %s\n", names[k], err.msg);
        CHECK_EQ_INT(st, BT_OK);
        int32_t ids[64];
        size_t n = 0;
        if (v && strcmp(names[k], "llama-bpe") == 0) {
            CHECK(bt_vocab_add_bos(v));
            CHECK_OK(bt_tokenize(v, text, strlen(text), false, false, ids, 64, &n, NULL));
            /* Hello | " " | 123 | 456 | " world" | 's | \n\n */
            int32_t want[] = {261, ' ', 262, 263, 264, 265, 266}; /* byte tokens: id = byte */
            CHECK(n == 7 && memcmp(ids, want, sizeof want) == 0);
        }
        if (v && strcmp(names[k], "qwen2") == 0) {
            CHECK(!bt_vocab_add_bos(v));
            CHECK_OK(bt_tokenize(v, text, strlen(text), false, false, ids, 64, &n, NULL));
            /* no ignore_merges: only single-byte tokens (and "ab") can come out; digits are
             * single pieces: Hello(5) " "(1) 1..6(6) " world"(6) 's(2) \n\n(2) bytes */
            CHECK_EQ_INT(n, 22);
        }
        bt_vocab_free(v);
        bt_gguf_free(g);
        free(buf);
    }
}

static void test_load_errors(void) {
    size_t sz;
    uint8_t *buf = make_bpe_gguf("gpt2", "no-such-pre", &sz);
    CHECK(buf != NULL);
    bt_gguf *g = NULL;
    bt_vocab *v = NULL;
    bt_error err;
    bt_error_init(&err);
    CHECK_OK(bt_gguf_open_memory(buf, sz, &g, NULL));
    CHECK_EQ_INT(bt_vocab_load(g, &v, &err), BT_ERR_UNSUPPORTED);
    CHECK(v == NULL);
    CHECK(strstr(err.msg, "no-such-pre") != NULL);
    bt_gguf_free(g);
    free(buf);

    buf = make_bpe_gguf("bert", "gpt-2", &sz);
    bt_error_init(&err);
    CHECK_OK(bt_gguf_open_memory(buf, sz, &g, NULL));
    CHECK_EQ_INT(bt_vocab_load(g, &v, &err), BT_ERR_UNSUPPORTED);
    CHECK(strstr(err.msg, "bert") != NULL);
    bt_gguf_free(g);
    free(buf);
    bt_vocab_free(NULL);
}

static void test_synthetic_bpe(void) {
    size_t sz;
    uint8_t *buf = make_bpe_gguf("gpt2", "smollm", &sz);
    bt_gguf *g = NULL;
    bt_vocab *v = NULL;
    CHECK_OK(bt_gguf_open_memory(buf, sz, &g, NULL));
    CHECK_OK(bt_vocab_load(g, &v, NULL));
    if (!v) {
        bt_gguf_free(g);
        free(buf);
        return;
    }
    int32_t ids[64];
    size_t n;
    /* merges: "abc" -> 257; "abd" -> 256 'd' */
    CHECK_OK(bt_tokenize(v, "abc", 3, false, false, ids, 64, &n, NULL));
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_INT(ids[0], 257);
    CHECK_OK(bt_tokenize(v, "abd", 3, false, false, ids, 64, &n, NULL));
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_INT(ids[0], 256);
    /* parse_special */
    const char *t = "<|im_start|>abc";
    CHECK_OK(bt_tokenize(v, t, strlen(t), false, true, ids, 64, &n, NULL));
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_INT(ids[0], 258);
    CHECK_EQ_INT(ids[1], 257);
    CHECK_OK(bt_tokenize(v, t, strlen(t), false, false, ids, 64, &n, NULL));
    CHECK(n > 2);
    for (size_t i = 0; i < n && i < 64; i++)
        CHECK(ids[i] != 258);
    /* USER_DEFINED is matched even without parse_special */
    CHECK_OK(bt_tokenize(v, "x<tool>y", 8, false, false, ids, 64, &n, NULL));
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_INT(ids[1], 259);
    /* cap exceeded */
    bt_error err;
    bt_error_init(&err);
    CHECK_EQ_INT(bt_tokenize(v, "x y z", 5, false, false, ids, 2, &n, &err), BT_ERR_LIMIT);
    CHECK_EQ_INT(n, 5);
    /* EOG: eos 260 <|im_end|> */
    CHECK(bt_vocab_is_eog(v, 260));
    CHECK(!bt_vocab_is_eog(v, 258));
    /* pieces: control hidden unless special */
    char pb[32];
    CHECK_OK(bt_token_to_piece(v, 258, false, pb, sizeof pb, &n));
    CHECK_EQ_INT(n, 0);
    CHECK_OK(bt_token_to_piece(v, 258, true, pb, sizeof pb, &n));
    CHECK_EQ_INT(n, 12);
    CHECK_EQ_INT(bt_token_to_piece(v, 258, true, pb, 4, &n), BT_ERR_LIMIT);
    CHECK_EQ_INT(bt_token_to_piece(v, 9999, true, pb, 4, &n), BT_ERR_RANGE);
    /* invalid UTF-8 never crashes; every byte is accounted for */
    const char bad[] = "a\xff\xc3(b\xe2\x82";
    CHECK_OK(bt_tokenize(v, bad, sizeof bad - 1, false, false, ids, 64, &n, NULL));
    CHECK(n > 0);
    bt_vocab_free(v);
    bt_gguf_free(g);
    free(buf);
}

/* Incremental detokenizer on byte tokens: a 4-byte emoji split across 4 tokens. */
static void test_detok_bytes(const bt_vocab *v, const char *label) {
    const char *emoji = "\xf0\x9f\xa6\x99"; /* U+1F999 */
    int32_t ids[16];
    size_t n = 0;
    CHECK_OK(bt_tokenize(v, emoji, 4, false, false, ids, 16, &n, NULL));
    printf("%s: emoji -> %zu tokens\n", label, n);
    CHECK(n >= 2); /* split across several tokens in these vocabularies */
    bt_detok d;
    bt_detok_init(&d, v, false);
    char out[256], all[64];
    size_t k = 0, m;
    for (size_t i = 0; i < n; i++) {
        CHECK_OK(bt_detok_push(&d, ids[i], out, sizeof out, &m));
        memcpy(all + k, out, m);
        k += m;
        if (i + 1 < n) {
            bool complete = false;
            for (size_t j = 0; j < k; j++)
                if ((unsigned char)all[j] == 0xf0)
                    complete = true;
            CHECK(!complete); /* nothing of the emoji is emitted early */
        }
    }
    CHECK_OK(bt_detok_flush(&d, out, sizeof out, &m));
    memcpy(all + k, out, m);
    k += m;
    /* SPM pieces start with the prefix space */
    const char *got = all;
    if (k == 5 && got[0] == ' ')
        got++, k--;
    CHECK(k == 4 && memcmp(got, emoji, 4) == 0);
}

static void test_detok_spm(const bt_vocab *v) {
    int32_t f0 = bt_vocab_find(v, "<0xF0>", 6), ff = bt_vocab_find(v, "<0xFF>", 6);
    int32_t x9f = bt_vocab_find(v, "<0x9F>", 6), a = bt_vocab_find(v, "<0x41>", 6);
    CHECK(f0 >= 0 && ff >= 0 && x9f >= 0 && a >= 0);
    if (f0 < 0 || ff < 0 || x9f < 0 || a < 0)
        return;
    bt_detok d;
    char out[64];
    size_t m;
    bt_detok_init(&d, v, false);
    /* F0 9F then 'A': the held F0 9F can no longer complete -> one U+FFFD, then 'A' */
    CHECK_OK(bt_detok_push(&d, f0, out, sizeof out, &m));
    CHECK_EQ_INT(m, 0);
    CHECK_OK(bt_detok_push(&d, x9f, out, sizeof out, &m));
    CHECK_EQ_INT(m, 0);
    CHECK_OK(bt_detok_push(&d, a, out, sizeof out, &m));
    CHECK(m == 4 && memcmp(out,
                           "\xef\xbf\xbd"
                           "A",
                           4) == 0);
    /* FF is provably invalid at once */
    CHECK_OK(bt_detok_push(&d, ff, out, sizeof out, &m));
    CHECK(m == 3 && memcmp(out, "\xef\xbf\xbd", 3) == 0);
    /* a pending lead byte is flushed as U+FFFD */
    CHECK_OK(bt_detok_push(&d, f0, out, sizeof out, &m));
    CHECK_EQ_INT(m, 0);
    CHECK_EQ_INT(bt_detok_push(&d, a, out, 2, &m), BT_ERR_LIMIT);
    CHECK_EQ_INT(m, 4);
    CHECK_OK(bt_detok_flush(&d, out, sizeof out, &m));
    CHECK(m == 3 && memcmp(out, "\xef\xbf\xbd", 3) == 0);
    CHECK_OK(bt_detok_flush(&d, out, sizeof out, &m));
    CHECK_EQ_INT(m, 0);
}

static bt_vocab *open_vocab(const char *path, bt_gguf **g) {
    bt_vocab *v = NULL;
    bt_error err;
    bt_error_init(&err);
    *g = NULL;
    if (bt_gguf_open(path, g, &err) != BT_OK || bt_vocab_load(*g, &v, &err) != BT_OK) {
        printf("FAIL %s: %s\n", path, err.msg);
        CHECK(0);
        bt_gguf_free(*g);
        *g = NULL;
        return NULL;
    }
    return v;
}

static void test_shared(const char *dir) {
    check_llama_vectors(dir, "gpt-2", (vec_opts){false, true, false}, "gpt-2");
    check_llama_vectors(dir, "llama-spm", (vec_opts){false, false, true}, "");
    check_llama_vectors(dir, "starcoder", (vec_opts){false, true, false}, "starcoder");
    check_llama_vectors(dir, "refact", (vec_opts){false, true, false}, "refact");
    /* Issue #13's families: Llama 3, Qwen 2/2.5/3 and Phi-3 (SPM) */
    check_llama_vectors(dir, "llama-bpe", (vec_opts){false, true, false}, "llama-bpe");
    check_llama_vectors(dir, "qwen2", (vec_opts){false, false, false}, "qwen2");
    check_llama_vectors(dir, "phi-3", (vec_opts){false, false, true}, "");
    check_special_goldens(dir, "llama-bpe");
    check_special_goldens(dir, "qwen2");
    check_special_goldens(dir, "phi-3");

    char path[4096];
    bt_gguf *g;
    snprintf(path, sizeof path, "%s/testdata/vocab/ggml-vocab-starcoder.gguf", dir);
    bt_vocab *v = open_vocab(path, &g);
    if (v) {
        test_detok_bytes(v, "starcoder");
        /* <|endoftext|> (CONTROL, id 0) only with parse_special */
        int32_t ids[64];
        size_t n;
        const char *t = "a<|endoftext|>";
        CHECK_OK(bt_tokenize(v, t, strlen(t), false, true, ids, 64, &n, NULL));
        CHECK(n == 2 && ids[1] == 0);
        CHECK_OK(bt_tokenize(v, t, strlen(t), false, false, ids, 64, &n, NULL));
        CHECK(n > 2);
        CHECK(bt_vocab_is_eog(v, 0));
        /* clean_spaces on the full decode */
        const char *cs = "Hello , world ! It 's";
        CHECK_OK(bt_tokenize(v, cs, strlen(cs), false, false, ids, 64, &n, NULL));
        char out[128];
        size_t k;
        CHECK_OK(bt_detokenize(v, ids, n, false, false, out, sizeof out, &k, NULL));
        CHECK(k == strlen("Hello, world! It's") && memcmp(out, "Hello, world! It's", k) == 0);
        /* speed: ~30 KB of mixed text */
        size_t ni;
        char inp[4200];
        snprintf(inp, sizeof inp, "%s.inp", path);
        char *src = read_all(inp, &ni);
        if (src) {
            size_t big_n = 0, big_cap = 32 * 1024;
            char *big = malloc(big_cap);
            while (big_n + ni <= big_cap - 1) {
                memcpy(big + big_n, src, ni);
                big_n += ni;
            }
            int32_t *bids = malloc(big_n * sizeof *bids);
            double t0 = now_ms();
            CHECK_OK(bt_tokenize(v, big, big_n, false, false, bids, big_n, &n, NULL));
            double t1 = now_ms();
            printf("speed: %zu bytes -> %zu tokens in %.2f ms\n", big_n, n, t1 - t0);
            CHECK(t1 - t0 < 100.0);
            free(bids);
            free(big);
            free(src);
        }
        bt_vocab_free(v);
        bt_gguf_free(g);
    }
    snprintf(path, sizeof path, "%s/testdata/vocab/ggml-vocab-llama-spm.gguf", dir);
    v = open_vocab(path, &g);
    if (v) {
        test_detok_bytes(v, "llama-spm");
        test_detok_spm(v);
        int32_t ids[8];
        size_t n;
        CHECK_OK(bt_tokenize(v, "Hi", 2, true, false, ids, 8, &n, NULL));
        CHECK(n >= 2 && ids[0] == 1); /* SPM adds BOS by default */
        bt_vocab_free(v);
        bt_gguf_free(g);
    }
}

static void test_smollm2(void) {
    /* The golden vectors ship with the repository: their absence fails even without the model. */
    const char *data = check_data_dir("SmolLM2 tokenizer golden vectors");
    const char *model = check_model_path("SmolLM2 tokenizer golden vectors");
    if (!model || !data)
        return;
    bt_gguf *g;
    bt_vocab *v = open_vocab(model, &g);
    if (!v)
        return;
    CHECK(strcmp(bt_vocab_pre_name(v), "smollm") == 0);
    CHECK(!bt_vocab_add_bos(v));
    CHECK(bt_vocab_is_eog(v, 0));
    CHECK(bt_vocab_is_eog(v, 2));
    CHECK(!bt_vocab_is_eog(v, 1));
    CHECK_EQ_INT(bt_vocab_nl(v), 198);
    int32_t ids[8];
    size_t n;
    CHECK_OK(bt_tokenize(v, "<|im_start|>", 12, false, true, ids, 8, &n, NULL));
    CHECK(n == 1 && ids[0] == 1);
    CHECK_OK(bt_tokenize(v, "<|im_start|>", 12, false, false, ids, 8, &n, NULL));
    CHECK(n > 1);
    char inp[4096], outp[4096];
    int nt;
    snprintf(inp, sizeof inp, "%s/golden/smollm2-tokenize.inp", data);
    snprintf(outp, sizeof outp, "%s/golden/smollm2-tokenize.out", data);
    int m = run_vectors("smollm2", v, inp, outp, (vec_opts){false, false, false}, &nt);
    if (m >= 0)
        CHECK_EQ_INT(m, nt);
    snprintf(inp, sizeof inp, "%s/golden/smollm2-tokenize-special.inp", data);
    snprintf(outp, sizeof outp, "%s/golden/smollm2-tokenize-special.out", data);
    m = run_vectors("smollm2-special", v, inp, outp, (vec_opts){true, false, false}, &nt);
    if (m >= 0)
        CHECK_EQ_INT(m, nt);
    bt_vocab_free(v);
    bt_gguf_free(g);
}

/* Gemma 3 270M (SentencePiece, 262144 tokens, no prefix space, whitespace runs as
 * USER_DEFINED tokens, byte fallback) against llama.cpp's ids, and the detokenizer's round
 * trip on every plain string (llama.cpp round-trips all of them: make_gemma_goldens.py checks).
 * The model: $BATON_GEMMA_MODEL, else the cache; e2e.test_gemma3_tokenize fetches it. */
static void test_gemma3(void) {
    const char *data = check_data_dir("Gemma 3 tokenizer golden vectors");
    static char buf[4096];
    const char *model = getenv("BATON_GEMMA_MODEL");
    if (!model) {
        const char *cache = getenv("BATON_CACHE");
        const char *home = getenv("HOME");
        if (cache)
            snprintf(buf, sizeof buf, "%s/gemma-3-270m-q4_k_m.gguf", cache);
        else
            snprintf(buf, sizeof buf, "%s/.cache/baton/gemma-3-270m-q4_k_m.gguf", home ? home : "");
        model = buf;
    }
    if (!data)
        return;
    if (access(model, R_OK) != 0) {
        printf("SKIP Gemma 3 tokenizer: %s not found (deploy/fetch-model.sh gemma3-270m)\n", model);
        bt_check_skipped++;
        return;
    }
    bt_gguf *g;
    bt_vocab *v = open_vocab(model, &g);
    if (!v)
        return;
    CHECK_EQ_INT(bt_vocab_n_tokens(v), 262144);
    CHECK(bt_vocab_kind_get(v) == BT_VOCAB_SPM);
    CHECK(bt_vocab_add_bos(v));
    CHECK_EQ_INT(bt_vocab_bos(v), 2);
    int32_t eot = bt_vocab_find(v, "<end_of_turn>", 13);
    CHECK(eot != BT_TOKEN_NULL && bt_vocab_is_eog(v, eot));
    CHECK(bt_vocab_is_eog(v, 1)); /* <eos> */
    char inp[4096], outp[4096];
    int nt;
    snprintf(inp, sizeof inp, "%s/golden/gemma3-tokenize.inp", data);
    snprintf(outp, sizeof outp, "%s/golden/gemma3-tokenize.out", data);
    int m = run_vectors("gemma3", v, inp, outp, (vec_opts){false, false, false}, &nt);
    if (m >= 0)
        CHECK_EQ_INT(m, nt);
    CHECK(nt >= 40);
    snprintf(inp, sizeof inp, "%s/golden/gemma3-tokenize-special.inp", data);
    snprintf(outp, sizeof outp, "%s/golden/gemma3-tokenize-special.out", data);
    /* ids only: its U+2581 string decodes to spaces (as in llama.cpp), so no exact decode */
    m = run_vectors("gemma3-special", v, inp, outp, (vec_opts){true, true, false}, &nt);
    if (m >= 0)
        CHECK_EQ_INT(m, nt);
    bt_vocab_free(v);
    bt_gguf_free(g);
}

int main(void) {
    test_load_errors();
    test_synthetic_bpe();
    test_pre_families();
    const char *dir = check_shared_dir("llama.cpp tokenizer vectors");
    if (dir)
        test_shared(dir);
    test_smollm2();
    test_gemma3();
    return check_finish();
}
