/*
 * test_chat_corpus.c - every Jinja template of llama.cpp's models/templates/ (copied to
 * tests/data/chat_templates/corpus/, rendered offline by tests/tools/make_chat_goldens.py) is
 * either recognised as the kind manifest.tsv names and renders the two fixed conversations
 * byte for byte as the template itself does, or refused with BT_ERR_UNSUPPORTED naming the
 * fix (--chat-template NAME). A template recognised as a kind it does not render as fails
 * here: that is a misreading.
 *
 * manifest.tsv: file TAB kind-or-"refused" TAB bos-text ("-" for none). The goldens begin with
 * the template's bos_token text, which baton adds as a token (the vocabulary's add_bos), not as
 * text: the test expects golden == [bos-text] + bt_chat_render(...). A golden that starts with
 * "ERROR:" is a conversation the template itself refuses (Gemma 2: no system role); it is
 * not compared.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "check.h"

static char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap + 1);
    size_t k;
    while (b && (k = fread(b + len, 1, cap - len, f)) > 0) {
        len += k;
        if (len == cap) {
            char *nb = realloc(b, 2 * cap + 1);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (b)
        b[len] = '\0';
    *n = len;
    return b;
}

static const bt_chat_msg conv_sys[] = {
    {"system", "You are a helpful assistant."},
    {"user", "Hello!"},
    {"assistant", "Hi there, how can I help?"},
    {"user", "What is 2+2?"},
};

/* Compares one conversation's rendering with its golden; returns 1 when equal or skipped. */
static int check_render(const char *dir, const char *stem, const char *tag,
                        const bt_chat_template *t, const char *bos, const bt_chat_msg *msgs,
                        size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.%s.out", dir, stem, tag);
    size_t gl;
    char *golden = read_file(path, &gl);
    if (!golden) {
        check_fail(__FILE__, __LINE__, "%s not readable", path);
        return 0;
    }
    if (strncmp(golden, "ERROR:", 6) == 0) {
        printf("  %s %s: the template refuses this conversation (%.80s)\n", stem, tag, golden);
        free(golden);
        return 1;
    }
    char *r = bt_chat_render(t, msgs, n, 1);
    size_t bl = strlen(bos), rl = r ? strlen(r) : 0;
    if (strncmp(golden, bos, bl) != 0)
        bl = 0; /* this template does not write bos_token */
    int ok = r && gl == bl + rl && memcmp(golden, bos, bl) == 0 && memcmp(golden + bl, r, rl) == 0;
    if (!ok)
        printf("  %s %s as %s differs:\n--- template\n%s\n--- baton (after bos '%s')\n%s\n---\n",
               stem, tag, bt_chat_kind_name(t->kind), golden, bos, r ? r : "(null)");
    CHECK(ok);
    free(r);
    free(golden);
    return ok;
}

