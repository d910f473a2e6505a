/*
 * llamacpp.c - what llama.cpp-exact numerics need (llamacpp.h). Plain C: safe to call on any
 * x86-64 CPU before choosing llamacpp_avx2.c.
 */
#include "llamacpp.h"

bool bt_lc_cpu_ok(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
#else
    return false;
#endif
}

bool bt_lc_type_ok(bt_type type) {
    return type == BT_TYPE_Q4_1 || type == BT_TYPE_Q8_0;
}

bool bt_lc_head_dim_ok(int head_dim) {
    return head_dim > 0 && head_dim % 64 == 0 && head_dim <= BT_LC_MAX_HEAD_DIM;
}
