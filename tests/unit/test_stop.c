/*
 * test_stop.c - the stop-string matcher (coordinator/stop.h) against a direct computation:
 * for a text cut into pieces in every way we try, the concatenated output must equal the
 * text up to the earliest occurrence of any stop string (or the whole text), no byte of the
 * stop string may ever be emitted, and text that cannot start a stop string must not be held.
 * Also the request-level validation of stop strings.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "request.h"
#include "stop.h"

typedef char stop_list[BT_MAX_STOP][BT_STOP_MAX_BYTES + 1];

static void set_stops(stop_list l, const char *const *s, int n) {
    for (int i = 0; i < n; i++)
        snprintf(l[i], BT_STOP_MAX_BYTES + 1, "%s", s[i]);
}

/* Expected output: text up to the earliest occurrence of any stop string. */
static size_t expected(const char *text, const char *const *stops, int n, int *matched) {
    size_t len = strlen(text), best = len;
    *matched = 0;
    for (int i = 0; i < n; i++) {
        const char *p = strstr(text, stops[i]);
        if (p && (size_t)(p - text) < best) {
            best = (size_t)(p - text);
            *matched = 1;
        }
    }
    return best;
}

/* Feeds text in pieces of the sizes cuts[] (cyclic), checks the result. */
static void run_case(const char *text, const char *const *stops, int n_stop, const int *cuts,
                     int n_cuts) {
    static stop_list l;
    set_stops(l, stops, n_stop);
    bt_stop m;
    bt_stop_init(&m, (const char(*)[BT_STOP_MAX_BYTES + 1]) l, n_stop);
    char out[4096], piece[2048];
    size_t n_out = 0, len = strlen(text), at = 0;
    int ci = 0;
    bool hit = false;
    while (at < len && !hit) {
        size_t k = (size_t)cuts[ci++ % n_cuts];
        if (k > len - at)
            k = len - at;
        size_t w = 0;
        hit = bt_stop_push(&m, text + at, k, piece, &w);
        memcpy(out + n_out, piece, w);
        n_out += w;
        at += k;
        /* Nothing emitted so far may run past the expected cut. */
        int mm;
        size_t want = expected(text, stops, n_stop, &mm);
        CHECK(n_out <= want);
        /* What is held must be a proper prefix of some stop string. */
        if (!hit && m.n_hold > 0) {
            bool ok = false;
            for (int i = 0; i < n_stop; i++)
                ok |= m.n_hold < strlen(stops[i]) && memcmp(m.buf, stops[i], m.n_hold) == 0;
            CHECK(ok);
        }
    }
    if (!hit) {
        size_t w = 0;
        bt_stop_flush(&m, piece, &w);
        memcpy(out + n_out, piece, w);
        n_out += w;
    }
    int matched;
    size_t want = expected(text, stops, n_stop, &matched);
    CHECK_EQ_INT(hit, matched);
    CHECK_EQ_INT((int)n_out, (int)want);
    CHECK(memcmp(out, text, want) == 0);
    /* Input after a match is dropped. */
    if (hit) {
        size_t w = 1;
        CHECK(bt_stop_push(&m, "abc", 3, piece, &w));
        CHECK_EQ_INT((int)w, 0);
    }
}

static void all_cuts(const char *text, const char *const *stops, int n_stop) {
    for (int a = 1; a <= 7; a++)
        for (int b = 1; b <= 5; b++) {
            int cuts[2] = {a, b};
            run_case(text, stops, n_stop, cuts, 2);
        }
}

static void test_basic(void) {
    const char *s1[] = {"END"};
    all_cuts("hello world END and more", s1, 1);
    all_cuts("no stop here at all", s1, 1);
    all_cuts("EN EN E EN END", s1, 1); /* false starts then a match */
    all_cuts("ENDing at once", s1, 1); /* match at the very start */
    all_cuts("trailing EN", s1, 1);    /* held prefix flushed at the end */
}

static void test_several_overlapping(void) {
    const char *s2[] = {"world", "lo w", "xyz"};
    all_cuts("hello world", s2, 3); /* "lo w" starts earlier than "world" */
    const char *s3[] = {"aab", "ab"};
    all_cuts("xaaab tail", s3, 2);
    const char *s4[] = {"abcabd", "cab"};
    all_cuts("abcabcabd", s4, 2); /* self-overlapping prefixes */
    const char *s5[] = {"\n\n", "User:", "###"};
    all_cuts("Answer: 42\nUser: next", s5, 3);
    all_cuts("line one\n\nline two", s5, 3);
}

/* Held text is exactly the longest suffix that could start a stop string. */
static void test_hold(void) {
    static stop_list l;
    const char *s[] = {"STOP"};
    set_stops(l, s, 1);
    bt_stop m;
    bt_stop_init(&m, (const char(*)[BT_STOP_MAX_BYTES + 1]) l, 1);
    char out[512];
    size_t w;
    CHECK(!bt_stop_push(&m, "abcST", 5, out, &w));
    CHECK_EQ_INT((int)w, 3);
    CHECK_EQ_INT((int)m.n_hold, 2);
    CHECK(!bt_stop_push(&m, "x", 1, out, &w)); /* "STx" is no prefix: all released */
    CHECK_EQ_INT((int)w, 3);
    CHECK(memcmp(out, "STx", 3) == 0);
    CHECK_EQ_INT((int)m.n_hold, 0);
    CHECK(!bt_stop_push(&m, "S", 1, out, &w));
    CHECK_EQ_INT((int)w, 0);
    CHECK(!bt_stop_push(&m, "TO", 2, out, &w));
    CHECK_EQ_INT((int)w, 0);
    CHECK(bt_stop_push(&m, "P!", 2, out, &w));
    CHECK_EQ_INT((int)w, 0);
}

