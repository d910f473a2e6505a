/* log.c - stderr logger. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>

static bt_log_level g_level = BT_LOG_WARN; /* configuration, set before threads start */

void bt_log_set_level(bt_log_level level) {
    g_level = level;
}

bool bt_log_enabled(bt_log_level level) {
    return level >= g_level;
}

void bt_log(bt_log_level level, const char *fmt, ...) {
    static const char *const tags[] = {"debug", "info", "warn", "error"};
    if (level < g_level)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "baton %s: %s\n", tags[level], line);
}
