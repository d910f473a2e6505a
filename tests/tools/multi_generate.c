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
    bt_request *reqs[MAX_PROMPTS] = {0};
    int n = 0;
    bt_status st = BT_OK;
    int32_t *ids = malloc(sizeof *ids * (len + 2));
    for (char *line = strtok(text, "\n"); line && n < MAX_PROMPTS && st == BT_OK;
         line = strtok(NULL, "\n")) {
        char *tab = strchr(line, '\t');
        if (!tab)
            continue;
        *tab = '\0';
        size_t tlen = unescape(tab + 1), n_ids = 0;
        if ((st = bt_tokenize(s.vocab, tab + 1, tlen, true, true, ids, len + 2, &n_ids, &err)) !=
            BT_OK)
            break;
        bt_request_params rp = {
            .max_tokens = atoi(line), .ignore_eos = false, .sampling = bt_sampler_default_params()};
        rp.sampling.temperature = (float)temperature;
        rp.sampling.seed = (uint64_t)seed;
        if ((st = bt_request_new(ids, (int32_t)n_ids, &rp, bt_engine_n_ctx(s.engine), &reqs[n],
                                 &err)) != BT_OK)
            break;
        bt_engine_submit(s.engine, reqs[n++]);
        if (sequential)
            st = bt_engine_run(s.engine, &err);
    }
    if (st == BT_OK && !sequential)
        st = bt_engine_run(s.engine, &err);
    for (int i = 0; st == BT_OK && i < n; i++) {
        const bt_request *r = reqs[i];
        printf("%d\t", i);
        for (int32_t k = r->n_prompt; k < r->n_tokens; k++)
            printf(k > r->n_prompt ? " %d" : "%d", r->tokens[k]);
        printf("\t");
        for (int32_t k = r->n_prompt; k < r->n_tokens; k++)
            printf(k > r->n_prompt ? " %.9g" : "%.9g", (double)r->logprobs[k]);
        printf("\t%s\n", bt_finish_name(r->finish));
    }
    bt_engine_stats stats;
    if (st == BT_OK) {
        bt_engine_get_stats(s.engine, &stats);
        fprintf(stderr, "multi_generate: %d prompts, %llu steps, %llu preemptions\n", n,
                (unsigned long long)stats.steps, (unsigned long long)stats.preemptions);
    }
    if (st != BT_OK)
        fprintf(stderr, "multi_generate: %s\n", err.msg);
    for (int i = 0; i < n; i++)
        bt_request_free(reqs[i]);
    free(ids);
    free(text);
    return bt_session_close(&s, bt_cmd_exit_status(st));
}
