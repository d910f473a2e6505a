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
#include "engine.h"
#include "launch.h"
#include "openai.h"
#include "request.h"
#include "threadpool.h"

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
        {"--threads",                                                                              \
         BT_CLI_INT,                                                                               \
         &(f).threads,                                                                             \
         1,                                                                                        \
         BT_THREADPOOL_MAX_THREADS,                                                                \
         "compute threads (default: all CPUs)"},                                                   \
        {"--ctx", BT_CLI_INT, &(f).ctx, 16, 1 << 20, "context length in tokens"}, {                \
        "--help", BT_CLI_FLAG, &(f).help, 0, 0, "show this help"                                   \
    }

void bt_model_flags_init(bt_model_flags *f);
/* The model path of the flags: --model, else the default (bt_cli_default_model, kept in f).
 * Fails when no default path can be formed (BT_ERR_NOT_FOUND). */
bt_status bt_model_flags_path(bt_model_flags *f, const char **path, bt_error *err);

/* Flags of the commands that run on the cluster (generate, bench, perplexity). */
typedef struct bt_cluster_flags {
    const char *codec, *layers, *split, *numerics;
    const char *kv_type;     /* --kv-type f16|q8_0 (bt_kv_type_parse) */
    const char *stage_mem;   /* --stage-mem SIZE[,SIZE...]: stage memory budgets, or NULL */
    const char *slice_cache; /* --slice-cache DIR: stage ranks' slice cache, or NULL (default) */
    int64_t act_zstd, inflight, prefill_chunk, max_seqs, max_batch, stages, stage_timeout_ms,
        heartbeat_ms, kv_tokens;
    int64_t kv_seqs;          /* default KV pool: this many contexts (0: min(max_seqs, 4)) */
    int64_t queue_capacity;   /* serve's --max-queue (0: the engine's default) */
    int64_t queue_timeout_us; /* serve's --queue-timeout (0: none) */

    /* --stage-speed S1,S2,...: relative stage speeds (the measured split), or NULL */
    const char *stage_speed;
} bt_cluster_flags;

void bt_cluster_flags_init(bt_cluster_flags *f);

/* --kv-type's value: "f16" -> BT_TYPE_F16, "q8_0" -> BT_TYPE_Q8_0; anything else is
 * BT_ERR_INVALID_ARG naming the flag and the value. */
bt_status bt_kv_type_parse(const char *s, bt_type *out, bt_error *err);

#define BT_CLUSTER_FLAG_OPTS(f)                                                                     \
    {"--act-codec", BT_CLI_STR, &(f).codec, 0, 0, "f32 f16 bf16 q8 (f16 across hosts)"},            \
        {"--act-zstd", BT_CLI_INT, &(f).act_zstd, 0, 19, "zstd level on activations, 0 = off"},     \
        {"--layers", BT_CLI_STR, &(f).layers, 0, 0, "layer split, e.g. 0-14,15-29"},                \
        {"--split", BT_CLI_STR, &(f).split, 0, 0, "'memory' (default), 'compute' or 'measured'"},   \
        {"--stage-mem", BT_CLI_STR, &(f).stage_mem, 0, 0, "memory per stage, e.g. 2G or 1G,3G"},    \
        {"--stage-speed", BT_CLI_STR, &(f).stage_speed, 0, 0, "stage speeds, e.g. 1,1,0.5"},        \
        {"--numerics", BT_CLI_STR, &(f).numerics, 0, 0, "'fast' (default) or 'llamacpp' (exact)"},  \
        {"--kv-type", BT_CLI_STR, &(f).kv_type,                                                     \
         0,           0,          "KV cache element: 'f16' (default) or 'q8_0'"},                   \
        {"--slice-cache",                                                                           \
         BT_CLI_STR,                                                                                \
         &(f).slice_cache,                                                                          \
         0,                                                                                         \
         0,                                                                                         \
         "stages' cache of shipped slices (default ~/.cache/baton/slices)"},                        \
        {"--inflight",                                                                              \
         BT_CLI_INT,                                                                                \
         &(f).inflight,                                                                             \
         0,                                                                                         \
         64,                                                                                        \
         "micro-batches in flight (1 stage: 1, else 2 x stages)"},                                  \
        {"--prefill-chunk", BT_CLI_INT, &(f).prefill_chunk, 1, 65536, "prompt rows per batch"},     \
        {"--max-seqs",  BT_CLI_INT,                                                                 \
         &(f).max_seqs, 1,                                                                          \
         4096,          "concurrent sequences (64; generate: its request's)"},                      \
        {"--max-batch", BT_CLI_INT, &(f).max_batch, 1, 65536, "rows per micro-batch (512)"},        \
        {"--kv-tokens",  BT_CLI_INT,                                                                \
         &(f).kv_tokens, 16,                                                                        \
         1 << 26,        "KV cache per stage in tokens, shared by all sequences (a few contexts)"}, \
        {"--stages", BT_CLI_INT, &(f).stages, 1, 64, "stage threads when run without mpirun"},      \
        {"--stage-timeout-ms",                                                                      \
         BT_CLI_INT,                                                                                \
         &(f).stage_timeout_ms,                                                                     \
         10,                                                                                        \
         86400000,                                                                                  \
         "a silent stage is failed after this (30000)"},                                            \
    {                                                                                               \
        "--heartbeat-ms", BT_CLI_INT, &(f).heartbeat_ms, 1, 600000, "idle stage heartbeat (500)"    \
    }

