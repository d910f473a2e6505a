/* cmd_common.c - flags and helpers shared by the subcommands. */
#include "cmd_common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"

void bt_model_flags_init(bt_model_flags *f) {
    memset(f, 0, sizeof *f);
}

bt_runner_params bt_model_flags_runner(bt_model_flags *f) {
    bt_runner_params p = bt_runner_default_params();
    p.model_path =
        f->model ? f->model : bt_cli_default_model(f->default_model, sizeof f->default_model);
    p.n_threads = (int)f->threads;
    p.n_ctx = (int)f->ctx;
    return p;
}

int bt_cmd_exit_status(bt_status st) {
    switch (st) {
    case BT_OK:
        return 0;
    case BT_ERR_IO:
    case BT_ERR_NOT_FOUND:
    case BT_ERR_INVALID_ARG:
    case BT_ERR_RANGE:
    case BT_ERR_FORMAT:
    case BT_ERR_UNSUPPORTED:
    case BT_ERR_LIMIT:
        return 2;
    default:
        return 1;
    }
}

int bt_cmd_parse(const char *cmd, const char *synopsis, const bt_cli_opt *opts, int n_opts,
                 const bool *help, int argc, char **argv) {
    bt_error err;
    bt_error_init(&err);
    if (bt_cli_parse(opts, n_opts, argc, argv, &err) != BT_OK) {
        fprintf(stderr, "baton %s: %s\n", cmd, err.msg);
        bt_cli_usage(cmd, synopsis, opts, n_opts);
        return 2;
    }
    if (*help) {
        bt_cli_usage(cmd, synopsis, opts, n_opts);
        return 0;
    }
    return -1;
}

bt_status bt_read_file(const char *path, size_t max_bytes, char **out, size_t *len,
                       bt_error *err) {
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return bt_error_set(err, BT_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    bt_status st = BT_OK;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = cap ? cap * 2 : 65536 * 2;
            char *p = realloc(buf, cap);
            if (!p) {
                st = bt_error_set(err, BT_ERR_NOMEM, "reading '%s': out of memory", path);
                break;
            }
            buf = p;
        }
        size_t got = fread(buf + n, 1, 65536, f);
        n += got;
        if (n > max_bytes) {
            st = bt_error_set(err, BT_ERR_LIMIT, "'%s' is larger than %zu bytes", path,
                              max_bytes);
            break;
        }
        if (got < 65536) {
            if (ferror(f))
                st = bt_error_set(err, BT_ERR_IO, "reading '%s': %s", path, strerror(errno));
            break;
        }
    }
    fclose(f);
    if (st != BT_OK) {
        free(buf);
        return st;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return BT_OK;
}
