/*
 * test_batch_io.c - the files of `baton batch` (coordinator/api/batch_io.h) on real files in a
 * temporary directory: the input reader (CRLF, no final newline, blank lines, the line limit
 * exactly and one byte over, a 100 MB line skipped without being held), the scan (every kind of
 * problem, repeats naming both lines, the report's cap, the input hash), entry parsing, the
 * result record's shape, and the output journal (fresh, resume, torn line, the refusals,
 * --restart, the lock). Needs no model.
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "batch_io.h"
#include "check.h"

static char dir[64];

static const char *tmp_path(const char *name) {
    static char paths[8][256];
    static int k;
    char *p = paths[k++ % 8];
    snprintf(p, 256, "%s/%s", dir, name);
    return p;
}

static void write_file(const char *path, const char *text, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(text, 1, n, f) != n)
        check_fail(__FILE__, __LINE__, "cannot write %s", path);
    if (f)
        fclose(f);
}

static void write_str(const char *path, const char *text) {
    write_file(path, text, strlen(text));
}

static long file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

static char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    if (s)
        s[n] = '\0';
    fclose(f);
    return s;
}

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *sa_ = (a), *sb_ = (b);                                                         \
        if (sa_ && sb_ && strcmp(sa_, sb_) == 0)                                                   \
            bt_check_passed++;                                                                     \
        else                                                                                       \
            check_fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b,                   \
                       sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");                                \
    } while (0)

#define CHECK_HAS(hay, needle)                                                                     \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (h_ && strstr(h_, n_))                                                                  \
            bt_check_passed++;                                                                     \
        else                                                                                       \
            check_fail(__FILE__, __LINE__, "\"%s\" does not contain \"%s\"", h_ ? h_ : "(null)",   \
                       n_);                                                                        \
    } while (0)

/* ---- reader ---- */

static void test_reader_lines(void) {
    const char *path = tmp_path("lines.jsonl");
    /* line 1 CRLF, 2 blank, 3 spaces and tab, 4 plain, 5 CRLF blank, 6 no final newline */
    write_str(path, "{\"a\":1}\r\n\n \t\n{\"b\":2}\n\r\n{\"c\":3}");
    bt_batch_input *in = NULL;
    bt_error err;
    bt_error_init(&err);
    CHECK_OK(bt_batch_input_open(path, 64, &in, &err));
    if (!in)
        return;
    const char *want[] = {"{\"a\":1}", "{\"b\":2}", "{\"c\":3}"};
    const int64_t want_no[] = {1, 4, 6};
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < 3; i++) {
            bt_batch_line l;
            bool eof = true;
            CHECK_OK(bt_batch_input_next(in, &l, &eof, &err));
            CHECK(!eof);
            if (eof)
                break;
            CHECK_STR(l.text, want[i]);
            CHECK_EQ_INT(l.n, strlen(want[i]));
            CHECK_EQ_INT(l.line_no, want_no[i]);
        }
        bt_batch_line l;
        bool eof = false;
        CHECK_OK(bt_batch_input_next(in, &l, &eof, &err));
        CHECK(eof);
        CHECK_OK(bt_batch_input_rewind(in, &err)); /* the second pass reads the same */
    }
    bt_batch_input_close(in);
    bt_batch_input_close(NULL);

    /* A pipe or a directory is refused (the input is read twice). */
    CHECK(bt_batch_input_open(dir, 64, &in, &err) == BT_ERR_INVALID_ARG);
    CHECK_HAS(err.msg, "not a regular file");
    CHECK(bt_batch_input_open(tmp_path("missing.jsonl"), 64, &in, &err) == BT_ERR_IO);
    CHECK_HAS(err.msg, "missing.jsonl");
}

