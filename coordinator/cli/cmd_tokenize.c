/* cmd_tokenize.c - `baton tokenize`: the token ids and pieces of a text, or with --chat of
 * the prompt `baton generate --chat` would give the model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "cmd_common.h"
#include "commands.h"
#include "gguf.h"
#include "vocab.h"

#define TEXT_MAX_BYTES (64u << 20)

int bt_cmd_tokenize(int argc, char **argv) {
    bt_model_flags mf;
    bt_model_flags_init(&mf);
    const char *prompt = NULL, *file = NULL, *system = NULL, *chat_template = NULL;
    bool ids_only = false, no_special = false, add_special = false, chat = false,
         chat_parse_special = false;
    const bt_cli_opt opts[] = {
        BT_MODEL_FLAG_OPTS(mf),
        {"--prompt", BT_CLI_STR, &prompt, 0, 0, "text to tokenize"},
        {"--file", BT_CLI_STR, &file, 0, 0, "read the text from a file"},
        {"--ids", BT_CLI_FLAG, &ids_only, 0, 0, "print only the ids, space-separated"},
        {"--no-special", BT_CLI_FLAG, &no_special, 0, 0, "special-token text is plain text"},
        {"--add-special", BT_CLI_FLAG, &add_special, 0, 0, "add BOS/EOS as the model asks"},
        {"--chat", BT_CLI_FLAG, &chat, 0, 0, "the text as the user turn of the chat template"},
        {"--system", BT_CLI_STR, &system, 0, 0, "system message (with --chat)"},
        {"--chat-template", BT_CLI_STR, &chat_template, 0, 0,
         "template NAME instead of the model's (chatml llama3 llama2 mistral gemma phi3 ...)"},
        {"--chat-parse-special", BT_CLI_FLAG, &chat_parse_special, 0, 0,
         "special-token text in --chat messages becomes control tokens (off: plain text)"},
    };
    const int n_opts = (int)(sizeof opts / sizeof opts[0]);
    const char *synopsis = "--prompt P | --file F [--ids] [flags]";
    int rc = bt_cmd_parse("tokenize", synopsis, opts, n_opts, &mf.help, argc, argv);
    if (rc >= 0)
        return rc;
    if (!prompt == !file) {
        fprintf(stderr, "baton tokenize: give exactly one of --prompt and --file\n");
        return 2;
    }
    if (bt_chat_template_flag_check("tokenize", chat_template) != 0) /* before the model loads */
        return 2;
    const char *combo = NULL;
    if (system && !chat)
        combo = "--system needs --chat";
    else if (chat_template && !chat)
        combo = "--chat-template needs --chat";
    else if (chat_parse_special && !chat)
        combo = "--chat-parse-special needs --chat";
    else if (chat_parse_special && no_special)
        combo = "--chat-parse-special cannot be combined with --no-special";
    else if (chat && add_special)
        combo = "--add-special cannot be combined with --chat (BOS/EOS are added as for a prompt)";
    if (combo) {
        fprintf(stderr, "baton tokenize: %s\n", combo);
        return 2;
    }
    bt_error err;
    bt_error_init(&err);
    bt_gguf *g = NULL;
    bt_vocab *v = NULL;
    char *text = NULL;
    int32_t *ids = NULL;
    size_t len = prompt ? strlen(prompt) : 0, n = 0;
    const char *model_path = NULL;
    bt_status st = BT_OK;
    if (file && (st = bt_read_text_file(file, TEXT_MAX_BYTES, &text, &len, &err)) != BT_OK)
        goto done;
    if ((st = bt_model_flags_path(&mf, &model_path, &err)) != BT_OK ||
        (st = bt_gguf_open(model_path, &g, &err)) != BT_OK)
        goto done;
    if ((st = bt_vocab_load(g, &v, &err)) != BT_OK)
        goto done;
    if (chat) {
        bt_chat_template tpl;
        if ((st = bt_chat_template_for_model(g, chat_template, &tpl, &err)) != BT_OK)
            goto done;
        bt_chat_msg msgs[2];
        size_t n_msgs = 0;
        if (system)
            msgs[n_msgs++] = (bt_chat_msg){"system", system};
        msgs[n_msgs++] = (bt_chat_msg){"user", text ? text : prompt};
        bt_chat_params chp = bt_chat_default_params();
        chp.parse_special_in_content = chat_parse_special;
        /* First pass counts the ids (BT_ERR_LIMIT with n set), the second writes them. */
        st = bt_chat_tokenize(&tpl, v, msgs, n_msgs, &chp, NULL, 0, &n, &err);
        if (st != BT_OK && st != BT_ERR_LIMIT)
            goto done;
        if (!(ids = malloc(sizeof *ids * (n ? n : 1)))) {
            st = bt_error_set(&err, BT_ERR_NOMEM, "out of memory");
            goto done;
        }
        if ((st = bt_chat_tokenize(&tpl, v, msgs, n_msgs, &chp, ids, n, &n, &err)) != BT_OK)
            goto done;
    } else {
        ids = malloc(sizeof *ids * (len + 2));
        if (!ids) {
            st = bt_error_set(&err, BT_ERR_NOMEM, "out of memory");
            goto done;
        }
        if ((st = bt_tokenize(v, text ? text : prompt, len, add_special, !no_special, ids, len + 2,
                              &n, &err)) != BT_OK)
            goto done;
    }
    for (size_t i = 0; i < n; i++) {
        if (ids_only) {
            printf(i ? " %d" : "%d", ids[i]);
            continue;
        }
        bt_str piece = bt_vocab_token_piece(v, ids[i], true);
        printf("%6d -> '%.*s'\n", ids[i], (int)piece.len, piece.ptr);
    }
    if (ids_only)
        printf("\n");
    fprintf(stderr, "%zu tokens\n", n);
done:
    if (st != BT_OK)
        fprintf(stderr, "baton tokenize: %s\n", err.msg[0] ? err.msg : bt_status_str(st));
    bt_vocab_free(v);
    bt_gguf_free(g);
    free(ids);
    free(text);
    return bt_cmd_exit_status(st);
}
