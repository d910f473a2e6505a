/* status.c - status strings and the bt_error helpers. */
#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *bt_status_str(bt_status st) {
    static const char *const names[] = {
#define BT_STATUS_NAME(name, text) text,
        BT_STATUS_LIST(BT_STATUS_NAME)
#undef BT_STATUS_NAME
    };
    if ((unsigned)st >= BT_STATUS_COUNT)
        return "unknown status";
    return names[st];
}

void bt_error_init(bt_error *err) {
    err->status = BT_OK;
    err->msg[0] = '\0';
}

bt_status bt_error_set(bt_error *err, bt_status status, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->status = status;
    }
    return status;
}

bt_status bt_error_wrap(bt_error *err, const char *fmt, ...) {
    if (!err)
        return BT_ERR_INTERNAL;
    char prefix[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    char old[sizeof err->msg];
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
    return err->status;
}