static void test_reader_limit(void) {
    const char *path = tmp_path("limit.jsonl");
    /* limit 8: "12345678" fits (also with '\r'), "123456789" is one over */
    write_str(path, "12345678\n12345678\r\n123456789\nok\n123456789\r\n");
    bt_batch_input *in = NULL;
    bt_error err;
    bt_error_init(&err);
    CHECK_OK(bt_batch_input_open(path, 8, &in, &err));
    if (!in)
        return;
    bt_batch_line l;
    bool eof;
    CHECK_OK(bt_batch_input_next(in, &l, &eof, &err));
    CHECK_STR(l.text, "12345678");
    CHECK_OK(bt_batch_input_next(in, &l, &eof, &err));
    CHECK_STR(l.text, "12345678");
    CHECK_EQ_INT(l.n, 8);
    CHECK(bt_batch_input_next(in, &l, &eof, &err) == BT_ERR_LIMIT);
    CHECK_EQ_INT(l.line_no, 3);
    CHECK_STR(err.msg, "line 3 is longer than 8 bytes (--max-line-bytes)");
    CHECK_OK(bt_batch_input_next(in, &l, &eof, &err)); /* goes on after it */
    CHECK_STR(l.text, "ok");
    CHECK_EQ_INT(l.line_no, 4);
    CHECK(bt_batch_input_next(in, &l, &eof, &err) == BT_ERR_LIMIT);
    CHECK_EQ_INT(l.line_no, 5);
    CHECK_OK(bt_batch_input_next(in, &l, &eof, &err));
    CHECK(eof);
    bt_batch_input_close(in);
}

