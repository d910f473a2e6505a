/*
 * numerics.h - which arithmetic the stages' forward passes use. Both roles need it: the
 * coordinator parses --numerics and sends it in Hello, a stage applies it (worker/forward.h).
 *
 *   BT_NUMERICS_FAST      baton's own batch-invariant kernels (the default);
 *   BT_NUMERICS_LLAMACPP  llama.cpp's CPU arithmetic reproduced bit for bit
 *                         (worker/llamacpp.h): the same logits as llama.cpp when the batches
 *                         are the same, at a lower prompt speed.
 */
#ifndef BT_NUMERICS_H
#define BT_NUMERICS_H

#include "status.h"

typedef enum bt_numerics { BT_NUMERICS_FAST = 0, BT_NUMERICS_LLAMACPP = 1 } bt_numerics;

#define BT_NUMERICS_MAX BT_NUMERICS_LLAMACPP

const char *bt_numerics_name(bt_numerics n); /* "fast" or "llamacpp" */
/* "fast" or "llamacpp" -> *out; BT_ERR_INVALID_ARG naming the value for anything else. */
bt_status bt_numerics_parse(const char *s, bt_numerics *out, bt_error *err);

#endif
