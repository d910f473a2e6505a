/* chat.c - recognise and render chat templates (see chat.h). */
#include "chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BT_CHAT_KIND_NAME(e, name) " " name
static const char kind_names[] = BT_CHAT_KIND_LIST(BT_CHAT_KIND_NAME) " mistral";
#undef BT_CHAT_KIND_NAME

const char *bt_chat_template_names(void) {
    return kind_names + 1;
}

const char *bt_chat_kind_name(bt_chat_kind kind) {
    switch (kind) {
#define BT_CHAT_KIND_CASE(e, name)                                                                 \
    case BT_CHAT_##e:                                                                              \
        return name;
        BT_CHAT_KIND_LIST(BT_CHAT_KIND_CASE)
#undef BT_CHAT_KIND_CASE
    case BT_CHAT_NONE:
        break;
    }
    return "none";
}

bt_status bt_chat_template_from_name(const char *name, bt_chat_template *out, bt_error *err) {
    memset(out, 0, sizeof *out);
    if (name && strcmp(name, "mistral") == 0) {
        out->kind = BT_CHAT_MISTRAL_V3; /* Mistral-7B-Instruct-v0.3, the common one */
        return BT_OK;
    }
#define BT_CHAT_KIND_MATCH(e, kname)                                                               \
    if (name && strcmp(name, kname) == 0) {                                                        \
        out->kind = BT_CHAT_##e;                                                                   \
        if (out->kind == BT_CHAT_LLAMA31)                                                          \
            snprintf(out->date, sizeof out->date, "26 Jul 2024"); /* Llama 3.1's default */        \
        return BT_OK;                                                                              \
    }
    BT_CHAT_KIND_LIST(BT_CHAT_KIND_MATCH)
#undef BT_CHAT_KIND_MATCH
    return bt_error_set(err, BT_ERR_INVALID_ARG, "chat template '%.64s' is not one of: %s",
                        name ? name : "(null)", bt_chat_template_names());
}

typedef struct tpl_text {
    const char *p;
    size_t n;
} tpl_text;

static const char *find(const tpl_text *s, const char *needle) {
    return memmem(s->p, s->n, needle, strlen(needle));
}

static bool has(const tpl_text *s, const char *needle) {
    return find(s, needle) != NULL;
}

/* A ChatML template that inserts a system turn when the first message is not one: the literal
 * text between "<|im_start|>system" + newline and "<|im_end|>" in that branch. SmolLM2 tests
 * `messages[0]['role'] != 'system'` and writes a real newline; Qwen 2.5 (and MiMo) test `==`
 * and write the default in the else branch with a Jinja "\n" escape. The first occurrence
 * holding no Jinja (no quote, brace or +) and no escape is the default. */
static void chatml_default_system(const tpl_text *tpl, char *out, size_t cap) {
    out[0] = '\0';
    if (!has(tpl, "messages[0]['role'] != 'system'") &&
        !has(tpl, "messages[0]['role'] == 'system'"))
        return;
    static const char *const tags[] = {"<|im_start|>system\n", "<|im_start|>system\\n"};
    const char *end = tpl->p + tpl->n;
    for (size_t k = 0; k < 2; k++) {
        size_t tl = strlen(tags[k]);
        for (const char *p = find(tpl, tags[k]); p; p = memmem(p, (size_t)(end - p), tags[k], tl)) {
            p += tl;
            const char *q = memmem(p, (size_t)(end - p), "<|im_end|>", 10);
            if (!q)
                break;
            size_t n = (size_t)(q - p);
            if (n == 0 || n >= cap || memchr(p, '{', n) || memchr(p, '\'', n) ||
                memchr(p, '"', n) || memchr(p, '+', n) || memchr(p, '\\', n))
                continue; /* Jinja, not a literal default prompt */
            memcpy(out, p, n);
            out[n] = '\0';
            return;
        }
    }
}

