/*
 * cmd_generate.c - `baton generate`: one prompt, text streamed to stdout as it becomes final
 * (stop strings resolved), speed on stderr. With --n > 1, --best-of or --beam-width the
 * completions are printed at the end, each under a "=== completion i ..." label.
 *
 * Flow: tokenize (chat template first with --chat) -> check the context -> prefill in chunks
 * -> sample/decode until EOS, a stop string, --max-tokens or the end of the context.
 *
 * --stop, --logit-bias and --stop-token-id may repeat (bt_cli keeps one value per flag), so
 * they are taken out of argv before the table is parsed. The sampling and request flags come
 * from the parameter table (request.h, bt_param_flags in cmd_common.h).
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "clock.h"
#include "cmd_common.h"
#include "commands.h"
#include "detok.h"
#include "request.h"
#include "sigwatch.h"
#include "term_watch.h"
#include "vocab.h"

#define PROMPT_MAX_BYTES (16u << 20)

/* One completion as DONE returned it (copied: the event's views live only during the
 * call). */
typedef struct gen_completion {
    char *text;
    size_t n_text;
    int32_t *tokens;
    float *logprobs;
    int n_tokens;
    int top_stride;
    uint8_t *n_top;
    int32_t *top_token;
    float *top_logprob;
    bt_finish finish;
    int32_t n_generated;
    float logprob_sum;
    double score;
} gen_completion;

/* The run as the sink and the signal thread see it. */
typedef struct gen_run {
    _Atomic(bt_engine *) engine; /* set once the session is open; read by the signal thread */
    /* Why the run should stop early: SIGINT/SIGTERM (the signal number) or, -1, stdout
     * failed. */
    atomic_int stop_why;
    bool stream; /* one completion: its text goes to stdout as it becomes final */
    int n_label; /* "completion i of N finished" */
    /* DONE (engine thread; read by main after serve returned) */
    bool done;
    bt_status status;
    char message[512];
    bt_finish finish;
    int32_t n_generated;
    int64_t t_submit, t_first_token, t_done;
    int n_out;
    gen_completion out[BT_MAX_COMPLETIONS];
} gen_run;

/* Signal thread (sigwatch.h): the first SIGINT/SIGTERM ends the run in order (what finished
 * is printed, then the status); a second ends the process at once. Under mpirun, a SIGTERM
 * that comes because a stage died names that stage first (term_watch.h). */
static void on_signal(int sig, void *ctx) {
    gen_run *g = ctx;
    if (sig == SIGTERM)
        bt_term_watch_fire(sig);
    int none = 0;
    if (!atomic_compare_exchange_strong(&g->stop_why, &none, sig) && none > 0)
        bt_sigwatch_die(sig);
    bt_engine *e = atomic_load(&g->engine);
    if (e)
        bt_engine_shutdown(e, false, 0);
}

static void *copy_of(const void *p, size_t n) {
    void *q = malloc(n ? n : 1);
    if (q && n)
        memcpy(q, p, n);
    return q;
}

/* Engine thread: streams the text of a single completion, reports the end of each one of
 * several on stderr (they are printed together at the end), keeps the outcome. */
