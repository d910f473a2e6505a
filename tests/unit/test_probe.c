/*
 * test_probe.c - the stage's speed probe (worker/probe.h) and the Probe / ProbeReply exchange
 * of the handshake (protocol 5, --split measured):
 *   - bt_probe_check names a bad dimension or type; bt_probe_run times at least what it is
 *     asked, on 1 and 2 threads;
 *   - a real stage loop on a thread of a local hub answers a Probe before its Hello with what it
 *     measured, refuses a second Probe and a malformed one with an Error naming the field;
 *   - the coordinator sends one Probe of the model's layer shape and types, and refuses a
 *     ProbeReply that cannot be true (no passes, less time than asked, another rank), before
 *     any Hello goes out.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "cluster.h"
#include "frame.h"
#include "gguf.h"
#include "hparams.h"
#include "msg.h"
#include "probe.h"
#include "stage_layout.h"
#include "stage_loop.h"
#include "transport.h"

#define MAX_FRAME (1u << 20)
static uint8_t frame[MAX_FRAME];

static bt_probe_shape shape_of(int e, int q, int kv, int ff, uint32_t type) {
    bt_probe_shape s = {.n_embd = e, .q_dim = q, .kv_dim = kv, .n_ff = ff};
    for (int i = 0; i < BT_PROBE_N_MATRICES; i++)
        s.type[i] = type;
    return s;
}

static void test_probe_run(void) {
    bt_error err;
    bt_error_init(&err);
    bt_probe_shape s = shape_of(33, 64, 32, 128, BT_TYPE_Q4_1);
    CHECK_EQ_INT(bt_probe_check(&s, &err), BT_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "n_embd 33 is not a multiple of 32") != NULL);
    s = shape_of(64, 64, 32, 128, BT_TYPE_Q4_1);
    s.type[BT_PROBE_UP] = 99;
    CHECK_EQ_INT(bt_probe_check(&s, &err), BT_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "types[5] (up) 99: not a tensor type") != NULL);
    s.type[BT_PROBE_UP] = BT_TYPE_Q8_1;
    CHECK_EQ_INT(bt_probe_check(&s, &err), BT_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "a type the kernels do not compute") != NULL);
    s = shape_of(1 << 17, 1 << 17, 1 << 17, 1 << 17, BT_TYPE_F32); /* 7 x 64 GiB */
    CHECK_EQ_INT(bt_probe_check(&s, &err), BT_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "a layer of 458752.0 MiB, at most 8192.0 MiB") != NULL);
    s = shape_of(64, 64, 32, 256, BT_TYPE_Q4_K);
    CHECK_EQ_INT(bt_probe_check(&s, &err), BT_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "q rows of 64 elements are not whole q4_K blocks of 256") != NULL);

    bt_probe_result r;
    uint32_t types[] = {BT_TYPE_Q4_1, BT_TYPE_Q8_0, BT_TYPE_F16, BT_TYPE_Q4_K};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        for (int threads = 1; threads <= 2; threads++) {
            s = shape_of(256, 256, 128, 512, types[i]);
            CHECK_OK(bt_probe_run(&s, threads, 4, 20000, &r, &err));
            CHECK(r.passes >= 1 && r.wall_us >= 20000 && r.cpu_us > 0);
            printf("  %s, %d threads: %d passes in %lld us (%.3f ms each), cpu %lld us\n",
                   bt_type_name(types[i]), threads, r.passes, (long long)r.wall_us,
                   (double)r.wall_us / r.passes / 1000.0, (long long)r.cpu_us);
        }
    }
    CHECK_EQ_INT(bt_probe_run(&s, 1, 0, 20000, &r, &err), BT_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "rows 0") != NULL);
    CHECK_EQ_INT(bt_probe_run(&s, 1, 4, 10, &r, &err), BT_ERR_INVALID_ARG);
}

/* A stage loop (rank 1 of 2) on its own thread. */
typedef struct {
    bt_transport *t;
    const bt_gguf *g;
    bt_status st;
    bt_error err;
} stage_run;

static void *stage_main(void *arg) {
    stage_run *r = arg;
    bt_stage_loop_params p = bt_stage_loop_default_params();
    p.hello_timeout_us = 5 * 1000000LL;
    bool reported;
    bt_error_init(&r->err);
    r->st = bt_stage_loop_run(r->t, r->g, &p, &reported, &r->err);
    return NULL;
}

static bt_status send_probe(bt_transport *t0, const Baton__Probe *pr, bt_error *err) {
    size_t len;
    bt_status st = bt_frame_finish(frame, MAX_FRAME, BT_MSG_PROBE, &pr->base, 0, 0, 0, &len, err);
    return st != BT_OK ? st : bt_transport_send(t0, 1, frame, len, 1000000, err);
}

