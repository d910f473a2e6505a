/*
 * test_split.c - memory-aware planning of the layer split (split.h, mem_budget.h): budgets
 * that fit keep the balanced split and the requested KV; a budget too small for a stage's
 * balanced share forces an uneven split that fits; a budget nothing fits is refused with a
 * message naming the stage, what it needs and what it has; a budget short of the requested KV
 * shrinks that stage's KV to whole blocks, at least one context; --layers is checked the same
 * way. Then --stage-mem parsing and reading the budget from cgroup v1 / v2 files and meminfo.
 * The measured split (--split measured, --stage-speed): equal speeds give the compute split, a
 * stage at half the speed gets about half the layers of the others, speeds count only relative
 * to each other, budgets still refuse or shape the plan, bad --stage-speed values are named.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "cluster.h"
#include "frame.h"
#include "gguf.h"
#include "hparams.h"
#include "mem_budget.h"
#include "split.h"
#include "stage_layout.h"
#include "transport.h"

static bt_split split_a, split_b; /* large: not on the stack */

static uint64_t total(const bt_split *s, int i) {
    return s->weight_bytes[i] + s->kv_bytes[i] + s->scratch_bytes[i] + s->overhead_bytes;
}

static bt_split_mem mem_of(int n_ctx, uint64_t budget_all) {
    bt_split_mem m;
    memset(&m, 0, sizeof m);
    m.n_ctx = n_ctx;
    m.max_batch = 64;
    m.max_seqs = 4;
    for (int i = 0; i < BT_MAX_STAGES; i++) {
        m.budget[i] = budget_all;
        m.source[i] = budget_all ? BT_MEM_SOURCE_FLAG : BT_MEM_SOURCE_NONE;
    }
    return m;
}

