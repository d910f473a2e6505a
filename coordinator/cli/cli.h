/*
 * cli.h - command-line flags for the baton subcommands.
 *
 * Each subcommand declares a table of bt_cli_opt; bt_cli_parse() fills the typed targets and
 * refuses unknown flags, missing values and values that do not parse or are out of range,
 * with a message naming the flag. The caller exits with status 2 on any such error.
 * Single-threaded, used only from main.
 */
#ifndef BT_CLI_H
#define BT_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"

typedef enum bt_cli_kind {
    BT_CLI_STR,   /* const char ** (borrowed from argv) */
    BT_CLI_INT,   /* int64_t *, within [min, max] */
    BT_CLI_FLOAT, /* double *, within [min, max] */
    BT_CLI_FLAG   /* bool *, takes no value */
} bt_cli_kind;

typedef struct bt_cli_opt {
    const char *name; /* "--max-tokens" */
    bt_cli_kind kind;
    void *target;
    double min, max; /* for INT and FLOAT */
    const char *help;
} bt_cli_opt;

/* Parses argv[0..argc) (the arguments after the subcommand). Accepts "--flag value" and
 * "--flag=value". */
bt_status bt_cli_parse(const bt_cli_opt *opts, int n_opts, int argc, char **argv, bt_error *err);

/* Prints "usage: baton <cmd> ..." and the table to stderr. */
void bt_cli_usage(const char *cmd, const char *synopsis, const bt_cli_opt *opts, int n_opts);

/* The default model path into buf: $BATON_MODEL, else ${BATON_CACHE:-~/.cache/baton}/
 * SmolLM2-135M-Instruct.Q4_1.gguf, where ~ is $HOME if absolute, else the user's home from
 * the password database. BT_ERR_NOT_FOUND (naming what to set) when there is none. */
bt_status bt_cli_default_model(char *buf, size_t cap, bt_error *err);

#endif
