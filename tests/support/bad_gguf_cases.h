/*
 * bad_gguf_cases.h - the table of malformed GGUF files, one defect each, shared by
 * tests/unit/test_gguf.c (in memory), tests/tools/make_bad_gguf.c (to files) and the fuzz
 * seed corpus. Every case is a small valid file (bt_bad_gguf_build_valid) with exactly one
 * thing broken; `expect` is a substring the reader's error message must contain (usually
 * the field name and value).
 *
 * Pure functions over static data; any thread.
 */
#ifndef BT_BAD_GGUF_CASES_H
#define BT_BAD_GGUF_CASES_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

size_t bt_bad_gguf_n_cases(void);
const char *bt_bad_gguf_name(size_t i);   /* file-name stem, e.g. "trunc_mid_key" */
const char *bt_bad_gguf_expect(size_t i); /* substring of the reader's err->msg */

/* Builds case i into a malloc'd buffer (*buf owned by the caller, free()); *size may be 0. */
bt_status bt_bad_gguf_build(size_t i, uint8_t **buf, size_t *size);

/* The valid file every case is derived from (2 tensors f32/q8_0, a few kvs). */
bt_status bt_bad_gguf_build_valid(uint8_t **buf, size_t *size);

#endif