static void test_plan(const bt_gguf *g) {
    bt_error err;
    bt_error_init(&err);
    bt_hparams hp;
    CHECK_OK(bt_hparams_load(g, &hp, &err));
    uint64_t kvtl = bt_kv_bytes_per_token_layer(bt_hparams_kv_dim(&hp), BT_TYPE_F16);
    const int kv = 256;

    /* No limit known: the balanced split, the request kept, as without budgets. */
    bt_split_mem m = mem_of(kv, 0);
    CHECK_OK(
        bt_split_plan(g, 2, kv, BT_TYPE_F16, BT_SPLIT_MEMORY, NULL, NULL, NULL, &split_a, &err));
    CHECK_OK(bt_split_plan(g, 2, kv, BT_TYPE_F16, BT_SPLIT_MEMORY, NULL, NULL, &m, &split_b, &err));
    CHECK_EQ_INT(split_a.end[0], split_b.end[0]);
    CHECK(!split_b.uneven);
    CHECK(split_b.scratch_bytes[0] > 0 && split_b.scratch_bytes[1] > split_b.scratch_bytes[0]);
    CHECK_EQ_INT(split_b.overhead_bytes, BT_SPLIT_OVERHEAD_BYTES);
    int balanced_end0 = split_b.end[0];
    uint64_t need0 = total(&split_b, 0), need1 = total(&split_b, 1);

    /* Budgets that fit exactly: the same split, the same KV. */
    m = mem_of(kv, 0);
    m.budget[0] = need0;
    m.budget[1] = need1;
    m.source[0] = m.source[1] = BT_MEM_SOURCE_CGROUP;
    CHECK_OK(bt_split_plan(g, 2, kv, BT_TYPE_F16, BT_SPLIT_MEMORY, NULL, NULL, &m, &split_a, &err));
    CHECK_EQ_INT(split_a.end[0], balanced_end0);
    CHECK_EQ_INT(split_a.kv_tokens[0], kv);
    CHECK_EQ_INT(split_a.kv_tokens[1], kv);
    CHECK(!split_a.uneven);
    CHECK_EQ_INT(split_a.budget_source[1], BT_MEM_SOURCE_CGROUP);

    /* Stage 1 one byte short of its balanced share (with one context, here the whole
     * request): the first stage takes fewer layers, the other one more, and both fit. */
    char spec[64];
    snprintf(spec, sizeof spec, "0-%d,%d-%d", balanced_end0 - 2, balanced_end0 - 1, hp.n_layer - 1);
    m = mem_of(kv, 0);
    CHECK_OK(bt_split_plan(g, 2, kv, BT_TYPE_F16, BT_SPLIT_MEMORY, NULL, spec, &m, &split_a, &err));
    uint64_t smaller0 = total(&split_a, 0);
    m = mem_of(kv, 0);
    m.budget[0] = need0 - 1;
    m.budget[1] = 1ull << 40;
    m.source[0] = m.source[1] = BT_MEM_SOURCE_FLAG;
    CHECK(smaller0 <= m.budget[0]);
    CHECK_OK(bt_split_plan(g, 2, kv, BT_TYPE_F16, BT_SPLIT_MEMORY, NULL, NULL, &m, &split_a, &err));
    CHECK(split_a.uneven);
    CHECK(split_a.end[0] < balanced_end0);
    CHECK(total(&split_a, 0) <= m.budget[0]);
    CHECK_EQ_INT(split_a.kv_tokens[0], kv);
    /* The compute split is held to the budgets the same way. */
    CHECK_OK(
        bt_split_plan(g, 2, kv, BT_TYPE_F16, BT_SPLIT_COMPUTE, NULL, NULL, &m, &split_b, &err));
    CHECK(total(&split_b, 0) <= m.budget[0]);

    /* One stage with half of what the whole model needs: refused, naming the stage, what it
     * needs (and of what) and what it has, and where that number came from. */
    m = mem_of(kv, 0);
    CHECK_OK(bt_split_plan(g, 1, kv, BT_TYPE_F16, BT_SPLIT_MEMORY, NULL, NULL, &m, &split_a, &err));
    uint64_t need_all = total(&split_a, 0);
    m.budget[0] = need_all / 2;
    m.source[0] = BT_MEM_SOURCE_CGROUP;
    bt_status st =
        bt_split_plan(g, 1, kv, BT_TYPE_F16, BT_SPLIT_MEMORY, NULL, NULL, &m, &split_a, &err);
    CHECK_EQ_INT(st, BT_ERR_RANGE);
    char want_need[64], want_has[64];
    snprintf(want_need, sizeof want_need, "needs %.1f MiB", (double)need_all / (1024.0 * 1024.0));
    snprintf(want_has, sizeof want_has, "has %.1f MiB (cgroup)",
             (double)m.budget[0] / (1024.0 * 1024.0));
    CHECK(strstr(err.msg, "stage rank 1 (layers 0-") != NULL);
    CHECK(strstr(err.msg, want_need) != NULL);
    CHECK(strstr(err.msg, want_has) != NULL);
    CHECK(strstr(err.msg, "weights ") && strstr(err.msg, "KV ") && strstr(err.msg, "scratch "));
    printf("  refusal: %s\n", err.msg);

    /* Two stages where neither split fits: the balanced split's misfit is named. */
    m = mem_of(kv, need1 / 4);
    st = bt_split_plan(g, 2, kv, BT_TYPE_F16, BT_SPLIT_MEMORY, NULL, NULL, &m, &split_a, &err);
    CHECK_EQ_INT(st, BT_ERR_RANGE);
    CHECK(strstr(err.msg, "stage rank 1") && strstr(err.msg, "(--stage-mem)") &&
          strstr(err.msg, "no other split"));

    /* --layers that do not fit are refused, not moved. */
    m = mem_of(kv, 0);
    m.budget[0] = need0 - 1;
    m.source[0] = BT_MEM_SOURCE_MEMINFO;
    snprintf(spec, sizeof spec, "0-%d,%d-%d", balanced_end0 - 1, balanced_end0, hp.n_layer - 1);
    st = bt_split_plan(g, 2, kv, BT_TYPE_F16, BT_SPLIT_MEMORY, NULL, spec, &m, &split_a, &err);
    CHECK_EQ_INT(st, BT_ERR_RANGE);
    CHECK(strstr(err.msg, "stage rank 1") && strstr(err.msg, "(MemAvailable) with --layers"));

    /* KV shrunk to what is left: 1024 tokens asked, one context of 100, room for ~300. */
    m = mem_of(100, 0);
    CHECK_OK(
        bt_split_plan(g, 1, 1024, BT_TYPE_F16, BT_SPLIT_MEMORY, NULL, NULL, &m, &split_a, &err));
    uint64_t fixed = split_a.weight_bytes[0] + split_a.scratch_bytes[0] + split_a.overhead_bytes;
    uint64_t per_token = kvtl * (uint64_t)hp.n_layer;
    m.budget[0] = fixed + 300 * per_token + per_token / 2;
    m.source[0] = BT_MEM_SOURCE_FLAG;
    CHECK_OK(
        bt_split_plan(g, 1, 1024, BT_TYPE_F16, BT_SPLIT_MEMORY, NULL, NULL, &m, &split_a, &err));
    CHECK_EQ_INT(split_a.kv_tokens[0], 288); /* whole blocks of 16 */
    CHECK_EQ_INT(split_a.kv_bytes[0], 288 * per_token);
    CHECK(total(&split_a, 0) <= m.budget[0]);
    /* ... but never below one context (100 tokens: 7 blocks). */
    m.budget[0] = fixed + 100 * per_token;
    st = bt_split_plan(g, 1, 1024, BT_TYPE_F16, BT_SPLIT_MEMORY, NULL, NULL, &m, &split_a, &err);
    CHECK_EQ_INT(st, BT_ERR_RANGE);
    CHECK(strstr(err.msg, "for 112 tokens") != NULL);
    m.budget[0] = fixed + 112 * per_token;
    CHECK_OK(
        bt_split_plan(g, 1, 1024, BT_TYPE_F16, BT_SPLIT_MEMORY, NULL, NULL, &m, &split_a, &err));
    CHECK_EQ_INT(split_a.kv_tokens[0], 112);
    /* Room beyond the request does not grow the KV. */
    m.budget[0] = 1ull << 40;
    CHECK_OK(
        bt_split_plan(g, 1, 1024, BT_TYPE_F16, BT_SPLIT_MEMORY, NULL, NULL, &m, &split_a, &err));
    CHECK_EQ_INT(split_a.kv_tokens[0], 1024);
}

