/*
 * proc_space.h - which process ids a process can see: its machine (the kernel's boot id) and
 * its pid namespace. Two processes with the same proc_space see the same pid numbers, so one
 * can ask with kill(pid, 0) whether the other still exists; the hostname alone is not enough
 * (containers on one machine, or machines that share a name, would make a live process look
 * gone). Thread-safe.
 */
#ifndef BT_PROC_SPACE_H
#define BT_PROC_SPACE_H

#include <stddef.h>

#define BT_PROC_SPACE_BYTES 96

/* Writes "BOOT_ID/PID_NAMESPACE_INODE" into buf (cap >= BT_PROC_SPACE_BYTES), or "" where the
 * system does not say (not Linux, /proc not mounted): "" never matches anything. */
void bt_proc_space(char *buf, size_t cap);

#endif
