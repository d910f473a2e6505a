/*
 * batch_io.c - the input reader and scan, the entry parser, result records and the output
 * journal of `baton batch` (see batch_io.h).
 *
 * What must hold:
 *  - Neither file is held in memory. The reader keeps a fixed read buffer and one line of at
 *    most max_line_bytes (+2: a '\r' and the NUL); a longer line is skipped to its '\n'
 *    without being kept. The scan keeps 8 bytes per request line (a hash of its custom_id);
 *    the journal streams the output once at open, one line at a time, and keeps 8 bytes per
 *    complete line.
 *  - The output never loses a complete line: open refuses (and changes nothing) before it
 *    truncates a torn tail, so a file that was not ours, or was ours for another input, stays
 *    as it was. --restart truncates the output before it rewrites the sidecar, so a crash in
 *    between leaves an empty output (which any input may take), never old lines under a new
 *    input's sidecar.
 *  - The hashes (batch_hash) are stored: in sidecars (input_hash) and in every output line's
 *    id (batch_req_<hash of custom_id>). They must never change, or every existing output
 *    would be refused as "written for another input".
 */
#include "batch_io.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- hashing (stored in files: never change) ---- */

#define HASH_SEED 0xcbf29ce484222325ull /* FNV-1a 64 offset basis */

