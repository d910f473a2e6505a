/* sampling.c - defaults and validation of sampling parameters. */
#include "sampling.h"

bt_sampler_params bt_sampler_default_params(void) {
    return (bt_sampler_params){
        .temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f, .seed = 0};
}

bt_status bt_sampler_params_validate(const bt_sampler_params *p, bt_error *err) {
    if (!(p->temperature >= 0.0f && p->temperature <= 100.0f))
        return bt_error_set(err, BT_ERR_RANGE, "temperature %g is outside [0, 100]",
                            (double)p->temperature);
    if (p->top_k < 0)
        return bt_error_set(err, BT_ERR_RANGE, "top_k %d is negative", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return bt_error_set(err, BT_ERR_RANGE, "top_p %g is outside (0, 1]", (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return bt_error_set(err, BT_ERR_RANGE, "min_p %g is outside [0, 1]", (double)p->min_p);
    return BT_OK;
}
