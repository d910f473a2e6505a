/* metrics.c - histograms and counters of the HTTP layer, and the Prometheus exposition. */
#include "metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BUCKETS 24

typedef struct hist_def {
    const char *name, *help;
    double le[MAX_BUCKETS];
    int n_le;
} hist_def;

#define BT_API_HIST_DEF(id, nm, hp, ...)                                                           \
    {.name = nm,                                                                                   \
     .help = hp,                                                                                   \
     .le = {__VA_ARGS__},                                                                          \
     .n_le = (int)(sizeof((double[]){__VA_ARGS__}) / sizeof(double))},
static const hist_def hist_defs[BT_API_HIST_COUNT] = {BT_API_HISTOGRAM_LIST(BT_API_HIST_DEF)};
#undef BT_API_HIST_DEF

static const int error_codes[] = {
#define BT_API_ERR_CODE(c) c,
    BT_API_ERROR_CODES(BT_API_ERR_CODE)
#undef BT_API_ERR_CODE
};
#define N_ERROR_CODES (sizeof error_codes / sizeof error_codes[0])

typedef struct hist {
    uint64_t bucket[MAX_BUCKETS]; /* observations <= le[i] (not cumulative here) */
    uint64_t count;
    double sum;
} hist;

struct bt_api_metrics {
    pthread_mutex_t mu;
    hist h[BT_API_HIST_COUNT];
    uint64_t success_stop, success_length, success_abort;
    uint64_t errors[N_ERROR_CODES];
};

bt_api_metrics *bt_api_metrics_new(void) {
    bt_api_metrics *m = calloc(1, sizeof *m);
    if (m && pthread_mutex_init(&m->mu, NULL) != 0) {
        free(m);
        return NULL;
    }
    return m;
}

