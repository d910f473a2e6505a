/*
 * tokenize_vectors.c - dump token ids for a GGUF vocabulary.
 *
 *   tokenize_vectors MODEL.gguf [--parse-special] [--add-special] [FILE.inp]
 *
 * With FILE.inp (llama.cpp format: tests separated by "\n__ggml_vocab_test__\n") prints one
 * .out line per test (" id id ...\n"), so the result can be diffed with the .out file.
 * Without it, tokenizes stdin and prints "id\tpiece" per token.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "vocab.h"

static char *read_stream(FILE *f, size_t *n) {
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap + 1);
    for (;;) {
        if (!b)
            return NULL;
        size_t r = fread(b + len, 1, cap - len, f);
        len += r;
        if (r == 0)
            break;
        if (len == cap) {
            cap *= 2;
            char *nb = realloc(b, cap + 1);
            if (!nb) {
                free(b);
                return NULL;
            }
            b = nb;
        }
    }
    b[len] = 0;
    *n = len;
    return b;
}

static int tokenize_print(const bt_vocab *v, const char *s, size_t len, bool add_special,
                          bool parse_special, bool as_line) {
    size_t cap = len + 8, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    bt_error err;
    bt_error_init(&err);
    if (!ids || bt_tokenize(v, s, len, add_special, parse_special, ids, cap, &n, &err) != BT_OK) {
        fprintf(stderr, "tokenize: %s\n", err.msg);
        free(ids);
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        if (as_line) {
            printf(" %d", ids[i]);
        } else {
            bt_str p = bt_vocab_token_piece(v, ids[i], true);
            printf("%d\t%.*s\n", ids[i], (int)p.len, p.ptr);
        }
    }
    if (as_line)
        printf("\n");
    free(ids);
    return 0;
}

int main(int argc, char **argv) {
    const char *model = NULL, *inp = NULL;
    bool parse_special = false, add_special = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--parse-special") == 0)
            parse_special = true;
        else if (strcmp(argv[i], "--add-special") == 0)
            add_special = true;
        else if (!model)
            model = argv[i];
        else
            inp = argv[i];
    }
    if (!model) {
        fprintf(stderr, "usage: %s MODEL.gguf [--parse-special] [--add-special] [FILE.inp]\n",
                argv[0]);
        return 2;
    }
    bt_gguf *g = NULL;
    bt_vocab *v = NULL;
    bt_error err;
    bt_error_init(&err);
    if (bt_gguf_open(model, &g, &err) != BT_OK || bt_vocab_load(g, &v, &err) != BT_OK) {
        fprintf(stderr, "%s: %s\n", model, err.msg);
        bt_gguf_free(g);
        return 1;
    }
    int rc = 0;
    size_t len;
    FILE *f = inp ? fopen(inp, "rb") : stdin;
    char *text = f ? read_stream(f, &len) : NULL;
    if (inp && f)
        fclose(f);
    if (!text) {
        fprintf(stderr, "cannot read %s\n", inp ? inp : "stdin");
        rc = 1;
    } else if (inp) {
        const char *sep = "\n__ggml_vocab_test__\n";
        size_t pos = 0;
        while (pos < len && rc == 0) {
            const char *e = strstr(text + pos, sep);
            size_t l = e ? (size_t)(e - (text + pos)) : len - pos;
            rc = tokenize_print(v, text + pos, l, add_special, parse_special, true);
            pos += l + (e ? strlen(sep) : 0);
        }
    } else {
        rc = tokenize_print(v, text, len, add_special, parse_special, false);
    }
    free(text);
    bt_vocab_free(v);
    bt_gguf_free(g);
    return rc;
}