static void gen_sink(const bt_event *ev, void *ctx) {
    gen_run *g = ctx;
    switch (ev->kind) {
    case BT_EVENT_TOKEN:
    case BT_EVENT_FINISH:
        /* Output that cannot be written stops the run: nobody would see the rest. */
        if (g->stream && ev->n_text && !bt_stdout_write(ev->text, ev->n_text)) {
            int none = 0;
            if (atomic_compare_exchange_strong(&g->stop_why, &none, -1))
                bt_engine_shutdown(atomic_load(&g->engine), false, 0);
        }
        if (ev->kind == BT_EVENT_FINISH && !g->stream && ev->finish != BT_FINISH_CANCELLED)
            fprintf(stderr, "completion %d of %d finished: %s, %d tokens\n", ev->index + 1,
                    g->n_label, bt_finish_name(ev->finish), ev->n_generated);
        return;
    case BT_EVENT_DONE:
        break;
    }
    g->done = true;
    g->status = ev->status;
    snprintf(g->message, sizeof g->message, "%s", ev->message);
    g->finish = ev->finish;
    g->n_generated = ev->n_generated;
    g->t_submit = ev->t_submit_us;
    g->t_first_token = ev->t_first_token_us;
    g->t_done = ev->t_done_us;
    g->n_out = ev->n_completions;
    for (int i = 0; i < ev->n_completions; i++) {
        const bt_completion_view *v = &ev->completions[i];
        gen_completion *c = &g->out[i];
        size_t nt = (size_t)v->n_tokens, k = (size_t)v->top_stride;
        c->text = copy_of(v->text, v->n_text);
        c->n_text = c->text ? v->n_text : 0;
        c->tokens = copy_of(v->tokens, sizeof *v->tokens * nt);
        c->logprobs = copy_of(v->logprobs, sizeof *v->logprobs * nt);
        c->n_tokens = c->tokens && c->logprobs ? v->n_tokens : 0;
        if (k > 0) {
            c->n_top = copy_of(v->n_top, nt);
            c->top_token = copy_of(v->top_token, sizeof *v->top_token * nt * k);
            c->top_logprob = copy_of(v->top_logprob, sizeof *v->top_logprob * nt * k);
            c->top_stride = c->n_top && c->top_token && c->top_logprob ? v->top_stride : 0;
        }
        c->finish = v->finish;
        c->n_generated = v->n_generated;
        c->logprob_sum = v->logprob_sum;
        c->score = v->score;
    }
    /* The one request is done: the engine may end. */
    bt_engine_shutdown(atomic_load(&g->engine), true, 0);
}

static void gen_run_free(gen_run *g) {
    for (int i = 0; i < g->n_out; i++) {
        gen_completion *c = &g->out[i];
        free(c->text);
        free(c->tokens);
        free(c->logprobs);
        free(c->n_top);
        free(c->top_token);
        free(c->top_logprob);
    }
}

/* The --n/--best-of/--beam-width completions; with `finished_only` (an interrupted run)
 * those that were cancelled are left out. */
static void print_completions(const gen_run *g, int n, bool beams, bool finished_only) {
    bool one = g->n_out == 1 && n == 1;
    for (int i = 0; i < g->n_out; i++) {
        const gen_completion *c = &g->out[i];
        if (finished_only && c->finish == BT_FINISH_CANCELLED)
            continue;
        if (!one) {
            printf("=== completion %d (finish %s, %d tokens, logprob %.4f", i,
                   bt_finish_name(c->finish), c->n_generated, (double)c->logprob_sum);
            if (beams)
                printf(", score %.4f", c->score);
            printf(") ===\n");
        }
        fwrite(c->text ? c->text : "", 1, c->n_text, stdout);
        fputc('\n', stdout);
    }
}

/* --stop, --logit-bias and --stop-token-id, repeatable: collected from argv, the rest left
 * for bt_cli. */
typedef struct multi_flags {
    const char *stop[BT_MAX_STOP + 1];
    int n_stop;
    const char *bias[BT_MAX_LOGIT_BIAS + 1];
    int n_bias;
    int32_t stop_id[BT_MAX_STOP_TOKEN_IDS];
    int n_stop_id;
} multi_flags;

/* The value of flag `name` at argv[*i] ("--name V" or "--name=V"), advancing *i; NULL when
 * argv[*i] is another flag; *missing when the value is absent. */
static const char *flag_value(int argc, char **argv, int *i, const char *name, bool *missing) {
    size_t n = strlen(name);
    const char *a = argv[*i];
    if (strncmp(a, name, n) != 0)
        return NULL;
    if (a[n] == '=')
        return a + n + 1;
    if (a[n] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        *missing = true;
        return NULL;
    }
    return argv[++*i];
}

/* Moves --stop/--logit-bias/--stop-token-id (with their values) out of argv; returns the new
 * argc, or -1 after printing the error. */