void bt_api_metrics_free(bt_api_metrics *m) {
    if (!m)
        return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static void observe_locked(bt_api_metrics *m, bt_api_hist id, double v) {
    const hist_def *d = &hist_defs[id];
    hist *h = &m->h[id];
    for (int i = 0; i < d->n_le; i++)
        if (v <= d->le[i]) {
            h->bucket[i]++;
            break;
        }
    h->count++;
    h->sum += v;
}

void bt_api_metrics_observe(bt_api_metrics *m, bt_api_hist h, double v) {
    pthread_mutex_lock(&m->mu);
    observe_locked(m, h, v);
    pthread_mutex_unlock(&m->mu);
}

void bt_api_metrics_on_done(bt_api_metrics *m, const bt_event *done) {
    pthread_mutex_lock(&m->mu);
    if (done->t_admit_us > 0 && done->t_admit_us >= done->t_submit_us)
        observe_locked(m, BT_API_HIST_QUEUE, (double)(done->t_admit_us - done->t_submit_us) / 1e6);
    if (done->status == BT_OK) {
        if (done->t_first_token_us > 0 && done->t_first_token_us >= done->t_submit_us)
            observe_locked(m, BT_API_HIST_TTFT,
                           (double)(done->t_first_token_us - done->t_submit_us) / 1e6);
        observe_locked(m, BT_API_HIST_E2E, (double)(done->t_done_us - done->t_submit_us) / 1e6);
        observe_locked(m, BT_API_HIST_PROMPT, (double)done->usage_prompt_tokens);
        observe_locked(m, BT_API_HIST_GEN, (double)done->usage_completion_tokens);
        for (int i = 0; i < done->n_completions; i++) {
            bt_finish f = done->completions[i].finish;
            if (f == BT_FINISH_STOP)
                m->success_stop++;
            else if (f == BT_FINISH_LENGTH || f == BT_FINISH_CONTEXT)
                m->success_length++;
            else
                m->success_abort++;
        }
    }
    pthread_mutex_unlock(&m->mu);
}

void bt_api_metrics_on_error(bt_api_metrics *m, int http) {
    size_t at = 0, at_500 = 0;
    bool found = false;
    for (size_t i = 0; i < N_ERROR_CODES; i++) {
        if (error_codes[i] == 500)
            at_500 = i;
        if (error_codes[i] == http) {
            at = i;
            found = true;
        }
    }
    if (!found)
        at = at_500; /* anything unlisted counts as a 500 */
    pthread_mutex_lock(&m->mu);
    m->errors[at]++;
    pthread_mutex_unlock(&m->mu);
}

static bool out_printf(bt_api_buf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool out_printf(bt_api_buf *out, const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line)
        return false;
    return bt_api_buf_append(out, line, (size_t)n);
}

static bool header(bt_api_buf *out, const char *name, const char *type, const char *help) {
    return out_printf(out, "# HELP baton:%s %s\n# TYPE baton:%s %s\n", name, help, name, type);
}

bool bt_api_metrics_render(bt_api_metrics *m, const bt_engine_metrics *em, bt_api_buf *out) {
    bt_api_metrics c;
    pthread_mutex_lock(&m->mu);
    memcpy(c.h, m->h, sizeof c.h);
    c.success_stop = m->success_stop;
    c.success_length = m->success_length;
    c.success_abort = m->success_abort;
    memcpy(c.errors, m->errors, sizeof c.errors);
    pthread_mutex_unlock(&m->mu);

    bool ok = true;
    for (int id = 0; id < BT_API_HIST_COUNT; id++) {
        const hist_def *d = &hist_defs[id];
        const hist *h = &c.h[id];
        ok = ok && header(out, d->name, "histogram", d->help);
        uint64_t cum = 0;
        for (int i = 0; i < d->n_le; i++) {
            cum += h->bucket[i];
            ok = ok && out_printf(out, "baton:%s_bucket{le=\"%g\"} %llu\n", d->name, d->le[i],
                                  (unsigned long long)cum);
        }
        ok = ok && out_printf(out, "baton:%s_bucket{le=\"+Inf\"} %llu\n", d->name,
                              (unsigned long long)h->count);
        ok = ok && out_printf(out, "baton:%s_sum %.9g\n", d->name, h->sum);
        ok = ok && out_printf(out, "baton:%s_count %llu\n", d->name, (unsigned long long)h->count);
    }

    ok = ok && header(out, "request_success_total", "counter",
                      "Requests finished, by the finish reason of each returned completion.");
    ok = ok && out_printf(out, "baton:request_success_total{finished_reason=\"stop\"} %llu\n",
                          (unsigned long long)c.success_stop);
    ok = ok && out_printf(out, "baton:request_success_total{finished_reason=\"length\"} %llu\n",
                          (unsigned long long)c.success_length);
    ok = ok && out_printf(out, "baton:request_success_total{finished_reason=\"abort\"} %llu\n",
                          (unsigned long long)c.success_abort);
    ok = ok && header(out, "request_errors_total", "counter", "Error responses by HTTP status.");
    for (size_t i = 0; i < N_ERROR_CODES; i++)
        ok = ok && out_printf(out, "baton:request_errors_total{code=\"%d\"} %llu\n", error_codes[i],
                              (unsigned long long)c.errors[i]);

    ok = ok && header(out, "prompt_tokens_total", "counter", "Prompt tokens processed.");
    ok = ok && out_printf(out, "baton:prompt_tokens_total %llu\n",
                          (unsigned long long)em->prompt_tokens_total);
    ok = ok && header(out, "generation_tokens_total", "counter", "Tokens generated.");
    ok = ok && out_printf(out, "baton:generation_tokens_total %llu\n",
                          (unsigned long long)em->generation_tokens_total);
    ok = ok && header(out, "num_preemptions_total", "counter",
                      "Requests preempted for KV space (recomputed later).");
    ok = ok && out_printf(out, "baton:num_preemptions_total %llu\n",
                          (unsigned long long)em->preemptions_total);
    ok = ok && header(out, "num_requests_running", "gauge", "Requests running on the stages.");
    ok = ok && out_printf(out, "baton:num_requests_running %d\n", em->n_running);
    ok = ok && header(out, "num_requests_waiting", "gauge", "Requests waiting for admission.");
    ok = ok && out_printf(out, "baton:num_requests_waiting %d\n", em->n_waiting);

    int n_stages = em->n_stages < BT_ENGINE_MAX_STAGES ? em->n_stages : BT_ENGINE_MAX_STAGES;
    /* One family at a time, every stage in it (the format wants a family's lines together). */
#define STAGE_FAMILY(name, type, help, fmt, expr)                                                  \
    do {                                                                                           \
        ok = ok && header(out, name, type, help);                                                  \
        for (int s = 0; s < n_stages; s++) {                                                       \
            const bt_engine_stage_metrics *st = &em->stage[s];                                     \
            ok = ok && out_printf(out, "baton:" name "{stage=\"%d\"} " fmt "\n", s + 1, expr);     \
        }                                                                                          \
    } while (0)
    STAGE_FAMILY("kv_cache_usage_perc", "gauge", "Fraction of the stage's KV blocks in use (0-1).",
                 "%.6g",
                 st->kv_blocks_total > 0 ? (double)st->kv_blocks_used / st->kv_blocks_total : 0.0);
    STAGE_FAMILY("kv_blocks_used", "gauge", "KV blocks in use on the stage.", "%d",
                 st->kv_blocks_used);
    STAGE_FAMILY("kv_blocks_total", "gauge", "KV blocks of the stage.", "%d", st->kv_blocks_total);
    STAGE_FAMILY("stage_busy_fraction", "gauge", "Fraction of wall time the stage computed.",
                 "%.6g", st->busy_fraction);
    STAGE_FAMILY("stage_activation_bytes_sent_total", "counter",
                 "Activation bytes the stage sent on.", "%llu",
                 (unsigned long long)st->act_bytes_sent);
    STAGE_FAMILY("stage_seconds_since_heartbeat", "gauge",
                 "Seconds since the stage was last heard from.", "%.6g",
                 st->seconds_since_heartbeat);
#undef STAGE_FAMILY
    return ok;
}
