/*
 * cluster.h - the coordinator's side of the wire protocol: the handshake with every stage,
 * sending micro-batches to the first stage, and receiving sample results, heartbeats and
 * errors, with a deadline on everything.
 *
 * Owns: the frame buffer and decode arena of rank 0, what each stage reported in its
 * HelloReply, and each stage's last sign of life. Borrows the transport and the GGUF.
 *
 * Failure: a stage that sends an Error, whose transport fails, that sends nothing for
 * stage_timeout (every stage heartbeats every heartbeat_ms, idle or computing), or whose
 * process is gone (checked where the coordinator sees the stage's pids: same machine and pid
 * namespace) makes bt_cluster_poll fail with a message naming the rank, its layers and host. The
 * deadline is per stage, counted on CLOCK_MONOTONIC, and only over time in which the coordinator
 * itself was waiting for frames (cluster.c, "Liveness"): a coordinator that was stopped or busy
 * does not blame the stages whose frames piled up meanwhile. The caller then fails its
 * requests and ends the job.
 *
 * Confined to the coordinator's scheduling thread.
 */
#ifndef BT_CLUSTER_H
#define BT_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "gguf.h"
#include "msg.h"
#include "numerics.h"
#include "scheduler.h"
#include "split.h"
#include "status.h"
#include "transport.h"

/* The activation codec when stages run on other hosts than the coordinator and none was
 * asked for (codec_auto): at 1 Gbit/s it keeps at least 90% of the unshaped throughput at
 * half f32's bytes, with an error no larger than one ulp of f32 (docs/benchmarks.md,
 * "Scaling study"). On one host the default stays the lossless f32. */
#define BT_CODEC_MULTIHOST_DEFAULT BT_CODEC_F16

typedef struct bt_cluster_params {
    bt_codec_kind codec;   /* activations between stages */
    bool codec_auto;       /* codec was not asked for: BT_CODEC_MULTIHOST_DEFAULT when a
                              stage's StageInfo names another host than this process's */
    int zstd_level;        /* 0 = none */
    int max_batch;         /* rows per micro-batch */
    int max_seqs;          /* sequence slots */
    int kv_tokens;         /* KV capacity asked of each stage (less where its budget is less) */
    int n_ctx;             /* the least KV a stage may be given (one context); 0 = kv_tokens */
    const char *stage_mem; /* --stage-mem "SIZE[,SIZE...]" (borrowed for bt_cluster_start),
                              or NULL: each stage's own budget (its StageInfo) */
    const char *layers;    /* --layers spec or NULL for the balanced split */
    bt_split_mode split;   /* what the balanced split balances */

    /* BT_SPLIT_MEASURED: --stage-speed "S1,S2,..." (borrowed for bt_cluster_start), or NULL:
     * each stage is probed with a Probe of `probe_ms` (0: BT_CLUSTER_PROBE_MS) timing
     * `n_threads` threads (the stages' compute threads; 0: 1). */
    const char *stage_speed;
    int n_threads, probe_ms;

    int heartbeat_ms;
    int64_t stage_timeout_us;
    int64_t hello_timeout_us;
    const int32_t *eog; /* [n_eog] end-of-generation ids that min_tokens bans on the last
                           stage (<= BT_SAMPLER_MAX_EOG); borrowed for bt_cluster_start;
                           NULL/0 = none */
    int n_eog;
    bt_numerics numerics; /* of the stages' forward passes */
    bt_type kv_type;      /* the stages' KV cache element: BT_TYPE_F16 (default) or Q8_0 */
} bt_cluster_params;

bt_cluster_params bt_cluster_default_params(void);

typedef struct bt_stage_report {
    int rank, layer_begin, layer_end;
    uint64_t weight_bytes, kv_bytes, rss_bytes; /* rss: after loading (HelloReply) */
    uint64_t peak_rss_bytes; /* the stage process's peak so far (heartbeats); in a singleton
                              * run, the whole process's */
    int kv_tokens;
    char host[64];
    uint64_t budget_bytes;       /* its memory budget as planned with (0: no limit known) */
    bt_mem_source budget_source; /* where that number came from */
    int pid;                     /* the stage's process id (HelloReply) */
    bool local;                  /* a process of its own that this one can see (same machine and pid
                                  * namespace, another pid): whether it still exists can be asked of the
                                  * kernel */
    int64_t last_seen_us; /* last frame read, moved on by time the coordinator did not listen */
    uint64_t busy_us;
    /* From the stage's latest Heartbeat (0 before the first): */
    int kv_tokens_free;        /* the stage's own count of free KV tokens */
    uint64_t act_bytes_sent;   /* activation frame bytes it sent on to the next stage */
    int64_t last_heartbeat_us; /* when it was read (bt_now_us); the handshake before that */
    int64_t start_us;          /* when the handshake reply was read */

    /* --split measured: its speed as planned with (relative, the fastest 1), and when it was
     * probed (not with --stage-speed) what the probe saw: */
    double speed;
    double probe_pass_us; /* wall-clock time of one layer pass of BT_DECODE_GROUP rows */
    double probe_cpu;     /* CPU time over wall-clock time meanwhile (cores it got) */

    /* Where its weights came from (HelloReply, protocol 5): */
    int weights_source;       /* bt_weights_source (stage_loop.h) */
    uint64_t weights_load_us; /* the stage's time from its Hello to its weights */
    uint64_t shipped_bytes;   /* slice bytes shipped to it (0 unless shipped) */
    uint64_t shipped_zbytes;  /* ... as compressed on the wire */
    uint64_t ship_us;         /* the coordinator's time sending them */
} bt_stage_report;