/* UTF-8: stop strings with multi-byte characters; emitted text ends on a boundary. */
static void test_utf8(void) {
    const char *s[] = {"\xC3\xA9t\xC3\xA9", "\xE2\x82\xAC"}; /* "été", "€" */
    all_cuts("l'\xC3\xA9t\xC3\xA9 dernier", s, 2);
    all_cuts("co\xC3\xBBt: 5 \xE2\x82\xAC ou plus", s, 2);
    all_cuts("\xC3\xA9\xC3\xA9\xC3\xA9t caf\xC3\xA9", s, 2);
    static stop_list l;
    set_stops(l, s, 2);
    bt_stop m;
    bt_stop_init(&m, (const char(*)[BT_STOP_MAX_BYTES + 1]) l, 2);
    char out[512];
    size_t w;
    /* whole characters in: the held part starts at a character boundary */
    CHECK(!bt_stop_push(&m, "ab\xC3\xA9t", 5, out, &w));
    CHECK_EQ_INT((int)w, 2);
    CHECK(!bt_stop_push(&m, "x", 1, out, &w));
    CHECK_EQ_INT((int)w, 4);
    CHECK(memcmp(out, "\xC3\xA9tx", 4) == 0);
}

/* Long stop strings and long inputs (pieces larger than the internal buffer). */
static void test_long(void) {
    static char text[3000], stop[BT_STOP_MAX_BYTES + 1];
    for (int i = 0; i < 2999; i++)
        text[i] = (char)('a' + (i * 7) % 26);
    text[2999] = '\0';
    memcpy(stop, text + 2500, BT_STOP_MAX_BYTES);
    stop[BT_STOP_MAX_BYTES] = '\0';
    const char *s[] = {stop};
    int big[1] = {1000}, odd[3] = {1, 300, 17};
    run_case(text, s, 1, big, 1);
    run_case(text, s, 1, odd, 3);
    const char *none[] = {"zzzz"};
    run_case(text, none, 1, big, 1);
}

static void test_no_stops(void) {
    bt_stop m;
    bt_stop_init(&m, NULL, 0);
    char out[64];
    size_t w;
    CHECK(!bt_stop_push(&m, "hello", 5, out, &w));
    CHECK_EQ_INT((int)w, 5);
}

static void test_params(void) {
    bt_error err;
    bt_error_init(&err);
    bt_request_params p = bt_request_default_params();
    CHECK_OK(bt_request_params_add_stop(&p, "x", 1, &err));
    CHECK_EQ_INT(bt_request_params_add_stop(&p, "", 0, &err), BT_ERR_RANGE);
    CHECK(strstr(err.msg, "stop") != NULL);
    static char big[300];
    memset(big, 'a', sizeof big);
    CHECK_EQ_INT(bt_request_params_add_stop(&p, big, 257, &err), BT_ERR_RANGE);
    CHECK(strstr(err.msg, "257") != NULL);
    CHECK_OK(bt_request_params_add_stop(&p, big, 256, &err));
    for (int i = 2; i < BT_MAX_STOP; i++)
        CHECK_OK(bt_request_params_add_stop(&p, "y", 1, &err));
    CHECK_EQ_INT(bt_request_params_add_stop(&p, "z", 1, &err), BT_ERR_RANGE);
    CHECK_OK(bt_request_params_validate(&p, 0, &err));

    /* combinations */
    bt_request_params q = bt_request_default_params();
    q.n = 3;
    q.best_of = 2;
    CHECK_EQ_INT(bt_request_params_validate(&q, 0, &err), BT_ERR_RANGE);
    CHECK(strstr(err.msg, "best_of") != NULL);
    q = bt_request_default_params();
    q.n = 17;
    CHECK(bt_request_params_validate(&q, 0, &err) != BT_OK && strstr(err.msg, "n 17"));
    q = bt_request_default_params();
    q.beam_width = 2;
    q.sampling.temperature = 0.5f;
    CHECK(bt_request_params_validate(&q, 0, &err) != BT_OK && strstr(err.msg, "temperature"));
    q.sampling.temperature = 0;
    q.n = 3;
    q.best_of = 3;
    CHECK(bt_request_params_validate(&q, 0, &err) != BT_OK && strstr(err.msg, "beam_width"));
    q.n = q.best_of = 2;
    CHECK_OK(bt_request_params_validate(&q, 0, &err));
    q.beam_width = 9;
    CHECK(bt_request_params_validate(&q, 0, &err) != BT_OK && strstr(err.msg, "beam_width 9"));
    q = bt_request_default_params();
    q.sampling.top_logprobs = 21;
    CHECK(bt_request_params_validate(&q, 0, &err) != BT_OK && strstr(err.msg, "top_logprobs"));
    q = bt_request_default_params();
    q.early_stopping = true;
    CHECK(bt_request_params_validate(&q, 0, &err) != BT_OK && strstr(err.msg, "early_stopping"));
    q = bt_request_default_params();
    q.length_penalty = 1.0f / 0.0f;
    CHECK(bt_request_params_validate(&q, 0, &err) != BT_OK && strstr(err.msg, "length_penalty"));
}

int main(void) {
    test_basic();
    test_several_overlapping();
    test_hold();
    test_utf8();
    test_long();
    test_no_stops();
    test_params();
    return check_finish();
}
