/*
 * check.h - the unit tests' few assertion macros. A failed check prints file:line and the
 * values and counts as a failure; the test goes on. check_finish() prints the closing line
 * "N passed, N failed, N skipped" and returns the process exit code: 1 when a check failed,
 * else 77 (ctest's SKIP_RETURN_CODE) when a part was skipped, else 0.
 *
 * Only the real model may be absent (check_model_path: a SKIP line, the part is counted as
 * skipped). Data that ships with the repository (tests/data, ../shared/testdata) and the
 * build's own tools are required: when missing, the check_*_dir helpers record a failure.
 */
#ifndef BT_CHECK_H
#define BT_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

extern int bt_check_passed, bt_check_failed, bt_check_skipped;

void check_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int check_finish(void);
/* Required directories, from the environment ctest sets: ../shared (BT_SHARED_DIR),
 * tests/data (BT_TEST_DATA), the build directory (BT_BUILD_DIR). NULL, with a failure naming
 * `what`, the variable and its value, when unset or unreadable. */
const char *check_shared_dir(const char *what);
const char *check_data_dir(const char *what);
const char *check_build_dir(const char *what);
/* Makes a tiny random 6-layer Q4_1 llama with make_tiny_model (BT_BUILD_DIR) at
 * /tmp/bt_<tag>_<pid>.gguf; returns that path (static storage, one per process) or NULL after
 * a failure naming the step. The caller unlinks it. */
const char *check_make_tiny_model(const char *tag);
/* Default model path (BATON_MODEL, else ~/.cache/baton/SmolLM2-135M-Instruct.Q4_1.gguf) if it
 * exists, else NULL, printing a SKIP line naming `what` and counting one skipped part. */
const char *check_model_path(const char *what);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond)                                                                                  \
            bt_check_passed++;                                                                     \
        else                                                                                       \
            check_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                                    \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long va_ = (long long)(a), vb_ = (long long)(b);                                      \
        if (va_ == vb_)                                                                            \
            bt_check_passed++;                                                                     \
        else                                                                                       \
            check_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, va_, vb_);            \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                      \
    do {                                                                                           \
        double va_ = (double)(a), vb_ = (double)(b);                                               \
        if (fabs(va_ - vb_) <= (double)(tol))                                                      \
            bt_check_passed++;                                                                     \
        else                                                                                       \
            check_fail(__FILE__, __LINE__, "%s ~ %s: %.9g vs %.9g (tol %g)", #a, #b, va_, vb_,     \
                       (double)(tol));                                                             \
    } while (0)

#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        bt_error err_;                                                                             \
        bt_error_init(&err_);                                                                      \
        (void)err_;                                                                                \
        bt_status st_ = (expr);                                                                    \
        if (st_ == BT_OK)                                                                          \
            bt_check_passed++;                                                                     \
        else                                                                                       \
            check_fail(__FILE__, __LINE__, "%s: %s", #expr, bt_status_str(st_));                   \
    } while (0)

#endif
