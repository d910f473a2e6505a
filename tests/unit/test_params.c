/*
 * test_params.c - the request-parameter table (coordinator/engine/request.h, the sampler part
 * in common/sampling.h): every row's defaults lie in its range; bt_request_param_set refuses
 * just below min and just above max (and non-integers, non-booleans) naming the field;
 * validate refuses an out-of-range field naming it; the CLI and OpenAI defaults; the
 * protobuf copy (proto/msg.h) round-trips every sampler field with non-default values and
 * the stage's re-check refuses bad values naming the field; stop_token_ids limits; the stop
 * matcher with include_stop_str_in_output. Rows are walked generically: a new row is tested
 * without editing this file.
 */
#include <math.h>
#include <string.h>

#include "check.h"
#include "msg.h"
#include "request.h"
#include "stop.h"

#define N_VOCAB 49152

static double eps_for(double bound) {
    return 1e-3 * (fabs(bound) > 1 ? fabs(bound) : 1);
}

static void test_rows(void) {
    size_t n = 0;
    const bt_param_desc *tab = bt_request_param_table(&n);
    CHECK(n >= 20);
    bt_request_params cli = bt_request_default_params_for(BT_PARAM_STYLE_CLI);
    bt_request_params oai = bt_request_default_params_for(BT_PARAM_STYLE_OPENAI);
    bt_request_params def = bt_request_default_params();
    CHECK(memcmp(&cli, &def, sizeof cli) == 0);
    bt_error err;
    for (size_t i = 0; i < n; i++) {
        const bt_param_desc *d = &tab[i];
        bt_error_init(&err);
        CHECK(d->name && d->doc && d->min <= d->max);
        CHECK(bt_request_param_find(d->name) == d);
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(tab[j].name, d->name) != 0);
        /* defaults inside the range, and what default_params_for stores */
        CHECK_OK(bt_param_check(d->name, d->kind, d->cli_default, d->min, d->max, &err));
        CHECK_OK(bt_param_check(d->name, d->kind, d->openai_default, d->min, d->max, &err));
        CHECK_NEAR(bt_request_param_get(&cli, d), d->cli_default, 1e-6);
        CHECK_NEAR(bt_request_param_get(&oai, d), d->openai_default, 1e-6);

        /* set(): the bounds are accepted, just outside is refused naming the field */
        bt_request_params p = bt_request_default_params();
        CHECK_OK(bt_request_param_set(&p, d, d->min, &err));
        CHECK_NEAR(bt_request_param_get(&p, d), d->min, fabs(d->min) * 1e-6);
        CHECK_OK(bt_request_param_set(&p, d, d->max, &err));
        CHECK_NEAR(bt_request_param_get(&p, d), d->max, fabs(d->max) * 1e-6);
        double lo = d->min - eps_for(d->min), hi = d->max + eps_for(d->max);
        bt_request_params before = p;
        CHECK_EQ_INT(bt_request_param_set(&p, d, lo, &err), BT_ERR_RANGE);
        if (!strstr(err.msg, d->name))
            check_fail(__FILE__, __LINE__, "set %s %g: \"%s\" does not name it", d->name, lo,
                       err.msg);
        CHECK_EQ_INT(bt_request_param_set(&p, d, hi, &err), BT_ERR_RANGE);
        if (!strstr(err.msg, d->name))
            check_fail(__FILE__, __LINE__, "set %s %g: \"%s\" does not name it", d->name, hi,
                       err.msg);
        CHECK_EQ_INT(bt_request_param_set(&p, d, NAN, &err), BT_ERR_RANGE);
        CHECK(memcmp(&p, &before, sizeof p) == 0); /* refused values leave p as it was */
        if (d->kind != BT_PARAM_FLOAT) {
            double mid = d->kind == BT_PARAM_BOOL ? 0.5 : d->min + 0.5;
            CHECK_EQ_INT(bt_request_param_set(&p, d, mid, &err), BT_ERR_RANGE);
            CHECK(strstr(err.msg, d->name) != NULL);
        }

        /* validate(): the same range, naming the field, on a value stored behind set()'s
         * back (bools and the full-range seed cannot hold one) */
        if (d->kind == BT_PARAM_INT || d->kind == BT_PARAM_FLOAT) {
            bt_request_params q = bt_request_default_params();
            void *f = (char *)&q + d->offset;
            if (d->kind == BT_PARAM_INT)
                *(int32_t *)f = (int32_t)d->max + 1;
            else
                *(float *)f = (float)hi;
            bt_error_init(&err);
            CHECK_EQ_INT(bt_request_params_validate(&q, N_VOCAB, &err), BT_ERR_RANGE);
            if (!strstr(err.msg, d->name))
                check_fail(__FILE__, __LINE__, "validate %s: \"%s\" does not name it", d->name,
                           err.msg);
        }
    }
    CHECK(bt_request_param_find("no_such_param") == NULL);
    CHECK(bt_request_param_find(NULL) == NULL);
}

