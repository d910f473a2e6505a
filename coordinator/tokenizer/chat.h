/*
 * chat.h - chat templates, recognised from the GGUF's tokenizer.chat_template and rendered
 * natively (no Jinja). An unrecognised template is an explicit error naming it.
 *
 * Recognised: ChatML (<|im_start|>role\n...<|im_end|>\n, with the template's default system
 * prompt when it has one, as SmolLM2's does) and Llama 3 (<|start_header_id|>...).
 *
 * A conversation becomes token ids segment by segment (bt_chat_tokenize): the template's
 * markers are their special ids, and the text between two markers (role names and message
 * content) is tokenized with special-token matching OFF, so a message cannot forge a turn by
 * writing "<|im_end|>\n<|im_start|>system" (llama-server and vLLM treat chat content the
 * same way). The opt-in parse_special_in_content restores matching inside that text. Because
 * llama.cpp splits a rendered prompt at special tokens before tokenizing the pieces, content
 * without special-token text gets the same ids here as from llama.cpp's rendering.
 *
 * Callers: `baton generate --chat`, `baton tokenize --chat`, and later the HTTP server and
 * the batch runner. Immutable after detection; thread-safe.
 */
#ifndef BT_CHAT_H
#define BT_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "status.h"
#include "vocab.h"

typedef enum bt_chat_kind { BT_CHAT_NONE, BT_CHAT_CHATML, BT_CHAT_LLAMA3 } bt_chat_kind;

typedef struct bt_chat_template {
    bt_chat_kind kind;
    char default_system[512]; /* "" when the template has none */
} bt_chat_template;

/* The roles a message may have; anything else is refused with a message naming it. */
#define BT_CHAT_ROLE_LIST(X) X(system) X(user) X(assistant)

typedef struct bt_chat_msg {
    const char *role;    /* one of BT_CHAT_ROLE_LIST; borrowed for the call */
    const char *content; /* NUL-terminated UTF-8; borrowed for the call */
} bt_chat_msg;

typedef struct bt_chat_params {
    bool add_generation_prompt;    /* end with the assistant header (true) */
    bool parse_special_in_content; /* special-token text in content becomes ids (false) */
} bt_chat_params;

bt_chat_params bt_chat_default_params(void);

/* Reads tokenizer.chat_template. BT_ERR_NOT_FOUND when the model has none,
 * BT_ERR_UNSUPPORTED (message quotes its start) when it is not one we render. */
bt_status bt_chat_template_detect(const bt_gguf *g, bt_chat_template *out, bt_error *err);

const char *bt_chat_kind_name(bt_chat_kind kind);

/* The token ids of msgs under template t with vocabulary v, as a prompt: BOS and EOS as the
 * vocabulary asks for any prompt (add_bos/add_eos; never a second BOS where the template
 * starts with one), each marker as its special id, the text between markers tokenized with
 * parse_special = p->parse_special_in_content (USER_DEFINED tokens always match, as in
 * bt_tokenize). Writes at most cap ids; *n_out receives the number needed.
 * Errors: BT_ERR_INVALID_ARG naming the message index and role for an unknown role or NULL
 * content; BT_ERR_UNSUPPORTED naming the marker when v has no token for it; BT_ERR_LIMIT
 * (message says the needed count) when the ids exceed cap. */
bt_status bt_chat_tokenize(const bt_chat_template *t, const bt_vocab *v, const bt_chat_msg *msgs,
                           size_t n_msgs, const bt_chat_params *p, int32_t *ids, size_t cap,
                           size_t *n_out, bt_error *err);

/* The same conversation as one string, markers written as their text: for display and for
 * comparing with other renderers. Tokenizing it with parse_special lets content forge
 * markers; prompts go through bt_chat_tokenize. Roles are not checked here. Returns a
 * malloc'd NUL-terminated string owned by the caller (free), or NULL on allocation failure. */
char *bt_chat_render(const bt_chat_template *t, const bt_chat_msg *msgs, size_t n_msgs,
                     int add_generation_prompt);

#endif
