/* cluster.c - handshake, micro-batches out, results in, liveness (see cluster.h). */
#include "cluster.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "hparams.h"
#include "log.h"
#include "msg.h"
#include "proc_space.h"
#include "request_impl.h"
#include "kv_plan.h"
#include "stage_layout.h"
#include "sampling.h"
#include "slice.h"
#include "stage_loop.h"

#define ARENA_BYTES (4u << 20)
#define SEND_TIMEOUT_US (10 * 1000000LL)
/* Longest single wait for a frame: a pause of the coordinator that falls inside one wait and
 * ends with a frame already there cannot be told from waiting, so waits are kept short. */
#define LISTEN_SLICE_US (100 * 1000LL)
/* How often the pids of local stages are checked: well within the second Open MPI's mpirun
 * waits between a rank's death and its SIGTERM to the others (docs/api.md, exit status). */
#define PID_CHECK_US (50 * 1000LL)

struct bt_cluster {
    bt_transport *t;
    const bt_gguf *g;
    bt_cluster_params p;
    bt_split split;
    int n_stages;
    bt_stage_report *stages; /* [n_stages] */
    uint8_t *out;            /* frame buffer, t->max_frame */
    bt_arena arena;
    /* StageBatch scratch, sized at start */
    Baton__SeqOp *ops;
    Baton__SeqOp **op_ptrs;
    Baton__SamplingParams *params;
    Baton__SamplingParams **param_ptrs;
    int32_t *bias_tok; /* [max_seqs][BT_MAX_LOGIT_BIAS] logit_bias of new_seqs */
    float *bias_val;   /* [max_seqs][BT_MAX_LOGIT_BIAS] */
    int n_vocab;       /* for checking SampleResults */
    protobuf_c_boolean *want;
    int64_t last_activity_us; /* last batch sent */
    int64_t listen_end_us;    /* when the coordinator last came back from waiting for a frame */
    int64_t pid_check_us;     /* when the local stages' pids were last checked */
    int remote_stage;         /* first stage rank on another host (StageInfo), 0 = none */
    /* Start-up: a stage's frame read while another's slice was shipped (read_while_shipping),
     * owned here until the handshake loop takes it into `held`, which it frees on its next
     * frame. */
    uint8_t *deferred[BT_MAX_STAGES];
    size_t deferred_len[BT_MAX_STAGES];
    uint8_t *held;
};

bt_cluster_params bt_cluster_default_params(void) {
    return (bt_cluster_params){.codec = BT_CODEC_F32,
                               .zstd_level = 0,
                               .max_batch = 512,
                               .max_seqs = 64,
                               .kv_tokens = 4096,
                               .layers = NULL,
                               .heartbeat_ms = 500,
                               .stage_timeout_us = 30 * 1000000LL,
                               .hello_timeout_us = 300 * 1000000LL,
                               .numerics = BT_NUMERICS_FAST,
                               .kv_type = BT_TYPE_F16};
}

bt_codec_kind bt_cluster_codec(const bt_cluster *c, int *remote) {
    if (remote)
        *remote = c->remote_stage;
    return c->p.codec;
}

int bt_cluster_n_stages(const bt_cluster *c) {
    return c->n_stages;
}
const bt_stage_report *bt_cluster_stage(const bt_cluster *c, int i) {
    return &c->stages[i];
}
const bt_split *bt_cluster_split(const bt_cluster *c) {
    return &c->split;
}
int bt_cluster_kv_tokens(const bt_cluster *c) {
    int kv = c->stages[0].kv_tokens;
    for (int i = 1; i < c->n_stages; i++)
        if (c->stages[i].kv_tokens < kv)
            kv = c->stages[i].kv_tokens;
    return kv;
}

static bt_status send_msg(bt_cluster *c, int dst, bt_msg_kind kind, const ProtobufCMessage *m,
                          bt_error *err) {
    size_t len;
    bt_status st = bt_frame_finish(c->out, c->t->max_frame, kind, m, 0, 0, 0, &len, err);
    if (st != BT_OK)
        return st;
    return bt_transport_send(c->t, dst, c->out, len, SEND_TIMEOUT_US, err);
}

const char *bt_cluster_stage_name(const bt_cluster *c, int rank, char *buf, size_t cap) {
    const bt_stage_report *s = &c->stages[rank - 1];
    if (s->host[0])
        snprintf(buf, cap, "stage rank %d (layers %d-%d on %s)", rank, s->layer_begin,
                 s->layer_end - 1, s->host);
    else
        snprintf(buf, cap, "stage rank %d", rank);
    return buf;
}

/* Reads the next frame of the handshake into f (rank in *from), with the deadline. */
static bt_status handshake_recv(bt_cluster *c, int64_t deadline, int got, const char *what,
                                bt_frame_view *f, int *from, bt_error *err) {
    int64_t left = deadline - bt_now_us();
    const void *buf;
    size_t len;
    bt_status st = BT_ERR_TIMEOUT;
    if (left <= 0 ||
        (st = bt_transport_recv(c->t, BT_RANK_ANY, &buf, &len, from, left, err)) == BT_ERR_TIMEOUT)
        return bt_error_set(err, BT_ERR_TIMEOUT, "%d of %d stages sent their %s within %lld s", got,
                            c->n_stages, what, (long long)(c->p.hello_timeout_us / 1000000));
    if (st != BT_OK)
        return st;
    bt_arena_reset(&c->arena);
    if ((st = bt_frame_parse(buf, len, f, err)) != BT_OK)
        return bt_error_wrap(err, "handshake from rank %d", *from), st;
    ProtobufCMessage *m;
    if (f->kind == BT_MSG_ERROR && bt_msg_unpack(f, BT_MSG_ERROR, &c->arena, &m, err) == BT_OK) {
        Baton__Error *e = (Baton__Error *)m;
        return bt_error_set(err, BT_ERR_PROTOCOL, "stage rank %d failed to start: %s", *from,
                            e->message ? e->message : "");
    }
    return BT_OK;
}

