/* proc_space.c - the machine and pid namespace of this process (see proc_space.h). */
#include "proc_space.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void bt_proc_space(char *buf, size_t cap) {
    if (cap > 0)
        buf[0] = '\0';
    char boot[64] = "";
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, boot, sizeof boot - 1);
    close(fd);
    if (n <= 0)
        return;
    boot[n] = '\0';
    boot[strcspn(boot, "\n")] = '\0';
    struct stat ns;
    if (!boot[0] || stat("/proc/self/ns/pid", &ns) != 0)
        return;
    snprintf(buf, cap, "%s/%llu:%llu", boot, (unsigned long long)ns.st_dev,
             (unsigned long long)ns.st_ino);
}
