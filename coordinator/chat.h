/*
 * chat.h - chat templates, recognised from the GGUF's tokenizer.chat_template and rendered
 * natively (no Jinja). An unrecognised template is an explicit error naming it.
 *
 * Recognised: ChatML (<|im_start|>role\n...<|im_end|>\n, with the template's default system
 * prompt when it has one, as SmolLM2's does) and Llama 3 (<|start_header_id|>...).
 * Immutable after detection; thread-safe.
 */
#ifndef BT_CHAT_H
#define BT_CHAT_H

#include <stddef.h>

#include "gguf.h"
#include "status.h"

typedef enum bt_chat_kind { BT_CHAT_NONE, BT_CHAT_CHATML, BT_CHAT_LLAMA3 } bt_chat_kind;

typedef struct bt_chat_template {
    bt_chat_kind kind;
    char default_system[512]; /* "" when the template has none */
} bt_chat_template;

typedef struct bt_chat_msg {
    const char *role; /* "system", "user", "assistant" */
    const char *content;
} bt_chat_msg;

/* Reads tokenizer.chat_template. BT_ERR_NOT_FOUND when the model has none,
 * BT_ERR_UNSUPPORTED (message quotes its start) when it is not one we render. */
bt_status bt_chat_template_detect(const bt_gguf *g, bt_chat_template *out, bt_error *err);

const char *bt_chat_kind_name(bt_chat_kind kind);

/* Renders msgs and, when add_generation_prompt, the assistant header. The text contains the
 * template's special tokens as text: tokenize it with parse_special. Returns a malloc'd
 * NUL-terminated string owned by the caller (free), or NULL on allocation failure. */
char *bt_chat_render(const bt_chat_template *t, const bt_chat_msg *msgs, size_t n_msgs,
                     int add_generation_prompt);

#endif
