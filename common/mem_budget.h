/*
 * mem_budget.h - how much memory a stage may use, and where that number came from.
 *
 * A stage's budget is, in order: what --stage-mem gave it; else the memory cgroup limit of the
 * process (cgroup v2 `memory.max`, v1 `memory.limit_in_bytes`, of the process's own cgroup
 * from /proc/self/cgroup and each of its ancestors: the least of them); else MemAvailable of
 * /proc/meminfo. Each process reads its own (a stage rank on another host reads that host),
 * which is why stages report theirs to the coordinator before the split is planned
 * (docs/protocol.md, StageInfo). Pure functions apart from reading /proc and /sys;
 * thread-safe.
 */
#ifndef BT_MEM_BUDGET_H
#define BT_MEM_BUDGET_H

#include <stdint.h>

#include "status.h"

/* Where a budget came from; the values travel in StageInfo.mem_source (only append). */
#define BT_MEM_SOURCE_LIST(X)                                                                      \
    X(BT_MEM_SOURCE_NONE, "none") /* no limit known: the plan ignores memory */                    \
    X(BT_MEM_SOURCE_FLAG, "--stage-mem")                                                           \
    X(BT_MEM_SOURCE_CGROUP, "cgroup")                                                              \
    X(BT_MEM_SOURCE_MEMINFO, "MemAvailable")

typedef enum bt_mem_source {
#define X(id, name) id,
    BT_MEM_SOURCE_LIST(X)
#undef X
        BT_MEM_SOURCE_COUNT
} bt_mem_source;

const char *bt_mem_source_name(bt_mem_source s);

/* This process's budget: the cgroup limit, else MemAvailable, else 0 with BT_MEM_SOURCE_NONE.
 * Never fails: a file that cannot be read or parsed is a source that does not say. */
void bt_mem_budget_read(uint64_t *bytes, bt_mem_source *source);

/* The same from explicit files (tests): proc_cgroup is /proc/self/cgroup's text, cgroup_root
 * the mount point holding "memory/" (v1) and the v2 tree (v2 at cgroup_root itself or at
 * cgroup_root/unified), meminfo the path of a meminfo file. NULL skips a source. */
void bt_mem_budget_read_from(const char *proc_cgroup, const char *cgroup_root, const char *meminfo,
                             uint64_t *bytes, bt_mem_source *source);

/* "SIZE" with an optional suffix K M G T, KiB MiB GiB TiB (powers of 1024; case-insensitive,
 * "KB" also), plain bytes otherwise; > 0 and < 2^60. BT_ERR_INVALID_ARG naming `what` and the
 * text otherwise. */
bt_status bt_mem_size_parse(const char *text, const char *what, uint64_t *out, bt_error *err);

/* --stage-mem "SIZE[,SIZE...]": one value for all n_stages stages, or exactly n_stages. */
bt_status bt_mem_list_parse(const char *text, int n_stages, uint64_t *out, bt_error *err);

#endif