static void test_parse(void) {
    bt_error err;
    bt_error_init(&err);
    uint64_t v, l[4];
    CHECK_OK(bt_mem_size_parse("512M", "x", &v, &err));
    CHECK_EQ_INT(v, 512ull << 20);
    CHECK_OK(bt_mem_size_parse("2GiB", "x", &v, &err));
    CHECK_EQ_INT(v, 2ull << 30);
    CHECK_OK(bt_mem_size_parse("3k", "x", &v, &err));
    CHECK_EQ_INT(v, 3072);
    CHECK_OK(bt_mem_size_parse("1048577", "x", &v, &err));
    CHECK_EQ_INT(v, 1048577);
    const char *bad[] = {"", "0", "-1", "12X", "1.5G", "G", "2 G", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ_INT(bt_mem_size_parse(bad[i], "--stage-mem", &v, &err), BT_ERR_INVALID_ARG);
        CHECK(strstr(err.msg, "--stage-mem") != NULL);
    }
    CHECK_OK(bt_mem_list_parse("1G", 3, l, &err));
    CHECK(l[0] == (1ull << 30) && l[2] == (1ull << 30));
    CHECK_OK(bt_mem_list_parse("1G,2M,3K", 3, l, &err));
    CHECK(l[0] == (1ull << 30) && l[1] == (2ull << 20) && l[2] == 3072);
    CHECK_EQ_INT(bt_mem_list_parse("1G,2G", 3, l, &err), BT_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "2 values for 3 stages") != NULL);
    CHECK_EQ_INT(bt_mem_list_parse("1G,2G,3G,4G", 3, l, &err), BT_ERR_INVALID_ARG);
    CHECK_EQ_INT(bt_mem_list_parse("1G,,3G", 3, l, &err), BT_ERR_INVALID_ARG);
}