/* The next frame from rank 1, unpacked as `kind` into arena (NULL on failure). */
static ProtobufCMessage *recv_as(bt_transport *t0, bt_msg_kind kind, bt_arena *arena) {
    const void *buf;
    size_t len;
    int from;
    bt_error err;
    bt_error_init(&err);
    bt_frame_view f;
    ProtobufCMessage *m = NULL;
    bt_arena_reset(arena);
    if (bt_transport_recv(t0, 1, &buf, &len, &from, 10 * 1000000LL, &err) != BT_OK ||
        bt_frame_parse(buf, len, &f, &err) != BT_OK || f.kind != kind ||
        bt_msg_unpack(&f, kind, arena, &m, &err) != BT_OK) {
        check_fail(__FILE__, __LINE__, "expected a %s from rank 1: %s", bt_msg_kind_name(kind),
                   err.msg[0] ? err.msg : bt_msg_kind_name(f.kind));
        return NULL;
    }
    return m;
}

/* A probe that a stage can run: SmolLM2-like types on a small shape. */
static uint32_t good_types[7] = {BT_TYPE_Q4_1, BT_TYPE_Q4_1, BT_TYPE_Q4_1, BT_TYPE_Q4_1,
                                 BT_TYPE_Q4_1, BT_TYPE_Q4_1, BT_TYPE_Q8_0};
static Baton__Probe good_probe(void) {
    Baton__Probe pr = BATON__PROBE__INIT;
    pr.n_embd = 128;
    pr.q_dim = 128;
    pr.kv_dim = 64;
    pr.n_ff = 256;
    pr.n_types = 7;
    pr.types = good_types;
    pr.threads = 1;
    pr.rows = 4;
    pr.min_ms = 20;
    return pr;
}

/* Runs a stage, sends it `first` (then, when `second`, another good Probe) and expects the
 * ProbeReply of a good first one and an Error containing want_err (NULL: none expected). */
static void stage_case(const bt_gguf *g, const Baton__Probe *first, bool second,
                       const char *want_err) {
    bt_error err;
    bt_error_init(&err);
    bt_local_hub *hub = NULL;
    bt_arena arena;
    CHECK_OK(bt_arena_init(&arena, 1u << 20, &err));
    CHECK_OK(bt_local_hub_new(2, MAX_FRAME, 4, &hub, &err));
    if (!hub)
        return;
    bt_transport *t0 = bt_local_hub_endpoint(hub, 0);
    stage_run run = {.t = bt_local_hub_endpoint(hub, 1), .g = g};
    pthread_t th;
    CHECK_EQ_INT(pthread_create(&th, NULL, stage_main, &run), 0);
    CHECK(recv_as(t0, BT_MSG_STAGE_INFO, &arena) != NULL);
    CHECK_OK(send_probe(t0, first, &err));
    if (second) {
        const Baton__ProbeReply *r =
            (const Baton__ProbeReply *)recv_as(t0, BT_MSG_PROBE_REPLY, &arena);
        CHECK(r != NULL);
        if (r) {
            CHECK_EQ_INT(r->rank, 1);
            CHECK(r->passes >= 1 && r->wall_us >= 20000);
        }
        Baton__Probe again = good_probe();
        CHECK_OK(send_probe(t0, &again, &err));
    }
    const Baton__Error *e = (const Baton__Error *)recv_as(t0, BT_MSG_ERROR, &arena);
    if (e && !strstr(e->message, want_err))
        check_fail(__FILE__, __LINE__, "stage's Error '%s' lacks '%s'", e->message, want_err);
    pthread_join(th, NULL);
    CHECK_EQ_INT(run.st, BT_ERR_PROTOCOL);
    bt_local_hub_free(hub);
    bt_arena_deinit(&arena);
}

static void test_stage_probe(const bt_gguf *g) {
    Baton__Probe pr = good_probe();
    stage_case(g, &pr, true, "a second Probe before the Hello");
    pr = good_probe();
    pr.n_types = 6;
    stage_case(g, &pr, false, "Probe: 6 types, expected 7");
    pr = good_probe();
    pr.min_ms = 0;
    stage_case(g, &pr, false, "min_ms 0 (1..60000) out of range");
    pr = good_probe();
    pr.n_ff = 1u << 30;
    stage_case(g, &pr, false, "n_ff 1073741824 above");
    pr = good_probe();
    pr.n_embd = pr.q_dim = pr.kv_dim = pr.n_ff = 1u << 17;
    stage_case(g, &pr, false, "MiB, at most 8192.0 MiB");
    pr = good_probe();
    uint32_t bad_types[7] = {BT_TYPE_Q4_1, BT_TYPE_Q4_1, BT_TYPE_Q4_1, 77,
                             BT_TYPE_Q4_1, BT_TYPE_Q4_1, BT_TYPE_Q4_1};
    pr.types = bad_types;
    stage_case(g, &pr, false, "types[3] (o) 77: not a tensor type");
}