/* Every stage's StageInfo: its memory budget and host, checked field by field. */
static bt_status recv_stage_info(bt_cluster *c, int64_t deadline, bt_error *err) {
    for (int got = 0; got < c->n_stages;) {
        bt_frame_view f;
        int from;
        ProtobufCMessage *m;
        bt_status st = handshake_recv(c, deadline, got, "StageInfo", &f, &from, err);
        if (st != BT_OK)
            return st;
        if ((st = bt_msg_unpack(&f, BT_MSG_STAGE_INFO, &c->arena, &m, err)) != BT_OK)
            return bt_error_wrap(err, "handshake from rank %d", from), st;
        const Baton__StageInfo *si = (const Baton__StageInfo *)m;
        int s = from - 1;
        if (from < 1 || from > c->n_stages || c->stages[s].host[0] || c->stages[s].budget_source)
            return bt_error_set(err, BT_ERR_PROTOCOL, "unexpected StageInfo from rank %d", from);
        if (si->protocol_version != BT_PROTOCOL_VERSION || si->rank != (uint32_t)from)
            return bt_error_set(err, BT_ERR_PROTOCOL,
                                "StageInfo from rank %d: protocol %u, rank %u; expected %d, %d",
                                from, si->protocol_version, si->rank, BT_PROTOCOL_VERSION, from);
        bool source_ok = si->mem_source == BT_MEM_SOURCE_CGROUP ||
                         si->mem_source == BT_MEM_SOURCE_MEMINFO ||
                         si->mem_source == BT_MEM_SOURCE_NONE;
        if (!source_ok || (si->mem_source == BT_MEM_SOURCE_NONE) != (si->mem_budget_bytes == 0) ||
            si->mem_budget_bytes >= (1ull << 60))
            return bt_error_set(err, BT_ERR_PROTOCOL,
                                "StageInfo from rank %d: mem_source %u with mem_budget_bytes %llu",
                                from, si->mem_source, (unsigned long long)si->mem_budget_bytes);
        size_t host_len = si->hostname ? strlen(si->hostname) : 0;
        if (host_len >= 256)
            return bt_error_set(err, BT_ERR_PROTOCOL,
                                "StageInfo from rank %d: hostname of %zu bytes, at most 255", from,
                                host_len);
        bt_stage_report *rep = &c->stages[s];
        rep->budget_bytes = si->mem_budget_bytes;
        rep->budget_source = (bt_mem_source)si->mem_source;
        /* Marks the stage as heard from even with no budget and no name. */
        snprintf(rep->host, sizeof rep->host, "%s", host_len ? si->hostname : "?");
        got++;
    }
    return BT_OK;
}

/* The Probe of one layer of the model: its shape and the types of blk.0's matrices. */
static bt_status probe_msg_of(const bt_gguf *g, const bt_hparams *hp, Baton__Probe *pr,
                              uint32_t *types, bt_error *err) {
    static const char *const names[] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                        "ffn_gate", "ffn_up", "ffn_down"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "blk.0.%s.weight", names[i]);
        const bt_gguf_tensor *t = bt_gguf_find_tensor(g, name);
        if (!t)
            return bt_error_set(err, BT_ERR_FORMAT, "--split measured: the model has no tensor %s",
                                name);
        types[i] = t->type;
    }
    pr->n_embd = (uint32_t)hp->n_embd;
    pr->q_dim = (uint32_t)bt_hparams_q_dim(hp);
    pr->kv_dim = (uint32_t)bt_hparams_kv_dim(hp);
    pr->n_ff = (uint32_t)hp->n_ff;
    pr->n_types = sizeof names / sizeof names[0];
    pr->types = types;
    return BT_OK;
}

/* --split measured without --stage-speed: each stage times one layer (a Probe) while the others
 * wait for their Hello, so stages on one machine do not compete while timed. speed[s] is layer
 * passes per second. */
static bt_status probe_stages(bt_cluster *c, const bt_hparams *hp, int64_t deadline, double *speed,
                              bt_error *err) {
    uint32_t types[8];
    Baton__Probe pr = BATON__PROBE__INIT;
    bt_status st = probe_msg_of(c->g, hp, &pr, types, err);
    if (st != BT_OK)
        return st;
    pr.threads = (uint32_t)(c->p.n_threads > 0 ? c->p.n_threads : 1);
    pr.rows = BT_DECODE_GROUP;
    pr.min_ms = (uint32_t)(c->p.probe_ms > 0 ? c->p.probe_ms : BT_CLUSTER_PROBE_MS);
    for (int s = 0; s < c->n_stages; s++) {
        if ((st = send_msg(c, s + 1, BT_MSG_PROBE, &pr.base, err)) != BT_OK)
            return bt_error_wrap(err, "Probe to stage rank %d", s + 1), st;
        bt_frame_view f;
        int from;
        ProtobufCMessage *m;
        if ((st = handshake_recv(c, deadline, s, "ProbeReply", &f, &from, err)) != BT_OK)
            return st;
        if (from != s + 1)
            return bt_error_set(err, BT_ERR_PROTOCOL,
                                "%s from rank %d while stage rank %d was being probed",
                                bt_msg_kind_name(f.kind), from, s + 1);
        if ((st = bt_msg_unpack(&f, BT_MSG_PROBE_REPLY, &c->arena, &m, err)) != BT_OK)
            return bt_error_wrap(err, "handshake from rank %d", from), st;
        const Baton__ProbeReply *r = (const Baton__ProbeReply *)m;
        /* A pass takes at least a microsecond; the time at least what was asked, at most the
         * hello timeout. */
        if (r->rank != (uint32_t)from || r->passes < 1 || r->wall_us < (uint64_t)pr.min_ms * 1000 ||
            r->wall_us < r->passes || r->wall_us > (uint64_t)c->p.hello_timeout_us)
            return bt_error_set(err, BT_ERR_PROTOCOL,
                                "ProbeReply from rank %d: rank %u, %u passes in %llu us (at least "
                                "%u ms asked)",
                                from, r->rank, r->passes, (unsigned long long)r->wall_us,
                                pr.min_ms);
        bt_stage_report *rep = &c->stages[s];
        rep->probe_pass_us = (double)r->wall_us / r->passes;
        rep->probe_cpu = (double)r->cpu_us / (double)r->wall_us;
        speed[s] = 1e6 / rep->probe_pass_us;
    }
    return BT_OK;
}

