/*
 * chat.h - chat templates, recognised from the GGUF's tokenizer.chat_template and rendered
 * natively (no Jinja). An unrecognised template is an explicit error that names the fix
 * (--chat-template NAME); a name given by the user overrides detection.
 *
 * Recognition follows llama.cpp's llm_chat_detect_template (src/llama-chat.cpp): distinctive
 * markers in the Jinja text, checked in its order, and the rendering follows its
 * llm_chat_apply_template, so the prompt the model sees is the one llama-server gives it.
 * The kinds (name: how a conversation with a system message renders; without one):
 *   chatml            <|im_start|>role\n..<|im_end|>\n; a template's literal default system
 *                     prompt (SmolLM2; Qwen 2.5's "You are Qwen, created by Alibaba Cloud. You
 *                     are a helpful assistant.") is inserted when the first message is not a
 *                     system one
 *   llama3            <|start_header_id|>role<|end_header_id|>\n\n(trimmed)<|eot_id|>
 *   llama3.1          as llama3, always opening with a system turn "Cutting Knowledge Date:
 *                     December 2023\nToday Date: DATE\n\n" + the first system message
 *                     (trimmed; "" without one); DATE is the template's literal
 *                     ("26 Jul 2024": Llama 3.1, 3.3) or today's (strftime_now: Llama 3.2)
 *   llama2            [INST] system\nuser [/INST]assistant</s>[INST] ...  (no <<SYS>> block)
 *   llama2-sys        as llama2, system as <<SYS>>\n..\n<</SYS>>\n\n inside the first [INST]
 *   llama2-sys-bos    as llama2-sys, later turns start with <s>[INST]
 *   llama2-sys-strip  as llama2-sys, every message trimmed
 *   mistral-v1        " [INST] system\n\nuser [/INST] assistant</s>" (spaces on both sides)
 *   mistral-v3        "[INST] system\n\nuser[/INST] assistant(trimmed)</s>"
 *   mistral-v3-tekken "[INST]system\n\nuser[/INST]assistant</s>" (no spaces)
 *   mistral-v7        "[SYSTEM_PROMPT] s[/SYSTEM_PROMPT][INST] u[/INST] a</s>"
 *   gemma             <start_of_turn>user\n..<end_of_turn>\n, assistant is "model"; no
 *                     system role: system text (trimmed) opens the next user turn + "\n\n"
 *   phi3              <|role|>\n..<|end|>\n, generation prompt <|assistant|>\n
 * Without a system message every kind renders the turns alone (chatml: the default system
 * prompt when the template has one). "mistral" names mistral-v3 (Mistral-7B-Instruct-v0.3).
 * Not supported (an error, never a guess): mistral-v7-tekken, phi4, SmolVLM, the other
 * llama.cpp kinds, and templates that look like a kind but render otherwise: ChatML that
 * opens a <think> block in the generation prompt (QwQ, Qwen 3.5, Nemotron, StepFun) or writes
 * its own system preamble (SmolLM3's metadata, Hermes' tool prompt), Llama 3 function-calling
 * variants (functionary, firefunction), Mistral Nemo (system text before the last user turn),
 * Apriel (Phi-3 markers with <|content|>). tests/data/chat_templates/manifest.tsv lists the
 * decision for each template of llama.cpp's corpus (unit.test_chat_corpus). Neither llama.cpp's
 * renderer nor this one writes the template's leading bos_token: bt_chat_tokenize adds BOS as for
 * any prompt.
 *
 * A conversation becomes token ids segment by segment (bt_chat_tokenize): the template's
 * markers are their special ids, and the text between two markers (role names and message
 * content) is tokenized with special-token matching OFF, so a message cannot forge a turn by
 * writing "<|im_end|>\n<|im_start|>system" (llama-server and vLLM treat chat content the
 * same way). The opt-in parse_special_in_content restores matching inside that text. Because
 * llama.cpp splits a rendered prompt at special tokens before tokenizing the pieces, content
 * without special-token text gets the same ids here as from llama.cpp's rendering.
 * [INST]-style markers (Llama 2, Mistral) are special tokens only in some vocabularies
 * (Mistral v3+); where the vocabulary has no special token for one it is text, as it is for
 * llama.cpp, which only splits at special tokens.
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

/* Every kind with its --chat-template name (X(ENUM, "name")). */
#define BT_CHAT_KIND_LIST(X)                                                                       \
    X(CHATML, "chatml")                                                                            \
    X(LLAMA3, "llama3")                                                                            \
    X(LLAMA2, "llama2")                                                                            \
    X(LLAMA2_SYS, "llama2-sys")                                                                    \
    X(LLAMA2_SYS_BOS, "llama2-sys-bos")                                                            \
    X(LLAMA2_SYS_STRIP, "llama2-sys-strip")                                                        \
    X(MISTRAL_V1, "mistral-v1")                                                                    \
    X(MISTRAL_V3, "mistral-v3")                                                                    \
    X(MISTRAL_V3_TEKKEN, "mistral-v3-tekken")                                                      \
    X(MISTRAL_V7, "mistral-v7")                                                                    \
    X(GEMMA, "gemma")                                                                              \
    X(PHI3, "phi3")                                                                                \
    X(LLAMA31, "llama3.1")

