/* sampling.c - defaults and validation of sampling parameters, expanded from
 * BT_SAMPLER_PARAM_LIST (sampling.h). */
#include "sampling.h"

#include <math.h>
#include <string.h>

bt_sampler_params bt_sampler_default_params(void) {
    bt_sampler_params p;
    memset(&p, 0, sizeof p);
#define BT_SAMPLER_OFF(kind, field, min, max, off, ...) p.field = (BT_PARAM_CTYPE_##kind)(off);
    BT_SAMPLER_PARAM_LIST(BT_SAMPLER_OFF)
#undef BT_SAMPLER_OFF
    return p;
}

bt_status bt_param_check(const char *name, bt_param_kind kind, double v, double min, double max,
                         bt_error *err) {
    if (kind == BT_PARAM_BOOL) {
        if (v != 0 && v != 1)
            return bt_error_set(err, BT_ERR_RANGE, "%s %g is not a boolean (0 or 1)", name, v);
        return BT_OK;
    }
    if (kind == BT_PARAM_FLOAT) { /* stored as float: the range holds in float */
        if (!isfinite(v) || (float)v < (float)min || (float)v > (float)max)
            return bt_error_set(err, BT_ERR_RANGE, "%s %g is outside [%g, %g]", name, v, min, max);
        return BT_OK;
    }
    if (!isfinite(v) || v < min || v > max)
        return bt_error_set(err, BT_ERR_RANGE, "%s %.17g is outside [%.17g, %.17g]", name, v, min,
                            max);
    if (v != floor(v))
        return bt_error_set(err, BT_ERR_RANGE, "%s %.17g is not an integer", name, v);
    return BT_OK;
}

bt_status bt_sampler_params_validate(const bt_sampler_params *p, int32_t n_vocab, bt_error *err) {
    bt_status st;
#define BT_SAMPLER_CHECK(kind, field, min, max, ...)                                               \
    if ((st = bt_param_check(#field, BT_PARAM_##kind, (double)p->field, min, max, err)) != BT_OK)  \
        return st;
    BT_SAMPLER_PARAM_LIST(BT_SAMPLER_CHECK)
#undef BT_SAMPLER_CHECK
    if (p->n_logit_bias < 0 || p->n_logit_bias > BT_MAX_LOGIT_BIAS)
        return bt_error_set(err, BT_ERR_RANGE, "logit_bias has %d entries, at most %d",
                            p->n_logit_bias, BT_MAX_LOGIT_BIAS);
    for (int i = 0; i < p->n_logit_bias; i++) {
        const bt_logit_bias *b = &p->logit_bias[i];
        if (b->token < 0 || (n_vocab > 0 && b->token >= n_vocab))
            return bt_error_set(err, BT_ERR_RANGE, "logit_bias token %d is outside [0, %d)",
                                b->token, n_vocab);
        if (!isfinite(b->bias) || b->bias < -100.0f || b->bias > 100.0f)
            return bt_error_set(err, BT_ERR_RANGE,
                                "logit_bias for token %d: %g is outside "
                                "[-100, 100]",
                                b->token, (double)b->bias);
    }
    if (p->n_stop_token_ids < 0 || p->n_stop_token_ids > BT_MAX_STOP_TOKEN_IDS)
        return bt_error_set(err, BT_ERR_RANGE, "stop_token_ids has %d entries, at most %d",
                            p->n_stop_token_ids, BT_MAX_STOP_TOKEN_IDS);
    for (int i = 0; i < p->n_stop_token_ids; i++) {
        int32_t t = p->stop_token_ids[i];
        if (t < 0 || (n_vocab > 0 && t >= n_vocab))
            return bt_error_set(err, BT_ERR_RANGE, "stop_token_ids[%d] %d is outside [0, %d)", i, t,
                                n_vocab);
    }
    return BT_OK;
}