/* While the slice of stage rank `shipping` is sent, reads what the stages sent within
 * timeout_us (0: only what is there already). An Error from any stage ends the start-up with
 * its text. The others go on meanwhile: a stage that is ready sends Heartbeats (noted), and one
 * that is not sends its SliceRequest or its HelloReply, which is kept for the handshake loop
 * (c->deferred: at most one per stage, which sends nothing more until it is answered). Reading
 * from any rank matters: the transport holds only a few frames of other ranks while one is
 * awaited, and a slice of a large model takes minutes. Anything else is a protocol error.
 * BT_OK when nothing ended the start-up. */
static bt_status read_while_shipping(bt_cluster *c, int shipping, int64_t timeout_us,
                                     bt_error *err) {
    int64_t deadline = bt_now_us() + timeout_us;
    for (;;) {
        const void *buf;
        size_t len;
        int from;
        int64_t left = deadline - bt_now_us();
        bt_error e;
        bt_error_init(&e);
        bt_status st =
            bt_transport_recv(c->t, BT_RANK_ANY, &buf, &len, &from, left > 0 ? left : 0, &e);
        if (st == BT_ERR_TIMEOUT)
            return BT_OK;
        if (st != BT_OK) {
            *err = e;
            return st;
        }
        bt_frame_view f;
        ProtobufCMessage *m;
        bt_arena_reset(&c->arena);
        if ((st = bt_frame_parse(buf, len, &f, err)) != BT_OK)
            return bt_error_wrap(err, "from stage rank %d", from), st;
        if (f.kind == BT_MSG_ERROR &&
            bt_msg_unpack(&f, BT_MSG_ERROR, &c->arena, &m, err) == BT_OK) {
            const Baton__Error *x = (const Baton__Error *)m;
            return bt_error_set(err, BT_ERR_PROTOCOL, "stage rank %d failed to start: %s", from,
                                x->message ? x->message : "");
        }
        int s = from - 1;
        bool other = from != shipping && from >= 1 && from <= c->n_stages;
        /* ready: its HelloReply read, or kept here */
        if (other && f.kind == BT_MSG_HEARTBEAT && (c->stages[s].rank || c->deferred[s])) {
            c->stages[s].last_seen_us = bt_now_us();
            continue;
        }
        if (other && !c->deferred[s] &&
            (f.kind == BT_MSG_SLICE_REQUEST || f.kind == BT_MSG_HELLO_REPLY)) {
            if (!(c->deferred[s] = malloc(len)))
                return bt_error_set(err, BT_ERR_NOMEM, "out of memory for a frame of %zu bytes",
                                    len);
            memcpy(c->deferred[s], buf, len);
            c->deferred_len[s] = len;
            continue;
        }
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "stage rank %d sent a %s while the slice of stage rank %d was shipped",
                            from, bt_msg_kind_name(f.kind), shipping);
    }
}

/* Answers the SliceRequest m of rank `from` (checked against its Hello: model, layers) with
 * every SliceChunk of its slice, in order, before reading anything else: one stage at a time.
 * The chunks are read from this process's mapping of the model, so nothing of the slice is
 * held here but the chunk in flight. */
static bt_status serve_slice(bt_cluster *c, int from, const Baton__SliceRequest *m,
                             const uint8_t hash[BT_MODEL_HASH_BYTES], bt_error *err) {
    int s = from - 1;
    if (from < 1 || from > c->n_stages || c->stages[s].rank || c->stages[s].shipped_bytes)
        return bt_error_set(err, BT_ERR_PROTOCOL, "unexpected SliceRequest from rank %d", from);
    if (m->rank != (uint32_t)from || m->model_hash.len != BT_MODEL_HASH_BYTES ||
        memcmp(m->model_hash.data, hash, BT_MODEL_HASH_BYTES) != 0 ||
        m->layer_begin != (uint32_t)c->split.begin[s] || m->layer_end != (uint32_t)c->split.end[s])
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "SliceRequest from rank %d: rank %u, layers [%u, %u) or model hash "
                            "differ from its Hello (layers [%d, %d))",
                            from, m->rank, m->layer_begin, m->layer_end, c->split.begin[s],
                            c->split.end[s]);
    bt_slice_sender *snd;
    bt_status st =
        bt_slice_sender_new(c->g, c->split.begin[s], c->split.end[s], c->t->max_frame, &snd, err);
    if (st != BT_OK)
        return st;
    int64_t t0 = bt_now_us();
    uint32_t n = bt_slice_sender_n_chunks(snd);
    uint64_t zbytes = 0;
    for (uint32_t i = 0; i < n && st == BT_OK; i++) {
        size_t len, z;
        /* A stage that failed on a chunk (its disk, a bad hash) says so and reads no more. */
        if ((st = read_while_shipping(c, from, 0, err)) != BT_OK ||
            (st = bt_slice_sender_frame(snd, i, c->out, c->t->max_frame, &len, &z, err)) != BT_OK)
            break;
        if ((st = bt_transport_send(c->t, from, c->out, len, SEND_TIMEOUT_US, err)) != BT_OK) {
            read_while_shipping(c, from, 1000000, err); /* its word, if it said one */
            break;
        }
        BT_DEBUG("slice for stage rank %d: chunk %u of %u: %zu bytes compressed", from, i, n, z);
        zbytes += z;
    }
    /* Sent means handed to the transport; the stage's HelloReply says it arrived. */
    if (st == BT_OK)
        st = bt_transport_flush(c->t, c->p.hello_timeout_us, err);
    bt_stage_report *rep = &c->stages[s];
    rep->shipped_bytes = bt_slice_sender_size(snd);
    rep->shipped_zbytes = zbytes;
    rep->ship_us = (uint64_t)(bt_now_us() - t0);
    if (st == BT_OK)
        BT_INFO("stage rank %d (layers %d-%d on %s): shipped its slice, %.1f MiB in %u chunks, "
                "%.1f MiB compressed, in %.2f s",
                from, c->split.begin[s], c->split.end[s] - 1, rep->host,
                (double)rep->shipped_bytes / 1048576.0, n, (double)zbytes / 1048576.0,
                (double)rep->ship_us / 1e6);
    bt_slice_sender_free(snd);
    return st != BT_OK ? bt_error_wrap(err, "shipping the slice of stage rank %d", from), st : st;
}