static void put(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void test_read(void) {
    char dir[] = "/tmp/bt_test_split_XXXXXX";
    if (!mkdtemp(dir)) {
        check_fail(__FILE__, __LINE__, "mkdtemp %s failed", dir);
        return;
    }
    char p[512], cg[512], mi[512];
    snprintf(mi, sizeof mi, "%s/meminfo", dir);
    put(mi, "MemTotal:       32000000 kB\nMemAvailable:    1000000 kB\n");
    snprintf(cg, sizeof cg, "%s/cgroup", dir);
    /* v1: the least of the group and its ancestors; "unlimited" values ignored */
    put(cg, "9:pids:/\n4:memory:/a/b\n0::/\n");
    const char *dirs[] = {"memory", "memory/a", "memory/a/b"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, dirs[i]);
        mkdir(p, 0700);
    }
    snprintf(p, sizeof p, "%s/memory/memory.limit_in_bytes", dir);
    put(p, "9223372036854771712\n");
    snprintf(p, sizeof p, "%s/memory/a/memory.limit_in_bytes", dir);
    put(p, "209715200\n");
    snprintf(p, sizeof p, "%s/memory/a/b/memory.limit_in_bytes", dir);
    put(p, "314572800\n");
    uint64_t b;
    bt_mem_source src;
    bt_mem_budget_read_from(cg, dir, mi, &b, &src);
    CHECK_EQ_INT(src, BT_MEM_SOURCE_CGROUP);
    CHECK_EQ_INT(b, 209715200);
    /* unlimited everywhere: MemAvailable */
    snprintf(p, sizeof p, "%s/memory/a/memory.limit_in_bytes", dir);
    put(p, "9223372036854771712\n");
    snprintf(p, sizeof p, "%s/memory/a/b/memory.limit_in_bytes", dir);
    put(p, "9223372036854771712\n");
    bt_mem_budget_read_from(cg, dir, mi, &b, &src);
    CHECK_EQ_INT(src, BT_MEM_SOURCE_MEMINFO);
    CHECK_EQ_INT(b, 1000000ull * 1024);
    /* v2: memory.max of the group ("max" = none) */
    put(cg, "0::/svc/job\n");
    snprintf(p, sizeof p, "%s/svc", dir);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/svc/job", dir);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/svc/memory.max", dir);
    put(p, "max\n");
    snprintf(p, sizeof p, "%s/svc/job/memory.max", dir);
    put(p, "104857600\n");
    bt_mem_budget_read_from(cg, dir, mi, &b, &src);
    CHECK_EQ_INT(src, BT_MEM_SOURCE_CGROUP);
    CHECK_EQ_INT(b, 104857600);
    /* nothing readable: no limit known */
    bt_mem_budget_read_from(NULL, NULL, "/nonexistent/meminfo", &b, &src);
    CHECK_EQ_INT(src, BT_MEM_SOURCE_NONE);
    CHECK_EQ_INT(b, 0);
    /* this process: some source, and a number with it */
    bt_mem_budget_read(&b, &src);
    CHECK((src == BT_MEM_SOURCE_NONE) == (b == 0));
    CHECK_EQ_INT(strcmp(bt_mem_source_name(BT_MEM_SOURCE_FLAG), "--stage-mem"), 0);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK_EQ_INT(system(cmd), 0);
}

