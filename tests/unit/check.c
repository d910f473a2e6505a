/* check.c - counters and helpers behind check.h. */
#include "check.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int bt_check_passed, bt_check_failed, bt_check_skipped;

void check_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    bt_check_failed++;
}

int check_finish(void) {
    printf("%d passed, %d failed, %d skipped\n", bt_check_passed, bt_check_failed,
           bt_check_skipped);
    return bt_check_failed ? 1 : bt_check_skipped ? 77 : 0;
}

static const char *required_dir(const char *var, const char *what) {
    const char *dir = getenv(var);
    if (!dir || access(dir, R_OK) != 0) {
        check_fail(__FILE__, __LINE__, "%s: %s=%s not found (required: run the test from ctest)",
                   what, var, dir ? dir : "unset");
        return NULL;
    }
    return dir;
}

const char *check_shared_dir(const char *what) {
    return required_dir("BT_SHARED_DIR", what);
}

const char *check_data_dir(const char *what) {
    return required_dir("BT_TEST_DATA", what);
}

const char *check_build_dir(const char *what) {
    return required_dir("BT_BUILD_DIR", what);
}

const char *check_make_tiny_model(const char *tag) {
    static char path[512];
    const char *build = check_build_dir("tiny model");
    if (!build)
        return NULL;
    char tool[600], cmd[1400];
    snprintf(tool, sizeof tool, "%s/tests/make_tiny_model", build);
    if (access(tool, X_OK) != 0) {
        check_fail(__FILE__, __LINE__, "%s is not built", tool);
        return NULL;
    }
    snprintf(path, sizeof path, "/tmp/bt_%s_%d.gguf", tag, (int)getpid());
    snprintf(cmd, sizeof cmd, "'%s' '%s' --type q4_1 --layers 6 >/dev/null", tool, path);
    if (system(cmd) != 0) {
        check_fail(__FILE__, __LINE__, "%s failed", cmd);
        return NULL;
    }
    return path;
}

const char *check_model_path(const char *what) {
    static char buf[4096];
    const char *p = getenv("BATON_MODEL");
    if (!p) {
        const char *home = getenv("HOME");
        snprintf(buf, sizeof buf, "%s/.cache/baton/SmolLM2-135M-Instruct.Q4_1.gguf",
                 home ? home : "");
        p = buf;
    }
    if (access(p, R_OK) != 0) {
        printf("SKIP %s: model %s not found (run deploy/fetch-model.sh)\n", what, p);
        bt_check_skipped++;
        return NULL;
    }
    return p;
}
