/*
 * multi_generate - runs several prompts through the engine, all at once (continuous batching)
 * or one after another (--sequential), and prints each one's generated ids and logprobs, so
 * tests can compare the two, and runs with different stage counts. Works as a singleton
 * (--stages N in-process stages) and under mpirun, like baton itself.
 *
 *   multi_generate --prompts FILE [--sequential] [--temperature X --seed S] [baton flags]
 *
 * FILE: one prompt per line, "MAX_TOKENS<TAB>TEXT" (TEXT may contain \n escapes).
 * Output, one line per prompt in file order: "INDEX<TAB>ids<TAB>logprobs<TAB>finish".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_common.h"
#include "commands.h"
#include "request.h"

#define MAX_PROMPTS 256

static size_t unescape(char *s) {
    size_t w = 0;
    for (size_t r = 0; s[r]; r++) {
        if (s[r] == '\\' && s[r + 1] == 'n') {
            s[w++] = '\n';
            r++;
        } else {
            s[w++] = s[r];
        }
    }
    s[w] = '\0';
    return w;
}

/* One prompt: its ids until submitted, then its outcome (copied at DONE). */
typedef struct prompt_run {
    int32_t *ids;
    int32_t n_ids, max_tokens;
    int32_t *out_tok; /* [n_out] */
    float *out_lp;
    int n_out;
    bt_finish finish;
    bt_status status;
    char message[256];
} prompt_run;

typedef struct multi_run {
    bt_engine *e;
    prompt_run *p;
    int n, next, pending;
    double temperature;
    uint64_t seed;
    bt_status st;
    bt_error err;
} multi_run;

static void multi_sink(const bt_event *ev, void *ctx);

/* Submits prompt m->next (sequential) or all of them. */
static bt_status submit_next(multi_run *m, bt_error *err) {
    prompt_run *p = &m->p[m->next];
    bt_request_params rp = {
        .max_tokens = p->max_tokens, .ignore_eos = false, .sampling = bt_sampler_default_params()};
    rp.sampling.temperature = (float)m->temperature;
    rp.sampling.seed = m->seed;
    /* ctx: the index, as a pointer into the array */
    bt_status st = bt_engine_submit(m->e, p->ids, p->n_ids, &rp, multi_sink, p, NULL, err);
    if (st == BT_OK) {
        m->next++;
        m->pending++;
    }
    return st;
}

static multi_run g_run; /* the sink finds the run here */

static void multi_sink(const bt_event *ev, void *ctx) {
    prompt_run *p = ctx;
    multi_run *m = &g_run;
    if (ev->kind != BT_EVENT_DONE)
        return;
    p->status = ev->status;
    snprintf(p->message, sizeof p->message, "%s", ev->message);
    p->finish = ev->finish;
    if (ev->n_completions > 0) {
        const bt_completion_view *c = &ev->completions[0];
        p->out_tok = malloc(sizeof *p->out_tok * (size_t)(c->n_tokens + 1));
        p->out_lp = malloc(sizeof *p->out_lp * (size_t)(c->n_tokens + 1));
        if (p->out_tok && p->out_lp) {
            memcpy(p->out_tok, c->tokens, sizeof *p->out_tok * (size_t)c->n_tokens);
            memcpy(p->out_lp, c->logprobs, sizeof *p->out_lp * (size_t)c->n_tokens);
            p->n_out = c->n_tokens;
        }
    }
    m->pending--;
    if (ev->status != BT_OK && m->st == BT_OK)
        m->st = bt_error_set(&m->err, ev->status, "%s", ev->message);
    if (m->next < m->n && m->st == BT_OK && submit_next(m, &m->err) != BT_OK)
        m->st = m->err.status;
    if (m->pending == 0)
        bt_engine_shutdown(m->e, true, 0);
}