/* The coordinator's side of StageInfo, with a hand-made stage on rank 1 of a local hub: each
 * bad field is refused naming it, and a budget that nothing fits ends the start-up before
 * any Hello goes out. */
typedef struct info_case {
    uint32_t version, rank, source;
    uint64_t budget;
    int host_len;
    const char *stage_mem;
    bt_status want;
    const char *want_text;
} info_case;

static void test_stage_info(const bt_gguf *g) {
    static const info_case cases[] = {
        {BT_PROTOCOL_VERSION, 1, 7, 1u << 30, 4, NULL, BT_ERR_PROTOCOL, "mem_source 7"},
        {BT_PROTOCOL_VERSION, 1, BT_MEM_SOURCE_NONE, 5, 4, NULL, BT_ERR_PROTOCOL,
         "mem_source 0 with mem_budget_bytes 5"},
        {BT_PROTOCOL_VERSION, 1, BT_MEM_SOURCE_FLAG, 1u << 30, 4, NULL, BT_ERR_PROTOCOL,
         "mem_source 1"},
        {BT_PROTOCOL_VERSION, 1, BT_MEM_SOURCE_CGROUP, 0, 4, NULL, BT_ERR_PROTOCOL,
         "mem_source 2 with mem_budget_bytes 0"},
        {BT_PROTOCOL_VERSION, 3, BT_MEM_SOURCE_CGROUP, 1u << 30, 4, NULL, BT_ERR_PROTOCOL,
         "rank 3"},
        {BT_PROTOCOL_VERSION - 1, 1, BT_MEM_SOURCE_CGROUP, 1u << 30, 4, NULL, BT_ERR_PROTOCOL,
         "protocol"},
        {BT_PROTOCOL_VERSION, 1, BT_MEM_SOURCE_CGROUP, 1u << 30, 300, NULL, BT_ERR_PROTOCOL,
         "hostname of 300 bytes"},
        {BT_PROTOCOL_VERSION, 1, BT_MEM_SOURCE_CGROUP, 1u << 20, 4, NULL, BT_ERR_RANGE,
         "has 1.0 MiB (cgroup)"},
        {BT_PROTOCOL_VERSION, 1, BT_MEM_SOURCE_MEMINFO, 1u << 30, 4, "1M", BT_ERR_RANGE,
         "has 1.0 MiB (--stage-mem)"},
        {BT_PROTOCOL_VERSION, 1, BT_MEM_SOURCE_MEMINFO, 1u << 30, 4, "1G,1G", BT_ERR_INVALID_ARG,
         "more values than the 1 stages"},
    };
    const size_t max_frame = 1u << 20;
    static uint8_t frame[1u << 20];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const info_case *k = &cases[i];
        bt_error err;
        bt_error_init(&err);
        bt_local_hub *hub = NULL;
        CHECK_OK(bt_local_hub_new(2, max_frame, 4, &hub, &err));
        if (!hub)
            return;
        bt_transport *t0 = bt_local_hub_endpoint(hub, 0), *t1 = bt_local_hub_endpoint(hub, 1);
        char host[301];
        memset(host, 'h', sizeof host);
        host[k->host_len] = '\0';
        Baton__StageInfo si = BATON__STAGE_INFO__INIT;
        si.protocol_version = k->version;
        si.rank = k->rank;
        si.mem_source = k->source;
        si.mem_budget_bytes = k->budget;
        si.hostname = host;
        size_t len;
        CHECK_OK(
            bt_frame_finish(frame, max_frame, BT_MSG_STAGE_INFO, &si.base, 0, 0, 0, &len, &err));
        CHECK_OK(bt_transport_send(t1, 0, frame, len, 1000000, &err));
        bt_cluster_params p = bt_cluster_default_params();
        p.max_batch = 16;
        p.max_seqs = 2;
        p.kv_tokens = 64;
        p.n_ctx = 64;
        p.stage_mem = k->stage_mem;
        p.hello_timeout_us = 2000000;
        bt_cluster *c = NULL;
        bt_status st = bt_cluster_start(t0, g, &p, &c, &err);
        CHECK_EQ_INT(st, k->want);
        if (!strstr(err.msg, k->want_text))
            check_fail(__FILE__, __LINE__, "case %zu: '%s' lacks '%s'", i, err.msg, k->want_text);
        /* No Hello reached the stage: nothing was asked of it, nothing loaded. */
        const void *buf;
        int from;
        CHECK_EQ_INT(bt_transport_recv(t1, 0, &buf, &len, &from, 50000, &err), BT_ERR_TIMEOUT);
        bt_cluster_free(c);
        bt_local_hub_free(hub);
    }
}

