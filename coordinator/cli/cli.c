/* cli.c - flag parsing for the subcommands (see cli.h). */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pwd.h>
#include <unistd.h>

static const bt_cli_opt *find_opt(const bt_cli_opt *opts, int n_opts, const char *name,
                                  size_t len) {
    for (int i = 0; i < n_opts; i++)
        if (strlen(opts[i].name) == len && memcmp(opts[i].name, name, len) == 0)
            return &opts[i];
    return NULL;
}

static bt_status set_value(const bt_cli_opt *o, const char *val, bt_error *err) {
    char *end = NULL;
    errno = 0;
    switch (o->kind) {
    case BT_CLI_STR:
        if (val[0] == '\0')
            return bt_error_set(err, BT_ERR_INVALID_ARG, "%s: empty value", o->name);
        *(const char **)o->target = val;
        return BT_OK;
    case BT_CLI_INT: {
        long long v = strtoll(val, &end, 10);
        if (errno || end == val || *end != '\0')
            return bt_error_set(err, BT_ERR_INVALID_ARG, "%s: '%s' is not an integer", o->name,
                                val);
        if ((double)v < o->min || (double)v > o->max)
            return bt_error_set(err, BT_ERR_RANGE, "%s: %lld is outside [%.0f, %.0f]", o->name, v,
                                o->min, o->max);
        *(int64_t *)o->target = v;
        return BT_OK;
    }
    case BT_CLI_FLOAT: {
        double v = strtod(val, &end);
        if (errno || end == val || *end != '\0' || !isfinite(v))
            return bt_error_set(err, BT_ERR_INVALID_ARG, "%s: '%s' is not a number", o->name, val);
        if (v < o->min || v > o->max)
            return bt_error_set(err, BT_ERR_RANGE, "%s: %g is outside [%g, %g]", o->name, v, o->min,
                                o->max);
        *(double *)o->target = v;
        return BT_OK;
    }
    case BT_CLI_FLAG:
        break;
    }
    return bt_error_set(err, BT_ERR_INTERNAL, "%s: bad option kind", o->name);
}

bt_status bt_cli_parse(const bt_cli_opt *opts, int n_opts, int argc, char **argv, bt_error *err) {
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0)
            return bt_error_set(err, BT_ERR_INVALID_ARG, "unexpected argument '%s'", arg);
        const char *eq = strchr(arg, '=');
        size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
        const bt_cli_opt *o = find_opt(opts, n_opts, arg, name_len);
        if (!o)
            return bt_error_set(err, BT_ERR_INVALID_ARG, "unknown flag '%.*s'", (int)name_len, arg);
        if (o->kind == BT_CLI_FLAG) {
            if (eq)
                return bt_error_set(err, BT_ERR_INVALID_ARG, "%s takes no value", o->name);
            *(bool *)o->target = true;
            continue;
        }
        const char *val = eq ? eq + 1 : NULL;
        if (!val) {
            if (i + 1 >= argc)
                return bt_error_set(err, BT_ERR_INVALID_ARG, "%s needs a value", o->name);
            val = argv[++i];
        }
        bt_status st = set_value(o, val, err);
        if (st != BT_OK)
            return st;
    }
    return BT_OK;
}

void bt_cli_usage(const char *cmd, const char *synopsis, const bt_cli_opt *opts, int n_opts) {
    fprintf(stderr, "usage: baton %s %s\n", cmd, synopsis);
    for (int i = 0; i < n_opts; i++) {
        const char *meta = opts[i].kind == BT_CLI_STR     ? " S"
                           : opts[i].kind == BT_CLI_INT   ? " N"
                           : opts[i].kind == BT_CLI_FLOAT ? " X"
                                                          : "";
        fprintf(stderr, "  %s%-*s %s\n", opts[i].name, (int)(22 - strlen(opts[i].name)), meta,
                opts[i].help);
    }
}

bt_status bt_cli_default_model(char *buf, size_t cap, bt_error *err) {
    const char *m = getenv("BATON_MODEL");
    if (m && *m) {
        snprintf(buf, cap, "%s", m);
        return BT_OK;
    }
    const char *cache = getenv("BATON_CACHE");
    if (cache && *cache) {
        snprintf(buf, cap, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", cache);
        return BT_OK;
    }
    /* Without HOME the home directory comes from the password database; a path relative to
     * the working directory would find (or miss) a different file wherever baton is run. */
    const char *home = getenv("HOME");
    if (!home || home[0] != '/') {
        const struct passwd *pw = getpwuid(getuid());
        home = pw && pw->pw_dir && pw->pw_dir[0] == '/' ? pw->pw_dir : NULL;
    }
    if (!home)
        return bt_error_set(err, BT_ERR_NOT_FOUND,
                            "no default model path: HOME is unset or not absolute and user %u has "
                            "no home directory; give --model, BATON_MODEL or BATON_CACHE",
                            (unsigned)getuid());
    snprintf(buf, cap, "%s/.cache/baton/SmolLM2-135M-Instruct.Q4_1.gguf", home);
    return BT_OK;
}
