/*
 * sampling.h - the sampling parameters of one sequence: chosen by the coordinator (CLI, HTTP
 * request), validated there, carried in the protocol, applied on the last stage
 * (worker/sampler.h). Plain data; thread-safe.
 */
#ifndef BT_SAMPLING_H
#define BT_SAMPLING_H

#include <stdint.h>

#include "status.h"

typedef struct bt_sampler_params {
    float temperature; /* 0 = greedy */
    int32_t top_k;     /* 0 = off */
    float top_p;       /* 1 = off */
    float min_p;       /* 0 = off */
    uint64_t seed;
} bt_sampler_params;

bt_sampler_params bt_sampler_default_params(void);

/* Range checks; the message names the parameter and its value. */
bt_status bt_sampler_params_validate(const bt_sampler_params *p, bt_error *err);

#endif
