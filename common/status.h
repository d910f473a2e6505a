/*
 * status.h - error codes shared by every module.
 *
 * Fallible functions return a bt_status. Where a caller needs to know *what* was wrong (the
 * field, the value), they also take a `bt_error *err` (may be NULL) that receives one
 * human-readable line. The list below is the single source of both the enum and
 * bt_status_str().
 */
#ifndef BT_STATUS_H
#define BT_STATUS_H

#include <stddef.h>

#define BT_STATUS_LIST(X)                                                                          \
    X(BT_OK, "ok")                                                                                 \
    X(BT_ERR_IO, "i/o error")                                                                      \
    X(BT_ERR_NOMEM, "out of memory")                                                               \
    X(BT_ERR_FORMAT, "malformed input")                                                            \
    X(BT_ERR_UNSUPPORTED, "unsupported")                                                           \
    X(BT_ERR_NOT_FOUND, "not found")                                                               \
    X(BT_ERR_INVALID_ARG, "invalid argument")                                                      \
    X(BT_ERR_RANGE, "out of range")                                                                \
    X(BT_ERR_LIMIT, "limit exceeded")                                                              \
    X(BT_ERR_PROTOCOL, "protocol error")                                                           \
    X(BT_ERR_TIMEOUT, "timeout")                                                                   \
    X(BT_ERR_INTERNAL, "internal error")                                                           \
    X(BT_ERR_BUSY, "busy")               /* a bounded queue is full: retry later */                \
    X(BT_ERR_UNAVAILABLE, "unavailable") /* not ready, draining, or the cluster failed */

typedef enum bt_status {
#define BT_STATUS_ENUM(name, text) name,
    BT_STATUS_LIST(BT_STATUS_ENUM)
#undef BT_STATUS_ENUM
        BT_STATUS_COUNT
} bt_status;

/* Static string for a code; never NULL. */
const char *bt_status_str(bt_status st);

/* One line describing the last failure. Caller's storage; bt_error_init() before use. */
typedef struct bt_error {
    bt_status status;
    char msg[512];
} bt_error;

void bt_error_init(bt_error *err);

/* Records status and a printf-style message in err (if non-NULL) and returns status, so a
 * failure site reads `return bt_error_set(err, BT_ERR_FORMAT, "gguf: n_dims %u > 4", n);`. */
bt_status bt_error_set(bt_error *err, bt_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes the existing message with context: "loading blk.3: <old message>". */
bt_status bt_error_wrap(bt_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
