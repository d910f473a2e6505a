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

/* Growable output for the renderer only (not on a per-token path). */
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

static void turn(sbuf *b, bt_chat_kind kind, const char *role, const char *content) {
    if (kind == BT_CHAT_CHATML) {
        put(b, "<|im_start|>");
        put(b, role);
        put(b, "\n");
        put(b, content);
        put(b, "<|im_end|>\n");
    } else {
        put(b, "<|start_header_id|>");
        put(b, role);
        put(b, "<|end_header_id|>\n\n");
        put(b, content);
        put(b, "<|eot_id|>");
    }
}

char *bt_chat_render(const bt_chat_template *t, const bt_chat_msg *msgs, size_t n_msgs,
                     int add_generation_prompt) {
    sbuf b = {0};
    put(&b, "");
    if (t->kind == BT_CHAT_LLAMA3)
        put(&b, "<|begin_of_text|>");
    if (t->default_system[0] && (n_msgs == 0 || strcmp(msgs[0].role, "system") != 0))
        turn(&b, t->kind, "system", t->default_system);
    for (size_t i = 0; i < n_msgs; i++)
        turn(&b, t->kind, msgs[i].role, msgs[i].content);
    if (add_generation_prompt) {
        if (t->kind == BT_CHAT_CHATML)
            put(&b, "<|im_start|>assistant\n");
        else
            put(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    }
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