/* FNV-1a 64 over p[0..n), continuing from h (start with HASH_SEED). */
static uint64_t hash_update(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* The final mix (MurmurHash3's fmix64), so that every output bit depends on every input bit
 * and ids that differ in their last byte do not share most of their hex digits. */
static uint64_t hash_final(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static uint64_t hash_id(const char *s, size_t n) {
    return hash_final(hash_update(HASH_SEED, s, n));
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static bool sorted_has(const uint64_t *v, size_t n, uint64_t h) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v[mid] < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && v[lo] == h;
}

/* A growing array of hashes (8 bytes an entry). */
typedef struct hash_vec {
    uint64_t *v;
    size_t n, cap;
} hash_vec;

static bool hash_vec_push(hash_vec *hv, uint64_t h) {
    if (hv->n == hv->cap) {
        size_t cap = hv->cap ? hv->cap * 2 : 1024;
        uint64_t *v = realloc(hv->v, cap * sizeof *v);
        if (!v)
            return false;
        hv->v = v;
        hv->cap = cap;
    }
    hv->v[hv->n++] = h;
    return true;
}

/* s[0..n) for a message: at most `max` bytes shown, quotes, backslashes and control bytes
 * escaped, "..." when cut. out holds at least max * 4 + 4 bytes. */
static const char *shown(const char *s, size_t n, size_t max, char *out, size_t cap) {
    size_t k = 0;
    for (size_t i = 0; i < n && k + 8 < cap; i++) {
        if (i == max) {
            memcpy(out + k, "...", 3);
            k += 3;
            break;
        }
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            k += (size_t)snprintf(out + k, cap - k, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            k += (size_t)snprintf(out + k, cap - k, "\\x%02x", c);
        else
            out[k++] = (char)c;
    }
    out[k] = '\0';
    return out;
}

#define SHOWN_MAX 48
#define SHOWN_CAP (SHOWN_MAX * 4 + 8)

/* ---- input ---- */

#define READ_BUF_BYTES ((size_t)64 << 10)

struct bt_batch_input {
    int fd;
    char *path;
    size_t max_line;
    char *rbuf; /* [READ_BUF_BYTES] */
    size_t rpos, rlen;
    bool at_eof; /* read returned 0 */
    char *line;  /* [line_cap]: the line being assembled; line_cap <= max_line + 2 */
    size_t line_cap;
    int64_t line_no;  /* lines started so far */
    uint64_t hash;    /* of every byte read so far (not finalised) */
    uint64_t n_bytes; /* bytes read so far */
};

bt_status bt_batch_input_open(const char *path, size_t max_line_bytes, bt_batch_input **out,
                              bt_error *err) {
    *out = NULL;
    if (max_line_bytes == 0 || max_line_bytes > SIZE_MAX / 4)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "--max-line-bytes %zu is not in [1, %zu]",
                            max_line_bytes, SIZE_MAX / 4);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return bt_error_set(err, BT_ERR_IO, "input %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "input %s is not a regular file (it is read twice: checked whole, "
                            "then run), so not a pipe or a directory",
                            path);
    }
    bt_batch_input *in = calloc(1, sizeof *in);
    if (in) {
        in->path = strdup(path);
        in->rbuf = malloc(READ_BUF_BYTES);
        in->line_cap = max_line_bytes + 2 < 4096 ? max_line_bytes + 2 : 4096;
        in->line = malloc(in->line_cap);
    }
    if (!in || !in->path || !in->rbuf || !in->line) {
        if (in) {
            free(in->path);
            free(in->rbuf);
            free(in->line);
            free(in);
        }
        close(fd);
        return bt_error_set(err, BT_ERR_NOMEM, "input %s: out of memory", path);
    }
    in->fd = fd;
    in->max_line = max_line_bytes;
    in->hash = HASH_SEED;
    *out = in;
    return BT_OK;
}

void bt_batch_input_close(bt_batch_input *in) {
    if (!in)
        return;
    close(in->fd);
    free(in->path);
    free(in->rbuf);
    free(in->line);
    free(in);
}

bt_status bt_batch_input_rewind(bt_batch_input *in, bt_error *err) {
    if (lseek(in->fd, 0, SEEK_SET) != 0)
        return bt_error_set(err, BT_ERR_IO, "input %s: rewinding: %s", in->path, strerror(errno));
    in->rpos = in->rlen = 0;
    in->at_eof = false;
    in->line_no = 0;
    in->hash = HASH_SEED;
    in->n_bytes = 0;
    return BT_OK;
}

uint64_t bt_batch_input_hash(const bt_batch_input *in) {
    return hash_final(in->hash);
}

/* Refills the read buffer; at_eof when the file has no more bytes. */
static bt_status fill(bt_batch_input *in, bt_error *err) {
    for (;;) {
        ssize_t r = read(in->fd, in->rbuf, READ_BUF_BYTES);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return bt_error_set(err, BT_ERR_IO, "input %s: reading after line %" PRId64 ": %s",
                                in->path, in->line_no, strerror(errno));
        in->rpos = 0;
        in->rlen = (size_t)r;
        in->at_eof = r == 0;
        in->hash = hash_update(in->hash, in->rbuf, (size_t)r);
        in->n_bytes += (uint64_t)r;
        return BT_OK;
    }
}

/* Appends p[0..n) to the line, growing it by doubling up to line_cap's limit (max_line + 2). */
static bool line_append(bt_batch_input *in, size_t *len, const char *p, size_t n) {
    if (*len + n + 1 > in->line_cap) {
        size_t cap = in->line_cap;
        while (cap < *len + n + 1)
            cap *= 2;
        if (cap > in->max_line + 2)
            cap = in->max_line + 2;
        char *l = realloc(in->line, cap);
        if (!l)
            return false;
        in->line = l;
        in->line_cap = cap;
    }
    memcpy(in->line + *len, p, n);
    *len += n;
    return true;
}

static bool is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return false;
    return true;
}

bt_status bt_batch_input_next(bt_batch_input *in, bt_batch_line *line, bool *eof, bt_error *err) {
    *eof = false;
    for (;;) {
        size_t len = 0;
        bool started = false, too_long = false, ended = false;
        while (!ended) {
            if (in->rpos == in->rlen) {
                bt_status st = fill(in, err);
                if (st != BT_OK)
                    return st;
                if (in->at_eof)
                    break;
            }
            const char *p = in->rbuf + in->rpos;
            size_t avail = in->rlen - in->rpos;
            const char *nl = memchr(p, '\n', avail);
            size_t take = nl ? (size_t)(nl - p) : avail;
            started = true;
            in->rpos += take + (nl ? 1 : 0);
            ended = nl != NULL;
            if (too_long)
                continue;
            /* max_line + 1: room for a '\r' that the '\n' may follow */
            if (len + take > in->max_line + 1) {
                too_long = true;
                continue;
            }
            if (!line_append(in, &len, p, take))
                return bt_error_set(err, BT_ERR_NOMEM, "input %s: line %" PRId64 ": out of memory",
                                    in->path, in->line_no + 1);
        }
        if (!started) {
            *eof = true;
            line->line_no = in->line_no;
            line->text = "";
            line->n = 0;
            return BT_OK;
        }
        in->line_no++;
        line->line_no = in->line_no;
        if (!too_long && len > 0 && in->line[len - 1] == '\r')
            len--;
        if (too_long || len > in->max_line) {
            line->text = "";
            line->n = 0;
            return bt_error_set(err, BT_ERR_LIMIT,
                                "line %" PRId64 " is longer than %zu bytes (--max-line-bytes)",
                                in->line_no, in->max_line);
        }
        if (is_blank(in->line, len))
            continue;
        in->line[len] = '\0';
        line->text = in->line;
        line->n = len;
        return BT_OK;
    }
}

/* ---- scan ---- */

/* Appends one problem line to the report (the first BT_BATCH_REPORT_MAX that fit; room is
 * kept for "... and N more"). */
static void report_add(bt_batch_scan *s, int64_t *n_listed, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void report_add(bt_batch_scan *s, int64_t *n_listed, const char *fmt, ...) {
    s->n_problems++;
    if (*n_listed >= BT_BATCH_REPORT_MAX)
        return;
    char one[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(one, sizeof one, fmt, ap);
    va_end(ap);
    size_t used = strlen(s->report), n = strlen(one);
    if (used + n + 1 + 48 > sizeof s->report) { /* 48: "... and N more" */
        *n_listed = BT_BATCH_REPORT_MAX;
        return;
    }
    memcpy(s->report + used, one, n);
    s->report[used + n] = '\n';
    s->report[used + n + 1] = '\0';
    (*n_listed)++;
}

static const char *json_kind(const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

/* The first pass finds the hashes that occur twice; the second names the lines. A line's
 * first occurrence of a repeated hash, kept only in the second pass. */
typedef struct first_seen {
    uint64_t hash;
    int64_t line_no;
    char *id;
} first_seen;

typedef struct dup_state {
    const uint64_t *dups; /* sorted hashes that occur more than once */
    size_t n_dups;
    first_seen *seen;
    size_t n_seen, cap_seen;
} dup_state;

/* Checks one line: JSON object with a valid custom_id. Returns the custom_id (borrowed from
 * root, which the caller frees) or NULL after reporting the problem. */
static const char *check_line(bt_batch_scan *s, int64_t *n_listed, const bt_batch_line *l,
                              json_t **root, size_t *id_n) {
    *root = NULL;
    const char *nul = memchr(l->text, '\0', l->n);
    if (nul) {
        report_add(s, n_listed, "line %" PRId64 ": not JSON: a NUL byte at column %zu", l->line_no,
                   (size_t)(nul - l->text) + 1);
        return NULL;
    }
    json_error_t jerr;
    json_t *j = json_loadb(l->text, l->n, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) {
        report_add(s, n_listed, "line %" PRId64 ": not JSON: %s (column %d)", l->line_no, jerr.text,
                   jerr.column);
        return NULL;
    }
    *root = j;
    if (!json_is_object(j)) {
        report_add(s, n_listed, "line %" PRId64 ": not a JSON object but %s", l->line_no,
                   json_kind(j));
        return NULL;
    }
    const json_t *id = json_object_get(j, "custom_id");
    if (!id) {
        report_add(s, n_listed, "line %" PRId64 ": no \"custom_id\" (a non-empty string)",
                   l->line_no);
        return NULL;
    }
    if (!json_is_string(id) || json_string_length(id) == 0) {
        report_add(s, n_listed, "line %" PRId64 ": \"custom_id\" is %s, not a non-empty string",
                   l->line_no, json_is_string(id) ? "empty" : json_kind(id));
        return NULL;
    }
    size_t n = json_string_length(id);
    if (n > BT_BATCH_MAX_CUSTOM_ID_BYTES) {
        char b[SHOWN_CAP];
        report_add(s, n_listed, "line %" PRId64 ": custom_id \"%s\" is %zu bytes, at most %d",
                   l->line_no, shown(json_string_value(id), n, SHOWN_MAX, b, sizeof b), n,
                   BT_BATCH_MAX_CUSTOM_ID_BYTES);
        return NULL;
    }
    *id_n = n;
    return json_string_value(id);
}

/* Second pass: is this id a repeat of an earlier line? Records its first occurrence. */
static bt_status check_dup(dup_state *d, bt_batch_scan *s, int64_t *n_listed, int64_t line_no,
                           const char *id, size_t n) {
    uint64_t h = hash_id(id, n);
    if (!sorted_has(d->dups, d->n_dups, h))
        return BT_OK;
    for (size_t i = 0; i < d->n_seen; i++) {
        first_seen *f = &d->seen[i];
        if (f->hash == h && strlen(f->id) == n && memcmp(f->id, id, n) == 0) {
            char b[SHOWN_CAP];
            report_add(s, n_listed, "line %" PRId64 ": custom_id \"%s\" repeats line %" PRId64,
                       line_no, shown(id, n, SHOWN_MAX, b, sizeof b), f->line_no);
            return BT_OK;
        }
    }
    if (d->n_seen == d->cap_seen) {
        size_t cap = d->cap_seen ? d->cap_seen * 2 : 16;
        first_seen *v = realloc(d->seen, cap * sizeof *v);
        if (!v)
            return BT_ERR_NOMEM;
        d->seen = v;
        d->cap_seen = cap;
    }
    char *copy = malloc(n + 1);
    if (!copy)
        return BT_ERR_NOMEM;
    memcpy(copy, id, n);
    copy[n] = '\0';
    d->seen[d->n_seen++] = (first_seen){h, line_no, copy};
    return BT_OK;
}

/* One pass over the file from its start. First pass (d NULL): problems into s, custom_id
 * hashes into hv. Second pass: the same problems again, in line order, with the repeats. */
static bt_status scan_pass(bt_batch_input *in, bt_batch_scan *s, hash_vec *hv, dup_state *d,
                           bt_error *err) {
    bt_status st = bt_batch_input_rewind(in, err);
    if (st != BT_OK)
        return st;
    int64_t n_listed = 0;
    s->n_problems = 0;
    s->n_requests = 0;
    s->report[0] = '\0';
    for (;;) {
        bt_batch_line l;
        bool eof;
        bt_error lerr;
        bt_error_init(&lerr);
        st = bt_batch_input_next(in, &l, &eof, &lerr);
        if (st == BT_ERR_LIMIT) {
            s->n_requests++;
            report_add(s, &n_listed, "%s", lerr.msg);
            continue;
        }
        if (st != BT_OK) {
            if (err)
                *err = lerr;
            return st;
        }
        if (eof)
            break;
        s->n_requests++;
        json_t *root;
        size_t n = 0;
        const char *id = check_line(s, &n_listed, &l, &root, &n);
        if (id && !d && !hash_vec_push(hv, hash_id(id, n)))
            st = bt_error_set(err, BT_ERR_NOMEM, "input %s: out of memory at line %" PRId64,
                              in->path, l.line_no);
        else if (id && d && check_dup(d, s, &n_listed, l.line_no, id, n) != BT_OK)
            st = bt_error_set(err, BT_ERR_NOMEM, "input %s: out of memory at line %" PRId64,
                              in->path, l.line_no);
        json_decref(root);
        if (st != BT_OK)
            return st;
    }
    s->n_lines = in->line_no;
    s->input_hash = hash_final(in->hash);
    s->input_bytes = in->n_bytes;
    return BT_OK;
}

bt_status bt_batch_input_scan(bt_batch_input *in, bt_batch_scan *out, bt_error *err) {
    memset(out, 0, sizeof *out);
    hash_vec hv = {0};
    dup_state d = {0};
    bt_status st = scan_pass(in, out, &hv, NULL, err);
    if (st != BT_OK)
        goto cleanup;
    if (hv.n > 1) /* qsort takes no NULL, even for 0 entries */
        qsort(hv.v, hv.n, sizeof *hv.v, cmp_u64);
    /* Keep the hashes that occur more than once, each once, in place. */
    size_t n_dups = 0;
    for (size_t i = 1; i < hv.n; i++)
        if (hv.v[i] == hv.v[i - 1] && (n_dups == 0 || hv.v[n_dups - 1] != hv.v[i]))
            hv.v[n_dups++] = hv.v[i];
    if (n_dups > 0) {
        d.dups = hv.v;
        d.n_dups = n_dups;
        st = scan_pass(in, out, NULL, &d, err);
    }
cleanup:
    for (size_t i = 0; i < d.n_seen; i++)
        free(d.seen[i].id);
    free(d.seen);
    free(hv.v);
    if (st == BT_OK) {
        int64_t listed = 0;
        for (const char *p = out->report; *p; p++)
            listed += *p == '\n';
        if (listed < out->n_problems) { /* past BT_BATCH_REPORT_MAX, or did not fit */
            size_t used = strlen(out->report);
            snprintf(out->report + used, sizeof out->report - used, "... and %" PRId64 " more\n",
                     out->n_problems - listed);
        }
    }
    return st;
}

/* ---- entries ---- */

bool bt_batch_entry_parse(const bt_batch_line *line, bt_batch_entry *out, bt_api_error *e) {
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    json_t *root = json_loadb(line->text, line->n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return bt_api_error_set(e, 400, NULL, "invalid_json", "line %" PRId64 " is not JSON: %s",
                                line->line_no, jerr.text);
    bool ok = false;
    char b[SHOWN_CAP];
    if (!json_is_object(root)) {
        bt_api_error_set(e, 400, NULL, "invalid_json", "line %" PRId64 " is not a JSON object",
                         line->line_no);
        goto cleanup;
    }
    const json_t *id = json_object_get(root, "custom_id");
    if (json_is_string(id) && json_string_length(id) <= BT_BATCH_MAX_CUSTOM_ID_BYTES)
        memcpy(out->custom_id, json_string_value(id), json_string_length(id) + 1);
    const json_t *url = json_object_get(root, "url");
    if (!url) {
        bt_api_error_set(e, 400, "url", "invalid_url",
                         "url is missing: it must be \"/v1/completions\" or "
                         "\"/v1/chat/completions\"");
        goto cleanup;
    }
    const char *u = json_is_string(url) ? json_string_value(url) : NULL;
    if (u && strcmp(u, "/v1/completions") == 0) {
        out->kind = BT_API_COMPLETIONS;
    } else if (u && strcmp(u, "/v1/chat/completions") == 0) {
        out->kind = BT_API_CHAT;
    } else {
        if (u)
            bt_api_error_set(e, 400, "url", "invalid_url",
                             "url \"%s\" is not supported: it must be \"/v1/completions\" or "
                             "\"/v1/chat/completions\"",
                             shown(u, json_string_length(url), SHOWN_MAX, b, sizeof b));
        else
            bt_api_error_set(e, 400, "url", "invalid_url",
                             "url must be a string, \"/v1/completions\" or "
                             "\"/v1/chat/completions\", not %s",
                             json_kind(url));
        goto cleanup;
    }
    const json_t *method = json_object_get(root, "method");
    if (!method) {
        bt_api_error_set(e, 400, "method", "missing_required_parameter",
                         "method is missing: it must be \"POST\"");
        goto cleanup;
    }
    if (!json_is_string(method) || strcmp(json_string_value(method), "POST") != 0) {
        if (json_is_string(method))
            bt_api_error_set(e, 400, "method", "invalid_value",
                             "method \"%s\" is not supported: it must be \"POST\"",
                             shown(json_string_value(method), json_string_length(method), SHOWN_MAX,
                                   b, sizeof b));
        else
            bt_api_error_set(e, 400, "method", "invalid_value",
                             "method must be the string \"POST\", not %s", json_kind(method));
        goto cleanup;
    }
    json_t *body = json_object_get(root, "body");
    if (!body) {
        bt_api_error_set(e, 400, "body", "missing_required_parameter",
                         "body is missing: it must be the request, a JSON object");
        goto cleanup;
    }
    if (!json_is_object(body)) {
        bt_api_error_set(e, 400, "body", "invalid_type", "body must be a JSON object, not %s",
                         json_kind(body));
        goto cleanup;
    }
    out->body = json_incref(body);
    ok = true;
cleanup:
    json_decref(root);
    return ok;
}

void bt_batch_entry_deinit(bt_batch_entry *en) {
    if (!en)
        return;
    json_decref(en->body);
    en->body = NULL;
}

/* ---- records ---- */

bool bt_batch_record(bt_api_buf *out, const char *custom_id, int status_code,
                     const char *request_id, const json_t *body) {
    char id[32];
    snprintf(id, sizeof id, "batch_req_%016" PRIx64, hash_id(custom_id, strlen(custom_id)));
    json_t *cid = bt_api_json_text(custom_id, strlen(custom_id));
    json_t *resp = json_pack("{s:i, s:o, s:O}", "status_code", status_code, "request_id",
                             request_id ? json_string(request_id) : json_null(), "body",
                             body ? (json_t *)body : json_null());
    json_t *rec = cid && resp ? json_pack("{s:s, s:O, s:O, s:n}", "id", id, "custom_id", cid,
                                          "response", resp, "error")
                              : NULL;
    json_decref(cid);
    json_decref(resp);
    bool ok = rec && bt_api_buf_json(out, rec) && bt_api_buf_append(out, "\n", 1);
    json_decref(rec);
    return ok;
}

/* ---- output journal ---- */

#define SIDECAR_VERSION 1

struct bt_batch_output {
    int fd;
    char *path;
    uint64_t *done; /* [n_done] sorted hashes of the custom_ids found at open; immutable */
    size_t n_done;
    off_t size; /* bytes of complete lines written (what append truncates back to) */
    bool sync;
};

static char *sidecar_path(const char *path) {
    size_t n = strlen(path);
    char *s = malloc(n + 7);
    if (s) {
        memcpy(s, path, n);
        memcpy(s + n, ".batch", 7);
    }
    return s;
}

/* The directory of path, for fsync after a rename. */
static bt_status fsync_dir_of(const char *path, bt_error *err) {
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return bt_error_set(err, BT_ERR_IO, "directory %s: %s", dir, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0)
        return bt_error_set(err, BT_ERR_IO, "fsync of directory %s: %s", dir, strerror(e));
    return BT_OK;
}

static bt_status write_all(int fd, const char *p, size_t n, const char *path, bt_error *err) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return bt_error_set(err, BT_ERR_IO, "writing %s: %s", path, strerror(errno));
        p += w;
        n -= (size_t)w;
    }
    return BT_OK;
}

/* Writes the sidecar atomically: a temporary file, fsync, rename over, fsync of the directory. */
static bt_status write_sidecar(const bt_batch_output_params *p, const char *side, bt_error *err) {
    char text[256];
    int n = snprintf(text, sizeof text,
                     "{\"version\": %d, \"input_hash\": \"%016" PRIx64
                     "\", \"input_bytes\": %" PRIu64 ", \"n_requests\": %" PRId64 "}\n",
                     SIDECAR_VERSION, p->input_hash, p->input_bytes, p->n_requests);
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", side) >= sizeof tmp)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "output path %s is too long", p->path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return bt_error_set(err, BT_ERR_IO, "sidecar %s: %s", tmp, strerror(errno));
    bt_status st = write_all(fd, text, (size_t)n, tmp, err);
    if (st == BT_OK && fsync(fd) != 0)
        st = bt_error_set(err, BT_ERR_IO, "fsync of %s: %s", tmp, strerror(errno));
    close(fd);
    if (st == BT_OK && rename(tmp, side) != 0)
        st = bt_error_set(err, BT_ERR_IO, "renaming %s to %s: %s", tmp, side, strerror(errno));
    if (st != BT_OK) {
        unlink(tmp);
        return st;
    }
    return fsync_dir_of(side, err);
}

/* Reads the sidecar. BT_ERR_NOT_FOUND when there is none; BT_ERR_FORMAT (message naming the
 * problem) when it is not one of ours. */
static bt_status read_sidecar(const char *side, uint64_t *hash, uint64_t *bytes, bt_error *err) {
    int fd = open(side, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return BT_ERR_NOT_FOUND;
    if (fd < 0)
        return bt_error_set(err, BT_ERR_IO, "sidecar %s: %s", side, strerror(errno));
    char text[1024];
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, text + n, sizeof text - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            return bt_error_set(err, BT_ERR_IO, "sidecar %s: %s", side, strerror(e));
        }
        if (r == 0 || (n += (size_t)r) == sizeof text - 1)
            break;
    }
    close(fd);
    json_error_t jerr;
    json_t *j = json_loadb(text, n, JSON_REJECT_DUPLICATES, &jerr);
    const json_t *v = json_object_get(j, "version");
    const json_t *h = json_object_get(j, "input_hash");
    const json_t *b = json_object_get(j, "input_bytes");
    char *end = NULL;
    bool ok = json_is_integer(v) && json_integer_value(v) == SIDECAR_VERSION && json_is_string(h) &&
              json_string_length(h) == 16 && json_is_integer(b) && json_integer_value(b) >= 0;
    if (ok) {
        *hash = strtoull(json_string_value(h), &end, 16);
        ok = *end == '\0';
        *bytes = (uint64_t)json_integer_value(b);
    }
    json_decref(j);
    if (!ok)
        return bt_error_set(err, BT_ERR_FORMAT,
                            "sidecar %s is not a baton batch sidecar of version %d "
                            "({\"version\", \"input_hash\", \"input_bytes\"})",
                            side, SIDECAR_VERSION);
    return BT_OK;
}

/* The longest output line open will parse. A result line is at most a few MiB (the text and
 * logprobs of one request); a torn tail longer than this is still only skipped, not held. */
#define OUTPUT_LINE_MAX ((size_t)256 << 20)

/* Reads the output from its start one line at a time: hashes of the custom_ids into hv,
 * n_failed, and *complete = the bytes up to the last '\n'. A complete line that is not a
 * result line: BT_ERR_INVALID_ARG naming it. */
static bt_status load_done(int fd, const char *path, hash_vec *hv, int64_t *n_failed,
                           off_t *complete, bt_error *err) {
    enum { CHUNK = 64 << 10 };
    char *buf = malloc(CHUNK);
    char *line = NULL;
    size_t n_line = 0, cap_line = 0;
    off_t off = 0;
    int64_t line_no = 0;
    bool too_long = false; /* the current line passed OUTPUT_LINE_MAX: skipped, not held */
    bt_status st = BT_OK;
    *complete = 0;
    *n_failed = 0;
    if (!buf)
        return bt_error_set(err, BT_ERR_NOMEM, "output %s: out of memory", path);
    for (;;) {
        ssize_t r = pread(fd, buf, CHUNK, off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            st = bt_error_set(err, BT_ERR_IO, "reading output %s: %s", path, strerror(errno));
            goto cleanup;
        }
        if (r == 0)
            break;
        size_t pos = 0;
        while (pos < (size_t)r) {
            const char *nl = memchr(buf + pos, '\n', (size_t)r - pos);
            size_t take = nl ? (size_t)(nl - (buf + pos)) : (size_t)r - pos;
            if (n_line + take > OUTPUT_LINE_MAX)
                too_long = true;
            if (too_long) {
                pos += take;
            } else if (n_line + take + 1 > cap_line) {
                size_t cap = cap_line ? cap_line : 4096;
                while (cap < n_line + take + 1)
                    cap *= 2;
                if (cap > OUTPUT_LINE_MAX + 1)
                    cap = OUTPUT_LINE_MAX + 1;
                char *l = realloc(line, cap);
                if (!l) {
                    st =
                        bt_error_set(err, BT_ERR_NOMEM, "output %s: out of memory at line %" PRId64,
                                     path, line_no + 1);
                    goto cleanup;
                }
                line = l;
                cap_line = cap;
            }
            if (!too_long) {
                memcpy(line + n_line, buf + pos, take);
                n_line += take;
                pos += take;
            }
            if (!nl)
                break;
            pos++; /* the '\n' */
            line_no++;
            if (too_long) {
                st = bt_error_set(err, BT_ERR_INVALID_ARG,
                                  "output %s: line %" PRId64 " is longer than %zu bytes, not a "
                                  "result line; use --restart to start over or another --output",
                                  path, line_no, OUTPUT_LINE_MAX);
                goto cleanup;
            }
            json_error_t jerr;
            json_t *j = json_loadb(line, n_line, JSON_REJECT_DUPLICATES, &jerr);
            const json_t *id = json_object_get(j, "custom_id");
            if (!json_is_object(j) || !json_is_string(id) || json_string_length(id) == 0) {
                char b[SHOWN_CAP];
                st = bt_error_set(
                    err, BT_ERR_INVALID_ARG,
                    "output %s: line %" PRId64 " is not a result line (a JSON object with a "
                    "custom_id): \"%s\"; use --restart to start over or another --output",
                    path, line_no, shown(line, n_line, SHOWN_MAX, b, sizeof b));
                json_decref(j);
                goto cleanup;
            }
            const json_t *code = json_object_get(json_object_get(j, "response"), "status_code");
            if (!json_is_integer(code) || json_integer_value(code) != 200)
                (*n_failed)++;
            bool pushed = hash_vec_push(hv, hash_id(json_string_value(id), json_string_length(id)));
            json_decref(j);
            if (!pushed) {
                st = bt_error_set(err, BT_ERR_NOMEM, "output %s: out of memory at line %" PRId64,
                                  path, line_no);
                goto cleanup;
            }
            *complete = off + (off_t)pos;
            n_line = 0;
        }
        off += r;
    }
cleanup:
    free(buf);
    free(line);
    return st;
}

bt_status bt_batch_output_open(const bt_batch_output_params *p, bt_batch_output **out,
                               bt_batch_output_state *st, bt_error *err) {
    *out = NULL;
    memset(st, 0, sizeof *st);
    hash_vec hv = {0};
    bt_status s = BT_OK;
    char *side = sidecar_path(p->path);
    bt_batch_output *o = calloc(1, sizeof *o);
    if (o) {
        o->fd = -1;
        o->path = strdup(p->path);
    }
    if (!side || !o || !o->path) {
        s = bt_error_set(err, BT_ERR_NOMEM, "output %s: out of memory", p->path);
        goto fail;
    }
    o->fd = open(p->path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (o->fd < 0) {
        s = bt_error_set(err, BT_ERR_IO, "output %s: %s", p->path, strerror(errno));
        goto fail;
    }
    o->sync = p->sync;
    struct stat sb;
    if (fstat(o->fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        s = bt_error_set(err, BT_ERR_INVALID_ARG, "output %s is not a regular file", p->path);
        goto fail;
    }
    if (flock(o->fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            s = bt_error_set(err, BT_ERR_BUSY,
                             "output %s is locked by another baton batch (flock): one job per "
                             "output; wait for it or use another --output",
                             p->path);
        else
            s = bt_error_set(err, BT_ERR_IO, "locking output %s: %s", p->path, strerror(errno));
        goto fail;
    }
    if (p->restart) {
        /* Truncate first: a crash before the sidecar is rewritten leaves an empty output. */
        if (ftruncate(o->fd, 0) != 0 || fsync(o->fd) != 0) {
            s = bt_error_set(err, BT_ERR_IO, "truncating output %s: %s", p->path, strerror(errno));
            goto fail;
        }
        if ((s = write_sidecar(p, side, err)) != BT_OK)
            goto fail;
        *out = o;
        free(side);
        return BT_OK;
    }
    if (fstat(o->fd, &sb) != 0) {
        s = bt_error_set(err, BT_ERR_IO, "output %s: %s", p->path, strerror(errno));
        goto fail;
    }
    uint64_t side_hash = 0, side_bytes = 0;
    bt_error serr;
    bt_error_init(&serr);
    bt_status ss = read_sidecar(side, &side_hash, &side_bytes, &serr);
    if (ss != BT_OK && ss != BT_ERR_NOT_FOUND && ss != BT_ERR_FORMAT) {
        s = bt_error_set(err, ss, "%s", serr.msg);
        goto fail;
    }
    if (sb.st_size == 0) {
        /* Nothing to lose: an empty output takes any input. */
        if (ss != BT_OK || side_hash != p->input_hash || side_bytes != p->input_bytes)
            if ((s = write_sidecar(p, side, err)) != BT_OK)
                goto fail;
        *out = o;
        free(side);
        return BT_OK;
    }
    if (ss == BT_ERR_NOT_FOUND) {
        s = bt_error_set(err, BT_ERR_INVALID_ARG,
                         "output %s has %lld bytes but no sidecar %s: it was not written by baton "
                         "batch; use --restart to overwrite it or another --output",
                         p->path, (long long)sb.st_size, side);
        goto fail;
    }
    if (ss == BT_ERR_FORMAT) {
        s = bt_error_set(err, BT_ERR_INVALID_ARG,
                         "output %s: %s; use --restart to overwrite it or another --output",
                         p->path, serr.msg);
        goto fail;
    }
    if (side_hash != p->input_hash || side_bytes != p->input_bytes) {
        s = bt_error_set(err, BT_ERR_INVALID_ARG,
                         "output %s was written for another input (its sidecar %s records input "
                         "hash %016" PRIx64 ", %" PRIu64 " bytes; this input is %016" PRIx64
                         ", %" PRIu64 " bytes); use --restart to start over or another --output",
                         p->path, side, side_hash, side_bytes, p->input_hash, p->input_bytes);
        goto fail;
    }
    off_t complete = 0;
    if ((s = load_done(o->fd, p->path, &hv, &st->n_failed, &complete, err)) != BT_OK)
        goto fail;
    if (complete < sb.st_size) {
        /* A torn last line: a crash during a write. Dropped, and durably so before any append
         * lands after it. */
        if (ftruncate(o->fd, complete) != 0 || fsync(o->fd) != 0) {
            s = bt_error_set(err, BT_ERR_IO, "truncating the torn last line of %s: %s", p->path,
                             strerror(errno));
            goto fail;
        }
        st->torn_bytes = (int64_t)(sb.st_size - complete);
    }
    if (hv.n > 1) /* qsort takes no NULL, even for 0 entries */
        qsort(hv.v, hv.n, sizeof *hv.v, cmp_u64);
    o->done = hv.v;
    o->n_done = hv.n;
    o->size = complete;
    st->n_done = (int64_t)hv.n;
    st->resumed = hv.n > 0;
    *out = o;
    free(side);
    return BT_OK;
fail:
    free(hv.v);
    free(side);
    bt_batch_output_close(o);
    return s;
}

bool bt_batch_output_has(const bt_batch_output *o, const char *custom_id) {
    return sorted_has(o->done, o->n_done, hash_id(custom_id, strlen(custom_id)));
}

bt_status bt_batch_output_append(bt_batch_output *o, const char *lines, size_t n, bt_error *err) {
    bt_status st = write_all(o->fd, lines, n, o->path, err);
    if (st != BT_OK) {
        /* Take back a partial write, so that the next append does not glue a line onto a torn
         * one (a garbage line open would refuse). Best effort: open drops a torn tail anyway. */
        (void)!ftruncate(o->fd, o->size);
        return st;
    }
    o->size += (off_t)n;
    return BT_OK;
}

bt_status bt_batch_output_sync(bt_batch_output *o, bt_error *err) {
    if (!o->sync)
        return BT_OK;
    if (fdatasync(o->fd) != 0)
        return bt_error_set(err, BT_ERR_IO, "fdatasync of output %s: %s", o->path, strerror(errno));
    return BT_OK;
}

void bt_batch_output_close(bt_batch_output *o) {
    if (!o)
        return;
    if (o->fd >= 0)
        close(o->fd); /* releases the flock */
    free(o->done);
    free(o->path);
    free(o);
}
