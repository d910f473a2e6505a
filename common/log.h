/*
 * log.h - leveled logging to stderr. Thread-safe (one fprintf per line).
 * The level is process-wide configuration set once at start-up (bt_log_set_level).
 */
#ifndef BT_LOG_H
#define BT_LOG_H

#include <stdbool.h>

typedef enum bt_log_level { BT_LOG_DEBUG, BT_LOG_INFO, BT_LOG_WARN, BT_LOG_ERROR } bt_log_level;

void bt_log_set_level(bt_log_level level);
/* Whether a message of this level would be printed (to skip preparing one that would not). */
bool bt_log_enabled(bt_log_level level);
void bt_log(bt_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define BT_DEBUG(...) bt_log(BT_LOG_DEBUG, __VA_ARGS__)
#define BT_INFO(...) bt_log(BT_LOG_INFO, __VA_ARGS__)
#define BT_WARN(...) bt_log(BT_LOG_WARN, __VA_ARGS__)
#define BT_ERROR(...) bt_log(BT_LOG_ERROR, __VA_ARGS__)

#endif
