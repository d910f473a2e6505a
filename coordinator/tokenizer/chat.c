/* chat.c - recognise and render chat templates (see chat.h). */
#include "chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *bt_chat_kind_name(bt_chat_kind kind) {
    switch (kind) {
    case BT_CHAT_CHATML:
        return "chatml";
    case BT_CHAT_LLAMA3:
        return "llama3";
    case BT_CHAT_NONE:
        break;
    }
    return "none";
}

static const char *memmem_str(const bt_str *s, const char *needle) {
    return memmem(s->ptr, s->len, needle, strlen(needle));
}

/* A ChatML template that inserts a system turn when the first message is not one (SmolLM2):
 * the text between "<|im_start|>system\n" and "<|im_end|>" inside that branch. */
static void chatml_default_system(const bt_str *tpl, char *out, size_t cap) {
    out[0] = '\0';
    if (!memmem_str(tpl, "messages[0]['role'] != 'system'"))
        return;
    const char *tag = "<|im_start|>system\n";
    const char *p = memmem_str(tpl, tag);
    if (!p)
        return;
    p += strlen(tag);
    const char *end = tpl->ptr + tpl->len;
    const char *q = memmem(p, (size_t)(end - p), "<|im_end|>", 10);
    if (!q || (size_t)(q - p) >= cap || memchr(p, '{', (size_t)(q - p)))
        return; /* not a literal default prompt */
    memcpy(out, p, (size_t)(q - p));
    out[q - p] = '\0';
}

bt_status bt_chat_template_detect(const bt_gguf *g, bt_chat_template *out, bt_error *err) {
    memset(out, 0, sizeof *out);
    bt_str tpl;
    bt_status st = bt_gguf_get_str(g, "tokenizer.chat_template", &tpl, err);
    if (st != BT_OK)
        return st;
    if (memmem_str(&tpl, "<|im_start|>")) {
        out->kind = BT_CHAT_CHATML;
        chatml_default_system(&tpl, out->default_system, sizeof out->default_system);
        return BT_OK;
    }
    if (memmem_str(&tpl, "<|start_header_id|>")) {
        out->kind = BT_CHAT_LLAMA3;
        return BT_OK;
    }
    return bt_error_set(err, BT_ERR_UNSUPPORTED, "chat template not recognised: \"%.60s...\"",
                        tpl.ptr);
}

bt_chat_params bt_chat_default_params(void) {
    return (bt_chat_params){.add_generation_prompt = true, .parse_special_in_content = false};
}

/* Growable text for one conversation (per request, not on a per-token path). */
typedef struct sbuf {
    char *p;
    size_t n, cap;
    int failed;
} sbuf;

static void put(sbuf *b, const char *s) {
    size_t n = strlen(s);
    if (b->failed)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 256) + n;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n + 1);
    b->n += n;
}

/* A template is a sequence of segments: markers (one special token each) and text (role
 * names, separators, content). One walk feeds both the string renderer and the tokenizer, so
 * the two cannot disagree on the format. */
typedef enum seg_kind { SEG_MARKER, SEG_TEXT } seg_kind;

typedef struct seg_sink seg_sink;
struct seg_sink {
    void (*put)(seg_sink *s, seg_kind kind, const char *text);
};

static void turn(seg_sink *s, bt_chat_kind kind, const char *role, const char *content) {
    if (kind == BT_CHAT_CHATML) {
        s->put(s, SEG_MARKER, "<|im_start|>");
        s->put(s, SEG_TEXT, role);
        s->put(s, SEG_TEXT, "\n");
        s->put(s, SEG_TEXT, content);
        s->put(s, SEG_MARKER, "<|im_end|>");
        s->put(s, SEG_TEXT, "\n");
    } else {
        s->put(s, SEG_MARKER, "<|start_header_id|>");
        s->put(s, SEG_TEXT, role);
        s->put(s, SEG_MARKER, "<|end_header_id|>");
        s->put(s, SEG_TEXT, "\n\n");
        s->put(s, SEG_TEXT, content);
        s->put(s, SEG_MARKER, "<|eot_id|>");
    }
}

static void walk(const bt_chat_template *t, const bt_chat_msg *msgs, size_t n_msgs,
                 bool add_generation_prompt, seg_sink *s) {
    if (t->kind == BT_CHAT_LLAMA3)
        s->put(s, SEG_MARKER, "<|begin_of_text|>");
    if (t->default_system[0] && (n_msgs == 0 || strcmp(msgs[0].role, "system") != 0))
        turn(s, t->kind, "system", t->default_system);
    for (size_t i = 0; i < n_msgs; i++)
        turn(s, t->kind, msgs[i].role, msgs[i].content);
    if (!add_generation_prompt)
        return;
    if (t->kind == BT_CHAT_CHATML) {
        s->put(s, SEG_MARKER, "<|im_start|>");
        s->put(s, SEG_TEXT, "assistant\n");
    } else {
        s->put(s, SEG_MARKER, "<|start_header_id|>");
        s->put(s, SEG_TEXT, "assistant");
        s->put(s, SEG_MARKER, "<|end_header_id|>");
        s->put(s, SEG_TEXT, "\n\n");
    }
}

typedef struct render_sink {
    seg_sink base; /* first: the walk passes &base */
    sbuf b;
} render_sink;

static void render_put(seg_sink *s, seg_kind kind, const char *text) {
    (void)kind;
    put(&((render_sink *)(void *)s)->b, text);
}

