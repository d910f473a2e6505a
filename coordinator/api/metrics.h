/*
 * metrics.h - what `baton serve` reports at GET /metrics, in Prometheus' text exposition
 * format 0.0.4, named like vLLM's metrics with a `baton:` prefix (docs/api.md lists them).
 *
 * Two sources: the HTTP layer's own observations (latency and size histograms, fed from each
 * request's events; success and error counters) kept here, and the engine's snapshot
 * (bt_engine_get_metrics: token counters, queue gauges, per-stage KV and liveness) passed in
 * when rendering.
 *
 * Thread-safe: observations come from the engine thread (sinks) and the HTTP threads; one
 * mutex guards the counts, held only to add or copy numbers.
 */
#ifndef BT_API_METRICS_H
#define BT_API_METRICS_H

#include <stdint.h>

#include "engine.h"
#include "openai.h"

/* The histograms: name (after "baton:"), help, bucket list. */
#define BT_API_BUCKETS_LATENCY                                                                     \
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0
#define BT_API_BUCKETS_ITL                                                                         \
    0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5
#define BT_API_BUCKETS_E2E                                                                         \
    0.01, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0
#define BT_API_BUCKETS_TOKENS 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000

#define BT_API_HISTOGRAM_LIST(X)                                                                   \
    X(TTFT, "time_to_first_token_seconds", "Time to first token in seconds.",                      \
      BT_API_BUCKETS_LATENCY)                                                                      \
    X(ITL, "inter_token_latency_seconds", "Time between two tokens of a completion in seconds.",   \
      BT_API_BUCKETS_ITL)                                                                          \
    X(E2E, "e2e_request_latency_seconds", "End-to-end request latency in seconds.",                \
      BT_API_BUCKETS_E2E)                                                                          \
    X(QUEUE, "request_queue_time_seconds", "Time a request waited before admission in seconds.",   \
      BT_API_BUCKETS_E2E)                                                                          \
    X(PROMPT, "request_prompt_tokens", "Prompt tokens of finished requests.",                      \
      BT_API_BUCKETS_TOKENS)                                                                       \
    X(GEN, "request_generation_tokens", "Generated tokens of finished requests.",                  \
      BT_API_BUCKETS_TOKENS)

typedef enum bt_api_hist {
#define BT_API_HIST_ENUM(id, name, help, ...) BT_API_HIST_##id,
    BT_API_HISTOGRAM_LIST(BT_API_HIST_ENUM)
#undef BT_API_HIST_ENUM
        BT_API_HIST_COUNT
} bt_api_hist;

/* The status codes request_errors_total counts (label code). */
#define BT_API_ERROR_CODES(X) X(400) X(401) X(404) X(405) X(413) X(500) X(503)

typedef struct bt_api_metrics bt_api_metrics;

/* NULL when out of memory. */
bt_api_metrics *bt_api_metrics_new(void);
void bt_api_metrics_free(bt_api_metrics *m); /* NULL is a no-op */

void bt_api_metrics_observe(bt_api_metrics *m, bt_api_hist h, double v);
/* A finished request: its latencies (from the event's timings), sizes and, when it
 * succeeded, the finish reason of each returned completion. */
void bt_api_metrics_on_done(bt_api_metrics *m, const bt_event *done);
/* An error response with this status (other codes count as 500). */
void bt_api_metrics_on_error(bt_api_metrics *m, int http);

/* Appends the whole exposition: this module's series, then the engine's snapshot em. */
bool bt_api_metrics_render(bt_api_metrics *m, const bt_engine_metrics *em, bt_api_buf *out);

#endif