static int take_multi(int argc, char **argv, multi_flags *m) {
    static const char *const names[] = {"--stop", "--logit-bias", "--stop-token-id"};
    int out = 0;
    for (int i = 0; i < argc; i++) {
        const char *val = NULL;
        int kind = -1;
        for (int k = 0; k < 3 && !val; k++) {
            bool missing = false;
            val = flag_value(argc, argv, &i, names[k], &missing);
            if (missing) {
                fprintf(stderr, "baton generate: %s needs a value\n", names[k]);
                return -1;
            }
            if (val)
                kind = k;
        }
        if (kind == 0) {
            if (m->n_stop == BT_MAX_STOP) {
                fprintf(stderr, "baton generate: --stop: more than %d strings\n", BT_MAX_STOP);
                return -1;
            }
            m->stop[m->n_stop++] = val;
        } else if (kind == 1) {
            if (m->n_bias == BT_MAX_LOGIT_BIAS) {
                fprintf(stderr, "baton generate: --logit-bias: more than %d entries\n",
                        BT_MAX_LOGIT_BIAS);
                return -1;
            }
            m->bias[m->n_bias++] = val;
        } else if (kind == 2) {
            char *end;
            long id = strtol(val, &end, 10);
            if (end == val || *end || id < 0 || id > INT32_MAX) {
                fprintf(stderr, "baton generate: --stop-token-id: '%s' is not a token id\n", val);
                return -1;
            }
            if (m->n_stop_id == BT_MAX_STOP_TOKEN_IDS) {
                fprintf(stderr, "baton generate: --stop-token-id: more than %d ids\n",
                        BT_MAX_STOP_TOKEN_IDS);
                return -1;
            }
            m->stop_id[m->n_stop_id++] = (int32_t)id;
        } else {
            argv[out++] = argv[i];
        }
    }
    return out;
}

/* Parses "ID=BIAS[,ID=BIAS...]" into sp. Prints the error naming --logit-bias. */
static bool parse_bias(const char *spec, bt_sampler_params *sp) {
    const char *p = spec;
    while (*p) {
        char *end;
        long id = strtol(p, &end, 10);
        if (end == p || *end != '=' || id < 0 || id > INT32_MAX) {
            fprintf(stderr, "baton generate: --logit-bias: '%s' is not ID=BIAS[,ID=BIAS...]\n",
                    spec);
            return false;
        }
        p = end + 1;
        double bias = strtod(p, &end);
        if (end == p || (*end && *end != ',')) {
            fprintf(stderr, "baton generate: --logit-bias: '%s' is not ID=BIAS[,ID=BIAS...]\n",
                    spec);
            return false;
        }
        if (!(bias >= -100 && bias <= 100)) {
            fprintf(stderr,
                    "baton generate: --logit-bias: bias %g for token %ld is outside "
                    "[-100, 100]\n",
                    bias, id);
            return false;
        }
        if (sp->n_logit_bias == BT_MAX_LOGIT_BIAS) {
            fprintf(stderr, "baton generate: --logit-bias: more than %d entries\n",
                    BT_MAX_LOGIT_BIAS);
            return false;
        }
        sp->logit_bias[sp->n_logit_bias++] = (bt_logit_bias){(int32_t)id, (float)bias};
        p = *end == ',' ? end + 1 : end;
    }
    return true;
}

/* Prints one token's text, printable and on one line. */
static void print_piece(FILE *f, const bt_vocab *v, int32_t id) {
    bt_str t = bt_vocab_token_text(v, id);
    fputc('\'', f);
    for (size_t i = 0; i < t.len; i++) {
        unsigned char c = (unsigned char)t.ptr[i];
        if (c == '\n')
            fputs("\\n", f);
        else if (c < 0x20 || c == '\'')
            fprintf(f, "\\x%02x", c);
        else
            fputc(c, f);
    }
    fputc('\'', f);
}

/* --logprobs N: each generated token with its logprob and its top-N alternatives. */
static void print_logprobs(FILE *f, const bt_vocab *v, const gen_completion *c) {
    size_t k = (size_t)c->top_stride;
    for (int i = 0; i < c->n_tokens; i++) {
        fprintf(f, "  %d ", c->tokens[i]);
        print_piece(f, v, c->tokens[i]);
        fprintf(f, " %.6f |", (double)c->logprobs[i]);
        for (int j = 0; k > 0 && j < c->n_top[i]; j++) {
            int32_t t = c->top_token[(size_t)i * k + (size_t)j];
            fprintf(f, " %d ", t);
            print_piece(f, v, t);
            fprintf(f, " %.6f", (double)c->top_logprob[(size_t)i * k + (size_t)j]);
        }
        fputc('\n', f);
    }
}

