/* check.c - counters and helpers behind check.h. */
#include "check.h"

#include <stdarg.h>
#include <unistd.h>

int bt_check_passed, bt_check_failed;

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
    printf("%d passed, %d failed\n", bt_check_passed, bt_check_failed);
    return bt_check_failed ? 1 : 0;
}

const char *check_shared_dir(const char *what) {
    const char *dir = getenv("BT_SHARED_DIR");
    if (!dir || access(dir, R_OK) != 0) {
        printf("SKIP %s: ../shared not found (BT_SHARED_DIR=%s)\n", what, dir ? dir : "unset");
        return NULL;
    }
    return dir;
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
        return NULL;
    }
    return p;
}
