/*
 * main.c - the baton executable: dispatches to a subcommand.
 *
 * Single-process for now: every command opens the model in this process (coordinator and
 * one in-process stage). The MPI roles come with the pipeline cluster.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd_common.h"
#include "commands.h"
#include "gguf.h"
#include "launch.h"
#include "log.h"
#include "transport.h"

static void usage(void) {
    fprintf(stderr, "usage: baton <command> [flags]\n"
                    "commands:\n"
                    "  serve       OpenAI-compatible HTTP server over the cluster\n"
                    "  batch       an OpenAI batch file (JSONL) through the cluster, resumable\n"
                    "  generate    generate text for one prompt, streamed to stdout\n"
                    "  perplexity  perplexity of a text file\n"
                    "  bench       prompt-processing and decode speed\n"
                    "  info        model metadata, tensor types and sizes\n"
                    "  tokenize    show the tokens of a text\n"
                    "Run `baton <command> --help` for its flags.\n");
}

/* A closed standard descriptor would be taken by the next open() (the model, a prompt file),
 * and output meant for stdout would go there. Each closed one gets /dev/null opened
 * read-only in its place: nothing else can take it, and writes to it fail (EBADF), which
 * bt_stdout_close reports. */
static void reserve_std_fds(void) {
    for (int fd = 0; fd <= 2; fd++)
        if (fcntl(fd, F_GETFD) == -1 && errno == EBADF)
            (void)open("/dev/null", O_RDONLY); /* the lowest free descriptor: fd itself */
}

static int run(int argc, char **argv) {
    static const struct {
        const char *name;
        int (*run)(int, char **);
    } cmds[] = {
        {"generate", bt_cmd_generate}, {"perplexity", bt_cmd_perplexity}, {"bench", bt_cmd_bench},
        {"info", bt_cmd_info},         {"tokenize", bt_cmd_tokenize},     {"serve", bt_cmd_serve},
        {"batch", bt_cmd_batch},
    };
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage();
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        /* The second line is for scripts: deploy/netns/run.sh refuses a delay profile
         * unless it reads "link delay: built in". */
        printf("baton 0.1.0\nlink delay: %s\n", bt_transport_link_delay_built()
                                                    ? "built in (test build; BT_LINK_DELAY_US)"
                                                    : "not built in");
        return 0;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(argv[1], cmds[i].name) == 0)
            return cmds[i].run(argc - 2, argv + 2);
    fprintf(stderr, "baton: unknown command '%s'\n", argv[1]);
    usage();
    return 2;
}

/* BATON_LOG=debug|info|warn|error: the log level (default warn). info adds, among others, the
 * coordinator's start-up report and each shipped slice; debug each slice chunk. */
static void log_level_from_env(void) {
    static const char *const names[] = {"debug", "info", "warn", "error"};
    const char *v = getenv("BATON_LOG");
    for (int i = 0; v && i < 4; i++)
        if (strcmp(v, names[i]) == 0)
            bt_log_set_level((bt_log_level)i);
}

int main(int argc, char **argv) {
    reserve_std_fds();
    log_level_from_env();
    /* mpirun and srun forward SIGUSR1 (Slurm's warning before a time limit) to every rank. It
     * is the coordinator's to act on (serve, batch: drain); a stage must not die of it. */
    if (bt_launch_is_stage_rank())
        signal(SIGUSR1, SIG_IGN);
    bt_gguf_catch_truncation();
    return bt_stdout_close(run(argc, argv));
}