static bt_status handshake(bt_cluster *c, bt_error *err) {
    bt_hparams hp;
    bt_status st = bt_hparams_load(c->g, &hp, err);
    if (st != BT_OK)
        return st;
    c->n_vocab = hp.n_vocab;
    int64_t deadline = bt_now_us() + c->p.hello_timeout_us;
    if ((st = recv_stage_info(c, deadline, err)) != BT_OK)
        return st;
    /* Stages on other hosts than this one: the multi-host codec unless one was asked for. */
    char here[256] = "";
    if (gethostname(here, sizeof here - 1) == 0)
        for (int s = 0; s < c->n_stages && !c->remote_stage; s++)
            if (here[0] && strcmp(c->stages[s].host, "?") != 0 &&
                strcmp(c->stages[s].host, here) != 0)
                c->remote_stage = s + 1;
    if (c->p.codec_auto && c->remote_stage)
        c->p.codec = BT_CODEC_MULTIHOST_DEFAULT;
    /* Budgets: --stage-mem, else what each stage read of its own host. */
    bt_split_mem mem;
    memset(&mem, 0, sizeof mem);
    if (c->p.stage_mem) {
        if ((st = bt_mem_list_parse(c->p.stage_mem, c->n_stages, mem.budget, err)) != BT_OK)
            return st;
        for (int s = 0; s < c->n_stages; s++) {
            mem.source[s] = BT_MEM_SOURCE_FLAG;
            c->stages[s].budget_bytes = mem.budget[s];
            c->stages[s].budget_source = BT_MEM_SOURCE_FLAG;
        }
    } else {
        for (int s = 0; s < c->n_stages; s++) {
            mem.budget[s] = c->stages[s].budget_bytes;
            mem.source[s] = c->stages[s].budget_source;
        }
    }
    mem.n_ctx = c->p.n_ctx > 0 && c->p.n_ctx <= c->p.kv_tokens ? c->p.n_ctx : c->p.kv_tokens;
    mem.max_batch = c->p.max_batch;
    mem.max_seqs = c->p.max_seqs;
    double speed[BT_MAX_STAGES];
    bool measured = c->p.split == BT_SPLIT_MEASURED && !c->p.layers; /* --layers decides */
    for (int s = 0; s < c->n_stages; s++)
        speed[s] = 1;
    if (c->p.stage_speed)
        st = bt_split_speed_parse(c->p.stage_speed, c->n_stages, speed, err);
    else if (measured)
        st = probe_stages(c, &hp, deadline, speed, err);
    if (st != BT_OK)
        return st;
    if ((st = bt_split_plan(c->g, c->n_stages, c->p.kv_tokens, c->p.kv_type, c->p.split,
                            c->p.split == BT_SPLIT_MEASURED ? speed : NULL, c->p.layers, &mem,
                            &c->split, err)) != BT_OK)
        return st;
    for (int s = 0; s < c->n_stages; s++) {
        bt_stage_report *rep = &c->stages[s];
        rep->speed = c->split.speed[s];
        if (!measured)
            continue;
        /* Not a warning, but the reason the layers fall as they do, which the user asked to
         * have measured: always shown (stderr). */
        char probe[96] = "from --stage-speed";
        if (!c->p.stage_speed)
            snprintf(probe, sizeof probe, "probe: %.3f ms per layer pass, %.2f cores",
                     rep->probe_pass_us / 1000.0, rep->probe_cpu);
        fprintf(stderr,
                "baton: --split measured: stage rank %d on %s: speed %.3f (%s): layers %d-%d, "
                "%.1f%% of a token's time\n",
                s + 1, rep->host, rep->speed, probe, c->split.begin[s], c->split.end[s] - 1,
                100.0 * c->split.time_share[s]);
    }
    for (int s = 0; s < c->n_stages; s++)
        if (c->split.kv_tokens[s] < c->p.kv_tokens)
            BT_WARN("stage rank %d (layers %d-%d on %s): KV for %d tokens, not the %d asked: its "
                    "budget of %.1f MiB (%s) leaves no more",
                    s + 1, c->split.begin[s], c->split.end[s] - 1, c->stages[s].host,
                    c->split.kv_tokens[s], c->p.kv_tokens,
                    (double)mem.budget[s] / (1024.0 * 1024.0), bt_mem_source_name(mem.source[s]));
    uint8_t hash[BT_MODEL_HASH_BYTES];
    bt_model_hash(bt_gguf_base(c->g), bt_gguf_data_offset(c->g), bt_gguf_file_size(c->g), hash);
    char space[BT_PROC_SPACE_BYTES];
    bt_proc_space(space, sizeof space);
    for (int s = 0; s < c->n_stages; s++) {
        Baton__Hello h = BATON__HELLO__INIT;
        h.protocol_version = BT_PROTOCOL_VERSION;
        h.stage_index = (uint32_t)s;
        h.n_stages = (uint32_t)c->n_stages;
        h.layer_begin = (uint32_t)c->split.begin[s];
        h.layer_end = (uint32_t)c->split.end[s];
        h.model_hash.data = hash;
        h.model_hash.len = sizeof hash;
        h.codec = (uint32_t)c->p.codec;
        h.zstd_level = (uint32_t)c->p.zstd_level;
        h.max_batch = (uint32_t)c->p.max_batch;
        h.max_seqs = (uint32_t)c->p.max_seqs;
        h.kv_tokens = (uint32_t)c->split.kv_tokens[s];
        h.heartbeat_ms = (uint32_t)c->p.heartbeat_ms;
        h.numerics = (uint32_t)c->p.numerics;
        h.kv_type = c->p.kv_type == BT_TYPE_Q8_0 ? (uint32_t)BT_TYPE_Q8_0 : 0u;
        h.n_eog = (size_t)c->p.n_eog;
        h.eog = (int32_t *)c->p.eog;
        if ((st = send_msg(c, s + 1, BT_MSG_HELLO, &h.base, err)) != BT_OK)
            return bt_error_wrap(err, "Hello to stage rank %d", s + 1), st;
    }
    for (int got = 0; got < c->n_stages;) {
        bt_frame_view f;
        ProtobufCMessage *m;
        int from = 0;
        free(c->held);
        c->held = NULL;
        for (int s = 0; s < c->n_stages && !c->held; s++)
            if (c->deferred[s]) { /* kept while another stage's slice was shipped */
                c->held = c->deferred[s];
                c->deferred[s] = NULL;
                from = s + 1;
                bt_arena_reset(&c->arena);
                if ((st = bt_frame_parse(c->held, c->deferred_len[s], &f, err)) != BT_OK)
                    return bt_error_wrap(err, "handshake from rank %d", from), st;
            }
        if (!c->held &&
            (st = handshake_recv(c, deadline, got, "HelloReply", &f, &from, err)) != BT_OK)
            return st;
        /* A stage that has answered heartbeats while it waits for the others to load. */
        if (f.kind == BT_MSG_HEARTBEAT && from >= 1 && from <= c->n_stages &&
            c->stages[from - 1].rank) {
            c->stages[from - 1].last_seen_us = bt_now_us();
            continue;
        }
        if (f.kind == BT_MSG_SLICE_REQUEST) {
            if ((st = bt_msg_unpack(&f, BT_MSG_SLICE_REQUEST, &c->arena, &m, err)) != BT_OK ||
                (st = serve_slice(c, from, (const Baton__SliceRequest *)m, hash, err)) != BT_OK)
                return st;
            continue;
        }
        if ((st = bt_msg_unpack(&f, BT_MSG_HELLO_REPLY, &c->arena, &m, err)) != BT_OK)
            return bt_error_wrap(err, "handshake from rank %d", from), st;
        Baton__HelloReply *r = (Baton__HelloReply *)m;
        int s = from - 1;
        if (from < 1 || from > c->n_stages || c->stages[s].rank)
            return bt_error_set(err, BT_ERR_PROTOCOL, "unexpected HelloReply from rank %d", from);
        if (r->protocol_version != BT_PROTOCOL_VERSION ||
            r->model_hash.len != BT_MODEL_HASH_BYTES ||
            memcmp(r->model_hash.data, hash, sizeof hash) != 0 ||
            r->layer_begin != (uint32_t)c->split.begin[s] ||
            r->layer_end != (uint32_t)c->split.end[s] || r->kv_tokens < BT_KV_BLOCK_TOKENS ||
            r->kv_tokens < (uint32_t)c->split.kv_tokens[s])
            return bt_error_set(err, BT_ERR_PROTOCOL,
                                "stage rank %d answered with protocol %u, layers [%u, %u), "
                                "kv_tokens %u or a different model",
                                from, r->protocol_version, r->layer_begin, r->layer_end,
                                r->kv_tokens);
        /* The scheduler counts blocks, rounds decode rows and caps scored rows with the
         * coordinator's constants (stage_layout.h): the stage must have been built with the
         * same, and hold the KV it says for the tokens it says (with the window pool of its
         * local layers sized for this coordinator's max_seqs and max_batch: kv_plan.h). */
        bt_kv_plan kvp;
        bt_kv_plan_stage(&hp, (int)r->layer_begin, (int)r->layer_end, (int)r->kv_tokens,
                         c->p.max_seqs, c->p.max_batch, c->p.kv_type, &kvp);
        uint64_t kv_want = bt_kv_plan_bytes(&kvp);
        if (r->kv_block_tokens != BT_KV_BLOCK_TOKENS || r->decode_group != BT_DECODE_GROUP ||
            r->score_rows != BT_SCORE_ROWS || r->kv_bytes != kv_want)
            return bt_error_set(err, BT_ERR_PROTOCOL,
                                "stage rank %d was built with kv_block_tokens %u, decode_group "
                                "%u, score_rows %u and holds %llu KV bytes for %u tokens; this "
                                "coordinator has %d, %d, %d and expects %llu bytes",
                                from, r->kv_block_tokens, r->decode_group, r->score_rows,
                                (unsigned long long)r->kv_bytes, r->kv_tokens, BT_KV_BLOCK_TOKENS,
                                BT_DECODE_GROUP, BT_SCORE_ROWS, (unsigned long long)kv_want);
        bt_stage_report *rep = &c->stages[s];
        rep->rank = from;
        rep->layer_begin = (int)r->layer_begin;
        rep->layer_end = (int)r->layer_end;
        rep->weight_bytes = r->weight_bytes;
        rep->kv_bytes = r->kv_bytes;
        rep->rss_bytes = r->rss_bytes;
        rep->kv_tokens = (int)r->kv_tokens;
        snprintf(rep->host, sizeof rep->host, "%s", r->hostname ? r->hostname : "");
        rep->pid = (int)r->pid;
        rep->local = space[0] && r->proc_space && strcmp(r->proc_space, space) == 0 && r->pid > 0 &&
                     r->pid <= (uint32_t)INT32_MAX && rep->pid != (int)getpid();
        rep->last_seen_us = rep->last_heartbeat_us = rep->start_us = bt_now_us();
        if (r->weights_source > BT_WEIGHTS_SHIPPED ||
            (r->weights_source == BT_WEIGHTS_SHIPPED) != (rep->shipped_bytes > 0) ||
            (rep->shipped_bytes && r->shipped_bytes != rep->shipped_bytes))
            return bt_error_set(err, BT_ERR_PROTOCOL,
                                "stage rank %d answered weights_source %u with %llu shipped bytes; "
                                "this coordinator shipped it %llu",
                                from, r->weights_source, (unsigned long long)r->shipped_bytes,
                                (unsigned long long)rep->shipped_bytes);
        rep->weights_source = (int)r->weights_source;
        rep->weights_load_us = r->weights_load_us;
        rep->kv_tokens_free = rep->kv_tokens;
        got++;
    }
    c->listen_end_us = bt_now_us();
    return BT_OK;
}