static void test_styles(void) {
    bt_request_params o = bt_request_default_params_for(BT_PARAM_STYLE_OPENAI);
    CHECK_NEAR(o.sampling.temperature, 1, 0);
    CHECK_NEAR(o.sampling.top_p, 1, 0);
    CHECK_EQ_INT(o.sampling.top_k, 0);
    CHECK_NEAR(o.sampling.min_p, 0, 0);
    CHECK_NEAR(o.sampling.typical_p, 1, 0);
    CHECK_NEAR(o.sampling.repetition_penalty, 1, 0);
    CHECK_EQ_INT(o.max_tokens, 16);
    CHECK_EQ_INT(o.n, 1);
    CHECK(o.skip_special_tokens && !o.include_stop_str_in_output && !o.ignore_eos);
    CHECK_OK(bt_request_params_validate(&o, N_VOCAB, NULL));

    /* baton generate's defaults, as they were before the table */
    bt_request_params c = bt_request_default_params();
    CHECK_NEAR(c.sampling.temperature, 0.8, 1e-7);
    CHECK_EQ_INT(c.sampling.top_k, 40);
    CHECK_NEAR(c.sampling.top_p, 0.95, 1e-7);
    CHECK_NEAR(c.sampling.min_p, 0.05, 1e-7);
    CHECK_EQ_INT(c.max_tokens, 128);
    CHECK(c.skip_special_tokens && !c.include_stop_str_in_output);
    CHECK_OK(bt_request_params_validate(&c, N_VOCAB, NULL));

    /* the sampler's own defaults: every step off */
    bt_sampler_params s = bt_sampler_default_params();
    CHECK_NEAR(s.temperature, 0, 0);
    CHECK_EQ_INT(s.top_k, 0);
    CHECK_NEAR(s.top_p, 1, 0);
    CHECK_EQ_INT(s.n_stop_token_ids, 0);
}

/* A value inside d's range that differs from every default (row i varies it). */
static double other_value(const bt_param_desc *d, size_t i) {
    double v = d->min + (d->max - d->min) * (0.3 + 0.01 * (double)i);
    if (d->kind == BT_PARAM_U64)
        return 12345678901234567.0;
    if (d->kind != BT_PARAM_FLOAT)
        v = floor(v);
    if (v == d->cli_default || v == d->openai_default)
        v = d->kind == BT_PARAM_FLOAT ? v * 0.9 + d->min * 0.1 : v + 1;
    return v;
}

static void test_proto_round_trip(void) {
    size_t n = 0;
    const bt_param_desc *tab = bt_request_param_table(&n);
    bt_request_params p = bt_request_default_params();
    bt_request_params base = p;
    bt_error err;
    bt_error_init(&err);
    size_t off0 = offsetof(bt_request_params, sampling);
    int n_sampler = 0;
    for (size_t i = 0; i < n; i++) {
        const bt_param_desc *d = &tab[i];
        if (d->offset < off0 || d->offset >= off0 + sizeof(bt_sampler_params))
            continue;
        n_sampler++;
        CHECK_OK(bt_request_param_set(&p, d, other_value(d, i), &err));
        CHECK(bt_request_param_get(&p, d) != bt_request_param_get(&base, d));
    }
    CHECK(n_sampler >= 11);
    p.sampling.seed = 0xFEDCBA9876543210ull; /* all 64 bits */
    p.sampling.n_logit_bias = 3;
    for (int i = 0; i < 3; i++)
        p.sampling.logit_bias[i] = (bt_logit_bias){100 + 7 * i, -1.5f + (float)i};
    CHECK_OK(bt_request_params_add_stop_token_id(&p, 2, &err));
    CHECK_OK(bt_request_params_add_stop_token_id(&p, N_VOCAB - 1, &err));
    CHECK_OK(bt_sampler_params_validate(&p.sampling, N_VOCAB, &err));

    Baton__SamplingParams sp;
    baton__sampling_params__init(&sp);
    int32_t bt[BT_MAX_LOGIT_BIAS];
    float bv[BT_MAX_LOGIT_BIAS];
    sp.seq = 5;
    bt_msg_sampling_pack(&p.sampling, &sp, bt, bv);
    uint8_t buf[4096];
    size_t len = baton__sampling_params__get_packed_size(&sp);
    CHECK(len <= sizeof buf);
    baton__sampling_params__pack(&sp, buf);
    Baton__SamplingParams *got = baton__sampling_params__unpack(NULL, len, buf);
    CHECK(got != NULL);
    if (!got)
        return;
    bt_sampler_params out;
    CHECK_OK(bt_msg_sampling_unpack(got, N_VOCAB, &out, &err));
    CHECK(memcmp(&out, &p.sampling, sizeof out) == 0);
    bt_request_params back = p;
    back.sampling = out;
    for (size_t i = 0; i < n; i++)
        if (bt_request_param_get(&back, &tab[i]) != bt_request_param_get(&p, &tab[i]))
            check_fail(__FILE__, __LINE__, "%s did not survive the protobuf copy", tab[i].name);
    CHECK(out.seed == 0xFEDCBA9876543210ull);
    CHECK_EQ_INT(out.n_stop_token_ids, 2);
    CHECK_EQ_INT(out.stop_token_ids[1], N_VOCAB - 1);

    /* the stage's re-check: the same ranges, a protocol error naming seq and field */
    got->top_k = -1;
    CHECK_EQ_INT(bt_msg_sampling_unpack(got, N_VOCAB, &out, &err), BT_ERR_PROTOCOL);
    CHECK(strstr(err.msg, "top_k -1") && strstr(err.msg, "seq 5"));
    CHECK_EQ_INT(err.status, BT_ERR_PROTOCOL);
    got->top_k = 3;
    got->stop_token_ids[0] = N_VOCAB;
    CHECK_EQ_INT(bt_msg_sampling_unpack(got, N_VOCAB, &out, &err), BT_ERR_PROTOCOL);
    CHECK(strstr(err.msg, "stop_token_ids") != NULL);
    got->stop_token_ids[0] = 2;
    got->temperature = NAN;
    CHECK_EQ_INT(bt_msg_sampling_unpack(got, N_VOCAB, &out, &err), BT_ERR_PROTOCOL);
    CHECK(strstr(err.msg, "temperature") != NULL);
    baton__sampling_params__free_unpacked(got, NULL);
}

