/*
 * commands.h - the baton subcommands. Each takes the arguments after its name and returns
 * the process exit status: 0 success, 1 runtime failure, 2 usage error (unknown flag,
 * missing file, bad value).
 */
#ifndef BT_COMMANDS_H
#define BT_COMMANDS_H

#include "status.h"

int bt_cmd_generate(int argc, char **argv);
int bt_cmd_perplexity(int argc, char **argv);
int bt_cmd_info(int argc, char **argv);
int bt_cmd_tokenize(int argc, char **argv);
int bt_cmd_bench(int argc, char **argv);
int bt_cmd_serve(int argc, char **argv);
int bt_cmd_batch(int argc, char **argv);

/* Exit status for an error: 2 for what the user gave (flags, files, values), else 1. */
int bt_cmd_exit_status(bt_status st);

#endif