static long max_rss_kib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* A 100 MB line with a 1 MiB limit: refused, skipped, the next line read, and never held (the
 * process's peak memory does not grow by anything near 100 MB). Runs early, so the peak so far
 * is the test's own small start. */
static void test_reader_huge_line(void) {
    const char *path = tmp_path("huge.jsonl");
    FILE *f = fopen(path, "wb");
    if (!f) {
        check_fail(__FILE__, __LINE__, "cannot write %s", path);
        return;
    }
    static char chunk[1 << 20];
    memset(chunk, 'x', sizeof chunk);
    fputs("{\"custom_id\": \"a\"}\n{\"custom_id\": \"", f);
    for (int i = 0; i < 100; i++)
        fwrite(chunk, 1, sizeof chunk, f);
    fputs("\"}\n{\"custom_id\": \"c\"}\n", f);
    fclose(f);

    long rss0 = max_rss_kib();
    bt_batch_input *in = NULL;
    bt_error err;
    bt_error_init(&err);
    CHECK_OK(bt_batch_input_open(path, (size_t)1 << 20, &in, &err));
    if (!in)
        return;
    bt_batch_line l;
    bool eof;
    CHECK_OK(bt_batch_input_next(in, &l, &eof, &err));
    CHECK_EQ_INT(l.line_no, 1);
    CHECK(bt_batch_input_next(in, &l, &eof, &err) == BT_ERR_LIMIT);
    CHECK_EQ_INT(l.line_no, 2);
    CHECK_STR(err.msg, "line 2 is longer than 1048576 bytes (--max-line-bytes)");
    CHECK_OK(bt_batch_input_next(in, &l, &eof, &err));
    CHECK_STR(l.text, "{\"custom_id\": \"c\"}");
    CHECK_EQ_INT(l.line_no, 3);

    bt_batch_scan s;
    CHECK_OK(bt_batch_input_scan(in, &s, &err));
    CHECK_EQ_INT(s.n_requests, 3);
    CHECK_EQ_INT(s.n_problems, 1);
    CHECK_STR(s.report, "line 2 is longer than 1048576 bytes (--max-line-bytes)\n");
    CHECK_EQ_INT(s.input_bytes, file_size(path));
    bt_batch_input_close(in);
    long grew = max_rss_kib() - rss0;
    if (grew < 16 * 1024)
        bt_check_passed++;
    else
        check_fail(__FILE__, __LINE__, "reading a 100 MB line raised the peak RSS by %ld KiB",
                   grew);
    unlink(path);
}

/* ---- scan ---- */

static bt_status scan_text(const char *text, size_t max_line, bt_batch_scan *s, bt_error *err) {
    const char *path = tmp_path("scan.jsonl");
    write_str(path, text);
    bt_batch_input *in = NULL;
    bt_status st = bt_batch_input_open(path, max_line, &in, err);
    if (st != BT_OK)
        return st;
    st = bt_batch_input_scan(in, s, err);
    bt_batch_input_close(in);
    return st;
}

static void test_scan_problems(void) {
    bt_batch_scan s;
    bt_error err;
    bt_error_init(&err);
    char long_id[BT_BATCH_MAX_CUSTOM_ID_BYTES + 2];
    memset(long_id, 'k', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    char max_id[BT_BATCH_MAX_CUSTOM_ID_BYTES + 1];
    memset(max_id, 'm', sizeof max_id - 1);
    max_id[sizeof max_id - 1] = '\0';
    char text[4096];
    snprintf(text, sizeof text,
             "{\"custom_id\": \"a\", \"body\": {}}\n"         /* 1 good */
             "{\"custom_id\": \"b\",\n"                       /* 2 not JSON */
             "[1, 2]\n"                                       /* 3 not an object */
             "\n"                                             /* 4 blank */
             "{\"body\": {}}\n"                               /* 5 no custom_id */
             "{\"custom_id\": \"\"}\n"                        /* 6 empty */
             "{\"custom_id\": 7}\n"                           /* 7 a number */
             "{\"custom_id\": \"%s\"}\n"                      /* 8 too long */
             "{\"custom_id\": \"%s\"}\n"                      /* 9 the longest allowed */
             "{\"custom_id\": \"c\", \"custom_id\": \"d\"}\n" /* 10 duplicate key */
             "{\"custom_id\": \"a\"}\n"                       /* 11 repeats 1 */
             "{\"custom_id\": \"x\"}\n"                       /* 12 */
             "{\"custom_id\": \"x\"}\r\n"                     /* 13 repeats 12 */
             "{\"custom_id\": \"a\"}",                        /* 14 repeats 1, no newline */
             long_id, max_id);
    CHECK_OK(scan_text(text, 1024, &s, &err));
    CHECK_EQ_INT(s.n_lines, 14);
    CHECK_EQ_INT(s.n_requests, 13);
    CHECK_EQ_INT(s.n_problems, 10);
    CHECK_HAS(s.report, "line 2: not JSON: ");
    CHECK_HAS(s.report, "line 3: not a JSON object but an array\n");
    CHECK_HAS(s.report, "line 5: no \"custom_id\" (a non-empty string)\n");
    CHECK_HAS(s.report, "line 6: \"custom_id\" is empty, not a non-empty string\n");
    CHECK_HAS(s.report, "line 7: \"custom_id\" is a number, not a non-empty string\n");
    CHECK_HAS(s.report, "line 8: custom_id \"kkkk");
    CHECK_HAS(s.report, "...\" is 513 bytes, at most 512\n");
    CHECK(strstr(s.report, "line 9") == NULL);
    CHECK_HAS(s.report, "line 10: not JSON: duplicate object key");
    CHECK_HAS(s.report, "line 11: custom_id \"a\" repeats line 1\n");
    CHECK_HAS(s.report, "line 13: custom_id \"x\" repeats line 12\n");
    CHECK_HAS(s.report, "line 14: custom_id \"a\" repeats line 1\n");
    CHECK(strstr(s.report, "more") == NULL);
    /* in line order, also across the two passes */
    CHECK(strstr(s.report, "line 2:") < strstr(s.report, "line 11:"));
    CHECK(strstr(s.report, "line 11:") < strstr(s.report, "line 13:"));

    /* NUL bytes inside a line, and a line over the limit among the problems */
    const char nul_text[] =
        "{\"custom_id\": \"a\0b\"}\n{\"custom_id\": \"zzzzzzzzzzzzzzzzzzzz\"}\n";
    const char *path = tmp_path("nul.jsonl");
    write_file(path, nul_text, sizeof nul_text - 1);
    bt_batch_input *in = NULL;
    CHECK_OK(bt_batch_input_open(path, 24, &in, &err));
    if (in) {
        CHECK_OK(bt_batch_input_scan(in, &s, &err));
        CHECK_EQ_INT(s.n_problems, 2);
        CHECK_STR(s.report, "line 1: not JSON: a NUL byte at column 17\n"
                            "line 2 is longer than 24 bytes (--max-line-bytes)\n");
        bt_batch_input_close(in);
    }

    /* A custom_id with quotes and control characters is shown escaped. */
    CHECK_OK(scan_text("{\"custom_id\": \"q\\\"\\n\"}\n{\"custom_id\": \"q\\\"\\n\"}\n", 1024, &s,
                       &err));
    CHECK_STR(s.report, "line 2: custom_id \"q\\\"\\x0a\" repeats line 1\n");
}

static void test_scan_report_cap(void) {
    /* 30 bad lines and 5 lines of one id (4 repeats): the first BT_BATCH_REPORT_MAX are named */
    static char text[32768];
    size_t k = 0;
    for (int i = 0; i < 30; i++)
        k += (size_t)snprintf(text + k, sizeof text - k, "not json %d\n", i);
    for (int i = 0; i < 5; i++)
        k += (size_t)snprintf(text + k, sizeof text - k, "{\"custom_id\": \"same\"}\n");
    bt_batch_scan s;
    bt_error err;
    bt_error_init(&err);
    CHECK_OK(scan_text(text, 1024, &s, &err));
    CHECK_EQ_INT(s.n_problems, 34);
    int n_lines = 0;
    for (const char *p = s.report; *p; p++)
        n_lines += *p == '\n';
    CHECK_EQ_INT(n_lines, BT_BATCH_REPORT_MAX + 1);
    CHECK_HAS(s.report, "... and 14 more\n");
    CHECK_HAS(s.report, "line 20: not JSON");
    CHECK(strstr(s.report, "line 21:") == NULL);

    /* long problem lines do not overflow the report: still counted, still "... and N more" */
    memset(text, 0, sizeof text);
    k = 0;
    for (int i = 0; i < 40; i++) {
        k += (size_t)snprintf(text + k, sizeof text - k, "{\"custom_id\": \"");
        for (int j = 0; j < 60; j++)
            k += (size_t)snprintf(text + k, sizeof text - k, "\\u0001");
        k += (size_t)snprintf(text + k, sizeof text - k, "\"}\n");
    }
    CHECK_OK(scan_text(text, 4096, &s, &err));
    CHECK_EQ_INT(s.n_problems, 39); /* each shown as 48 "\x01" and "...": 20 do not fit */
    n_lines = 0;
    for (const char *p = s.report; *p; p++)
        n_lines += *p == '\n';
    CHECK(n_lines < BT_BATCH_REPORT_MAX); /* fewer named than the cap: they did not fit */
    char more[32];
    snprintf(more, sizeof more, "... and %d more\n", 39 - (n_lines - 1));
    CHECK_HAS(s.report, more);
    CHECK(strlen(s.report) < sizeof s.report);
}

static void test_scan_hash(void) {
    bt_batch_scan s0, s1, s2;
    bt_error err;
    bt_error_init(&err);
    CHECK_OK(scan_text("", 1024, &s0, &err));
    CHECK_EQ_INT(s0.n_requests, 0);
    CHECK_EQ_INT(s0.n_lines, 0);
    CHECK_EQ_INT(s0.n_problems, 0);
    CHECK_EQ_INT(s0.input_bytes, 0);
    CHECK_OK(scan_text("\n\n  \n", 1024, &s0, &err)); /* blank lines only: no requests */
    CHECK_EQ_INT(s0.n_requests, 0);
    CHECK_EQ_INT(s0.n_lines, 3);

    const char *a = "{\"custom_id\": \"a\"}\n{\"custom_id\": \"b\"}\n";
    CHECK_OK(scan_text(a, 1024, &s0, &err));
    CHECK_OK(scan_text(a, 1024, &s1, &err));
    CHECK_EQ_INT(s0.n_problems, 0);
    CHECK_EQ_INT(s0.n_requests, 2);
    CHECK(s0.input_hash == s1.input_hash);
    CHECK_EQ_INT(s0.input_bytes, strlen(a));
    CHECK_OK(scan_text("{\"custom_id\": \"a\"}\n{\"custom_id\": \"c\"}\n", 1024, &s2, &err));
    CHECK(s0.input_hash != s2.input_hash);
    /* the hash is stored in sidecars: its value for a fixed input must never change */
    CHECK_OK(scan_text("hello\n", 1024, &s2, &err));
    CHECK(s2.input_hash == 0x4e0f174669041847ull ||
          (printf("hash %016llx\n", (unsigned long long)s2.input_hash), 0));
    /* blank lines count in the hash (every byte of the file) */
    CHECK_OK(scan_text("{\"custom_id\": \"a\"}\n\n{\"custom_id\": \"b\"}\n", 1024, &s2, &err));
    CHECK(s0.input_hash != s2.input_hash);
}

/* ---- entries and records ---- */

static bool parse_line(const char *text, bt_batch_entry *en, bt_api_error *e) {
    bt_batch_line l = {.line_no = 1, .text = text, .n = strlen(text)};
    return bt_batch_entry_parse(&l, en, e);
}

static void test_entry_parse(void) {
    bt_batch_entry en;
    bt_api_error e;
    CHECK(parse_line("{\"custom_id\": \"r1\", \"method\": \"POST\", \"url\": \"/v1/completions\", "
                     "\"body\": {\"prompt\": \"hi\"}}",
                     &en, &e));
    CHECK_STR(en.custom_id, "r1");
    CHECK_EQ_INT(en.kind, BT_API_COMPLETIONS);
    CHECK(json_is_object(en.body));
    CHECK_STR(json_string_value(json_object_get(en.body, "prompt")), "hi");
    bt_batch_entry_deinit(&en);
    CHECK(en.body == NULL);
    CHECK(parse_line("{\"custom_id\": \"r2\", \"method\": \"POST\", \"url\": "
                     "\"/v1/chat/completions\", \"body\": {}}",
                     &en, &e));
    CHECK_EQ_INT(en.kind, BT_API_CHAT);
    bt_batch_entry_deinit(&en);

    static const struct {
        const char *line, *param, *code, *msg;
    } bad[] = {
        {"{\"custom_id\": \"u\", \"method\": \"POST\", \"url\": \"/v1/embeddings\", \"body\": {}}",
         "url", "invalid_url",
         "url \"/v1/embeddings\" is not supported: it must be \"/v1/completions\" or "
         "\"/v1/chat/completions\""},
        {"{\"custom_id\": \"u\", \"method\": \"POST\", \"url\": 5, \"body\": {}}", "url",
         "invalid_url", "not a number"},
        {"{\"custom_id\": \"u\", \"method\": \"POST\", \"body\": {}}", "url", "invalid_url",
         "url is missing"},
        {"{\"custom_id\": \"u\", \"method\": \"GET\", \"url\": \"/v1/completions\", \"body\": {}}",
         "method", "invalid_value", "method \"GET\" is not supported: it must be \"POST\""},
        {"{\"custom_id\": \"u\", \"url\": \"/v1/completions\", \"body\": {}}", "method",
         "missing_required_parameter", "method is missing"},
        {"{\"custom_id\": \"u\", \"method\": \"POST\", \"url\": \"/v1/completions\"}", "body",
         "missing_required_parameter", "body is missing"},
        {"{\"custom_id\": \"u\", \"method\": \"POST\", \"url\": \"/v1/completions\", \"body\": "
         "\"x\"}",
         "body", "invalid_type", "body must be a JSON object, not a string"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&e, 0, sizeof e);
        CHECK(!parse_line(bad[i].line, &en, &e));
        CHECK_STR(en.custom_id, "u"); /* always filled: the error record needs it */
        CHECK(en.body == NULL);
        CHECK_EQ_INT(e.http, 400);
        CHECK_STR(e.param, bad[i].param);
        CHECK_STR(e.code, bad[i].code);
        CHECK_HAS(e.message, bad[i].msg);
        bt_batch_entry_deinit(&en);
    }
}

static void test_record(void) {
    bt_api_buf b = {0};
    json_t *body = json_pack("{s:s, s:[{s:s}]}", "id", "cmpl-1", "choices", "text", "hi\nthere");
    CHECK(bt_batch_record(&b, "r\"1", 200, "cmpl-1", body));
    CHECK(bt_batch_record(&b, "r2", 400, NULL, body));
    CHECK(b.n > 0 && b.p[b.n - 1] == '\n');
    char *nl = b.p ? memchr(b.p, '\n', b.n) : NULL;
    CHECK(nl && nl + 1 < b.p + b.n); /* one line each: the body's newline is escaped */
    if (!nl) {
        bt_api_buf_free(&b);
        json_decref(body);
        return;
    }
    json_error_t jerr;
    json_t *r = json_loadb(b.p, (size_t)(nl - b.p), 0, &jerr);
    CHECK(json_is_object(r));
    const char *id = json_string_value(json_object_get(r, "id"));
    CHECK(id && strncmp(id, "batch_req_", 10) == 0 && strlen(id) == 26);
    CHECK_STR(json_string_value(json_object_get(r, "custom_id")), "r\"1");
    const json_t *resp = json_object_get(r, "response");
    CHECK_EQ_INT(json_integer_value(json_object_get(resp, "status_code")), 200);
    CHECK_STR(json_string_value(json_object_get(resp, "request_id")), "cmpl-1");
    CHECK(json_equal(json_object_get(resp, "body"), body));
    CHECK(json_is_null(json_object_get(r, "error")));
    CHECK_EQ_INT(json_object_size(r), 4);
    CHECK(strncmp(b.p, "{\"id\":\"batch_req_", 17) == 0); /* compact, id first */

    json_t *r2 = json_loadb(nl + 1, (size_t)(b.p + b.n - nl - 2), 0, &jerr);
    const json_t *resp2 = json_object_get(r2, "response");
    CHECK_EQ_INT(json_integer_value(json_object_get(resp2, "status_code")), 400);
    CHECK(json_is_null(json_object_get(resp2, "request_id")));
    /* the id is a function of custom_id alone: the same on every run, different per id */
    bt_api_buf c = {0};
    CHECK(bt_batch_record(&c, "r\"1", 500, "other", NULL));
    CHECK(c.p && strncmp(c.p, b.p, 33) == 0);
    CHECK(strncmp(json_string_value(json_object_get(r2, "id")), id, 26) != 0);
    json_decref(r);
    json_decref(r2);
    json_decref(body);
    bt_api_buf_free(&b);
    bt_api_buf_free(&c);
}

/* ---- journal ---- */

static bt_batch_output_params params(const char *path, uint64_t hash) {
    return (bt_batch_output_params){
        .path = path, .input_hash = hash, .input_bytes = 100, .n_requests = 3, .sync = true};
}

static void append_record(bt_batch_output *o, const char *id, int code) {
    bt_api_buf b = {0};
    json_t *body = json_pack("{s:s}", "id", "x");
    CHECK(bt_batch_record(&b, id, code, "cmpl-x", body));
    bt_error err;
    bt_error_init(&err);
    CHECK_OK(bt_batch_output_append(o, b.p, b.n, &err));
    CHECK_OK(bt_batch_output_sync(o, &err));
    json_decref(body);
    bt_api_buf_free(&b);
}

static void test_journal(void) {
    const char *path = tmp_path("out.jsonl");
    char side[300];
    snprintf(side, sizeof side, "%s.batch", path);
    bt_batch_output_params p = params(path, 0x1234);
    bt_batch_output *o = NULL;
    bt_batch_output_state st;
    bt_error err;
    bt_error_init(&err);

    /* fresh: created, sidecar written before any line */
    CHECK_OK(bt_batch_output_open(&p, &o, &st, &err));
    if (!o)
        return;
    CHECK_EQ_INT(st.n_done, 0);
    CHECK(!st.resumed);
    CHECK_EQ_INT(file_size(path), 0);
    char *sc = read_all(side);
    json_error_t jerr;
    json_t *sj = sc ? json_loads(sc, 0, &jerr) : NULL;
    CHECK_EQ_INT(json_integer_value(json_object_get(sj, "version")), 1);
    CHECK_STR(json_string_value(json_object_get(sj, "input_hash")), "0000000000001234");
    CHECK_EQ_INT(json_integer_value(json_object_get(sj, "input_bytes")), 100);
    CHECK_EQ_INT(json_integer_value(json_object_get(sj, "n_requests")), 3);
    json_decref(sj);
    free(sc);
    CHECK(!bt_batch_output_has(o, "a"));

    /* a second open of the same file, even in this process, is refused while it is held */
    bt_batch_output *o2 = NULL;
    CHECK(bt_batch_output_open(&p, &o2, &st, &err) == BT_ERR_BUSY);
    CHECK(o2 == NULL);
    CHECK_HAS(err.msg, path);
    CHECK_HAS(err.msg, "locked");

    append_record(o, "a", 200);
    append_record(o, "b", 400);
    bt_batch_output_close(o);

    /* resume: the done ids, the failed count */
    CHECK_OK(bt_batch_output_open(&p, &o, &st, &err));
    if (!o)
        return;
    CHECK_EQ_INT(st.n_done, 2);
    CHECK_EQ_INT(st.n_failed, 1);
    CHECK_EQ_INT(st.torn_bytes, 0);
    CHECK(st.resumed);
    CHECK(bt_batch_output_has(o, "a"));
    CHECK(bt_batch_output_has(o, "b"));
    CHECK(!bt_batch_output_has(o, "c"));
    /* a torn last line: a crash in the middle of a write */
    long whole = file_size(path);
    CHECK_OK(
        bt_batch_output_append(o, "{\"id\":\"batch_req_1\",\"custom_id\":\"c\",\"resp", 40, &err));
    bt_batch_output_close(o);
    CHECK_EQ_INT(file_size(path), whole + 40);
    CHECK_OK(bt_batch_output_open(&p, &o, &st, &err));
    if (!o)
        return;
    CHECK_EQ_INT(st.torn_bytes, 40);
    CHECK_EQ_INT(st.n_done, 2);
    CHECK(!bt_batch_output_has(o, "c"));
    CHECK_EQ_INT(file_size(path), whole); /* truncated away */
    append_record(o, "c", 200);           /* lands on a line of its own */
    bt_batch_output_close(o);
    CHECK_OK(bt_batch_output_open(&p, &o, &st, &err));
    CHECK_EQ_INT(st.n_done, 3);
    CHECK_EQ_INT(st.n_failed, 1);
    CHECK_EQ_INT(st.torn_bytes, 0);
    CHECK(bt_batch_output_has(o, "c"));
    bt_batch_output_close(o);
    o = NULL;

    /* another input: refused, the file untouched */
    char *before = read_all(path);
    bt_batch_output_params other = params(path, 0x9999);
    CHECK(bt_batch_output_open(&other, &o, &st, &err) == BT_ERR_INVALID_ARG);
    CHECK(o == NULL);
    CHECK_HAS(err.msg, "was written for another input");
    CHECK_HAS(err.msg, "--restart");
    char *after = read_all(path);
    CHECK(before && after && strcmp(before, after) == 0);
    free(after);

    /* a complete line that is not a result line: refused, nothing truncated */
    const char *garbage = tmp_path("garbage.jsonl");
    char gside[300];
    snprintf(gside, sizeof gside, "%s.batch", garbage);
    size_t n_before = strlen(before);
    char *g = malloc(n_before + 64);
    if (g) {
        snprintf(g, n_before + 64, "%sthis is not json\n{\"torn", before);
        write_str(garbage, g);
        free(g);
    }
    sc = read_all(side);
    if (sc)
        write_str(gside, sc);
    free(sc);
    bt_batch_output_params gp = params(garbage, 0x1234);
    CHECK(bt_batch_output_open(&gp, &o, &st, &err) == BT_ERR_INVALID_ARG);
    CHECK_HAS(err.msg, "line 4 is not a result line");
    CHECK_HAS(err.msg, "this is not json");
    CHECK_EQ_INT(file_size(garbage), (long)n_before + 17 + 6);
    write_str(garbage, "{\"custom_id\": 5}\n");
    CHECK(bt_batch_output_open(&gp, &o, &st, &err) == BT_ERR_INVALID_ARG);
    CHECK_HAS(err.msg, "line 1 is not a result line");
    free(before);

    /* lines but no sidecar: not ours, refused; nothing changed */
    unlink(gside);
    write_str(garbage, "some file the user had\n");
    CHECK(bt_batch_output_open(&gp, &o, &st, &err) == BT_ERR_INVALID_ARG);
    CHECK_HAS(err.msg, "was not written by baton batch");
    CHECK_HAS(err.msg, "--restart");
    CHECK_EQ_INT(file_size(garbage), 23);
    CHECK(access(gside, F_OK) != 0);
    /* ... even when it has no '\n' at all (open must not take it for a torn line) */
    write_str(garbage, "no newline");
    CHECK(bt_batch_output_open(&gp, &o, &st, &err) == BT_ERR_INVALID_ARG);
    CHECK_EQ_INT(file_size(garbage), 10);
    /* a sidecar that is not ours */
    write_str(gside, "{\"version\": 7}");
    CHECK(bt_batch_output_open(&gp, &o, &st, &err) == BT_ERR_INVALID_ARG);
    CHECK_HAS(err.msg, "not a baton batch sidecar");

    /* --restart: truncated, the sidecar rewritten for the new input */
    bt_batch_output_params rp = params(path, 0x9999);
    rp.restart = true;
    CHECK_OK(bt_batch_output_open(&rp, &o, &st, &err));
    CHECK_EQ_INT(st.n_done, 0);
    CHECK(!st.resumed);
    CHECK_EQ_INT(file_size(path), 0);
    if (o) {
        CHECK(!bt_batch_output_has(o, "a"));
        append_record(o, "z", 200);
        bt_batch_output_close(o);
    }
    CHECK_OK(bt_batch_output_open(&other, &o, &st, &err)); /* now the new input's */
    CHECK_EQ_INT(st.n_done, 1);
    CHECK(o && bt_batch_output_has(o, "z"));
    bt_batch_output_close(o);
    CHECK(bt_batch_output_open(&p, &o, &st, &err) == BT_ERR_INVALID_ARG);

    /* an empty output takes any input (a crash between --restart's truncate and sidecar) */
    write_str(path, "");
    CHECK_OK(bt_batch_output_open(&p, &o, &st, &err));
    bt_batch_output_close(o);
    sc = read_all(side);
    CHECK_HAS(sc, "\"0000000000001234\"");
    free(sc);

    /* --no-sync: sync is a no-op that succeeds */
    p.sync = false;
    CHECK_OK(bt_batch_output_open(&p, &o, &st, &err));
    if (o)
        append_record(o, "n", 200);
    bt_batch_output_close(o);
    bt_batch_output_close(NULL);
}

/* ASan keeps freed memory in quarantine (256 MB), so a peak-RSS bound means nothing there. */
#if defined(__SANITIZE_ADDRESS__)
#define RSS_BOUNDS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RSS_BOUNDS 0
#endif
#endif
#ifndef RSS_BOUNDS
#define RSS_BOUNDS 1
#endif

/* 100,000 done ids in a ~34 MB output: every one found, none of 100,000 others (the sorted
 * hashes); open streams the file, so the peak RSS grows by the hashes (< 2 MiB), not the file.
 * Runs first, while the peak so far is the test's own small start. */
static void test_journal_many(void) {
    enum { N = 100000 };
    const char *path = tmp_path("many.jsonl");
    bt_batch_output_params p = params(path, 42);
    bt_batch_output *o = NULL;
    bt_batch_output_state st;
    bt_error err;
    bt_error_init(&err);
    CHECK_OK(bt_batch_output_open(&p, &o, &st, &err));
    if (!o)
        return;
    bt_api_buf b = {0};
    char text[300];
    memset(text, 't', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    json_t *body = json_pack("{s:s}", "text", text);
    char id[32];
    bool ok = true;
    for (int i = 0; i < N && ok; i++) {
        snprintf(id, sizeof id, "req-%d", i);
        ok = bt_batch_record(&b, id, i % 7 ? 200 : 400, "cmpl-x", body);
        if (b.n > (64 << 10) || i == N - 1) { /* appended in pieces: the test holds no file */
            CHECK_OK(bt_batch_output_append(o, b.p, b.n, &err));
            b.n = 0;
        }
    }
    CHECK(ok);
    bt_batch_output_close(o);
    CHECK(file_size(path) > 30L << 20);
    long rss0 = max_rss_kib();
    CHECK_OK(bt_batch_output_open(&p, &o, &st, &err));
    long grew = max_rss_kib() - rss0;
    if (!o)
        return;
    if (RSS_BOUNDS && grew >= 8 * 1024)
        check_fail(__FILE__, __LINE__, "opening a 34 MB output raised the peak RSS by %ld KiB",
                   grew);
    else
        bt_check_passed++;
    CHECK_EQ_INT(st.n_done, N);
    CHECK_EQ_INT(st.n_failed, (N + 6) / 7);
    int found = 0, wrong = 0;
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "req-%d", i);
        found += bt_batch_output_has(o, id);
        snprintf(id, sizeof id, "other-%d", i);
        wrong += bt_batch_output_has(o, id);
    }
    CHECK_EQ_INT(found, N);
    CHECK_EQ_INT(wrong, 0);
    bt_batch_output_close(o);
    json_decref(body);
    bt_api_buf_free(&b);
    unlink(path);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/bt_batch_io_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_journal_many();
    test_reader_huge_line();
    test_reader_lines();
    test_reader_limit();
    test_scan_problems();
    test_scan_report_cap();
    test_scan_hash();
    test_entry_parse();
    test_record();
    test_journal();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return check_finish();
}
