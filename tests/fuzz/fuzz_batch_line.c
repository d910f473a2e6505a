/*
 * fuzz_batch_line.c - libFuzzer target for the batch input (coordinator/api/batch_io.h): the
 * reader, the scan and the entry parser over a whole file, and the output journal over the
 * records those lines give.
 *
 * Input: byte 0 picks --max-line-bytes (8 + 8 * byte: 8..2048; '~' gives 1016); the rest is
 * the input file, written to a temporary file (the reader takes a path and reads it twice).
 *
 * What must hold (asserted with __builtin_trap):
 *  - the scan counts every byte (input_bytes), names at most BT_BATCH_REPORT_MAX problems in a
 *    NUL-terminated report, and sees as many requests as the reader then returns lines (plus
 *    lines over the limit);
 *  - every line returned is NUL-terminated, at most max_line_bytes, holds no '\n', is not
 *    blank, and line numbers only grow;
 *  - after a clean scan every line parses with its custom_id, and a request the parser refuses
 *    is a 400 naming url, method or body; the record of each line is one JSON line naming the
 *    same custom_id;
 *  - after a clean scan of at most 64 requests, the journal given every record finds each
 *    custom_id done on reopen, and drops a torn copy of the last record.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batch_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_JOURNAL_REQUESTS 64

static char in_path[64], out_path[64], side_path[80];

static void remove_files(void) {
    unlink(in_path);
    unlink(out_path);
    unlink(side_path);
}

static void check(bool ok) {
    if (!ok)
        __builtin_trap();
}

static bool write_input(const uint8_t *p, size_t n) {
    int fd = open(in_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return false;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) {
            close(fd);
            return false;
        }
        p += w;
        n -= (size_t)w;
    }
    close(fd);
    return true;
}

/* The records of every line (entry parse as the runner does), and the checks on each. */
static void run_lines(bt_batch_input *in, const bt_batch_scan *scan, size_t max_line,
                      bt_api_buf *records) {
    bt_error err;
    bt_error_init(&err);
    check(bt_batch_input_rewind(in, &err) == BT_OK);
    int64_t n_seen = 0, last_no = 0;
    for (;;) {
        bt_batch_line l;
        bool eof;
        bt_status st = bt_batch_input_next(in, &l, &eof, &err);
        if (st == BT_ERR_LIMIT) {
            check(l.line_no > last_no && scan->n_problems > 0);
            last_no = l.line_no;
            n_seen++;
            continue;
        }
        check(st == BT_OK);
        if (eof)
            break;
        check(l.line_no > last_no && l.n <= max_line && l.text[l.n] == '\0');
        check(memchr(l.text, '\n', l.n) == NULL);
        bool blank = true;
        for (size_t i = 0; i < l.n; i++)
            blank = blank && (l.text[i] == ' ' || l.text[i] == '\t' || l.text[i] == '\r');
        check(!blank);
        last_no = l.line_no;
        n_seen++;

        bt_batch_entry en;
        bt_api_error e;
        bool ok = bt_batch_entry_parse(&l, &en, &e);
        check(strlen(en.custom_id) <= BT_BATCH_MAX_CUSTOM_ID_BYTES);
        if (ok) {
            check(json_is_object(en.body));
        } else {
            check(en.body == NULL && e.http == 400 && e.message[0]);
            if (scan->n_problems == 0) /* the line is JSON with a custom_id: the request is bad */
                check(strcmp(e.param, "url") == 0 || strcmp(e.param, "method") == 0 ||
                      strcmp(e.param, "body") == 0);
        }
        if (scan->n_problems == 0) {
            check(en.custom_id[0] != '\0');
            size_t before = records->n;
            json_t *body = ok ? json_incref(en.body) : bt_api_error_json(&e);
            check(bt_batch_record(records, en.custom_id, ok ? 200 : 400, "cmpl-fuzz", body));
            json_decref(body);
            /* one line, JSON, the same custom_id */
            const char *rec = records->p + before;
            size_t n = records->n - before;
            check(n > 1 && rec[n - 1] == '\n' && memchr(rec, '\n', n - 1) == NULL);
            json_error_t jerr;
            json_t *back = json_loadb(rec, n - 1, 0, &jerr);
            const char *id = json_string_value(json_object_get(back, "custom_id"));
            check(id && strcmp(id, en.custom_id) == 0);
            json_decref(back);
        }
        bt_batch_entry_deinit(&en);
    }
    check(n_seen == scan->n_requests);
    check(in != NULL);
}

