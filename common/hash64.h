/*
 * hash64.h - a fast 64-bit hash of bytes (the XXH64 algorithm, written out here): what each
 * chunk of a shipped slice is checked with, on the wire and again in the slice cache
 * (worker/slice.h). Not cryptographic: it finds torn, truncated and flipped bytes, not an
 * adversary's forgery.
 *
 * Pure and reentrant; any thread.
 */
#ifndef BT_HASH64_H
#define BT_HASH64_H

#include <stddef.h>
#include <stdint.h>

/* XXH64 of p[0..n) with the given seed; equal to the reference implementation's value
 * (tests/unit/test_slice.c checks the published vectors). */
uint64_t bt_hash64(const void *p, size_t n, uint64_t seed);

#endif
