/*
 * batch_io.h - the two files of `baton batch`: the input (OpenAI's batch format, one JSON object
 * a line) read as a stream, and the output journal (one result line per custom_id), appended,
 * made durable, and resumable after a crash of any process at any moment.
 *
 * Input line:  {"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {...}}
 * Output line: {"id": "batch_req_...", "custom_id": "a",
 *               "response": {"status_code": 200, "request_id": "cmpl-...", "body": {...}},
 *               "error": null}
 * A request the server would refuse with 400 gets status_code 400 and the server's error body
 * ({"error": {...}}) in response.body.
 *
 * Exactly once: a custom_id is done when its line is in the output file. The output's sidecar
 * (<output>.batch, written atomically before the first line) records a hash of the input, so a
 * rerun with another input is refused. On open the journal drops a torn last line (bytes after
 * the last '\n': a crash during a write) and loads the custom_ids of the complete lines; the
 * caller skips those. Lines are appended with write(2) whole; bt_batch_output_sync makes them
 * durable (fdatasync), and the caller decides how often.
 *
 * Memory: neither side holds a file. The scan keeps 8 bytes per input line while it runs; the
 * journal keeps 8 bytes per done custom_id (a sorted array of 64-bit hashes). A false "done"
 * needs two custom_ids with the same 64-bit hash (odds about n^2 / 2^65: 3e-8 for a million
 * ids); the caller's final count (lines == requests) would show it.
 *
 * Threads: a bt_batch_input and a bt_batch_output are each confined to one thread, except
 * bt_batch_output_has, which reads only what open loaded (immutable) and may be called from
 * any thread. Everything else here is a pure function.
 */
#ifndef BT_BATCH_IO_H
#define BT_BATCH_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "openai.h"
#include "status.h"

#define BT_BATCH_MAX_LINE_BYTES_DEFAULT ((size_t)16 << 20) /* --max-line-bytes */
#define BT_BATCH_MAX_CUSTOM_ID_BYTES 512
#define BT_BATCH_REPORT_MAX 20 /* problems named in a refusal; the rest are counted */

/* ---- input ---- */

typedef struct bt_batch_input bt_batch_input;

/* Opens path for reading (it is read twice: scan, then requests; so not a pipe). A line
 * longer than max_line_bytes (without its '\n') is refused by next, and never held. */
bt_status bt_batch_input_open(const char *path, size_t max_line_bytes, bt_batch_input **out,
                              bt_error *err);
void bt_batch_input_close(bt_batch_input *in); /* NULL: no-op */
bt_status bt_batch_input_rewind(bt_batch_input *in, bt_error *err);

typedef struct bt_batch_line {
    int64_t line_no;  /* 1-based, counting every line of the file */
    const char *text; /* NUL-terminated; without the '\n' (and a '\r' before it); borrowed,
                         valid until the next call */
    size_t n;
} bt_batch_line;

/* The next line that is not blank (only spaces, tabs, '\r'). *eof true at the end (a last
 * line without '\n' counts). A line over the limit: BT_ERR_LIMIT, message "line N is longer
 * than M bytes (--max-line-bytes)", line->line_no set, and the reader has moved past it
 * (calling again goes on). An I/O error: BT_ERR_IO. */
bt_status bt_batch_input_next(bt_batch_input *in, bt_batch_line *line, bool *eof, bt_error *err);

/* The hash of the bytes read since open or rewind (bt_batch_scan.input_hash's function): after
 * the last line of a second pass, a value other than the scan's means the file changed between
 * the two passes. */
uint64_t bt_batch_input_hash(const bt_batch_input *in);

/* What the scan found. */
typedef struct bt_batch_scan {
    int64_t n_lines;     /* lines of the file */
    int64_t n_requests;  /* non-blank lines */
    uint64_t input_hash; /* of every byte of the file (64-bit, not cryptographic) */
    uint64_t input_bytes;
    int64_t n_problems;
    char report[4096]; /* the first BT_BATCH_REPORT_MAX problems, one a line:
                          "line 7: not JSON: <jansson's text>"
                          "line 9: no \"custom_id\" (a non-empty string)"
                          "line 12: custom_id \"x\" repeats line 3"
                          "line 14 is longer than 16777216 bytes (--max-line-bytes)"
                          then "... and N more" */
} bt_batch_scan;