bt_status bt_cluster_start(bt_transport *t, const bt_gguf *g, const bt_cluster_params *p,
                           bt_cluster **out, bt_error *err) {
    *out = NULL;
    if (t->size < 2)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "a cluster needs at least one stage rank");
    if (p->n_eog < 0 || p->n_eog > BT_SAMPLER_MAX_EOG || (p->n_eog > 0 && !p->eog))
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "cluster: %d end-of-generation ids, at most %d", p->n_eog,
                            BT_SAMPLER_MAX_EOG);
    bt_cluster *c = calloc(1, sizeof *c);
    if (!c)
        return bt_error_set(err, BT_ERR_NOMEM, "cluster: out of memory");
    c->t = t;
    c->g = g;
    c->p = *p;
    c->n_stages = t->size - 1;
    size_t S = (size_t)p->max_seqs, B = (size_t)p->max_batch;
    c->stages = calloc((size_t)c->n_stages, sizeof *c->stages);
    c->out = malloc(t->max_frame);
    c->ops = calloc(2 * S, sizeof *c->ops);
    c->op_ptrs = calloc(2 * S, sizeof *c->op_ptrs);
    c->params = calloc(S, sizeof *c->params);
    c->param_ptrs = calloc(S, sizeof *c->param_ptrs);
    c->bias_tok = calloc(S * BT_MAX_LOGIT_BIAS, sizeof *c->bias_tok);
    c->bias_val = calloc(S * BT_MAX_LOGIT_BIAS, sizeof *c->bias_val);
    c->want = calloc(B, sizeof *c->want);
    bt_status st;
    if (!c->stages || !c->out || !c->ops || !c->op_ptrs || !c->params || !c->param_ptrs ||
        !c->want || !c->bias_tok || !c->bias_val) {
        st = bt_error_set(err, BT_ERR_NOMEM, "cluster: out of memory");
        goto fail;
    }
    if ((st = bt_arena_init(&c->arena, ARENA_BYTES, err)) != BT_OK)
        goto fail;
    if ((st = handshake(c, err)) != BT_OK)
        goto fail;
    c->p.eog = NULL; /* borrowed for the handshake only */
    c->p.n_eog = 0;
    *out = c;
    return BT_OK;