int bt_cmd_generate(int argc, char **argv) {
    bt_model_flags mf;
    bt_model_flags_init(&mf);
    bt_cluster_flags cf;
    bt_cluster_flags_init(&cf);
    cf.max_seqs = 0; /* not given: the request's own count, below */
    const char *prompt = NULL, *prompt_file = NULL, *system = NULL, *chat_template = NULL;
    int64_t seed = -1;
    bool chat = false, print_ids = false, no_special = false, chat_parse_special = false;
    multi_flags mfl = {.n_stop = 0};
    const char *listed = NULL; /* --stop/--logit-bias/--stop-token-id are taken out of argv first */
    const bt_cli_opt fixed[] = {
        BT_MODEL_FLAG_OPTS(mf),
        BT_CLUSTER_FLAG_OPTS(cf),
        {"--prompt", BT_CLI_STR, &prompt, 0, 0, "prompt text"},
        {"--file", BT_CLI_STR, &prompt_file, 0, 0, "read the prompt from a file"},
        {"--chat", BT_CLI_FLAG, &chat, 0, 0, "wrap the prompt as a user turn of the chat template"},
        {"--system", BT_CLI_STR, &system, 0, 0, "system message (with --chat)"},
        {"--chat-template", BT_CLI_STR, &chat_template, 0, 0,
         "template NAME instead of the model's (chatml llama3 llama2 mistral gemma phi3 ...)"},
        {"--chat-parse-special", BT_CLI_FLAG, &chat_parse_special, 0, 0,
         "special-token text in --chat messages becomes control tokens (off: plain text)"},
        {"--logit-bias", BT_CLI_STR, &listed, 0, 0,
         "ID=BIAS[,ID=BIAS...] added to logits, repeatable, bias in [-100, 100]"},
        {"--stop", BT_CLI_STR, &listed, 0, 0, "stop string, repeatable (up to 16, 1..256 bytes)"},
        {"--stop-token-id", BT_CLI_STR, &listed, 0, 0,
         "token id that ends the completion (finish stop, not printed), repeatable (up to 16)"},
        {"--seed", BT_CLI_INT, &seed, -1, (double)UINT32_MAX, "RNG seed, -1 = random"},
        {"--no-special", BT_CLI_FLAG, &no_special, 0, 0,
         "special-token text in a plain prompt stays text (with --chat it always does)"},
        {"--print-ids", BT_CLI_FLAG, &print_ids, 0, 0,
         "print prompt ids, output ids and logprobs to stderr"},
    };
    /* Then the sampling and request parameters, from the table (request.h); temperature's
     * CLI default 0.8 becomes 0 with --beam-width. */
    bt_cli_opt opts[sizeof fixed / sizeof fixed[0] + 2 * BT_PARAM_FLAGS_MAX];
    int n_opts = (int)(sizeof fixed / sizeof fixed[0]);
    memcpy(opts, fixed, sizeof fixed);
    bt_param_flags pf;
    bt_error err;
    bt_error_init(&err);
    bt_request_params rp = bt_request_default_params();
    if (bt_param_flags_add(&pf, &rp, opts, &n_opts, (int)(sizeof opts / sizeof opts[0]), &err) !=
        BT_OK) {
        fprintf(stderr, "baton generate: %s\n", err.msg);
        return 1;
    }
    const char *synopsis = "--prompt P | --file F [flags]";
    int rc;
    if ((argc = take_multi(argc, argv, &mfl)) < 0) {
        bt_cli_usage("generate", synopsis, opts, n_opts);
        return 2;
    }
    rc = bt_cmd_parse("generate", synopsis, opts, n_opts, &mf.help, argc, argv);
    if (rc >= 0)
        return rc;
    /* The request's parameters, checked before any work; messages name the flags. */
    if (bt_param_flags_apply(&pf, &rp, &err) != BT_OK) {
        fprintf(stderr, "baton generate: %s\n", err.msg);
        return 2;
    }
    bool best_of_given = rp.best_of != 0;
    if (!best_of_given)
        rp.best_of = rp.n;
    if (!bt_param_flags_given(&pf, "temperature") && rp.beam_width > 0)
        rp.sampling.temperature = 0;
    bt_sampler_params *sp = &rp.sampling;
    sp->seed = seed >= 0 ? (uint64_t)seed : (uint64_t)bt_now_us();
    for (int i = 0; i < mfl.n_bias; i++)
        if (!parse_bias(mfl.bias[i], sp))
            return 2;
    for (int i = 0; i < mfl.n_stop; i++)
        if (bt_request_params_add_stop(&rp, mfl.stop[i], strlen(mfl.stop[i]), &err) != BT_OK) {
            fprintf(stderr, "baton generate: --%s\n", err.msg);
            return 2;
        }
    for (int i = 0; i < mfl.n_stop_id; i++)
        if (bt_request_params_add_stop_token_id(&rp, mfl.stop_id[i], &err) != BT_OK) {
            fprintf(stderr, "baton generate: --stop-token-id: %s\n", err.msg);
            return 2;
        }
    const int32_t beam_width = rp.beam_width;
    const char *combo = NULL;
    if (rp.best_of < rp.n)
        combo = "--best-of must be at least --n";
    else if (beam_width > 0 && sp->temperature > 0)
        combo = "--beam-width needs --temperature 0 (beam search is deterministic)";
    else if (beam_width > 0 && rp.n > beam_width)
        combo = "--n must not exceed --beam-width";
    else if (beam_width > 0 && best_of_given)
        combo = "--best-of cannot be combined with --beam-width";
    else if (beam_width > 0 && mfl.n_stop)
        combo = "--stop cannot be combined with --beam-width";
    else if (beam_width > 0 && mfl.n_stop_id)
        combo = "--stop-token-id cannot be combined with --beam-width";
    else if (beam_width > 0 && sp->top_logprobs)
        combo = "--logprobs cannot be combined with --beam-width";
    else if (rp.early_stopping && beam_width == 0)
        combo = "--early-stopping needs --beam-width";
    if (combo) {
        fprintf(stderr, "baton generate: %s\n", combo);
        return 2;
    }
    if (bt_request_params_validate(&rp, 0, &err) != BT_OK) {
        fprintf(stderr, "baton generate: %s\n", err.msg);
        return 2;
    }
    if (!prompt == !prompt_file) {
        fprintf(stderr, "baton generate: give exactly one of --prompt and --file\n");
        bt_cli_usage("generate", synopsis, opts, n_opts);
        return 2;
    }
    if (chat_template && !chat) {
        fprintf(stderr, "baton generate: --chat-template needs --chat\n");
        return 2;
    }
    if (bt_chat_template_flag_check("generate", chat_template) != 0) /* before the model loads */
        return 2;
    if (system && !chat) {
        fprintf(stderr, "baton generate: --system needs --chat\n");
        return 2;
    }
    if (chat_parse_special && (!chat || no_special)) {
        fprintf(stderr, "baton generate: --chat-parse-special %s\n",
                chat ? "cannot be combined with --no-special" : "needs --chat");
        return 2;
    }

    char *file_text = NULL;
    int32_t *ids = NULL;
    bt_status st = BT_OK;
    /* Each completion or beam is a sequence: a --max-seqs too small for one request would
     * never run it. */
    int64_t need = beam_width > 0 ? beam_width : rp.best_of;
    const bool best_of = best_of_given;
    /* One request: as many sequences as it has, so the KV pool (a context per sequence, up
     * to 4), a window pool (Gemma 3's local layers) and the scratch are sized for it, as
     * llama-cli's one sequence is. */
    if (cf.max_seqs == 0)
        cf.max_seqs = need;
    if (need > cf.max_seqs) {
        fprintf(stderr,
                "baton generate: %s %lld needs %lld sequences at once, more than --max-seqs "
                "%lld\n",
                beam_width > 0 ? "--beam-width"
                : best_of      ? "--best-of"
                               : "--n",
                (long long)need, (long long)need, (long long)cf.max_seqs);
        return 2;
    }
    if (prompt_file) {
        size_t len;
        if ((st = bt_read_text_file(prompt_file, PROMPT_MAX_BYTES, &file_text, &len, &err)) !=
            BT_OK) {
            fprintf(stderr, "baton generate: %s\n", err.msg);
            return bt_cmd_exit_status(st);
        }
        prompt = file_text;
    }

    /* The KV pool holds one context per sequence this request can use (its completions or
     * beams), unless --kv-tokens says otherwise. */
    int64_t seqs = rp.best_of > rp.beam_width ? rp.best_of : rp.beam_width;
    cf.kv_seqs = seqs > 1 ? seqs : 1;

    /* SIGINT/SIGTERM end the run in order (on_signal); stage ranks of an MPI job keep their
     * own handling (term_watch.h). Started before any thread, so that all inherit the mask. */
    static gen_run run; /* the signal thread may still look at it while main returns */
    memset(&run, 0, sizeof run);
    bool several = rp.n > 1 || rp.best_of > 1 || rp.beam_width > 0;
    run.stream = !several;
    run.n_label = rp.n;
    bool watching = false;
    if (!bt_launch_is_stage_rank()) {
        if ((st = bt_sigwatch_start(on_signal, &run, &err)) != BT_OK) {
            fprintf(stderr, "baton generate: %s\n", err.msg);
            free(file_text);
            return 1;
        }
        watching = true;
    }
    bt_session s;
    rc = bt_session_open(&s, "generate", &mf, &cf);
    if (rc >= 0) {
        if (watching)
            bt_sigwatch_stop();
        free(file_text);
        return rc;
    }
    bt_engine_info info;
    bt_engine_get_info(s.engine, &info);
    const int n_ctx = info.n_ctx;
    {
        char line[2048];
        fprintf(stderr, "baton generate: %s\n", bt_session_ready_line(&s, line, sizeof line));
    }
    size_t n_prompt = 0, cap = (size_t)n_ctx;
    ids = malloc(sizeof *ids * cap);
    if (!ids) {
        st = bt_error_set(&err, BT_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (chat) {
        /* Markers are special ids; the messages are text unless --chat-parse-special. */
        bt_chat_template tpl;
        if ((st = bt_chat_template_for_model(s.gguf, chat_template, &tpl, &err)) != BT_OK)
            goto done;
        bt_chat_msg msgs[2];
        size_t n_msgs = 0;
        if (system)
            msgs[n_msgs++] = (bt_chat_msg){"system", system};
        msgs[n_msgs++] = (bt_chat_msg){"user", prompt};
        bt_chat_params chp = bt_chat_default_params();
        chp.parse_special_in_content = chat_parse_special;
        st = bt_chat_tokenize(&tpl, s.vocab, msgs, n_msgs, &chp, ids, cap, &n_prompt, &err);
    } else {
        st = bt_tokenize(s.vocab, prompt, strlen(prompt), true, !no_special, ids, cap, &n_prompt,
                         &err);
    }
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

    if ((st = bt_sampler_params_validate(sp, bt_vocab_n_tokens(s.vocab), &err)) != BT_OK) {
        fprintf(stderr, "baton generate: %s: %s\n",
                strncmp(err.msg, "stop_token_ids", 14) == 0 ? "--stop-token-id" : "--logit-bias",
                err.msg);
        rc = bt_session_close(&s, 2);
        goto freed;
    }
    /* Submitted before the engine serves; the sink ends the engine at DONE. */
    if ((st = bt_engine_submit(s.engine, ids, (int32_t)n_prompt, &rp, gen_sink, &run, NULL,
                               &err)) != BT_OK)
        goto done;
    atomic_store(&run.engine, s.engine);
    if (atomic_load(&run.stop_why) != 0) /* a signal while the model was loading */
        bt_engine_shutdown(s.engine, false, 0);
    st = bt_engine_serve(s.engine, &err);
    /* From here on a signal has its default effect, as before the run. */
    atomic_store(&run.engine, NULL);
    bt_sigwatch_stop();
    watching = false;
    if (st != BT_OK)
        goto done;
    int stop_why = atomic_load(&run.stop_why);

    if (several)
        print_completions(&run, rp.n, rp.beam_width > 0, stop_why != 0);
    else
        fputc('\n', stdout);
    bt_stdout_write(NULL, 0); /* flush now: a failure is reported with its reason */
    for (int i = 0; i < run.n_out; i++) {
        const gen_completion *c = &run.out[i];
        if (print_ids) {
            fprintf(stderr, "output ids%s:", run.n_out > 1 ? " (completion)" : "");
            for (int k = 0; k < c->n_tokens; k++)
                fprintf(stderr, " %d", c->tokens[k]);
            fprintf(stderr, "\noutput logprobs:");
            for (int k = 0; k < c->n_tokens; k++)
                fprintf(stderr, " %.9g", (double)c->logprobs[k]);
            fprintf(stderr, "\n");
        }
        if (sp->top_logprobs > 0) {
            fprintf(stderr, "logprobs of completion %d (token, logprob | top %d):\n", i,
                    (int)sp->top_logprobs);
            print_logprobs(stderr, s.vocab, c);
        }
    }
    /* The first token comes out of the prefill; the decode rate counts the steps after it.
     * Without a first token (--max-tokens 0, a refused or interrupted request) there is no
     * time to report. */
    if (run.t_first_token > 0) {
        double ttft_ms = (double)(run.t_first_token - run.t_submit) / 1e3;
        double tg_ms = (double)(run.t_done - run.t_first_token) / 1e3;
        int32_t n_steps = run.n_generated > 1 ? run.n_generated - 1 : 0;
        fprintf(stderr,
                "prompt: %zu tokens, time to first token %.1f ms (%.1f tok/s)\n"
                "generation: %d tokens, %d decode steps in %.1f ms (%.1f tok/s, %.2f ms per "
                "token), finish: %s\n",
                n_prompt, ttft_ms, ttft_ms > 0 ? (double)n_prompt * 1e3 / ttft_ms : 0.0,
                run.n_generated, n_steps, tg_ms, tg_ms > 0 ? n_steps * 1e3 / tg_ms : 0.0,
                n_steps ? tg_ms / n_steps : 0.0, bt_finish_name(run.finish));
    } else {
        fprintf(stderr, "prompt: %zu tokens\ngeneration: 0 tokens, finish: %s\n", n_prompt,
                bt_finish_name(run.finish));
    }
    bt_engine_metrics m;
    bt_engine_get_metrics(s.engine, &m);
    if (m.preemptions_total > 0) /* their KV was freed and recomputed: the same tokens */
        fprintf(stderr, "kv: %llu preemptions (the KV cache held too few tokens for all at once)\n",
                (unsigned long long)m.preemptions_total);
    if (stop_why > 0) {
        int n_done = 0;
        for (int i = 0; i < run.n_out; i++)
            n_done += run.out[i].finish != BT_FINISH_CANCELLED;
        fprintf(stderr, "baton generate: interrupted by %s; %d of %d completions finished\n",
                stop_why == SIGINT ? "SIGINT" : "SIGTERM", n_done, several ? (int)rp.n : 1);
        rc = bt_session_close(&s, 128 + stop_why);
        goto freed;
    }
    if (!run.done) /* cannot happen: serve ends when the request is done */
        st = bt_error_set(&err, BT_ERR_INTERNAL, "the request never finished");
    else if (run.status != BT_OK) /* the request failed after launch: a runtime error */
        st = bt_error_set(&err, BT_ERR_INTERNAL, "%s",
                          run.message[0] ? run.message : "the request failed");

done:
    if (st != BT_OK)
        fprintf(stderr, "baton generate: %s\n", err.msg[0] ? err.msg : bt_status_str(st));
    rc = bt_session_close(&s, bt_cmd_exit_status(st));
freed:
    if (watching)
        bt_sigwatch_stop();
    gen_run_free(&run);
    free(ids);
    free(file_text);
    return rc;
}
