/* sampling.c - defaults and validation of sampling parameters. */
#include "sampling.h"

#include <math.h>

bt_sampler_params bt_sampler_default_params(void) {
    return (bt_sampler_params){.temperature = 0.0f,
                               .top_k = 0,
                               .top_p = 1.0f,
                               .min_p = 0.0f,
                               .typical_p = 1.0f,
                               .repetition_penalty = 1.0f,
                               .presence_penalty = 0.0f,
                               .frequency_penalty = 0.0f,
                               .min_tokens = 0,
                               .top_logprobs = 0,
                               .n_logit_bias = 0,
                               .seed = 0};
}

static int in_range(float x, float lo, float hi) {
    return isfinite(x) && x >= lo && x <= hi;
}

bt_status bt_sampler_params_validate(const bt_sampler_params *p, int32_t n_vocab, bt_error *err) {
    if (!in_range(p->temperature, 0.0f, 100.0f))
        return bt_error_set(err, BT_ERR_RANGE, "temperature %g is outside [0, 100]",
                            (double)p->temperature);
    if (p->top_k < 0)
        return bt_error_set(err, BT_ERR_RANGE, "top_k %d is negative", p->top_k);
    if (!in_range(p->top_p, 0.0f, 1.0f) || p->top_p == 0.0f)
        return bt_error_set(err, BT_ERR_RANGE, "top_p %g is outside (0, 1]", (double)p->top_p);
    if (!in_range(p->min_p, 0.0f, 1.0f))
        return bt_error_set(err, BT_ERR_RANGE, "min_p %g is outside [0, 1]", (double)p->min_p);
    if (!in_range(p->typical_p, 0.0f, 1.0f) || p->typical_p == 0.0f)
        return bt_error_set(err, BT_ERR_RANGE, "typical_p %g is outside (0, 1]",
                            (double)p->typical_p);
    if (!in_range(p->repetition_penalty, 0.0f, 10.0f) || p->repetition_penalty == 0.0f)
        return bt_error_set(err, BT_ERR_RANGE, "repetition_penalty %g is outside (0, 10]",
                            (double)p->repetition_penalty);
    if (!in_range(p->presence_penalty, -2.0f, 2.0f))
        return bt_error_set(err, BT_ERR_RANGE, "presence_penalty %g is outside [-2, 2]",
                            (double)p->presence_penalty);
    if (!in_range(p->frequency_penalty, -2.0f, 2.0f))
        return bt_error_set(err, BT_ERR_RANGE, "frequency_penalty %g is outside [-2, 2]",
                            (double)p->frequency_penalty);
    if (p->min_tokens < 0)
        return bt_error_set(err, BT_ERR_RANGE, "min_tokens %d is negative", p->min_tokens);
    if (p->top_logprobs < 0 || p->top_logprobs > BT_MAX_TOP_LOGPROBS)
        return bt_error_set(err, BT_ERR_RANGE, "top_logprobs %d is outside [0, %d]",
                            p->top_logprobs, BT_MAX_TOP_LOGPROBS);
    if (p->n_logit_bias < 0 || p->n_logit_bias > BT_MAX_LOGIT_BIAS)
        return bt_error_set(err, BT_ERR_RANGE, "logit_bias has %d entries, at most %d",
                            p->n_logit_bias, BT_MAX_LOGIT_BIAS);
    for (int i = 0; i < p->n_logit_bias; i++) {
        const bt_logit_bias *b = &p->logit_bias[i];
        if (b->token < 0 || (n_vocab > 0 && b->token >= n_vocab))
            return bt_error_set(err, BT_ERR_RANGE, "logit_bias token %d is outside [0, %d)",
                                b->token, n_vocab);
        if (!in_range(b->bias, -100.0f, 100.0f))
            return bt_error_set(err, BT_ERR_RANGE,
                                "logit_bias for token %d: %g is outside "
                                "[-100, 100]",
                                b->token, (double)b->bias);
    }
    return BT_OK;
}