fail:
    bt_cluster_free(c);
    return st;
}

void bt_cluster_free(bt_cluster *c) {
    if (!c)
        return;
    bt_arena_deinit(&c->arena);
    for (int s = 0; s < BT_MAX_STAGES; s++)
        free(c->deferred[s]);
    free(c->held);
    free(c->stages);
    free(c->out);
    free(c->ops);
    free(c->op_ptrs);
    free(c->params);
    free(c->param_ptrs);
    free(c->bias_tok);
    free(c->bias_val);
    free(c->want);
    free(c);
}

bt_status bt_cluster_send_batch(bt_cluster *c, const bt_sched_batch *b, bt_error *err) {
    Baton__StageBatch m = BATON__STAGE_BATCH__INIT;
    m.step = b->step;
    m.n_seq = m.n_pos = m.n_token = m.n_want = (size_t)b->n_rows;
    m.seq = (int32_t *)b->seq;
    m.pos = (int32_t *)b->pos;
    m.token = (int32_t *)b->token;
    for (int i = 0; i < b->n_rows; i++)
        c->want[i] = b->want[i];
    m.want = c->want;
    if (b->n_scored > 0) { /* target is sent only when some row has one */
        m.n_target = (size_t)b->n_rows;
        m.target = (int32_t *)b->target;
    }
    for (int i = 0; i < b->n_ops; i++) {
        Baton__SeqOp *op = &c->ops[i];
        baton__seq_op__init(op);
        op->kind = b->ops[i].kind == BT_SCHED_OP_FORK ? BATON__SEQ_OP__KIND__FORK
                                                      : BATON__SEQ_OP__KIND__FREE;
        op->seq = b->ops[i].seq;
        op->dst = b->ops[i].dst;
        c->op_ptrs[i] = op;
    }
    m.n_ops = (size_t)b->n_ops;
    m.ops = c->op_ptrs;
    for (int i = 0; i < b->n_new; i++) {
        const bt_request *r = b->new_reqs[i];
        const bt_sampler_params *q = &r->p.sampling;
        Baton__SamplingParams *sp = &c->params[i];
        baton__sampling_params__init(sp);
        sp->seq = r->seq;
        bt_msg_sampling_pack(q, sp, c->bias_tok + (size_t)i * BT_MAX_LOGIT_BIAS,
                             c->bias_val + (size_t)i * BT_MAX_LOGIT_BIAS);
        sp->n_prompt = r->n_prompt;
        c->param_ptrs[i] = sp;
    }
    m.n_new_seqs = (size_t)b->n_new;
    m.new_seqs = c->param_ptrs;
    c->last_activity_us = bt_now_us();
    return send_msg(c, 1, BT_MSG_STAGE_BATCH, &m.base, err);
}