/* The coordinator's side: a hand-made stage whose StageInfo and ProbeReply wait in the hub. */
typedef struct reply_case {
    uint32_t rank, passes;
    uint64_t wall_us;
    const char *want;
} reply_case;

static void test_coordinator_probe(const bt_gguf *g) {
    static const reply_case cases[] = {
        {1, 0, 500000, "ProbeReply from rank 1: rank 1, 0 passes in 500000 us"},
        {1, 10, 1000, "10 passes in 1000 us (at least 30 ms asked)"},
        {2, 10, 500000, "rank 2, 10 passes"},
    };
    bt_hparams hp;
    bt_error err;
    bt_error_init(&err);
    CHECK_OK(bt_hparams_load(g, &hp, &err));
    bt_arena arena;
    CHECK_OK(bt_arena_init(&arena, 1u << 20, &err));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const reply_case *k = &cases[i];
        bt_local_hub *hub = NULL;
        CHECK_OK(bt_local_hub_new(2, MAX_FRAME, 4, &hub, &err));
        if (!hub)
            break;
        bt_transport *t0 = bt_local_hub_endpoint(hub, 0), *t1 = bt_local_hub_endpoint(hub, 1);
        char host[] = "stagehost";
        Baton__StageInfo si = BATON__STAGE_INFO__INIT;
        si.protocol_version = BT_PROTOCOL_VERSION;
        si.rank = 1;
        si.hostname = host;
        Baton__ProbeReply r = BATON__PROBE_REPLY__INIT;
        r.rank = k->rank;
        r.passes = k->passes;
        r.wall_us = k->wall_us;
        size_t len;
        CHECK_OK(
            bt_frame_finish(frame, MAX_FRAME, BT_MSG_STAGE_INFO, &si.base, 0, 0, 0, &len, &err));
        CHECK_OK(bt_transport_send(t1, 0, frame, len, 1000000, &err));
        CHECK_OK(
            bt_frame_finish(frame, MAX_FRAME, BT_MSG_PROBE_REPLY, &r.base, 0, 0, 0, &len, &err));
        CHECK_OK(bt_transport_send(t1, 0, frame, len, 1000000, &err));
        bt_cluster_params p = bt_cluster_default_params();
        p.max_batch = 16;
        p.max_seqs = 2;
        p.kv_tokens = 64;
        p.n_ctx = 64;
        p.split = BT_SPLIT_MEASURED;
        p.n_threads = 3;
        p.probe_ms = 30;
        p.hello_timeout_us = 2000000;
        bt_cluster *c = NULL;
        CHECK_EQ_INT(bt_cluster_start(t0, g, &p, &c, &err), BT_ERR_PROTOCOL);
        if (!strstr(err.msg, k->want))
            check_fail(__FILE__, __LINE__, "case %zu: '%s' lacks '%s'", i, err.msg, k->want);
        /* The stage got one Probe of the model's layer and nothing after it. */
        const void *buf;
        int from;
        bt_frame_view f;
        ProtobufCMessage *m = NULL;
        bt_arena_reset(&arena);
        CHECK_OK(bt_transport_recv(t1, 0, &buf, &len, &from, 100000, &err));
        CHECK_OK(bt_frame_parse(buf, len, &f, &err));
        CHECK_EQ_INT(f.kind, BT_MSG_PROBE);
        if (f.kind == BT_MSG_PROBE && bt_msg_unpack(&f, BT_MSG_PROBE, &arena, &m, &err) == BT_OK) {
            const Baton__Probe *pr = (const Baton__Probe *)m;
            CHECK_EQ_INT(pr->n_embd, hp.n_embd);
            CHECK_EQ_INT(pr->q_dim, bt_hparams_q_dim(&hp));
            CHECK_EQ_INT(pr->kv_dim, bt_hparams_kv_dim(&hp));
            CHECK_EQ_INT(pr->n_ff, hp.n_ff);
            CHECK_EQ_INT(pr->n_types, 7);
            CHECK_EQ_INT(pr->types[0], BT_TYPE_Q4_1);
            CHECK_EQ_INT(pr->threads, 3);
            CHECK_EQ_INT(pr->rows, BT_DECODE_GROUP);
            CHECK_EQ_INT(pr->min_ms, 30);
        }
        CHECK_EQ_INT(bt_transport_recv(t1, 0, &buf, &len, &from, 50000, &err), BT_ERR_TIMEOUT);
        bt_cluster_free(c);
        bt_local_hub_free(hub);
    }
    bt_arena_deinit(&arena);
}

int main(void) {
    test_probe_run();
    const char *tiny = check_make_tiny_model("test_probe");
    if (tiny) {
        bt_gguf *g = NULL;
        bt_error err;
        bt_error_init(&err);
        CHECK_OK(bt_gguf_open(tiny, &g, &err));
        if (g) {
            test_stage_probe(g);
            test_coordinator_probe(g);
        }
        bt_gguf_free(g);
        unlink(tiny);
    }
    return check_finish();
}
