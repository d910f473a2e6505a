/*
 * kernel_level.h - lets a test that checks batch invariance run under each kernel family the
 * CPU can execute (ctest registers it again with BATON_KERNELS=scalar|avx2|avx512, which
 * bt_kernels_init honours, as in the shipped binary). A level this CPU lacks is a skip (exit
 * 77), never a silent pass with another level.
 */
#ifndef BT_TEST_KERNEL_LEVEL_H
#define BT_TEST_KERNEL_LEVEL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

/* Returns 77 when BATON_KERNELS asks for a level this CPU cannot run, else 0. */
static inline int bt_test_kernel_level_skip(void) {
    const char *want = getenv("BATON_KERNELS");
    const char *have = bt_kernels_level_name(bt_kernels_level());
    printf("kernels: %s\n", have);
    if (want && strcmp(want, have) != 0) {
        printf("SKIP: BATON_KERNELS=%s, but this CPU runs %s at most\n", want, have);
        return 77;
    }
    return 0;
}

#endif