/*
 * Liveness. Each stage is judged on its own: stages[s].last_seen_us is when the coordinator
 * read the stage's latest frame (CLOCK_MONOTONIC), and a stage whose silence exceeds
 * stage_timeout is hung or gone, whatever the other stages send. A stage heartbeats every
 * heartbeat_ms whether it idles, computes a micro-batch or waits for a send to drain
 * (stage_loop.c), so silence means it is not running.
 *
 * Silence counts only time in which the coordinator was listening. A frame that a stage sent
 * while the coordinator was elsewhere (its own work, or stopped: SIGSTOP, a debugger, the
 * host swapping) waits in the transport's queue and is read later. So:
 *   - the time between two waits for a frame is excused: every stage's last_seen_us moves
 *     forward by it;
 *   - a wait asked to last at most T that took longer did not run for the excess (the
 *     coordinator asked to wake and was not scheduled): that excess is excused too.
 * Waits are at most LISTEN_SLICE_US, so a pause hidden inside one wait that then found a
 * frame costs at most that much of a stage's deadline.
 */
static void excuse(bt_cluster *c, int64_t not_listening_us) {
    if (not_listening_us <= 0)
        return;
    for (int s = 0; s < c->n_stages; s++)
        c->stages[s].last_seen_us += not_listening_us;
}

/* Fails with the stage silent the longest beyond the deadline: when one stage stops, those
 * after it run dry but keep heartbeating, so the stopped one is the one blamed. */
static bt_status check_liveness(bt_cluster *c, bt_error *err) {
    int64_t now = bt_now_us();
    int worst = -1;
    int64_t worst_silent = c->p.stage_timeout_us;
    for (int s = 0; s < c->n_stages; s++) {
        int64_t silent = now - c->stages[s].last_seen_us;
        if (silent > worst_silent) {
            worst = s;
            worst_silent = silent;
        }
    }
    if (worst < 0)
        return BT_OK;
    char where[128];
    return bt_error_set(
        err, BT_ERR_TIMEOUT, "%s sent nothing for %lld ms (deadline %lld ms): it is hung or gone",
        bt_cluster_stage_name(c, worst + 1, where, sizeof where), (long long)(worst_silent / 1000),
        (long long)(c->p.stage_timeout_us / 1000));
}

/* A local stage whose process no longer exists: killed, crashed, out of memory. It left
 * without the Error the protocol promises, hence BT_ERR_PROTOCOL (exit status 1, as for
 * every runtime failure). Only ESRCH
 * counts: a zombie (dead, not yet reaped by its launcher) still answers kill(pid, 0), so a
 * stage that mpirun's own SIGTERM ended a moment ago is not taken for the one that died
 * first, which the launcher reaped before it began ending the job. */
static bt_status check_pids(bt_cluster *c, bt_error *err) {
    for (int s = 0; s < c->n_stages; s++) {
        const bt_stage_report *r = &c->stages[s];
        if (!r->local || kill((pid_t)r->pid, 0) == 0 || errno != ESRCH)
            continue;
        char where[128];
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "%s is gone: its process %d ended (killed, crashed or out of memory)",
                            bt_cluster_stage_name(c, s + 1, where, sizeof where), r->pid);
    }
    return BT_OK;
}

/* The alternatives of a SampleResults (bt_msg_check_sample_results has checked the rest):
 * none, or n_top for every result (each <= 20) whose sum is the length of top_token and of
 * top_logprob; their tokens in the vocabulary; their log-probabilities numbers <= 0. */
static bt_status check_top(const Baton__SampleResults *r, int n_vocab, bt_error *err) {
    unsigned long long step = (unsigned long long)r->step;
    if (r->n_n_top != 0 && r->n_n_top != r->n_seq)
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "SampleResults step %llu: n_top has %zu "
                            "entries for %zu results",
                            step, r->n_n_top, r->n_seq);
    size_t sum = 0;
    for (size_t i = 0; i < r->n_n_top; i++) {
        if (r->n_top[i] > BT_MAX_TOP_LOGPROBS)
            return bt_error_set(err, BT_ERR_PROTOCOL, "SampleResults step %llu: n_top[%zu] %u > %d",
                                step, i, r->n_top[i], BT_MAX_TOP_LOGPROBS);
        sum += r->n_top[i];
    }
    if (r->n_top_token != sum || r->n_top_logprob != sum)
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "SampleResults step %llu: sum of n_top %zu, top_token %zu, "
                            "top_logprob %zu",
                            step, sum, r->n_top_token, r->n_top_logprob);
    for (size_t i = 0; i < sum; i++) {
        if (r->top_token[i] < 0 || r->top_token[i] >= n_vocab)
            return bt_error_set(err, BT_ERR_PROTOCOL,
                                "SampleResults step %llu: top_token[%zu] %d not in [0, %d)", step,
                                i, r->top_token[i], n_vocab);
        if (!(r->top_logprob[i] <= 0.0f))
            return bt_error_set(err, BT_ERR_PROTOCOL,
                                "SampleResults step %llu: top_logprob[%zu] %g is not <= 0", step, i,
                                (double)r->top_logprob[i]);
    }
    return BT_OK;
}

bt_status bt_cluster_check_results(const Baton__SampleResults *r, int max_batch, int n_vocab,
                                   bt_error *err) {
    bt_status st = bt_msg_check_sample_results(r, max_batch, n_vocab, err);
    return st != BT_OK ? st : check_top(r, n_vocab, err);
}