/* Line `line` (1-based) of a golden .out file as ids; returns the count, -1 when missing. */
static int golden_ids(const char *path, int line, int32_t *ids, int cap) {
    size_t n;
    char *b = read_file(path, &n);
    if (!b)
        return -1;
    char *p = b;
    for (int i = 1; i < line && p; i++) {
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    int k = -1;
    if (p) {
        k = 0;
        char *e = strchr(p, '\n');
        if (e)
            *e = '\0';
        for (char *t = strtok(p, " "); t && k < cap; t = strtok(NULL, " "))
            ids[k++] = (int32_t)strtol(t, NULL, 10);
    }
    free(b);
    return k;
}

/* bt_chat_tokenize with a corpus template on the family's real vocabulary equals llama.cpp's
 * ids of the same conversation rendered (line 3 of tests/data/golden/vocab-NAME-special.out,
 * make_vocab_goldens.py): Qwen 2.5's default system, Llama 3.1's dated system turn, Phi-3's
 * markers that swallow the newline after them. The conversation is the one of that line. */
static void check_chat_ids(const char *shared, const char *data, const char *vocab,
                           const char *tpl_file, const bt_chat_msg *msgs, size_t n, bool add_bos) {
    char path[4096];
    snprintf(path, sizeof path, "%s/chat_templates/corpus/%s", data, tpl_file);
    size_t tl;
    char *text = read_file(path, &tl);
    bt_chat_template t;
    CHECK(text && bt_chat_template_detect_text(text, tl, &t, NULL) == BT_OK);
    free(text);
    snprintf(path, sizeof path, "%s/testdata/vocab/ggml-vocab-%s.gguf", shared, vocab);
    bt_gguf *g = NULL;
    bt_vocab *v = NULL;
    if (bt_gguf_open(path, &g, NULL) != BT_OK || bt_vocab_load(g, &v, NULL) != BT_OK) {
        check_fail(__FILE__, __LINE__, "%s does not load", path);
        bt_gguf_free(g);
        return;
    }
    int32_t want[512], got[512];
    int nw = 0;
    if (add_bos)
        want[nw++] = bt_vocab_bos(v);
    snprintf(path, sizeof path, "%s/golden/vocab-%s-special.out", data, vocab);
    int k = golden_ids(path, 3, want + nw, 500);
    CHECK(k > 0);
    nw += k > 0 ? k : 0;
    size_t ng = 0;
    bt_chat_params p = bt_chat_default_params();
    CHECK_OK(bt_chat_tokenize(&t, v, msgs, n, &p, got, 512, &ng, NULL));
    bool ok = (int)ng == nw && memcmp(got, want, ng * sizeof *got) == 0;
    printf("chat ids %s on %s: %zu ids, %s llama.cpp's\n", bt_chat_kind_name(t.kind), vocab, ng,
           ok ? "equal to" : "DIFFERENT from");
    CHECK(ok);
    bt_vocab_free(v);
    bt_gguf_free(g);
}

int main(void) {
    const char *data = check_data_dir("chat template corpus");
    if (!data)
        return check_finish();
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/chat_templates/corpus", data);
    snprintf(path, sizeof path, "%s/chat_templates/manifest.tsv", data);
    size_t ml;
    char *man = read_file(path, &ml);
    if (!man) {
        check_fail(__FILE__, __LINE__, "%s not readable", path);
        return check_finish();
    }
    int n_files = 0, n_kind = 0, n_refused = 0, n_ok = 0;
    char *save = NULL;
    for (char *line = strtok_r(man, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#' || line[0] == '\0')
            continue;
        char *file = line, *kind = strchr(line, '\t');
        char *bos = kind ? strchr(kind + 1, '\t') : NULL;
        if (!kind || !bos) {
            check_fail(__FILE__, __LINE__, "manifest line '%s': want file, kind, bos", line);
            continue;
        }
        *kind++ = '\0';
        *bos++ = '\0';
        if (strcmp(bos, "-") == 0)
            bos = "";
        n_files++;
        snprintf(path, sizeof path, "%s/%s", dir, file);
        size_t tl;
        char *text = read_file(path, &tl);
        if (!text) {
            check_fail(__FILE__, __LINE__, "%s not readable", path);
            continue;
        }
        bt_chat_template t;
        bt_error err;
        bt_error_init(&err);
        bt_status st = bt_chat_template_detect_text(text, tl, &t, &err);
        if (strcmp(kind, "refused") == 0) {
            n_refused++;
            bool ok = st == BT_ERR_UNSUPPORTED && strstr(err.msg, "--chat-template NAME");
            if (!ok)
                printf("  %s: want refused, got %s (%s)\n", file, bt_status_str(st),
                       st == BT_OK ? bt_chat_kind_name(t.kind) : err.msg);
            else
                n_ok++;
            CHECK(ok);
        } else {
            n_kind++;
            bool ok = st == BT_OK && strcmp(bt_chat_kind_name(t.kind), kind) == 0;
            if (!ok)
                printf("  %s: want %s, got %s (%s)\n", file, kind, bt_status_str(st),
                       st == BT_OK ? bt_chat_kind_name(t.kind) : err.msg);
            CHECK(ok);
            /* the goldens' strftime_now is fixed to this day (make_chat_goldens.py) */
            if (ok && t.kind == BT_CHAT_LLAMA31 && !t.date[0])
                snprintf(t.date, sizeof t.date, "26 Jul 2024");
            if (ok) {
                char stem[1024];
                snprintf(stem, sizeof stem, "%.*s", (int)(strlen(file) - 6), file);
                ok = check_render(dir, stem, "sys", &t, bos, conv_sys, 4);
                ok &= check_render(dir, stem, "nosys", &t, bos, conv_sys + 1, 3);
                n_ok += ok;
            }
        }
        free(text);
    }
    free(man);
    /* every template of the corpus is in the manifest */
    int n_jinja = 0;
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    for (struct dirent *e; d && (e = readdir(d));) {
        size_t l = strlen(e->d_name);
        n_jinja += l > 6 && strcmp(e->d_name + l - 6, ".jinja") == 0;
    }
    if (d)
        closedir(d);
    CHECK_EQ_INT(n_files, n_jinja);
    CHECK(n_jinja >= 70);
    printf("chat corpus: %d templates, %d recognised, %d refused, %d as expected\n", n_files,
           n_kind, n_refused, n_ok);

    const char *shared = check_shared_dir("vocabularies for chat ids");
    if (shared) {
        const bt_chat_msg qwen[] = {{"user", "Hello!"}};
        check_chat_ids(shared, data, "qwen2", "Qwen-Qwen2.5-7B-Instruct.jinja", qwen, 1, false);
        const bt_chat_msg l31[] = {{"system", "Be brief."}, {"user", "Hello!"}};
        check_chat_ids(shared, data, "llama-bpe", "meta-llama-Llama-3.1-8B-Instruct.jinja", l31, 2,
                       false); /* the golden text begins with <|begin_of_text|> */
        check_chat_ids(shared, data, "phi-3", "microsoft-Phi-3.5-mini-instruct.jinja", conv_sys, 4,
                       true);
    }
    return check_finish();
}
