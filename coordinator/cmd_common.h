/*
 * cmd_common.h - pieces the subcommands share: the flags every model command takes, and
 * reading a whole text file with a size limit.
 */
#ifndef BT_CMD_COMMON_H
#define BT_CMD_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cli.h"
#include "runner.h"

typedef struct bt_model_flags {
    const char *model;
    int64_t threads;
    int64_t ctx;
    bool help;
    char default_model[4096];
} bt_model_flags;

/* The --model, --threads, --ctx, --help entries, pointing into f. */
#define BT_MODEL_FLAG_OPTS(f)                                                                      \
    {"--model", BT_CLI_STR, &(f).model, 0, 0, "GGUF file (default: the cached SmolLM2)"},          \
        {"--threads", BT_CLI_INT, &(f).threads, 1, 1024, "compute threads (default: all CPUs)"},   \
        {"--ctx", BT_CLI_INT, &(f).ctx, 16, 1 << 20, "context length in tokens"},                  \
        {"--help", BT_CLI_FLAG, &(f).help, 0, 0, "show this help"}

void bt_model_flags_init(bt_model_flags *f);
/* Runner parameters from the flags (model defaulted). */
bt_runner_params bt_model_flags_runner(bt_model_flags *f);

/* Parses argv against opts; on error prints it with the usage and returns 2; on --help prints
 * the usage and returns 0; otherwise returns -1 (go on). */
int bt_cmd_parse(const char *cmd, const char *synopsis, const bt_cli_opt *opts, int n_opts,
                 const bool *help, int argc, char **argv);

/* Reads a whole file (at most max_bytes) into a NUL-terminated malloc'd buffer. */
bt_status bt_read_file(const char *path, size_t max_bytes, char **out, size_t *len,
                       bt_error *err);

#endif
