/*
 * llamacpp.c - what llama.cpp-exact numerics need (llamacpp.h). Plain C: safe to call on any
 * x86-64 CPU before choosing llamacpp_avx2.c.
 */
#include "llamacpp.h"

#include "cpu.h"

bool bt_lc_cpu_ok(void) {
    return bt_cpu_has(BT_CPU_AVX2) && bt_cpu_has(BT_CPU_FMA) && bt_cpu_has(BT_CPU_F16C);
}

bool bt_lc_type_ok(bt_type type) {
    return type == BT_TYPE_Q4_1 || type == BT_TYPE_Q8_0;
}

bool bt_lc_head_dim_ok(int head_dim) {
    return head_dim > 0 && head_dim % 64 == 0 && head_dim <= BT_LC_MAX_HEAD_DIM;
}
