/* mem_budget.c - a stage's memory budget from its cgroup or /proc/meminfo (see mem_budget.h). */
#include "mem_budget.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A limit at or above this means "no limit": cgroup v1 writes PAGE_COUNTER_MAX pages
 * (9223372036854771712 with 4 KiB pages) for an unlimited group. */
#define NO_LIMIT (1ull << 60)
#define PATH_CAP 4096

const char *bt_mem_source_name(bt_mem_source s) {
    switch (s) {
#define X(id, name)                                                                                \
    case id:                                                                                       \
        return name;
        BT_MEM_SOURCE_LIST(X)
#undef X
    case BT_MEM_SOURCE_COUNT:
        break;
    }
    return "unknown";
}

/* The first line of path as a number of bytes; 0 when unreadable, "max" or not a number. */
static uint64_t read_limit(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[64] = "";
    bool ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    if (!ok || !isdigit((unsigned char)line[0]))
        return 0;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(line, &end, 10);
    if (errno || (*end && *end != '\n'))
        return 0;
    return v >= NO_LIMIT ? 0 : (uint64_t)v;
}

/* The least limit named `file` in dir/path and each of its ancestors up to dir; 0 = none. */
static uint64_t least_limit(const char *dir, const char *path, const char *file) {
    char rel[PATH_CAP];
    snprintf(rel, sizeof rel, "%s", path);
    uint64_t best = 0;
    for (;;) {
        char full[PATH_CAP * 2 + 64];
        size_t n = strlen(rel);
        while (n > 0 && rel[n - 1] == '/')
            rel[--n] = '\0';
        snprintf(full, sizeof full, "%s%s%s/%s", dir, rel[0] == '/' || !rel[0] ? "" : "/", rel,
                 file);
        uint64_t v = read_limit(full);
        if (v && (!best || v < best))
            best = v;
        char *slash = strrchr(rel, '/');
        if (!rel[0])
            break;
        if (slash)
            *slash = '\0';
        else
            rel[0] = '\0';
    }
    return best;
}

static uint64_t cgroup_limit(const char *proc_cgroup, const char *root) {
    FILE *f = fopen(proc_cgroup, "r");
    if (!f)
        return 0;
    char line[PATH_CAP];
    uint64_t best = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c1 = *c2 = '\0';
        const char *ctrls = c1 + 1, *path = c2 + 1;
        char dir[PATH_CAP];
        uint64_t v = 0;
        if (strcmp(line, "0") == 0 && !ctrls[0]) { /* v2: one tree for every controller */
            snprintf(dir, sizeof dir, "%s", root);
            v = least_limit(dir, path, "memory.max");
            if (!v) {
                snprintf(dir, sizeof dir, "%s/unified", root);
                v = least_limit(dir, path, "memory.max");
            }
        } else {
            char list[256];
            snprintf(list, sizeof list, "%s", ctrls);
            for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
                 tok = strtok_r(NULL, ",", &save))
                if (strcmp(tok, "memory") == 0) {
                    snprintf(dir, sizeof dir, "%s/memory", root);
                    v = least_limit(dir, path, "memory.limit_in_bytes");
                }
        }
        if (v && (!best || v < best))
            best = v;
    }
    fclose(f);
    return best;
}

static uint64_t mem_available(const char *meminfo) {
    FILE *f = fopen(meminfo, "r");
    if (!f)
        return 0;
    char line[256];
    uint64_t v = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long kb;
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1 && kb < NO_LIMIT / 1024) {
            v = (uint64_t)kb * 1024;
            break;
        }
    }
    fclose(f);
    return v;
}

void bt_mem_budget_read_from(const char *proc_cgroup, const char *cgroup_root, const char *meminfo,
                             uint64_t *bytes, bt_mem_source *source) {
    uint64_t v = proc_cgroup && cgroup_root ? cgroup_limit(proc_cgroup, cgroup_root) : 0;
    if (v) {
        *bytes = v;
        *source = BT_MEM_SOURCE_CGROUP;
        return;
    }
    v = meminfo ? mem_available(meminfo) : 0;
    *bytes = v;
    *source = v ? BT_MEM_SOURCE_MEMINFO : BT_MEM_SOURCE_NONE;
}

void bt_mem_budget_read(uint64_t *bytes, bt_mem_source *source) {
    bt_mem_budget_read_from("/proc/self/cgroup", "/sys/fs/cgroup", "/proc/meminfo", bytes, source);
}

bt_status bt_mem_size_parse(const char *text, const char *what, uint64_t *out, bt_error *err) {
    *out = 0;
    const char *p = text;
    if (!isdigit((unsigned char)*p))
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "%s '%s': expected a size such as 512M, 2GiB or 1048576", what, text);
    errno = 0;
    char *end;
    unsigned long long v = strtoull(p, &end, 10);
    static const struct {
        const char *suffix;
        int shift;
    } units[] = {{"", 0},    {"k", 10},   {"kb", 10}, {"kib", 10}, {"m", 20},
                 {"mb", 20}, {"mib", 20}, {"g", 30},  {"gb", 30},  {"gib", 30},
                 {"t", 40},  {"tb", 40},  {"tib", 40}};
    int shift = -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcasecmp(end, units[i].suffix) == 0)
            shift = units[i].shift;
    if (errno || shift < 0 || v == 0 || v >= (NO_LIMIT >> shift))
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "%s '%s': expected a size > 0 and < 1 EiB such as 512M, 2GiB or "
                            "1048576",
                            what, text);
    *out = (uint64_t)v << shift;
    return BT_OK;
}

bt_status bt_mem_list_parse(const char *text, int n_stages, uint64_t *out, bt_error *err) {
    int n = 0;
    const char *p = text;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[64];
        if (len >= sizeof item)
            return bt_error_set(err, BT_ERR_INVALID_ARG, "--stage-mem '%s': value %d too long",
                                text, n + 1);
        memcpy(item, p, len);
        item[len] = '\0';
        if (n >= n_stages)
            return bt_error_set(err, BT_ERR_INVALID_ARG,
                                "--stage-mem '%s': more values than the %d stages", text, n_stages);
        bt_status st = bt_mem_size_parse(item, "--stage-mem", &out[n], err);
        if (st != BT_OK)
            return st;
        n++;
        if (!comma)
            break;
        p = comma + 1;
    }
    if (n == 1)
        for (int i = 1; i < n_stages; i++)
            out[i] = out[0];
    else if (n != n_stages)
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "--stage-mem '%s': %d values for %d stages; give one for all or one "
                            "per stage",
                            text, n, n_stages);
    return BT_OK;
}