/* The flags of the request-parameter table (bt_request_param_table): --name with '_' -> '-'
 * for every row (bool rows: --name sets true when the default is false, --no-name sets false
 * when it is true), plus the row's older alias (--repeat-penalty, --logprobs, ...). Rows marked
 * BT_PARAM_HAND_FLAG are left to the command. The values are parsed by bt_cli, so range
 * errors name the flag as typed. */
#define BT_PARAM_FLAGS_MAX 32
typedef struct bt_param_flags {
    int n;
    const bt_param_desc *d[BT_PARAM_FLAGS_MAX];
    int64_t iv[BT_PARAM_FLAGS_MAX]; /* INT/U64 rows; INT64_MIN = not given */
    double fv[BT_PARAM_FLAGS_MAX];  /* FLOAT rows; NaN = not given */
    bool bv[BT_PARAM_FLAGS_MAX];    /* BOOL rows: the flag was given */
    char name[BT_PARAM_FLAGS_MAX][64];
    char help[BT_PARAM_FLAGS_MAX][192];
} bt_param_flags;

/* Appends the table's flags to opts[*n_opts..max) (defaults shown from `defaults`); f must
 * outlive the parse. BT_ERR_LIMIT when opts is short. */
bt_status bt_param_flags_add(bt_param_flags *f, const bt_request_params *defaults, bt_cli_opt *opts,
                             int *n_opts, int max, bt_error *err);

/* Whether the row named `name` was given on the command line. */
bool bt_param_flags_given(const bt_param_flags *f, const char *name);

/* Stores every given value into p (bt_request_param_set). */
bt_status bt_param_flags_apply(const bt_param_flags *f, bt_request_params *p, bt_error *err);

/* A model opened for a cluster command: the GGUF and vocabulary here, this process's role
 * started, and on the coordinator the engine connected to the stages. */
typedef struct bt_session {
    bt_gguf *gguf; /* NULL on a stage rank: its stage loop finds its own weights */
    bt_vocab *vocab;
    bt_launch launch;
    bool launched;
    bt_engine *engine;
    int n_threads;
    int64_t ready_us; /* coordinator: from bt_launch_start to the stages' last HelloReply */
} bt_session;

/* Opens the session. Returns -1 on the coordinator (go on and use s->engine); otherwise the
 * exit status to end with: a stage rank that has served, or a failure (printed, prefixed by
 * cmd). */
int bt_session_open(bt_session *s, const char *cmd, bt_model_flags *mf, bt_cluster_flags *cf);

/* The coordinator's start-up report into buf: "ready in T s; stage rank R (layers A-B on
 * HOST): weights from the local file | the slice cache | shipped N MiB (Z MiB compressed) in
 * T s; ...". Returns buf. */
const char *bt_session_ready_line(const bt_session *s, char *buf, size_t cap);

/* Ends the session: shutdown or abort of the stages, joins, MPI finalisation. Returns the
 * exit status given the command's own. */
int bt_session_close(bt_session *s, int status);

/* Parses argv against opts; on error prints it with the usage and returns 2; on --help prints
 * the usage and returns 0; otherwise returns -1 (go on). */
int bt_cmd_parse(const char *cmd, const char *synopsis, const bt_cli_opt *opts, int n_opts,
                 const bool *help, int argc, char **argv);

/* Reads a whole file (at most max_bytes) into a NUL-terminated malloc'd buffer. */
bt_status bt_read_file(const char *path, size_t max_bytes, char **out, size_t *len, bt_error *err);

/* bt_read_file for a text given with --file (prompts, perplexity text): a NUL byte is refused
 * (BT_ERR_FORMAT naming the offset), so every command sees the same whole text. *out is owned
 * by the caller (free). */
bt_status bt_read_text_file(const char *path, size_t max_bytes, char **out, size_t *len,
                            bt_error *err);

/* The model id of serve and batch (the name requests may give as "model"): the file's
 * basename without .gguf. */
void bt_cmd_model_id(const char *path, char *out, size_t cap);

/* The served model as the OpenAI layer sees it (serve, batch), with the storage it points
 * into. Borrows the session's vocabulary: valid while the session is open. */
typedef struct bt_cmd_api_model {
    bt_api_model m;
    bt_chat_template tmpl;
    char name[256];
    char chat_error[600];
} bt_cmd_api_model;

/* Fills am for the open session s: the name (model_name, else bt_cmd_model_id of the file),
 * the chat template (chat_name, else the GGUF's). A model without a template baton renders
 * still serves completions; chat requests get a 400 naming the fix (said once on stderr,
 * prefixed "baton CMD: "). Returns 0, or 2 when chat_name does not fit the model (printed). */
int bt_cmd_api_model_init(bt_cmd_api_model *am, const char *cmd, const bt_session *s,
                          const bt_model_flags *mf, const char *model_name, const char *chat_name);

/* Writes n bytes to stdout and flushes (streamed output). False on a write error, which is
 * remembered for bt_stdout_close. */
bool bt_stdout_write(const void *p, size_t n);

/* --chat-template NAME of command cmd, checked before the model loads: 0 when name is NULL or
 * a template we render, else 2 after a message listing the names. */
int bt_chat_template_flag_check(const char *cmd, const char *name);

/* Ends the program's stdout: flushes and closes it. A write that failed at any point (a full
 * disk, a closed descriptor) is reported as "baton: writing output: <reason>" and turns a
 * status of 0 into 1; otherwise returns status. Call once, last, from main. */
int bt_stdout_close(int status);

#endif