/* Reads the whole input from its start once, before any compute: every non-blank line must
 * be a JSON object with a custom_id that is a non-empty string of at most
 * BT_BATCH_MAX_CUSTOM_ID_BYTES bytes, and no two lines may share one. Problems are collected
 * (not stopped at) into out. Returns BT_OK when the file could be read (check n_problems),
 * BT_ERR_IO otherwise. The reader is at the end afterwards (rewind). */
bt_status bt_batch_input_scan(bt_batch_input *in, bt_batch_scan *out, bt_error *err);

/* One request line, parsed. */
typedef struct bt_batch_entry {
    char custom_id[BT_BATCH_MAX_CUSTOM_ID_BYTES + 1];
    bt_api_kind kind;
    json_t *body; /* owned (bt_batch_entry_deinit); NULL when the line is an error */
} bt_batch_entry;

/* Parses a line that passed the scan. Always fills out->custom_id. False when the request is
 * one the server would refuse: e is the 400 the caller writes as the line's result, e.g.
 * url not "/v1/completions" or "/v1/chat/completions" (param "url", code "invalid_url",
 * message naming the url and the two it may be), method not "POST" (param "method"), body
 * missing or not an object (param "body"). The body itself is parsed by the caller with
 * bt_api_parse_json (same messages as the server). */
bool bt_batch_entry_parse(const bt_batch_line *line, bt_batch_entry *out, bt_api_error *e);
void bt_batch_entry_deinit(bt_batch_entry *en);

/* ---- output records ---- */

/* Appends one output line (compact JSON, then '\n') to out: id "batch_req_" + 16 hex digits
 * from custom_id (the same on every run), request_id as given, body as given (not taken).
 * False when out of memory. */
bool bt_batch_record(bt_api_buf *out, const char *custom_id, int status_code,
                     const char *request_id, const json_t *body);

/* ---- output journal ---- */

typedef struct bt_batch_output bt_batch_output;

typedef struct bt_batch_output_params {
    const char *path;
    uint64_t input_hash, input_bytes; /* from the scan */
    int64_t n_requests;
    bool restart; /* --restart: truncate the output and start over */
    bool sync;    /* false (--no-sync): bt_batch_output_sync does nothing (measuring its cost) */
} bt_batch_output_params;

typedef struct bt_batch_output_state {
    int64_t n_done;     /* complete lines found at open */
    int64_t n_failed;   /* of them, status_code != 200 */
    int64_t torn_bytes; /* bytes of a torn last line that open dropped (0: none) */
    bool resumed;       /* the file had lines from an earlier run */
} bt_batch_output_state;

/* Opens (creating) the output and locks it (flock, so a second job on the same file is
 * refused: BT_ERR_BUSY naming the path). Refusals (BT_ERR_INVALID_ARG, message naming the
 * path and the way out, --restart or another --output):
 *  - the output has lines but no sidecar ("was not written by baton batch");
 *  - the sidecar's input hash is not p->input_hash ("was written for another input");
 *  - a complete line of the output is not a result line (JSON object with a custom_id).
 * Otherwise: a torn last line is truncated away (and fsynced), the done ids loaded, the sidecar
 * written (temporary file, fsync, rename, fsync of the directory) when missing, and st
 * filled. */
bt_status bt_batch_output_open(const bt_batch_output_params *p, bt_batch_output **out,
                               bt_batch_output_state *st, bt_error *err);
/* Whether custom_id has a line (among those found at open). Any thread. */
bool bt_batch_output_has(const bt_batch_output *o, const char *custom_id);
/* Appends whole lines (each ending in '\n'), retrying short writes; not yet durable. */
bt_status bt_batch_output_append(bt_batch_output *o, const char *lines, size_t n, bt_error *err);
/* fdatasync (unless params.sync was false). */
bt_status bt_batch_output_sync(bt_batch_output *o, bt_error *err);
/* Unlocks and closes (no sync: call sync first). NULL: no-op. */
void bt_batch_output_close(bt_batch_output *o);

#endif
