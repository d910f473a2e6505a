/*
 * cmd_generate.c - `baton generate`: one prompt, tokens streamed to stdout as they are
 * sampled, speed on stderr.
 *
 * Flow: tokenize (chat template first with --chat) -> check the context -> prefill in chunks
 * -> sample/decode until EOS, --max-tokens or the end of the context.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "clock.h"
#include "cmd_common.h"
#include "commands.h"
#include "detok.h"
#include "sampler.h"

#define PROMPT_MAX_BYTES (16u << 20)

typedef struct last_logits {
    bt_sampler *sampler;
    int32_t token;
    float logprob;
} last_logits;

static void sample_row(void *ctx, int i, const float *logits) {
    (void)i;
    last_logits *l = ctx;
    l->token = bt_sampler_sample(l->sampler, logits, &l->logprob);
}

/* Writes the newly completed text of `id` to stdout. */
static void emit(bt_detok *d, int32_t id, char *buf, size_t cap) {
    size_t n = 0;
    if (bt_detok_push(d, id, buf, cap, &n) == BT_OK && n) {
        fwrite(buf, 1, n, stdout);
        fflush(stdout);
    }
}

int bt_cmd_generate(int argc, char **argv) {
    bt_model_flags mf;
    bt_model_flags_init(&mf);
    const char *prompt = NULL, *prompt_file = NULL, *system = NULL;
    int64_t max_tokens = 128, top_k = 40, seed = -1;
    double temperature = 0.8, top_p = 0.95, min_p = 0.05;
    bool chat = false, ignore_eos = false, print_ids = false, no_special = false;
    const bt_cli_opt opts[] = {
        BT_MODEL_FLAG_OPTS(mf),
        {"--prompt", BT_CLI_STR, &prompt, 0, 0, "prompt text"},
        {"--file", BT_CLI_STR, &prompt_file, 0, 0, "read the prompt from a file"},
        {"--chat", BT_CLI_FLAG, &chat, 0, 0, "wrap the prompt as a user turn of the chat template"},
        {"--system", BT_CLI_STR, &system, 0, 0, "system message (with --chat)"},
        {"--max-tokens", BT_CLI_INT, &max_tokens, 0, 1 << 24, "tokens to generate (128)"},
        {"--temperature", BT_CLI_FLOAT, &temperature, 0, 100, "0 = greedy (0.8)"},
        {"--top-k", BT_CLI_INT, &top_k, 0, 1 << 24, "keep the k most likely, 0 = off (40)"},
        {"--top-p", BT_CLI_FLOAT, &top_p, 1e-6, 1, "nucleus mass, 1 = off (0.95)"},
        {"--min-p", BT_CLI_FLOAT, &min_p, 0, 1, "drop below min_p * max prob, 0 = off (0.05)"},
        {"--seed", BT_CLI_INT, &seed, -1, (double)UINT32_MAX, "RNG seed, -1 = random"},
        {"--ignore-eos", BT_CLI_FLAG, &ignore_eos, 0, 0, "do not stop at end-of-sequence"},
        {"--no-special", BT_CLI_FLAG, &no_special, 0, 0,
         "treat special-token text in the prompt as plain text"},
        {"--print-ids", BT_CLI_FLAG, &print_ids, 0, 0, "print prompt and output token ids to stderr"},
    };
    const int n_opts = (int)(sizeof opts / sizeof opts[0]);
    const char *synopsis = "--prompt P | --file F [flags]";
    int rc = bt_cmd_parse("generate", synopsis, opts, n_opts, &mf.help, argc, argv);
    if (rc >= 0)
        return rc;
    if (!prompt == !prompt_file) {
        fprintf(stderr, "baton generate: give exactly one of --prompt and --file\n");
        bt_cli_usage("generate", synopsis, opts, n_opts);
        return 2;
    }
    if (system && !chat) {
        fprintf(stderr, "baton generate: --system needs --chat\n");
        return 2;
    }

    bt_error err;
    bt_error_init(&err);
    bt_runner r = {0};
    bt_sampler *sampler = NULL;
    char *file_text = NULL, *rendered = NULL, *piece = NULL;
    int32_t *ids = NULL;
    bt_status st = BT_OK;

    if (prompt_file) {
        size_t len;
        if ((st = bt_read_file(prompt_file, PROMPT_MAX_BYTES, &file_text, &len, &err)) != BT_OK)
            goto done;
        prompt = file_text;
    }
    bt_runner_params rp = bt_model_flags_runner(&mf);
    if ((st = bt_runner_open(&rp, &r, &err)) != BT_OK)
        goto done;

    if (chat) {
        bt_chat_template tpl;
        if ((st = bt_chat_template_detect(r.gguf, &tpl, &err)) != BT_OK)
            goto done;
        bt_chat_msg msgs[2];
        size_t n_msgs = 0;
        if (system)
            msgs[n_msgs++] = (bt_chat_msg){"system", system};
        msgs[n_msgs++] = (bt_chat_msg){"user", prompt};
        rendered = bt_chat_render(&tpl, msgs, n_msgs, 1);
        if (!rendered) {
            st = bt_error_set(&err, BT_ERR_NOMEM, "chat template: out of memory");
            goto done;
        }
        prompt = rendered;
    }

    /* Tokenize; the prompt must leave room for at least one generated token. */
    size_t n_prompt = 0, cap = (size_t)r.n_ctx;
    ids = malloc(sizeof *ids * cap);
    if (!ids) {
        st = bt_error_set(&err, BT_ERR_NOMEM, "out of memory");
        goto done;
    }
    st = bt_tokenize(r.vocab, prompt, strlen(prompt), true, !no_special, ids, cap, &n_prompt,
                     &err);
    if (st == BT_ERR_LIMIT || (st == BT_OK && n_prompt >= cap)) {
        st = bt_error_set(&err, BT_ERR_LIMIT,
                          "prompt is %zu tokens; the context (--ctx) holds %d including the "
                          "generated tokens",
                          n_prompt, r.n_ctx);
        goto done;
    }
    if (st != BT_OK)
        goto done;
    if (n_prompt == 0) {
        st = bt_error_set(&err, BT_ERR_INVALID_ARG, "the prompt is empty");
        goto done;
    }

    bt_sampler_params sp = bt_sampler_default_params();
    sp.temperature = (float)temperature;
    sp.top_k = (int32_t)top_k;
    sp.top_p = (float)top_p;
    sp.min_p = (float)min_p;
    sp.seed = seed >= 0 ? (uint64_t)seed : (uint64_t)bt_now_us();
    if ((st = bt_sampler_new(&sp, r.n_vocab, &sampler, &err)) != BT_OK)
        goto done;

    if (print_ids) {
        fprintf(stderr, "prompt ids:");
        for (size_t i = 0; i < n_prompt; i++)
            fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n");
    }

    size_t piece_cap = bt_detok_out_max(r.vocab);
    piece = malloc(piece_cap);
    if (!piece) {
        st = bt_error_set(&err, BT_ERR_NOMEM, "out of memory");
        goto done;
    }
    bt_detok detok;
    bt_detok_init(&detok, r.vocab, false);

    last_logits last = {.sampler = sampler};
    int64_t t0 = bt_now_us();
    if ((st = bt_runner_eval(&r, 0, ids, (int)n_prompt, (int)n_prompt - 1, sample_row, &last,
                             &err)) != BT_OK)
        goto done;
    int64_t t_first = bt_now_us();

    int64_t n_gen = 0;
    int32_t *out_ids = ids + n_prompt; /* generated ids follow the prompt in ids[] */
    const char *finish = "length";
    while (n_gen < max_tokens) {
        int32_t tok = last.token;
        if (!ignore_eos && bt_vocab_is_eog(r.vocab, tok)) {
            finish = "stop";
            break;
        }
        out_ids[n_gen++] = tok;
        emit(&detok, tok, piece, piece_cap);
        if (n_gen == max_tokens)
            break;
        if ((size_t)n_gen + n_prompt >= (size_t)r.n_ctx) {
            finish = "context";
            break;
        }
        if ((st = bt_runner_eval(&r, 0, &tok, 1, 0, sample_row, &last, &err)) != BT_OK)
            goto done;
    }
    int64_t t_end = bt_now_us();
    size_t n = 0;
    if (bt_detok_flush(&detok, piece, piece_cap, &n) == BT_OK && n)
        fwrite(piece, 1, n, stdout);
    fputc('\n', stdout);
    fflush(stdout);

    if (print_ids) {
        fprintf(stderr, "output ids:");
        for (int64_t i = 0; i < n_gen; i++)
            fprintf(stderr, " %d", out_ids[i]);
        fprintf(stderr, "\n");
    }
    double pp_ms = (double)(t_first - t0) / 1e3, tg_ms = (double)(t_end - t_first) / 1e3;
    /* The first token comes out of the prefill; the decode rate counts the steps after it. */
    int64_t n_steps = n_gen > 1 ? n_gen - 1 : 0;
    fprintf(stderr,
            "prompt: %zu tokens in %.1f ms (%.1f tok/s), time to first token %.1f ms\n"
            "generation: %lld tokens, %lld decode steps in %.1f ms (%.1f tok/s), finish: %s\n",
            n_prompt, pp_ms, pp_ms > 0 ? (double)n_prompt * 1e3 / pp_ms : 0.0, pp_ms,
            (long long)n_gen, (long long)n_steps, tg_ms,
            tg_ms > 0 ? (double)n_steps * 1e3 / tg_ms : 0.0, finish);

done:
    if (st != BT_OK)
        fprintf(stderr, "baton generate: %s\n", err.msg[0] ? err.msg : bt_status_str(st));
    bt_sampler_free(sampler);
    bt_runner_close(&r);
    free(ids);
    free(piece);
    free(rendered);
    free(file_text);
    return bt_cmd_exit_status(st);
}
