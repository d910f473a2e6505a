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
#include "request.h"

#define PROMPT_MAX_BYTES (16u << 20)

/* Streams each generated token's completed characters to stdout. */
typedef struct stream {
    bt_detok detok;
    char *buf;
    size_t cap;
} stream;

static void on_token(bt_request *r, int32_t token, float logprob, void *ctx) {
    (void)r;
    (void)logprob;
    stream *out = ctx;
    size_t n = 0;
    if (bt_detok_push(&out->detok, token, out->buf, out->cap, &n) == BT_OK && n) {
        fwrite(out->buf, 1, n, stdout);
        fflush(stdout);
    }
}

int bt_cmd_generate(int argc, char **argv) {
    bt_model_flags mf;
    bt_model_flags_init(&mf);
    bt_cluster_flags cf;
    bt_cluster_flags_init(&cf);
    const char *prompt = NULL, *prompt_file = NULL, *system = NULL;
    int64_t max_tokens = 128, top_k = 40, seed = -1;
    double temperature = 0.8, top_p = 0.95, min_p = 0.05;
    bool chat = false, ignore_eos = false, print_ids = false, no_special = false;
    const bt_cli_opt opts[] = {
        BT_MODEL_FLAG_OPTS(mf),
        BT_CLUSTER_FLAG_OPTS(cf),
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
        {"--print-ids", BT_CLI_FLAG, &print_ids, 0, 0, "print prompt ids, output ids and logprobs to stderr"},
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
    char *file_text = NULL, *rendered = NULL;
    int32_t *ids = NULL;
    bt_request *req = NULL;
    stream out = {0};
    bt_status st = BT_OK;
    if (prompt_file) {
        size_t len;
        if ((st = bt_read_file(prompt_file, PROMPT_MAX_BYTES, &file_text, &len, &err)) != BT_OK) {
            fprintf(stderr, "baton generate: %s\n", err.msg);
            return bt_cmd_exit_status(st);
        }
        prompt = file_text;
    }

    bt_session s;
    rc = bt_session_open(&s, "generate", &mf, &cf);
    if (rc >= 0) {
        free(file_text);
        return rc;
    }
    const int n_ctx = bt_engine_n_ctx(s.engine);
    if (chat) {
        bt_chat_template tpl;
        if ((st = bt_chat_template_detect(s.gguf, &tpl, &err)) != BT_OK)
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

    size_t n_prompt = 0, cap = (size_t)n_ctx;
    ids = malloc(sizeof *ids * cap);
    if (!ids) {
        st = bt_error_set(&err, BT_ERR_NOMEM, "out of memory");
        goto done;
    }
    st = bt_tokenize(s.vocab, prompt, strlen(prompt), true, !no_special, ids, cap, &n_prompt,
                     &err);
    if (st == BT_ERR_LIMIT)
        st = bt_error_set(&err, BT_ERR_LIMIT,
                          "prompt is %zu tokens; the context (--ctx) holds %d including the "
                          "generated tokens",
                          n_prompt, n_ctx);
    if (st != BT_OK)
        goto done;
    if (print_ids) {
        fprintf(stderr, "prompt ids:");
        for (size_t i = 0; i < n_prompt; i++)
            fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n");
    }

    out.cap = bt_detok_out_max(s.vocab);
    out.buf = malloc(out.cap);
    if (!out.buf) {
        st = bt_error_set(&err, BT_ERR_NOMEM, "out of memory");
        goto done;
    }
    bt_detok_init(&out.detok, s.vocab, false);
    bt_request_params rp = {.max_tokens = (int32_t)max_tokens,
                            .ignore_eos = ignore_eos,
                            .sampling = bt_sampler_default_params(),
                            .on_token = on_token,
                            .ctx = &out};
    rp.sampling.temperature = (float)temperature;
    rp.sampling.top_k = (int32_t)top_k;
    rp.sampling.top_p = (float)top_p;
    rp.sampling.min_p = (float)min_p;
    rp.sampling.seed = seed >= 0 ? (uint64_t)seed : (uint64_t)bt_now_us();
    if ((st = bt_request_new(ids, (int32_t)n_prompt, &rp, n_ctx, &req, &err)) != BT_OK)
        goto done;
    bt_engine_submit(s.engine, req);
    if ((st = bt_engine_run(s.engine, &err)) != BT_OK)
        goto done;

    size_t n = 0;
    if (bt_detok_flush(&out.detok, out.buf, out.cap, &n) == BT_OK && n)
        fwrite(out.buf, 1, n, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    if (print_ids) {
        fprintf(stderr, "output ids:");
        for (int32_t i = req->n_prompt; i < req->n_tokens; i++)
            fprintf(stderr, " %d", req->tokens[i]);
        fprintf(stderr, "\noutput logprobs:");
        for (int32_t i = req->n_prompt; i < req->n_tokens; i++)
            fprintf(stderr, " %.9g", (double)req->logprobs[i]);
        fprintf(stderr, "\n");
    }
    /* The first token comes out of the prefill; the decode rate counts the steps after it. */
    double ttft_ms = (double)(req->t_first_token - req->t_submit) / 1e3;
    double tg_ms = (double)(req->t_done - req->t_first_token) / 1e3;
    int32_t n_steps = req->n_generated > 1 ? req->n_generated - 1 : 0;
    fprintf(stderr,
            "prompt: %zu tokens, time to first token %.1f ms (%.1f tok/s)\n"
            "generation: %d tokens, %d decode steps in %.1f ms (%.1f tok/s, %.2f ms per "
            "token), finish: %s\n",
            n_prompt, ttft_ms, ttft_ms > 0 ? (double)n_prompt * 1e3 / ttft_ms : 0.0,
            req->n_generated, n_steps, tg_ms, tg_ms > 0 ? n_steps * 1e3 / tg_ms : 0.0,
            n_steps ? tg_ms / n_steps : 0.0, bt_finish_name(req->finish));

done:
    if (st != BT_OK)
        fprintf(stderr, "baton generate: %s\n", err.msg[0] ? err.msg : bt_status_str(st));
    rc = bt_session_close(&s, bt_cmd_exit_status(st));
    bt_request_free(req);
    free(ids);
    free(out.buf);
    free(rendered);
    free(file_text);
    return rc;
}