/* How long each stage's Probe times by default: several periods of a CFS quota (100 ms). */
#define BT_CLUSTER_PROBE_MS 400

typedef struct bt_cluster bt_cluster;

/* Waits for every stage's StageInfo (t->size - 1 of them); with BT_SPLIT_MEASURED and no
 * stage_speed, probes each stage in turn (Probe, then its ProbeReply, before the next stage's
 * Probe: stages sharing a machine are not timed against each other); plans the split within
 * their memory budgets (split.h; a plan that cannot fit fails here with BT_ERR_RANGE, before
 * any stage has loaded a weight), sends each its Hello and waits for their replies. Meanwhile
 * it answers each stage's SliceRequest (one stage at a time) with the SliceChunks of its
 * slice, read from g's mapping (worker/slice.h), and logs their sizes and time. */
bt_status bt_cluster_start(bt_transport *t, const bt_gguf *g, const bt_cluster_params *p,
                           bt_cluster **out, bt_error *err);
void bt_cluster_free(bt_cluster *c);

int bt_cluster_n_stages(const bt_cluster *c);
const bt_stage_report *bt_cluster_stage(const bt_cluster *c, int i);
/* The activation codec the stages were told; *remote (may be NULL): rank of the first stage
 * whose StageInfo named another host than this process's, 0 when none did. */
bt_codec_kind bt_cluster_codec(const bt_cluster *c, int *remote);
/* KV capacity in tokens of the fullest stage. */
int bt_cluster_kv_tokens(const bt_cluster *c);
const bt_split *bt_cluster_split(const bt_cluster *c);
/* "stage rank R (layers A-B on HOST)" into buf; returns buf. */
const char *bt_cluster_stage_name(const bt_cluster *c, int rank, char *buf, size_t cap);

bt_status bt_cluster_send_batch(bt_cluster *c, const bt_sched_batch *b, bt_error *err);

/* One received SampleResults; arrays valid until the next poll. n = -1: nothing arrived.
 * Result i has n_top[i] alternatives (its sequence's top_logprobs, or the beam width's
 * candidates): top_token/top_logprob hold them for all results back to back, best first. */
typedef struct bt_cluster_results {
    int n;
    uint64_t step;
    const int32_t *seq, *token;
    const float *logprob;
    const uint32_t *n_top;       /* [n] or NULL when no result carries alternatives */
    const int32_t *top_token;    /* [sum n_top] */
    const float *top_logprob;    /* [sum n_top] */
    int n_scored;                /* rows of the step that had a target (prompt scoring) */
    const float *scored_logprob; /* [n_scored] their log-probabilities, in row order */
} bt_cluster_results;

/* What bt_cluster_poll checks of a SampleResults before handing it on (pure: reads r, writes
 * only err; shared with tests/fuzz/fuzz_results.c): bt_msg_check_sample_results against
 * max_batch and n_vocab, then the alternatives: none, or n_top for every result (each <=
 * BT_MAX_TOP_LOGPROBS) summing to the lengths of top_token and top_logprob, tokens in
 * [0, n_vocab), log-probabilities numbers <= 0. BT_ERR_PROTOCOL naming the field. */
bt_status bt_cluster_check_results(const Baton__SampleResults *r, int max_batch, int n_vocab,
                                   bt_error *err);

/* Waits up to timeout_us (at most 100 ms at a time) for the next message, handles heartbeats
 * itself and judges every stage's liveness on each return. */
bt_status bt_cluster_poll(bt_cluster *c, int64_t timeout_us, bt_cluster_results *res,
                          bt_error *err);

/* For an idle coordinator (nothing in flight): reads every frame that is waiting (heartbeats;
 * an Error or a SampleResults fails as in bt_cluster_poll), then judges liveness as
 * bt_cluster_poll does, counting the time since the last poll as listening: the caller slept
 * on purpose, and whatever the stages sent meanwhile has just been read. Never blocks. */
bt_status bt_cluster_idle_check(bt_cluster *c, bt_error *err);

/* How long an idle caller may sleep before bt_cluster_idle_check is due: the pid check
 * interval when some stage is a local process (a dead one is named within mpirun's grace
 * second), else the heartbeat interval. */
int64_t bt_cluster_idle_interval_us(const bt_cluster *c);

/* Tells every stage to exit and waits (bounded) until the messages are out. */
void bt_cluster_shutdown(bt_cluster *c);

#endif