/* llama3.1: the literal of `set date_string = "..."` when the template has no clock. */
static void llama31_date(const tpl_text *tpl, char *out, size_t cap) {
    out[0] = '\0';
    if (has(tpl, "strftime_now"))
        return; /* today's date, at render time */
    const char *tag = "set date_string = \"";
    const char *p = find(tpl, tag);
    if (!p)
        return;
    p += strlen(tag);
    const char *end = tpl->p + tpl->n;
    const char *q = memchr(p, '"', (size_t)(end - p));
    if (!q || (size_t)(q - p) >= cap)
        return;
    memcpy(out, p, (size_t)(q - p));
    out[q - p] = '\0';
}

/* Whether the template writes "{{- '<think>\n' }}" in an else branch: its generation prompt
 * opens a think block unless told otherwise (Qwen 3.5), where Bielik and MiniCPM write it
 * only when enable_thinking is set. */
static bool think_by_default(const tpl_text *t) {
    const char *needle = "{{- '<think>\\n' }}";
    size_t nl = strlen(needle);
    const char *end = t->p + t->n;
    for (const char *p = find(t, needle); p; p = memmem(p + 1, (size_t)(end - p - 1), needle, nl)) {
        const char *tag = NULL; /* the last "{%" before p */
        for (const char *q = t->p; (q = memmem(q, (size_t)(p - q), "{%", 2)) != NULL; q += 2)
            tag = q;
        if (tag && (strncmp(tag, "{%- else", 8) == 0 || strncmp(tag, "{% else", 7) == 0))
            return true;
    }
    return false;
}

/* ChatML variants whose rendering differs from plain ChatML for a plain conversation. */
static bool chatml_variant(const tpl_text *t) {
    return has(t, "<|im_sep|>") || has(t, "<end_of_utterance>") || /* phi4, SmolVLM */
           has(t, "assistant\\n<think>") || think_by_default(t) || /* reasoning opens */
           has(t, "<think></think>") ||                            /* Nemotron history */
           has(t, "Reasoning Mode") ||                             /* SmolLM3 metadata */
           has(t, "function calling AI model");                    /* Hermes tool_use */
}

/* The kind of a template text, BT_CHAT_NONE when we do not render it. The checks and their
 * order are llama.cpp's llm_chat_detect_template (src/llama-chat.cpp) restricted to the kinds
 * we render; a template that llama.cpp would give a kind we lack (phi4, SmolVLM, falcon3,
 * zephyr, ...) is NONE here, never the nearest kind we have. */