static void test_stop_token_ids(void) {
    bt_error err;
    bt_error_init(&err);
    bt_request_params p = bt_request_default_params();
    CHECK_EQ_INT(bt_request_params_add_stop_token_id(&p, -1, &err), BT_ERR_RANGE);
    CHECK(strstr(err.msg, "stop_token_ids") != NULL);
    for (int i = 0; i < BT_MAX_STOP_TOKEN_IDS; i++)
        CHECK_OK(bt_request_params_add_stop_token_id(&p, i, &err));
    CHECK_EQ_INT(bt_request_params_add_stop_token_id(&p, 99, &err), BT_ERR_RANGE);
    CHECK(strstr(err.msg, "stop_token_ids") && strstr(err.msg, "16"));
    CHECK_OK(bt_request_params_validate(&p, N_VOCAB, &err));
    p.sampling.stop_token_ids[3] = N_VOCAB;
    CHECK_EQ_INT(bt_request_params_validate(&p, N_VOCAB, &err), BT_ERR_RANGE);
    CHECK(strstr(err.msg, "stop_token_ids[3] 49152") != NULL);
    CHECK_OK(bt_request_params_validate(&p, 0, &err)); /* no vocabulary: no upper bound */
    CHECK(bt_sampler_is_stop_token(&p.sampling, N_VOCAB));
    CHECK(!bt_sampler_is_stop_token(&p.sampling, 3));

    bt_request_params b = bt_request_default_params();
    b.sampling.temperature = 0;
    b.beam_width = 2;
    CHECK_OK(bt_request_params_validate(&b, N_VOCAB, &err));
    CHECK_OK(bt_request_params_add_stop_token_id(&b, 5, &err));
    CHECK_EQ_INT(bt_request_params_validate(&b, N_VOCAB, &err), BT_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "stop_token_ids") != NULL);
}

/* include_stop_str_in_output: the matched stop string is emitted, nothing after it. */
static void test_include_stop_str(void) {
    static const char stops[2][BT_STOP_MAX_BYTES + 1] = {"END", "zz"};
    char out[64 + BT_STOP_MAX_BYTES], all[256];
    size_t n_all = 0, w;
    bt_stop m;
    bt_stop_init(&m, stops, 2);
    CHECK(!m.include_match);
    m.include_match = true;
    const char *pieces[] = {"hello E", "N", "D tail", "more"};
    bool hit = false;
    for (int i = 0; i < 4; i++) {
        hit = bt_stop_push(&m, pieces[i], strlen(pieces[i]), out, &w);
        memcpy(all + n_all, out, w);
        n_all += w;
    }
    all[n_all] = '\0';
    CHECK(hit && m.matched);
    CHECK(strcmp(all, "hello END") == 0);

    bt_stop_init(&m, stops, 2); /* without: the stop string stays out */
    n_all = 0;
    for (int i = 0; i < 4; i++) {
        bt_stop_push(&m, pieces[i], strlen(pieces[i]), out, &w);
        memcpy(all + n_all, out, w);
        n_all += w;
    }
    all[n_all] = '\0';
    CHECK(strcmp(all, "hello ") == 0);
}

int main(void) {
    test_rows();
    test_styles();
    test_proto_round_trip();
    test_stop_token_ids();
    test_include_stop_str();
    return check_finish();
}
