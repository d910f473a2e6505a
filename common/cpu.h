/*
 * cpu.h - which x86 instruction sets this CPU and its OS let us use, for choosing kernels.
 *
 * One answer for GCC and clang: clang 14's __builtin_cpu_supports knows no "f16c", so every
 * check reads CPUID and XCR0 here. A feature counts only when the OS saves the registers it
 * needs (XCR0 via xgetbv, the way GCC's __builtin_cpu_supports decides): the AVX family needs
 * the SSE and YMM state, the AVX-512 family also the opmask and both ZMM states. On other
 * architectures every feature is absent.
 *
 * Thread-safe: the answers are computed once (a benign race: every thread computes the same
 * bits) and only read afterwards.
 */
#ifndef BT_CPU_H
#define BT_CPU_H

#include <stdbool.h>

/* name, CPUID leaf, subleaf, register (0 eax .. 3 edx), bit, OS state it needs */
#define BT_CPU_FEATURE_LIST(X)                                                                     \
    X(AVX, "avx", 1, 0, 2, 28, BT_CPU_STATE_YMM)                                                   \
    X(FMA, "fma", 1, 0, 2, 12, BT_CPU_STATE_YMM)                                                   \
    X(F16C, "f16c", 1, 0, 2, 29, BT_CPU_STATE_YMM)                                                 \
    X(AVX2, "avx2", 7, 0, 1, 5, BT_CPU_STATE_YMM)                                                  \
    X(AVX512F, "avx512f", 7, 0, 1, 16, BT_CPU_STATE_ZMM)                                           \
    X(AVX512DQ, "avx512dq", 7, 0, 1, 17, BT_CPU_STATE_ZMM)                                         \
    X(AVX512BW, "avx512bw", 7, 0, 1, 30, BT_CPU_STATE_ZMM)                                         \
    X(AVX512VL, "avx512vl", 7, 0, 1, 31, BT_CPU_STATE_ZMM)                                         \
    X(AVX512VNNI, "avx512vnni", 7, 0, 2, 11, BT_CPU_STATE_ZMM)

typedef enum bt_cpu_feature {
#define BT_CPU_FEATURE_ENUM(name, text, leaf, sub, reg, bit, state) BT_CPU_##name,
    BT_CPU_FEATURE_LIST(BT_CPU_FEATURE_ENUM)
#undef BT_CPU_FEATURE_ENUM
        BT_CPU_FEATURE_COUNT
} bt_cpu_feature;

/* Whether this CPU has feature f and the OS saves the registers it uses. */
bool bt_cpu_has(bt_cpu_feature f);

/* The feature's lower-case name ("avx2"), as __builtin_cpu_supports spells it. */
const char *bt_cpu_feature_name(bt_cpu_feature f);

#endif