int main(int argc, char **argv) {
    bt_model_flags mf;
    bt_model_flags_init(&mf);
    bt_cluster_flags cf;
    bt_cluster_flags_init(&cf);
    const char *prompts_path = NULL;
    bool sequential = false;
    double temperature = 0.0;
    int64_t seed = 0;
    const bt_cli_opt opts[] = {
        BT_MODEL_FLAG_OPTS(mf),
        BT_CLUSTER_FLAG_OPTS(cf),
        {"--prompts", BT_CLI_STR, &prompts_path, 0, 0, "prompt file"},
        {"--sequential", BT_CLI_FLAG, &sequential, 0, 0, "one prompt at a time"},
        {"--temperature", BT_CLI_FLOAT, &temperature, 0, 100, "0 = greedy"},
        {"--seed", BT_CLI_INT, &seed, 0, (double)UINT32_MAX, "sampling seed"},
    };
    int n_opts = (int)(sizeof opts / sizeof opts[0]);
    int rc = bt_cmd_parse("multi_generate", "--prompts FILE [flags]", opts, n_opts, &mf.help,
                          argc - 1, argv + 1);
    if (rc >= 0)
        return rc;
    if (!prompts_path) {
        fprintf(stderr, "multi_generate: --prompts is required\n");
        return 2;
    }
    bt_error err;
    bt_error_init(&err);
    char *text = NULL;
    size_t len = 0;
    if (bt_read_file(prompts_path, 1 << 20, &text, &len, &err) != BT_OK) {
        fprintf(stderr, "multi_generate: %s\n", err.msg);
        return 2;
    }
    bt_session s;
    rc = bt_session_open(&s, "multi_generate", &mf, &cf);
    if (rc >= 0) {
        free(text);
        return rc;
    }
    static prompt_run prompts[MAX_PROMPTS];
    multi_run *m = &g_run;
    m->e = s.engine;
    m->p = prompts;
    m->temperature = temperature;
    m->seed = (uint64_t)seed;
    bt_error_init(&m->err);
    int n = 0;
    bt_status st = BT_OK;
    bt_engine_info info;
    bt_engine_get_info(s.engine, &info);
    for (char *line = strtok(text, "\n"); line && n < MAX_PROMPTS && st == BT_OK;
         line = strtok(NULL, "\n")) {
        char *tab = strchr(line, '\t');
        if (!tab)
            continue;
        *tab = '\0';
        size_t tlen = unescape(tab + 1), n_ids = 0;
        prompt_run *p = &prompts[n];
        if (!(p->ids = malloc(sizeof *p->ids * (len + 2)))) {
            st = bt_error_set(&err, BT_ERR_NOMEM, "out of memory");
            break;
        }
        if ((st = bt_tokenize(s.vocab, tab + 1, tlen, true, true, p->ids, len + 2, &n_ids, &err)) !=
            BT_OK)
            break;
        p->n_ids = (int32_t)n_ids;
        p->max_tokens = atoi(line);
        n++;
    }
    m->n = n;
    /* Sequential: one now, each DONE submits the next. Else all before serving. */
    while (st == BT_OK && m->next < n && (!sequential || m->next == 0))
        st = submit_next(m, &err);
    if (st == BT_OK && n == 0)
        bt_engine_shutdown(s.engine, true, 0);
    if (st == BT_OK)
        st = bt_engine_serve(s.engine, &err);
    if (st == BT_OK && m->st != BT_OK) {
        st = m->st;
        err = m->err;
    }
    for (int i = 0; st == BT_OK && i < n; i++) {
        const prompt_run *p = &prompts[i];
        printf("%d\t", i);
        for (int k = 0; k < p->n_out; k++)
            printf(k ? " %d" : "%d", p->out_tok[k]);
        printf("\t");
        for (int k = 0; k < p->n_out; k++)
            printf(k ? " %.9g" : "%.9g", (double)p->out_lp[k]);
        printf("\t%s\n", bt_finish_name(p->finish));
    }
    if (st == BT_OK) {
        bt_engine_metrics mt;
        bt_engine_get_metrics(s.engine, &mt);
        fprintf(stderr, "multi_generate: %d prompts, %llu steps, %llu preemptions\n", n,
                (unsigned long long)mt.steps, (unsigned long long)mt.preemptions_total);
    }
    if (st != BT_OK)
        fprintf(stderr, "multi_generate: %s\n", err.msg);
    for (int i = 0; i <= n && i < MAX_PROMPTS; i++) {
        free(prompts[i].ids);
        free(prompts[i].out_tok);
        free(prompts[i].out_lp);
    }
    free(text);
    return bt_session_close(&s, bt_cmd_exit_status(st));
}