static bt_chat_kind detect_kind(const tpl_text *t, const char **why) {
    *why = "none of the formats baton renders";
    if (has(t, "<|im_start|>")) {
        *why = "ChatML markers, but a variant that renders otherwise (a think block, a system "
               "preamble or tool prompt of its own, phi4, SmolVLM)";
        return chatml_variant(t) ? BT_CHAT_NONE : BT_CHAT_CHATML;
    }
    if ((t->n >= 7 && memcmp(t->p, "mistral", 7) == 0) || has(t, "[INST]")) {
        *why = "Mistral markers: v7-tekken (no spaces) or Nemo (system before the last user "
               "turn), which baton does not render";
        if (has(t, "[SYSTEM_PROMPT]")) /* v7 writes "[SYSTEM_PROMPT] "; v7-tekken no space */
            return has(t, "'[SYSTEM_PROMPT] '") ? BT_CHAT_MISTRAL_V7 : BT_CHAT_NONE;
        if (has(t, "loop.last and system_message"))
            return BT_CHAT_NONE; /* Mistral Nemo: system text before the last user turn */
        /* Mistral's official templates: v1 spells "' [INST] ' + system_message", v3 and
         * v3-tekken have a tools block. */
        if (has(t, "' [INST] ' + system_message") || has(t, "[AVAILABLE_TOOLS]")) {
            if (has(t, " [INST]"))
                return BT_CHAT_MISTRAL_V1;
            if (has(t, "\"[INST]\""))
                return BT_CHAT_MISTRAL_V3_TEKKEN;
            return BT_CHAT_MISTRAL_V3;
        }
        if (has(t, "content.strip()"))
            return BT_CHAT_LLAMA2_SYS_STRIP;
        if (has(t, "bos_token + '[INST]"))
            return BT_CHAT_LLAMA2_SYS_BOS;
        return has(t, "<<SYS>>") ? BT_CHAT_LLAMA2_SYS : BT_CHAT_LLAMA2;
    }
    if (has(t, "<|assistant|>") && has(t, "<|end|>")) {
        *why = "Phi-3 markers with <|content|> (Apriel)";
        return has(t, "<|content|>") ? BT_CHAT_NONE : BT_CHAT_PHI3;
    }
    /* llama.cpp tests these before Gemma: a template with them is another kind. */
    if (has(t, "[gMASK]") || (has(t, "<|assistant|>") && has(t, "<|user|>")) ||
        (has(t, "<|user|>") && has(t, "<|endoftext|>")) || has(t, "bos_token + message['role']")) {
        *why = "markers of a kind baton does not render (ChatGLM, Zephyr, ...)";
        return BT_CHAT_NONE;
    }
    if (has(t, "<start_of_turn>"))
        return BT_CHAT_GEMMA;
    if (has(t, "<|start_header_id|>") && has(t, "<|end_header_id|>")) {
        /* Llama 3.1-3.3 open with a dated system turn; functionary's has no "Today Date". */
        if (has(t, "\"Today Date: \" + date_string"))
            return BT_CHAT_LLAMA31;
        if (has(t, "Cutting Knowledge") || has(t, "function")) {
            *why = "Llama 3 markers with a function-calling prompt of its own (functionary, "
                   "firefunction)";
            return BT_CHAT_NONE;
        }
        return BT_CHAT_LLAMA3;
    }
    return BT_CHAT_NONE;
}

bt_status bt_chat_template_detect_text(const char *text, size_t len, bt_chat_template *out,
                                       bt_error *err) {
    memset(out, 0, sizeof *out);
    tpl_text t = {text, len};
    const char *why;
    out->kind = detect_kind(&t, &why);
    if (out->kind == BT_CHAT_NONE) {
        /* The start of the text, on one line, for the message. */
        char head[61];
        size_t k = 0;
        for (size_t i = 0; i < len && k < sizeof head - 1; i++)
            head[k++] = text[i] == '\n' || text[i] == '\r' ? ' ' : text[i];
        head[k] = '\0';
        return bt_error_set(err, BT_ERR_UNSUPPORTED,
                            "chat template not recognised (\"%s%s\": %s); name one with "
                            "--chat-template NAME, NAME one of: %s",
                            head, len > k ? "..." : "", why, bt_chat_template_names());
    }
    if (out->kind == BT_CHAT_CHATML)
        chatml_default_system(&t, out->default_system, sizeof out->default_system);
    if (out->kind == BT_CHAT_LLAMA31)
        llama31_date(&t, out->date, sizeof out->date);
    return BT_OK;
}

bt_status bt_chat_template_detect(const bt_gguf *g, bt_chat_template *out, bt_error *err) {
    memset(out, 0, sizeof *out);
    bt_str tpl;
    bt_status st = bt_gguf_get_str(g, "tokenizer.chat_template", &tpl, err);
    if (st != BT_OK)
        return st;
    return bt_chat_template_detect_text(tpl.ptr, tpl.len, out, err);
}