/* The journal given every record: each custom_id done on reopen; a torn copy dropped. */
static void run_journal(const bt_batch_scan *scan, bt_batch_input *in, const bt_api_buf *records) {
    bt_error err;
    bt_error_init(&err);
    bt_batch_output_params p = {.path = out_path,
                                .input_hash = scan->input_hash,
                                .input_bytes = scan->input_bytes,
                                .n_requests = scan->n_requests,
                                .restart = true,
                                .sync = false};
    bt_batch_output *o = NULL;
    bt_batch_output_state st;
    check(bt_batch_output_open(&p, &o, &st, &err) == BT_OK);
    check(bt_batch_output_append(o, records->p, records->n, &err) == BT_OK);
    /* half of the last record again, as a crash in its write would leave it */
    const char *last = records->p + records->n - 1;
    while (last > records->p && last[-1] != '\n')
        last--;
    size_t torn = (size_t)(records->p + records->n - last) / 2;
    if (torn > 0)
        check(bt_batch_output_append(o, last, torn, &err) == BT_OK);
    bt_batch_output_close(o);
    p.restart = false;
    check(bt_batch_output_open(&p, &o, &st, &err) == BT_OK);
    check(st.n_done == scan->n_requests && st.torn_bytes == (int64_t)torn);
    check(bt_batch_input_rewind(in, &err) == BT_OK);
    for (;;) {
        bt_batch_line l;
        bool eof;
        check(bt_batch_input_next(in, &l, &eof, &err) == BT_OK);
        if (eof)
            break;
        bt_batch_entry en;
        bt_api_error e;
        bt_batch_entry_parse(&l, &en, &e);
        check(bt_batch_output_has(o, en.custom_id));
        bt_batch_entry_deinit(&en);
    }
    bt_batch_output_close(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    if (!in_path[0]) {
        snprintf(in_path, sizeof in_path, "/tmp/bt_fuzz_batch_%d.jsonl", (int)getpid());
        snprintf(out_path, sizeof out_path, "/tmp/bt_fuzz_batch_%d.out", (int)getpid());
        snprintf(side_path, sizeof side_path, "%s.batch", out_path);
        atexit(remove_files);
    }
    size_t max_line = 8 + 8 * (size_t)data[0];
    if (!write_input(data + 1, size - 1))
        abort(); /* the machine, not the input */
    bt_batch_input *in = NULL;
    bt_error err;
    bt_error_init(&err);
    if (bt_batch_input_open(in_path, max_line, &in, &err) != BT_OK)
        abort();
    bt_batch_scan scan;
    check(bt_batch_input_scan(in, &scan, &err) == BT_OK);
    check(scan.input_bytes == size - 1);
    check(scan.n_requests <= scan.n_lines && scan.n_problems <= scan.n_requests);
    check(memchr(scan.report, '\0', sizeof scan.report) != NULL);
    check((scan.n_problems == 0) == (scan.report[0] == '\0'));
    int n_report = 0;
    for (const char *p = scan.report; *p; p++)
        n_report += *p == '\n';
    check(n_report <= BT_BATCH_REPORT_MAX + 1);

    bt_api_buf records = {0};
    run_lines(in, &scan, max_line, &records);
    if (scan.n_problems == 0 && scan.n_requests > 0 && scan.n_requests <= MAX_JOURNAL_REQUESTS)
        run_journal(&scan, in, &records);
    bt_api_buf_free(&records);
    bt_batch_input_close(in);
    return 0;
}