char *bt_chat_render(const bt_chat_template *t, const bt_chat_msg *msgs, size_t n_msgs,
                     int add_generation_prompt) {
    render_sink r = {.base = {render_put}};
    put(&r.b, "");
    walk(t, msgs, n_msgs, add_generation_prompt != 0, &r.base);
    if (r.b.failed) {
        free(r.b.p);
        return NULL;
    }
    return r.b.p;
}

/* Collects the text between two markers in `run` and tokenizes it when a marker or the end
 * comes: llama.cpp tokenizes exactly these stretches (it splits at special tokens first), so
 * a role header and the content after it stay one stretch, as there. */
typedef struct tok_sink {
    seg_sink base; /* first: the walk passes &base */
    const bt_vocab *v;
    bool parse_special;
    bool bos_pending_skip; /* BOS already added: drop the template's own BOS marker */
    sbuf run;
    int32_t *ids;
    size_t cap, n; /* n counts ids needed, also past cap */
    bt_status st;
    bt_error *err;
} tok_sink;

static void tok_push(tok_sink *k, int32_t id) {
    if (k->n < k->cap)
        k->ids[k->n] = id;
    k->n++;
}

static void tok_flush(tok_sink *k) {
    if (k->st != BT_OK || k->run.n == 0)
        return;
    size_t m = 0;
    int32_t *dst = k->n < k->cap ? k->ids + k->n : NULL;
    size_t room = k->n < k->cap ? k->cap - k->n : 0;
    bt_status st =
        bt_tokenize(k->v, k->run.p, k->run.n, false, k->parse_special, dst, room, &m, k->err);
    if (st != BT_OK && st != BT_ERR_LIMIT) /* a short buffer is reported once, at the end */
        k->st = st;
    k->n += m;
    k->run.n = 0;
}

static void tok_put(seg_sink *s, seg_kind kind, const char *text) {
    tok_sink *k = (tok_sink *)(void *)s;
    if (k->st != BT_OK)
        return;
    if (kind == SEG_TEXT) {
        if (text[0])
            k->bos_pending_skip = false;
        put(&k->run, text);
        if (k->run.failed)
            k->st = bt_error_set(k->err, BT_ERR_NOMEM, "chat template: out of memory");
        return;
    }
    tok_flush(k);
    if (k->st != BT_OK)
        return;
    int32_t id = bt_vocab_find(k->v, text, strlen(text));
    if (id == BT_TOKEN_NULL) {
        k->st = bt_error_set(k->err, BT_ERR_UNSUPPORTED,
                             "chat template: the vocabulary has no token '%s'", text);
        return;
    }
    bool skip = k->bos_pending_skip && id == bt_vocab_bos(k->v);
    k->bos_pending_skip = false;
    if (!skip)
        tok_push(k, id);
}

#define BT_CHAT_ROLE_NAME(name) " " #name
static const char role_names[] = BT_CHAT_ROLE_LIST(BT_CHAT_ROLE_NAME);
#undef BT_CHAT_ROLE_NAME

static bool role_known(const char *role) {
#define BT_CHAT_ROLE_MATCH(name)                                                                   \
    if (strcmp(role, #name) == 0)                                                                  \
        return true;
    BT_CHAT_ROLE_LIST(BT_CHAT_ROLE_MATCH)
#undef BT_CHAT_ROLE_MATCH
    return false;
}

bt_status bt_chat_tokenize(const bt_chat_template *t, const bt_vocab *v, const bt_chat_msg *msgs,
                           size_t n_msgs, const bt_chat_params *p, int32_t *ids, size_t cap,
                           size_t *n_out, bt_error *err) {
    *n_out = 0;
    if (t->kind != BT_CHAT_CHATML && t->kind != BT_CHAT_LLAMA3)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "chat template: kind %s cannot be rendered",
                            bt_chat_kind_name(t->kind));
    if (n_msgs > 0 && !msgs)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "chat: msgs is NULL, n_msgs %zu", n_msgs);
    for (size_t i = 0; i < n_msgs; i++) {
        if (!msgs[i].role || !role_known(msgs[i].role))
            return bt_error_set(err, BT_ERR_INVALID_ARG,
                                "chat message %zu: role '%.64s' is not one of:%s", i,
                                msgs[i].role ? msgs[i].role : "(null)", role_names);
        if (!msgs[i].content)
            return bt_error_set(err, BT_ERR_INVALID_ARG,
                                "chat message %zu (role %s): content is NULL", i, msgs[i].role);
    }
    tok_sink k = {.base = {tok_put},
                  .v = v,
                  .parse_special = p->parse_special_in_content,
                  .ids = ids,
                  .cap = ids ? cap : 0,
                  .st = BT_OK,
                  .err = err};
    /* BOS and EOS as for any prompt (llama-server tokenizes the rendered chat with
     * add_special); a template that starts with BOS itself does not get a second one. */
    if (bt_vocab_add_bos(v) && bt_vocab_bos(v) != BT_TOKEN_NULL) {
        tok_push(&k, bt_vocab_bos(v));
        k.bos_pending_skip = true;
    }
    walk(t, msgs, n_msgs, p->add_generation_prompt, &k.base);
    tok_flush(&k);
    if (k.st == BT_OK && bt_vocab_add_eos(v) && bt_vocab_eos(v) != BT_TOKEN_NULL)
        tok_push(&k, bt_vocab_eos(v));
    free(k.run.p);
    if (k.st != BT_OK)
        return k.st;
    *n_out = k.n;
    if (k.n > k.cap)
        return bt_error_set(err, BT_ERR_LIMIT, "chat: %zu tokens needed, room for %zu", k.n, k.cap);
    return BT_OK;
}