bt_status bt_chat_template_for_model(const bt_gguf *g, const char *name, bt_chat_template *out,
                                     bt_error *err) {
    if (name)
        return bt_chat_template_from_name(name, out, err);
    bt_status st = bt_chat_template_detect(g, out, err);
    if (st == BT_ERR_NOT_FOUND)
        return bt_error_set(err, BT_ERR_NOT_FOUND,
                            "the model has no chat template (tokenizer.chat_template); name one "
                            "with --chat-template NAME, NAME one of: %s",
                            bt_chat_template_names());
    return st;
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

static void put_n(sbuf *b, const char *s, size_t n) {
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
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

/* A template is a sequence of segments: markers (one special token each), soft markers
 * ([INST] and friends: a special token where the vocabulary has one, else text) and text
 * (role names, separators, content). One walk feeds both the string renderer and the
 * tokenizer, so the two cannot disagree on the format. */
typedef enum seg_kind { SEG_MARKER, SEG_SOFT, SEG_TEXT } seg_kind;

typedef struct seg_sink seg_sink;
struct seg_sink {
    void (*put)(seg_sink *s, seg_kind kind, const char *text, size_t len);
};

static void mark(seg_sink *s, const char *m) {
    s->put(s, SEG_MARKER, m, strlen(m));
}
static void soft(seg_sink *s, const char *m) {
    s->put(s, SEG_SOFT, m, strlen(m));
}
static void text(seg_sink *s, const char *t) {
    s->put(s, SEG_TEXT, t, strlen(t));
}

/* Whitespace as llama.cpp's trim (isspace in the C locale). */
static bool is_ws(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Content, trimmed at both ends when `trim`. */
static void content(seg_sink *s, const char *c, bool trim) {
    size_t n = strlen(c);
    if (trim) {
        while (n > 0 && is_ws(c[n - 1]))
            n--;
        while (n > 0 && is_ws(*c)) {
            c++;
            n--;
        }
    }
    s->put(s, SEG_TEXT, c, n);
}

static bool role_is(const bt_chat_msg *m, const char *role) {
    return strcmp(m->role, role) == 0;
}

static void walk_chatml(const bt_chat_template *t, const bt_chat_msg *msgs, size_t n, bool gen,
                        seg_sink *s) {
    bool add_default = t->default_system[0] && (n == 0 || !role_is(&msgs[0], "system"));
    for (size_t i = 0; i < n + add_default; i++) {
        const bt_chat_msg *m = add_default && i == 0 ? NULL : &msgs[i - add_default];
        mark(s, "<|im_start|>");
        text(s, m ? m->role : "system");
        text(s, "\n");
        text(s, m ? m->content : t->default_system);
        mark(s, "<|im_end|>");
        text(s, "\n");
    }
    if (gen) {
        mark(s, "<|im_start|>");
        text(s, "assistant\n");
    }
}

static void walk_llama3(const bt_chat_msg *msgs, size_t n, bool gen, seg_sink *s) {
    for (size_t i = 0; i < n; i++) {
        mark(s, "<|start_header_id|>");
        text(s, msgs[i].role);
        mark(s, "<|end_header_id|>");
        text(s, "\n\n");
        content(s, msgs[i].content, true);
        mark(s, "<|eot_id|>");
    }
    if (gen) {
        mark(s, "<|start_header_id|>");
        text(s, "assistant");
        mark(s, "<|end_header_id|>");
        text(s, "\n\n");
    }
}

/* Llama 3.1 (3.2, 3.3) without tools: the first system message, trimmed, is hoisted into a
 * system turn that is always written, after the knowledge-cutoff and date lines. */
static void walk_llama31(const bt_chat_template *t, const bt_chat_msg *msgs, size_t n, bool gen,
                         seg_sink *s) {
    char date[32];
    if (t->date[0]) {
        snprintf(date, sizeof date, "%s", t->date);
    } else { /* strftime_now("%d %b %Y"), as transformers and llama.cpp's Jinja give it */
        time_t now = time(NULL);
        struct tm tm;
        if (!localtime_r(&now, &tm) || strftime(date, sizeof date, "%d %b %Y", &tm) == 0)
            snprintf(date, sizeof date, "26 Jul 2024");
    }
    size_t first = n > 0 && role_is(&msgs[0], "system") ? 1 : 0;
    mark(s, "<|start_header_id|>");
    text(s, "system");
    mark(s, "<|end_header_id|>");
    text(s, "\n\nCutting Knowledge Date: December 2023\nToday Date: ");
    text(s, date);
    text(s, "\n\n");
    if (first)
        content(s, msgs[0].content, true);
    mark(s, "<|eot_id|>");
    walk_llama3(msgs + first, n - first, gen, s);
}

/* Llama 2 and its variants: the system message sits inside the open [INST]; an assistant
 * turn closes it with </s>. The prompt ends after the last [/INST], which is the generation
 * prompt already (these templates have none of their own). */
static void walk_llama2(bt_chat_kind kind, const bt_chat_msg *msgs, size_t n, seg_sink *s) {
    const bool sys_block = kind != BT_CHAT_LLAMA2;
    const bool bos_inside = kind == BT_CHAT_LLAMA2_SYS_BOS;
    const bool strip = kind == BT_CHAT_LLAMA2_SYS_STRIP;
    bool inside = true;
    soft(s, "[INST]");
    text(s, " ");
    for (size_t i = 0; i < n; i++) {
        if (!inside) {
            inside = true;
            if (bos_inside)
                mark(s, "<s>");
            soft(s, "[INST]");
            text(s, " ");
        }
        if (role_is(&msgs[i], "system")) {
            if (sys_block) {
                soft(s, "<<SYS>>");
                text(s, "\n");
                content(s, msgs[i].content, strip);
                text(s, "\n");
                soft(s, "<</SYS>>");
                text(s, "\n\n");
            } else { /* no system role: its text opens the first [INST] */
                content(s, msgs[i].content, strip);
                text(s, "\n");
            }
        } else if (role_is(&msgs[i], "user")) {
            content(s, msgs[i].content, strip);
            text(s, " ");
            soft(s, "[/INST]");
        } else {
            content(s, msgs[i].content, strip);
            mark(s, "</s>");
            inside = false;
        }
    }
}

/* Mistral v1, v3, v3-tekken (mistralai cookbook, chat_templates.md): the same shape as
 * Llama 2 with system text + "\n\n" in the open [INST]; they differ in the spaces around
 * [INST] and [/INST] and v3 trims assistant messages. */
static void walk_mistral(bt_chat_kind kind, const bt_chat_msg *msgs, size_t n, seg_sink *s) {
    const char *lead = kind == BT_CHAT_MISTRAL_V1 ? " " : "";
    const char *trail = kind == BT_CHAT_MISTRAL_V3_TEKKEN ? "" : " ";
    const bool trim_assistant = kind == BT_CHAT_MISTRAL_V3;
    bool inside = false;
    for (size_t i = 0; i < n; i++) {
        if (!inside) {
            text(s, lead);
            soft(s, "[INST]");
            text(s, trail);
            inside = true;
        }
        if (role_is(&msgs[i], "system")) {
            content(s, msgs[i].content, false);
            text(s, "\n\n");
        } else if (role_is(&msgs[i], "user")) {
            content(s, msgs[i].content, false);
            text(s, lead);
            soft(s, "[/INST]");
        } else {
            text(s, trail);
            content(s, msgs[i].content, trim_assistant);
            mark(s, "</s>");
            inside = false;
        }
    }
}

/* Mistral v7: the system prompt has its own markers; no generation prompt. */
static void walk_mistral_v7(const bt_chat_msg *msgs, size_t n, seg_sink *s) {
    for (size_t i = 0; i < n; i++) {
        if (role_is(&msgs[i], "system")) {
            soft(s, "[SYSTEM_PROMPT]");
            text(s, " ");
            content(s, msgs[i].content, false);
            soft(s, "[/SYSTEM_PROMPT]");
        } else if (role_is(&msgs[i], "user")) {
            soft(s, "[INST]");
            text(s, " ");
            content(s, msgs[i].content, false);
            soft(s, "[/INST]");
        } else {
            text(s, " ");
            content(s, msgs[i].content, false);
            mark(s, "</s>");
        }
    }
}

/* Gemma has no system role: the system messages (trimmed, concatenated) open the next user
 * turn, followed by "\n\n"; system text after the last user turn is dropped, as llama.cpp
 * does. The assistant role is called "model". */
static void walk_gemma(const bt_chat_msg *msgs, size_t n, bool gen, seg_sink *s) {
    size_t sys_from = 0; /* system messages in [sys_from, i) not yet written */
    for (size_t i = 0; i < n; i++) {
        if (role_is(&msgs[i], "system"))
            continue;
        bool model = role_is(&msgs[i], "assistant");
        mark(s, "<start_of_turn>");
        text(s, model ? "model" : msgs[i].role);
        text(s, "\n");
        if (!model) {
            bool any = false;
            for (size_t j = sys_from; j < i; j++) {
                if (!role_is(&msgs[j], "system"))
                    continue;
                const char *c = msgs[j].content;
                while (is_ws(*c))
                    c++;
                any |= *c != '\0';
                content(s, msgs[j].content, true);
            }
            if (any)
                text(s, "\n\n");
            sys_from = i + 1;
        }
        content(s, msgs[i].content, true);
        mark(s, "<end_of_turn>");
        text(s, "\n");
    }
    if (gen) {
        mark(s, "<start_of_turn>");
        text(s, "model\n");
    }
}

static void walk_phi3(const bt_chat_msg *msgs, size_t n, bool gen, seg_sink *s) {
    for (size_t i = 0; i < n; i++) {
        char role_marker[32];
        snprintf(role_marker, sizeof role_marker, "<|%s|>", msgs[i].role);
        mark(s, role_marker);
        text(s, "\n");
        content(s, msgs[i].content, false);
        mark(s, "<|end|>");
        text(s, "\n");
    }
    if (gen) {
        mark(s, "<|assistant|>");
        text(s, "\n");
    }
}

static void walk(const bt_chat_template *t, const bt_chat_msg *msgs, size_t n, bool gen,
                 seg_sink *s) {
    switch (t->kind) {
    case BT_CHAT_CHATML:
        walk_chatml(t, msgs, n, gen, s);
        break;
    case BT_CHAT_LLAMA3:
        walk_llama3(msgs, n, gen, s);
        break;
    case BT_CHAT_LLAMA31:
        walk_llama31(t, msgs, n, gen, s);
        break;
    case BT_CHAT_LLAMA2:
    case BT_CHAT_LLAMA2_SYS:
    case BT_CHAT_LLAMA2_SYS_BOS:
    case BT_CHAT_LLAMA2_SYS_STRIP:
        walk_llama2(t->kind, msgs, n, s);
        break;
    case BT_CHAT_MISTRAL_V1:
    case BT_CHAT_MISTRAL_V3:
    case BT_CHAT_MISTRAL_V3_TEKKEN:
        walk_mistral(t->kind, msgs, n, s);
        break;
    case BT_CHAT_MISTRAL_V7:
        walk_mistral_v7(msgs, n, s);
        break;
    case BT_CHAT_GEMMA:
        walk_gemma(msgs, n, gen, s);
        break;
    case BT_CHAT_PHI3:
        walk_phi3(msgs, n, gen, s);
        break;
    case BT_CHAT_NONE:
        break;
    }
}

typedef struct render_sink {
    seg_sink base; /* first: the walk passes &base */
    sbuf b;
} render_sink;

static void render_put(seg_sink *s, seg_kind kind, const char *t, size_t len) {
    (void)kind;
    put_n(&((render_sink *)(void *)s)->b, t, len);
}

char *bt_chat_render(const bt_chat_template *t, const bt_chat_msg *msgs, size_t n_msgs,
                     int add_generation_prompt) {
    render_sink r = {.base = {render_put}};
    put_n(&r.b, "", 0);
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
    bt_chat_kind kind; /* for messages */
    bool parse_special;
    bool strip_lead; /* the last marker strips the whitespace after it (Phi-3's RSTRIP) */
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

/* Tokenizes the run. As llama.cpp's split of the rendered text: whitespace after a marker
 * with RSTRIP and before one with LSTRIP (strip_tail) is not part of the stretch. */
static void tok_flush(tok_sink *k, bool strip_tail) {
    bool lead = k->strip_lead;
    k->strip_lead = false;
    if (k->st != BT_OK || k->run.n == 0)
        return;
    const char *p = k->run.p;
    size_t len = k->run.n;
    while (lead && len > 0 && is_ws(*p))
        p++, len--;
    while (strip_tail && len > 0 && is_ws(p[len - 1]))
        len--;
    k->run.n = 0;
    if (len == 0)
        return;
    size_t m = 0;
    int32_t *dst = k->n < k->cap ? k->ids + k->n : NULL;
    size_t room = k->n < k->cap ? k->cap - k->n : 0;
    bt_status st = bt_tokenize(k->v, p, len, false, k->parse_special, dst, room, &m, k->err);
    if (st != BT_OK && st != BT_ERR_LIMIT) /* a short buffer is reported once, at the end */
        k->st = st;
    k->n += m;
}

static void tok_text(tok_sink *k, const char *t, size_t len) {
    put_n(&k->run, t, len);
    if (k->run.failed)
        k->st = bt_error_set(k->err, BT_ERR_NOMEM, "chat template: out of memory");
}

static void tok_put(seg_sink *s, seg_kind kind, const char *t, size_t len) {
    tok_sink *k = (tok_sink *)(void *)s;
    if (k->st != BT_OK)
        return;
    if (kind == SEG_TEXT) {
        tok_text(k, t, len);
        return;
    }
    int32_t id = bt_vocab_find(k->v, t, len);
    if (kind == SEG_SOFT) {
        /* Special only where the vocabulary makes it a special token, as llama.cpp's split */
        uint32_t special = BT_TOKEN_ATTR_CONTROL | BT_TOKEN_ATTR_USER_DEFINED;
        if (id == BT_TOKEN_NULL || !(bt_vocab_token_attr(k->v, id) & special)) {
            tok_text(k, t, len);
            return;
        }
    }
    uint32_t attr = bt_vocab_token_attr(k->v, id);
    tok_flush(k, (attr & BT_TOKEN_ATTR_LSTRIP) != 0);
    if (k->st != BT_OK)
        return;
    if (id == BT_TOKEN_NULL) {
        k->st = bt_error_set(k->err, BT_ERR_UNSUPPORTED,
                             "chat template %s: the vocabulary has no token '%.*s'",
                             bt_chat_kind_name(k->kind), (int)len, t);
        return;
    }
    tok_push(k, id);
    k->strip_lead = (attr & BT_TOKEN_ATTR_RSTRIP) != 0;
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
    if (t->kind == BT_CHAT_NONE || strcmp(bt_chat_kind_name(t->kind), "none") == 0)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "chat template: kind %d cannot be rendered",
                            (int)t->kind);
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
                  .kind = t->kind,
                  .parse_special = p->parse_special_in_content,
                  .ids = ids,
                  .cap = ids ? cap : 0,
                  .st = BT_OK,
                  .err = err};
    /* BOS and EOS as for any prompt (llama-server tokenizes the rendered chat with
     * add_special); the templates' leading {{ bos_token }} is this BOS. */
    if (bt_vocab_add_bos(v) && bt_vocab_bos(v) != BT_TOKEN_NULL)
        tok_push(&k, bt_vocab_bos(v));
    walk(t, msgs, n_msgs, p->add_generation_prompt, &k.base);
    tok_flush(&k, false);
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
