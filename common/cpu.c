/* cpu.c - CPUID and XCR0 behind bt_cpu_has (see cpu.h). */
#include "cpu.h"

#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define CPU_X86 1
#else
#define CPU_X86 0
#endif

/* XCR0 bits: x87, SSE, AVX (YMM upper halves), opmask, ZMM upper halves, ZMM16-31. */
#define XCR0_SSE (1u << 1)
#define XCR0_YMM (1u << 2)
#define XCR0_OPMASK (1u << 5)
#define XCR0_ZMM_HI256 (1u << 6)
#define XCR0_HI16_ZMM (1u << 7)
#define BT_CPU_STATE_YMM (XCR0_SSE | XCR0_YMM)
#define BT_CPU_STATE_ZMM (BT_CPU_STATE_YMM | XCR0_OPMASK | XCR0_ZMM_HI256 | XCR0_HI16_ZMM)

typedef struct feature_def {
    const char *name;
    unsigned leaf, subleaf, reg, bit, state;
} feature_def;

static const feature_def features[BT_CPU_FEATURE_COUNT] = {
#define BT_CPU_FEATURE_DEF(name, text, leaf, sub, reg, bit, state)                                 \
    [BT_CPU_##name] = {text, leaf, sub, reg, bit, state},
    BT_CPU_FEATURE_LIST(BT_CPU_FEATURE_DEF)
#undef BT_CPU_FEATURE_DEF
};

static _Atomic int64_t g_bits = -1; /* bit f set: feature f usable; -1 until computed */

#if CPU_X86
static uint32_t xcr0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    return lo;
}

static int64_t detect(void) {
    unsigned r[4], max_leaf = __get_cpuid_max(0, NULL);
    uint32_t os_state = 0;
    /* leaf 1 ECX bit 27: OSXSAVE, the OS enabled xgetbv and manages XCR0 */
    if (max_leaf >= 1 && __get_cpuid(1, &r[0], &r[1], &r[2], &r[3]) && (r[2] & (1u << 27)))
        os_state = xcr0();
    int64_t bits = 0;
    for (int f = 0; f < BT_CPU_FEATURE_COUNT; f++) {
        const feature_def *d = &features[f];
        if (d->leaf > max_leaf || (os_state & d->state) != d->state)
            continue;
        if (!__get_cpuid_count(d->leaf, d->subleaf, &r[0], &r[1], &r[2], &r[3]))
            continue;
        if (r[d->reg] & (1u << d->bit))
            bits |= (int64_t)1 << f;
    }
    return bits;
}
#else
static int64_t detect(void) {
    return 0;
}
#endif

bool bt_cpu_has(bt_cpu_feature f) {
    if ((unsigned)f >= BT_CPU_FEATURE_COUNT)
        return false;
    int64_t bits = g_bits;
    if (bits < 0)
        g_bits = bits = detect();
    return (bits >> f) & 1;
}

const char *bt_cpu_feature_name(bt_cpu_feature f) {
    return (unsigned)f < BT_CPU_FEATURE_COUNT ? features[f].name : "unknown";
}
