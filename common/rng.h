/*
 * rng.h - the random number generator of sampling and benchmarks: xoshiro256** seeded
 * through splitmix64. State is the caller's (one per sequence); no globals.
 */
#ifndef BT_RNG_H
#define BT_RNG_H

#include <stdint.h>

typedef struct bt_rng {
    uint64_t s[4];
} bt_rng;

void bt_rng_seed(bt_rng *r, uint64_t seed);
uint64_t bt_rng_next(bt_rng *r);
double bt_rng_uniform(bt_rng *r); /* [0, 1) with 53 bits */

#endif