/* A 24-layer model with a small untied head, so that layers dominate the compute cost. */
static const char *make_model24(void) {
    static char path[512];
    const char *build = check_build_dir("24-layer model");
    if (!build)
        return NULL;
    char cmd[1400];
    snprintf(path, sizeof path, "/tmp/bt_test_split24_%d.gguf", (int)getpid());
    snprintf(cmd, sizeof cmd,
             "'%s/tests/make_tiny_model' '%s' --type q4_1 --layers 24 --untied --vocab-size 512 "
             ">/dev/null",
             build, path);
    if (system(cmd) != 0) {
        check_fail(__FILE__, __LINE__, "%s failed", cmd);
        return NULL;
    }
    return path;
}

static int n_layers_of(const bt_split *s, int i) {
    return s->end[i] - s->begin[i];
}

static void test_measured(const bt_gguf *g) {
    bt_error err;
    bt_error_init(&err);
    bt_hparams hp;
    CHECK_OK(bt_hparams_load(g, &hp, &err));
    const int kv = 256;
    CHECK_EQ_INT(hp.n_layer, 24);

    /* Equal speeds: the compute split, every speed 1. */
    const double equal[3] = {1, 1, 1};
    CHECK_OK(
        bt_split_plan(g, 3, kv, BT_TYPE_F16, BT_SPLIT_COMPUTE, NULL, NULL, NULL, &split_a, &err));
    CHECK_OK(
        bt_split_plan(g, 3, kv, BT_TYPE_F16, BT_SPLIT_MEASURED, equal, NULL, NULL, &split_b, &err));
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(split_a.begin[i], split_b.begin[i]);
        CHECK_EQ_INT(split_a.end[i], split_b.end[i]);
        CHECK(split_b.speed[i] == 1.0);
    }
    printf("  equal speeds: %d, %d, %d layers\n", n_layers_of(&split_b, 0),
           n_layers_of(&split_b, 1), n_layers_of(&split_b, 2));

    /* The middle stage at half the speed: about half the layers of each of the others, and
     * the predicted shares of a token's time close to a third each. */
    const double half[3] = {1, 0.5, 1};
    CHECK_OK(
        bt_split_plan(g, 3, kv, BT_TYPE_F16, BT_SPLIT_MEASURED, half, NULL, NULL, &split_a, &err));
    int l0 = n_layers_of(&split_a, 0), l1 = n_layers_of(&split_a, 1), l2 = n_layers_of(&split_a, 2);
    printf("  speeds 1, 0.5, 1: %d, %d, %d layers; shares %.3f %.3f %.3f\n", l0, l1, l2,
           split_a.time_share[0], split_a.time_share[1], split_a.time_share[2]);
    CHECK(l1 < l0 && l1 < l2);
    CHECK(abs(2 * l1 - l0) <= 2 && abs(2 * l1 - l2) <= 2);
    CHECK(split_a.speed[1] == 0.5 && split_a.speed[0] == 1.0);
    CHECK(fabs(split_a.time_share[0] + split_a.time_share[1] + split_a.time_share[2] - 1) < 1e-9);
    for (int i = 0; i < 3; i++)
        CHECK(split_a.time_share[i] > 0.25 && split_a.time_share[i] < 0.42);
    /* Only ratios count: twice every speed is the same plan. */
    const double doubled[3] = {2, 1, 2};
    CHECK_OK(bt_split_plan(g, 3, kv, BT_TYPE_F16, BT_SPLIT_MEASURED, doubled, NULL, NULL, &split_b,
                           &err));
    CHECK_EQ_INT(split_b.end[0], split_a.end[0]);
    CHECK_EQ_INT(split_b.end[1], split_a.end[1]);
    /* The last stage slow: it gets the fewest. */
    const double slow_last[3] = {1, 1, 0.5};
    CHECK_OK(bt_split_plan(g, 3, kv, BT_TYPE_F16, BT_SPLIT_MEASURED, slow_last, NULL, NULL,
                           &split_b, &err));
    CHECK(n_layers_of(&split_b, 2) < n_layers_of(&split_b, 0) &&
          n_layers_of(&split_b, 2) < n_layers_of(&split_b, 1));

    /* Budgets still shape it: the middle stage one byte short of its measured share takes
     * fewer layers still and fits. */
    bt_split_mem m = mem_of(kv, 0);
    CHECK_OK(
        bt_split_plan(g, 3, kv, BT_TYPE_F16, BT_SPLIT_MEASURED, half, NULL, &m, &split_a, &err));
    m.budget[1] = total(&split_a, 1) - 1;
    m.source[1] = BT_MEM_SOURCE_FLAG;
    CHECK_OK(
        bt_split_plan(g, 3, kv, BT_TYPE_F16, BT_SPLIT_MEASURED, half, NULL, &m, &split_b, &err));
    CHECK(split_b.uneven);
    CHECK(n_layers_of(&split_b, 1) < n_layers_of(&split_a, 1));
    CHECK(total(&split_b, 1) <= m.budget[1]);
    /* ... and refuse it: nothing fits in a MiB. */
    m = mem_of(kv, 1u << 20);
    bt_status st =
        bt_split_plan(g, 3, kv, BT_TYPE_F16, BT_SPLIT_MEASURED, half, NULL, &m, &split_b, &err);
    CHECK_EQ_INT(st, BT_ERR_RANGE);
    CHECK(strstr(err.msg, "stage rank") && strstr(err.msg, "but has 1.0 MiB (--stage-mem)"));
    /* --layers overrides the measured split too. */
    CHECK_OK(bt_split_plan(g, 3, kv, BT_TYPE_F16, BT_SPLIT_MEASURED, half, "0-0,1-1,2-23", NULL,
                           &split_b, &err));
    CHECK_EQ_INT(split_b.end[1], 2);

    /* Speeds are required, positive and within BT_SPLIT_MAX_SPEED_RATIO of each other. */
    st = bt_split_plan(g, 3, kv, BT_TYPE_F16, BT_SPLIT_MEASURED, NULL, NULL, NULL, &split_b, &err);
    CHECK_EQ_INT(st, BT_ERR_INVALID_ARG);
    const double zero[3] = {1, 0, 1}, far[3] = {1, 1e-4, 1};
    st = bt_split_plan(g, 3, kv, BT_TYPE_F16, BT_SPLIT_MEASURED, zero, NULL, NULL, &split_b, &err);
    CHECK_EQ_INT(st, BT_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "stage rank 2 has speed 0") != NULL);
    st = bt_split_plan(g, 3, kv, BT_TYPE_F16, BT_SPLIT_MEASURED, far, NULL, NULL, &split_b, &err);
    CHECK_EQ_INT(st, BT_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "stage rank 2 is 10000 times slower") != NULL);
}