/* One frame from rank `from` (a stage): heartbeats are recorded, results handed back in res. */
static bt_status handle_frame(bt_cluster *c, const void *buf, size_t len, int from,
                              bt_cluster_results *res, bt_error *err) {
    bt_status st;
    char where[128];
    if (from < 1 || from > c->n_stages)
        return bt_error_set(err, BT_ERR_PROTOCOL, "message from unknown rank %d", from);
    bt_frame_view f;
    if ((st = bt_frame_parse(buf, len, &f, err)) != BT_OK)
        return bt_error_wrap(err, "%s", bt_cluster_stage_name(c, from, where, sizeof where)), st;
    bt_arena_reset(&c->arena);
    ProtobufCMessage *m;
    switch (f.kind) {
    case BT_MSG_HEARTBEAT:
        if ((st = bt_msg_unpack(&f, BT_MSG_HEARTBEAT, &c->arena, &m, err)) != BT_OK)
            return st;
        {
            const Baton__Heartbeat *h = (const Baton__Heartbeat *)m;
            bt_stage_report *rep = &c->stages[from - 1];
            rep->busy_us = h->busy_us;
            rep->peak_rss_bytes = h->peak_rss_bytes;
            rep->kv_tokens_free = h->kv_tokens_free <= (uint32_t)rep->kv_tokens
                                      ? (int)h->kv_tokens_free
                                      : rep->kv_tokens;
            rep->act_bytes_sent = h->act_bytes_sent;
            rep->last_heartbeat_us = bt_now_us();
        }
        return BT_OK;
    case BT_MSG_ERROR:
        if ((st = bt_msg_unpack(&f, BT_MSG_ERROR, &c->arena, &m, err)) != BT_OK)
            return st;
        return bt_error_set(err, BT_ERR_IO, "%s failed: %s",
                            bt_cluster_stage_name(c, from, where, sizeof where),
                            ((Baton__Error *)m)->message ? ((Baton__Error *)m)->message : "");
    case BT_MSG_SAMPLE_RESULTS: {
        if (from != c->n_stages)
            return bt_error_set(err, BT_ERR_PROTOCOL, "SampleResults from rank %d, not the last",
                                from);
        if ((st = bt_msg_unpack(&f, BT_MSG_SAMPLE_RESULTS, &c->arena, &m, err)) != BT_OK)
            return st;
        Baton__SampleResults *r = (Baton__SampleResults *)m;
        if ((st = bt_cluster_check_results(r, c->p.max_batch, c->n_vocab, err)) != BT_OK)
            return st;
        c->stages[from - 1].busy_us += r->compute_us;
        res->n = (int)r->n_seq;
        res->step = r->step;
        res->seq = r->seq;
        res->token = r->token;
        res->logprob = r->logprob;
        res->n_top = r->n_n_top ? r->n_top : NULL;
        res->top_token = r->n_n_top ? r->top_token : NULL;
        res->top_logprob = r->n_n_top ? r->top_logprob : NULL;
        res->n_scored = (int)r->n_target_logprob;
        res->scored_logprob = r->target_logprob;
        return BT_OK;
    }
    default:
        return bt_error_set(err, BT_ERR_PROTOCOL, "unexpected %s from %s", bt_msg_kind_name(f.kind),
                            bt_cluster_stage_name(c, from, where, sizeof where));
    }
}

bt_status bt_cluster_poll(bt_cluster *c, int64_t timeout_us, bt_cluster_results *res,
                          bt_error *err) {
    res->n = -1;
    const void *buf;
    size_t len;
    int from = -1;
    int64_t slice = timeout_us < LISTEN_SLICE_US ? timeout_us : LISTEN_SLICE_US;
    if (slice < 0)
        slice = LISTEN_SLICE_US;
    int64_t start = bt_now_us();
    excuse(c, start - c->listen_end_us);
    bt_status st = bt_transport_recv(c->t, BT_RANK_ANY, &buf, &len, &from, slice, err);
    int64_t end = bt_now_us();
    excuse(c, end - start - slice);
    c->listen_end_us = end;
    if (st == BT_OK && from >= 1 && from <= c->n_stages)
        c->stages[from - 1].last_seen_us = end;
    /* Before anything else: a transport error or a silence may be the consequence of a stage
     * process that is gone, and the gone process is the better message. */
    if (end - c->pid_check_us >= PID_CHECK_US) {
        c->pid_check_us = end;
        bt_status gone = check_pids(c, err);
        if (gone != BT_OK)
            return gone;
    }
    /* Judged on every return, not only when nothing came: a healthy stage's frames must not
     * keep the coordinator from noticing a silent one. */
    if (st == BT_OK || st == BT_ERR_TIMEOUT) {
        bt_status live = check_liveness(c, err);
        if (live != BT_OK)
            return live;
    }
    if (st == BT_ERR_TIMEOUT)
        return BT_OK;
    if (st != BT_OK)
        return st;
    return handle_frame(c, buf, len, from, res, err);
}

bt_status bt_cluster_idle_check(bt_cluster *c, bt_error *err) {
    bt_status st;
    for (;;) {
        const void *buf;
        size_t len;
        int from = -1;
        st = bt_transport_recv(c->t, BT_RANK_ANY, &buf, &len, &from, 0, err);
        if (st == BT_ERR_TIMEOUT)
            break;
        int64_t now = bt_now_us();
        if (st == BT_OK && from >= 1 && from <= c->n_stages)
            c->stages[from - 1].last_seen_us = now;
        if (st != BT_OK) {
            bt_status gone = check_pids(c, err); /* the better message, as in poll */
            return gone != BT_OK ? gone : st;
        }
        bt_cluster_results res = {.n = -1};
        if ((st = handle_frame(c, buf, len, from, &res, err)) != BT_OK)
            return st;
        if (res.n >= 0)
            return bt_error_set(err, BT_ERR_PROTOCOL,
                                "SampleResults for step %llu while nothing is in flight",
                                (unsigned long long)res.step);
    }
    int64_t now = bt_now_us();
    c->listen_end_us = now;
    c->pid_check_us = now;
    if ((st = check_pids(c, err)) != BT_OK)
        return st;
    return check_liveness(c, err);
}

int64_t bt_cluster_idle_interval_us(const bt_cluster *c) {
    for (int s = 0; s < c->n_stages; s++)
        if (c->stages[s].local)
            return PID_CHECK_US;
    return (int64_t)c->p.heartbeat_ms * 1000;
}

void bt_cluster_shutdown(bt_cluster *c) {
    bt_error ignored;
    bt_error_init(&ignored);
    for (int s = 0; s < c->n_stages; s++) {
        Baton__Shutdown m = BATON__SHUTDOWN__INIT;
        send_msg(c, s + 1, BT_MSG_SHUTDOWN, &m.base, &ignored);
    }
    bt_transport_flush(c->t, 5 * 1000000LL, &ignored);
}