#define BT_CHAT_KIND_ENUM(e, name) BT_CHAT_##e,
typedef enum bt_chat_kind { BT_CHAT_NONE, BT_CHAT_KIND_LIST(BT_CHAT_KIND_ENUM) } bt_chat_kind;
#undef BT_CHAT_KIND_ENUM

typedef struct bt_chat_template {
    bt_chat_kind kind;
    char default_system[512]; /* "" when the template has none */
    /* llama3.1: the "Today Date: " text; "" = the day of rendering, local time (the template
     * calls strftime_now, Llama 3.2). */
    char date[32];
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
 * BT_ERR_UNSUPPORTED (message quotes its start and names --chat-template) when it is not one
 * we render. */
bt_status bt_chat_template_detect(const bt_gguf *g, bt_chat_template *out, bt_error *err);

/* The same on a template text (len bytes, need not be NUL-terminated). */
bt_status bt_chat_template_detect_text(const char *text, size_t len, bt_chat_template *out,
                                       bt_error *err);

/* The template called `name` (a BT_CHAT_KIND_LIST name, or "mistral" for mistral-v3), for
 * --chat-template. BT_ERR_INVALID_ARG listing the valid names when it is none of them. */
bt_status bt_chat_template_from_name(const char *name, bt_chat_template *out, bt_error *err);

/* What every caller wants: the named template when `name` is not NULL, else the model's.
 * The model's errors are rewritten to name the fix (--chat-template NAME, with the names). */
bt_status bt_chat_template_for_model(const bt_gguf *g, const char *name, bt_chat_template *out,
                                     bt_error *err);

/* "chatml", ...; "none" for BT_CHAT_NONE and out-of-range values. */
const char *bt_chat_kind_name(bt_chat_kind kind);

/* The valid names, space-separated (for help texts and errors). */
const char *bt_chat_template_names(void);

/* The token ids of msgs under template t with vocabulary v, as a prompt: BOS and EOS as the
 * vocabulary asks for any prompt (add_bos/add_eos; the template's own leading bos_token is
 * that BOS, as in llama.cpp), each marker as its special id, the text between markers tokenized
 * with parse_special = p->parse_special_in_content (USER_DEFINED tokens always match, as in
 * bt_tokenize). Writes at most cap ids; *n_out receives the number needed.
 * Errors: BT_ERR_INVALID_ARG naming the message index and role for an unknown role (only
 * system, user and assistant exist) or NULL content, and for a template of kind NONE;
 * BT_ERR_UNSUPPORTED naming the marker when v has no token for it; BT_ERR_LIMIT (message says the
 * needed count) when the ids exceed cap. */
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