static void test_speed_parse(void) {
    bt_error err;
    bt_error_init(&err);
    double v[4];
    CHECK_OK(bt_split_speed_parse("1,1,0.5", 3, v, &err));
    CHECK(v[0] == 1 && v[1] == 1 && v[2] == 0.5);
    CHECK_OK(bt_split_speed_parse("2.5e3,1e3", 2, v, &err));
    CHECK(v[0] == 2500 && v[1] == 1000);
    static const struct {
        const char *list;
        int n;
        const char *want;
    } bad[] = {
        {"", 1, "value 1 '' is not a positive number"},
        {"1,,1", 3, "value 2 '' is not a positive number"},
        {"1,0,1", 3, "value 2 '0' is not a positive number"},
        {"1,-1,1", 3, "value 2 '-1' is not a positive number"},
        {"1,abc,1", 3, "value 2 'abc' is not a positive number"},
        {"1,2x,1", 3, "value 2 '2x' is not a positive number"},
        {"1,nan,1", 3, "value 2 'nan' is not a positive number"},
        {"1,inf,1", 3, "value 2 'inf' is not a positive number"},
        {"1,1e999,1", 3, "value 2 '1e999' is not a positive number"},
        {"1,1,", 3, "value 3 '' is not a positive number"},
        {"1,1", 3, "2 values for 3 stages"},
        {"1,1,1,1", 3, "4 values for 3 stages"},
        {"1,0.0001,1", 3, "the fastest stage is 10000 times the slowest, at most 1000"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ_INT(bt_split_speed_parse(bad[i].list, bad[i].n, v, &err), BT_ERR_INVALID_ARG);
        char want[160];
        snprintf(want, sizeof want, "--stage-speed '%s': %s", bad[i].list, bad[i].want);
        if (!strstr(err.msg, want))
            check_fail(__FILE__, __LINE__, "'%s' lacks '%s'", err.msg, want);
    }
    bt_split_mode mode;
    CHECK_OK(bt_split_mode_of_flags(NULL, NULL, &mode, &err));
    CHECK_EQ_INT(mode, BT_SPLIT_MEMORY);
    CHECK_OK(bt_split_mode_of_flags(NULL, "1,0.5", &mode, &err));
    CHECK_EQ_INT(mode, BT_SPLIT_MEASURED);
    CHECK_OK(bt_split_mode_of_flags("measured", NULL, &mode, &err));
    CHECK_EQ_INT(mode, BT_SPLIT_MEASURED);
    CHECK_OK(bt_split_mode_of_flags("compute", NULL, &mode, &err));
    CHECK_EQ_INT(mode, BT_SPLIT_COMPUTE);
    CHECK_EQ_INT(bt_split_mode_of_flags("compute", "1,2", &mode, &err), BT_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "--stage-speed '1,2' applies to --split measured, not --split compute"));
    CHECK_EQ_INT(bt_split_mode_of_flags(NULL, "1,x", &mode, &err), BT_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "value 2 'x'") != NULL);
    CHECK_EQ_INT(bt_split_mode_of_flags("speed", NULL, &mode, &err), BT_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "--split 'speed': expected 'memory', 'compute' or 'measured'"));
}

int main(void) {
    test_parse();
    test_read();
    test_speed_parse();
    const char *m24 = make_model24();
    if (m24) {
        bt_gguf *g = NULL;
        bt_error err;
        bt_error_init(&err);
        CHECK_OK(bt_gguf_open(m24, &g, &err));
        if (g)
            test_measured(g);
        bt_gguf_free(g);
        unlink(m24);
    }
    const char *tiny = check_make_tiny_model("test_split");
    if (tiny) {
        bt_gguf *g = NULL;
        bt_error err;
        bt_error_init(&err);
        CHECK_OK(bt_gguf_open(tiny, &g, &err));
        if (g) {
            test_plan(g);
            test_stage_info(g);
        }
        bt_gguf_free(g);
        unlink(tiny);
    }
    return check_finish();
}
