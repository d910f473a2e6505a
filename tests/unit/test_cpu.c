/*
 * test_cpu.c - bt_cpu_has (common/cpu.h) gives the answers the compiler's own
 * __builtin_cpu_supports gives, for every feature the compiler knows (clang 14 knows no
 * "f16c"; there F16C is checked to imply AVX, as CPUID and XCR0 make it).
 */
#include <string.h>

#include "check.h"
#include "cpu.h"

static void test_names(void) {
    CHECK(strcmp(bt_cpu_feature_name(BT_CPU_AVX2), "avx2") == 0);
    CHECK(strcmp(bt_cpu_feature_name(BT_CPU_AVX512VNNI), "avx512vnni") == 0);
    CHECK(strcmp(bt_cpu_feature_name(BT_CPU_FEATURE_COUNT), "unknown") == 0);
    CHECK(!bt_cpu_has(BT_CPU_FEATURE_COUNT));
    CHECK(!bt_cpu_has((bt_cpu_feature)-1));
}

#if defined(__x86_64__) || defined(__i386__)
static void test_matches_builtin(void) {
    __builtin_cpu_init();
#define SAME(feature, text)                                                                        \
    CHECK_EQ_INT(bt_cpu_has(BT_CPU_##feature), !!__builtin_cpu_supports(text))
    SAME(AVX, "avx");
    SAME(FMA, "fma");
    SAME(AVX2, "avx2");
    SAME(AVX512F, "avx512f");
    SAME(AVX512DQ, "avx512dq");
    SAME(AVX512BW, "avx512bw");
    SAME(AVX512VL, "avx512vl");
    SAME(AVX512VNNI, "avx512vnni");
#if defined(__clang__)
    CHECK(!bt_cpu_has(BT_CPU_F16C) || bt_cpu_has(BT_CPU_AVX));
#else
    SAME(F16C, "f16c");
#endif
#undef SAME
    /* The AVX-512 family needs more OS state than the AVX family. */
    CHECK(!bt_cpu_has(BT_CPU_AVX512F) || bt_cpu_has(BT_CPU_AVX));
    for (int f = 0; f < BT_CPU_FEATURE_COUNT; f++)
        printf("%s %d\n", bt_cpu_feature_name((bt_cpu_feature)f), bt_cpu_has((bt_cpu_feature)f));
}
#endif

int main(void) {
    test_names();
#if defined(__x86_64__) || defined(__i386__)
    test_matches_builtin();
#endif
    return check_finish();
}
