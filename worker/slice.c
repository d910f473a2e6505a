/*
 * slice.c - slices of a model: their layout, shipping in chunks, and the verified cache (see
 * slice.h for the file formats).
 *
 * What must hold: a plan's head (GGUF header, the original key/values, the new tensor
 * directory, padding) ends at a multiple of the alignment, and its segments (tensor data) are
 * in ascending order, each at an aligned offset past the previous one's end, so the file a
 * writer assembles from plan_read's bytes is the GGUF that bt_gguf_open validates. A writer
 * accepts chunk i only at the offset where chunk i-1 ended, so a finished entry has had every
 * byte checked once against the coordinator's hash.
 */
#include "slice.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "hash64.h"
#include "hparams.h"
#include "log.h"
#include "weights.h"

#define ZSTD_LEVEL 1 /* quantized weights barely compress; level 1 keeps the sender fast */
#define MANIFEST_MAX_BYTES (64u << 20)

/* ---- layout ---- */

typedef struct seg {
    uint64_t dst;       /* offset in the slice file */
    const uint8_t *src; /* in the model's mapping */
    size_t len;
} seg;

struct bt_slice_plan {
    uint8_t *head; /* [head_len]: header, key/values, directory, padding */
    size_t head_len;
    seg *segs; /* [n_segs] ascending */
    size_t n_segs;
    uint64_t size;
};

static void put_u32(uint8_t **p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        *(*p)++ = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t **p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        *(*p)++ = (uint8_t)(v >> (8 * i));
}

bt_status bt_slice_plan_new(const bt_gguf *g, int layer_begin, int layer_end, bt_slice_plan **out,
                            bt_error *err) {
    *out = NULL;
    bt_hparams hp;
    bt_status st = bt_hparams_load(g, &hp, err);
    if (st != BT_OK)
        return st;
    if (layer_begin < 0 || layer_end > hp.n_layer || layer_begin >= layer_end)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "slice: layers [%d, %d) not inside [0, %d)",
                            layer_begin, layer_end, hp.n_layer);
    size_t n_all = bt_gguf_n_tensors(g), align = bt_gguf_alignment(g);
    size_t kv_len = bt_gguf_kv_end(g) - BT_GGUF_KV_BEGIN;
    bt_slice_plan *p = calloc(1, sizeof *p);
    if (!p || !(p->segs = calloc(n_all ? n_all : 1, sizeof *p->segs))) {
        free(p);
        return bt_error_set(err, BT_ERR_NOMEM, "slice: out of memory");
    }
    /* Directory size first: name, n_dims, dims, type, offset per tensor. */
    size_t dir_len = 0;
    for (size_t i = 0; i < n_all; i++) {
        const bt_gguf_tensor *t = bt_gguf_tensor_at(g, i);
        if (bt_weights_needs(g, t->name, layer_begin, layer_end, hp.n_layer))
            dir_len += 8 + strlen(t->name) + 4 + 8 * (size_t)t->n_dims + 4 + 8;
    }
    size_t unpadded = BT_GGUF_KV_BEGIN + kv_len + dir_len;
    p->head_len = (unpadded + align - 1) / align * align;
    if (!(p->head = calloc(1, p->head_len))) {
        size_t n = p->head_len;
        bt_slice_plan_free(p);
        return bt_error_set(err, BT_ERR_NOMEM, "slice: out of memory for a %zu-byte head", n);
    }
    uint8_t *w = p->head;
    memcpy(w, "GGUF", 4);
    w += 4;
    put_u32(&w, bt_gguf_version(g));
    uint8_t *n_tensors_at = w;
    put_u64(&w, 0); /* tensor count, set below */
    put_u64(&w, bt_gguf_n_kv(g));
    memcpy(w, (const uint8_t *)bt_gguf_base(g) + BT_GGUF_KV_BEGIN, kv_len);
    w += kv_len;
    uint64_t data_off = 0;
    for (size_t i = 0; i < n_all; i++) {
        const bt_gguf_tensor *t = bt_gguf_tensor_at(g, i);
        if (!bt_weights_needs(g, t->name, layer_begin, layer_end, hp.n_layer))
            continue;
        data_off = (data_off + align - 1) / align * align;
        size_t name_len = strlen(t->name);
        put_u64(&w, name_len);
        memcpy(w, t->name, name_len);
        w += name_len;
        put_u32(&w, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++)
            put_u64(&w, (uint64_t)t->ne[d]);
        put_u32(&w, t->type);
        put_u64(&w, data_off);
        p->segs[p->n_segs++] =
            (seg){.dst = p->head_len + data_off, .src = t->data, .len = t->n_bytes};
        data_off += t->n_bytes;
    }
    assert((size_t)(w - p->head) == unpadded);
    put_u64(&n_tensors_at, p->n_segs);
    p->size = p->head_len + data_off;
    *out = p;
    return BT_OK;
}

void bt_slice_plan_free(bt_slice_plan *p) {
    if (!p)
        return;
    free(p->head);
    free(p->segs);
    free(p);
}

uint64_t bt_slice_plan_size(const bt_slice_plan *p) {
    return p->size;
}

size_t bt_slice_plan_n_tensors(const bt_slice_plan *p) {
    return p->n_segs;
}

void bt_slice_plan_read(const bt_slice_plan *p, uint64_t off, size_t n, void *dst) {
    assert(off <= p->size && n <= p->size - off);
    uint8_t *out = dst;
    uint64_t end = off + n;
    memset(out, 0, n); /* padding between the parts */
    if (off < p->head_len) {
        size_t k = (size_t)((end < p->head_len ? end : p->head_len) - off);
        memcpy(out, p->head + off, k);
    }
    for (size_t i = 0; i < p->n_segs; i++) {
        const seg *s = &p->segs[i];
        uint64_t a = s->dst > off ? s->dst : off, b = s->dst + s->len < end ? s->dst + s->len : end;
        if (a < b)
            memcpy(out + (a - off), s->src + (a - s->dst), (size_t)(b - a));
        if (s->dst >= end)
            break;
    }
}

size_t bt_slice_chunk_bytes(size_t max_frame) {
    /* Room for the fixed header and a SliceChunk message (six small fields: < 64 bytes). */
    if (max_frame < BT_FRAME_HEADER_BYTES + 64 + 4096)
        return 0;
    size_t room = max_frame - BT_FRAME_HEADER_BYTES - 64;
    size_t raw = room < BT_SLICE_CHUNK_MAX ? room : BT_SLICE_CHUNK_MAX;
    while (raw >= 1024 && ZSTD_compressBound(raw) > room)
        raw -= raw / 64 > 256 ? raw / 64 : 256;
    return raw >= 1024 ? raw : 0;
}

/* ---- shipping ---- */

struct bt_slice_sender {
    bt_slice_plan *plan;
    size_t chunk;
    uint32_t n_chunks;
    uint8_t *raw; /* [chunk] */
    ZSTD_CCtx *zc;
};

bt_status bt_slice_sender_new(const bt_gguf *g, int layer_begin, int layer_end, size_t max_frame,
                              bt_slice_sender **out, bt_error *err) {
    *out = NULL;
    size_t chunk = bt_slice_chunk_bytes(max_frame);
    if (chunk == 0)
        return bt_error_set(err, BT_ERR_LIMIT,
                            "slice: frames of %zu bytes are too small to ship a slice", max_frame);
    bt_slice_sender *s = calloc(1, sizeof *s);
    if (!s)
        return bt_error_set(err, BT_ERR_NOMEM, "slice: out of memory");
    bt_status st = bt_slice_plan_new(g, layer_begin, layer_end, &s->plan, err);
    if (st != BT_OK) {
        free(s);
        return st;
    }
    s->chunk = chunk;
    uint64_t n = (bt_slice_plan_size(s->plan) + chunk - 1) / chunk;
    if (n > BT_SLICE_MAX_CHUNKS || bt_slice_plan_size(s->plan) > BT_SLICE_MAX_BYTES) {
        uint64_t size = bt_slice_plan_size(s->plan);
        bt_slice_sender_free(s);
        return bt_error_set(err, BT_ERR_LIMIT,
                            "slice: layers [%d, %d) are %llu bytes, %llu chunks of %zu; at most "
                            "%u chunks (larger frames: --max-batch)",
                            layer_begin, layer_end, (unsigned long long)size, (unsigned long long)n,
                            chunk, BT_SLICE_MAX_CHUNKS);
    }
    s->n_chunks = (uint32_t)n;
    s->raw = malloc(chunk);
    s->zc = ZSTD_createCCtx();
    if (!s->raw || !s->zc) {
        bt_slice_sender_free(s);
        return bt_error_set(err, BT_ERR_NOMEM, "slice: out of memory for a %zu-byte chunk", chunk);
    }
    *out = s;
    return BT_OK;
}

void bt_slice_sender_free(bt_slice_sender *s) {
    if (!s)
        return;
    bt_slice_plan_free(s->plan);
    free(s->raw);
    ZSTD_freeCCtx(s->zc);
    free(s);
}

uint32_t bt_slice_sender_n_chunks(const bt_slice_sender *s) {
    return s->n_chunks;
}

uint64_t bt_slice_sender_size(const bt_slice_sender *s) {
    return bt_slice_plan_size(s->plan);
}

bt_status bt_slice_sender_frame(bt_slice_sender *s, uint32_t i, uint8_t *frame, size_t cap,
                                size_t *len, size_t *zbytes, bt_error *err) {
    assert(i < s->n_chunks);
    uint64_t total = bt_slice_plan_size(s->plan), off = (uint64_t)i * s->chunk;
    size_t n = (size_t)(total - off < s->chunk ? total - off : s->chunk);
    bt_slice_plan_read(s->plan, off, n, s->raw);
    Baton__SliceChunk m = BATON__SLICE_CHUNK__INIT;
    m.offset = off;
    m.raw_len = (uint32_t)n;
    m.hash = bt_hash64(s->raw, n, 0);
    m.total_bytes = total;
    m.index = i;
    m.n_chunks = s->n_chunks;
    size_t at = bt_frame_payload_offset(&m.base);
    if (at >= cap)
        return bt_error_set(err, BT_ERR_LIMIT, "slice: frame of %zu bytes", cap);
    size_t z = ZSTD_compressCCtx(s->zc, frame + at, cap - at, s->raw, n, ZSTD_LEVEL);
    if (ZSTD_isError(z))
        return bt_error_set(err, BT_ERR_INTERNAL, "slice: chunk %u: zstd: %s", i,
                            ZSTD_getErrorName(z));
    *zbytes = z;
    return bt_frame_finish(frame, cap, BT_MSG_SLICE_CHUNK, &m.base, z, 0, 1, len, err);
}

/* ---- the cache ---- */

bt_status bt_slice_cache_default(char *out, size_t cap, bt_error *err) {
    const char *v = getenv("BATON_SLICE_CACHE");
    if (v && *v) {
        snprintf(out, cap, "%s", v);
        return BT_OK;
    }
    if ((v = getenv("XDG_CACHE_HOME")) && *v) {
        snprintf(out, cap, "%s/baton/slices", v);
        return BT_OK;
    }
    if ((v = getenv("HOME")) && *v) {
        snprintf(out, cap, "%s/.cache/baton/slices", v);
        return BT_OK;
    }
    return bt_error_set(err, BT_ERR_NOT_FOUND,
                        "slice cache: none of --slice-cache, BATON_SLICE_CACHE, XDG_CACHE_HOME "
                        "and HOME is set");
}

static void hex(const uint8_t *b, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

void bt_slice_cache_path(const char *dir, const bt_slice_key *key, char *out, size_t cap) {
    char h[2 * BT_MODEL_HASH_BYTES + 1];
    hex(key->model_hash, BT_MODEL_HASH_BYTES, h);
    snprintf(out, cap, "%s/%s-L%d-%d%s%s.gguf", dir, h, key->layer_begin, key->layer_end,
             key->first ? "-first" : "", key->last ? "-last" : "");
}

static void manifest_path(const char *dir, const bt_slice_key *key, char *out, size_t cap) {
    char p[4096];
    bt_slice_cache_path(dir, key, p, sizeof p);
    snprintf(out, cap, "%s.manifest", p);
}

/* Reads the manifest's header lines and returns the chunk lines' start; BT_ERR_FORMAT naming
 * the line otherwise. */
typedef struct manifest {
    char *text; /* owned, NUL-terminated */
    uint64_t total;
    uint32_t n_chunks;
    const char *chunks; /* into text: the first chunk line */
} manifest;

static bt_status read_manifest(const char *path, const char *entry, const bt_slice_key *key,
                               manifest *m, bt_error *err) {
    memset(m, 0, sizeof *m);
    FILE *f = fopen(path, "rb");
    if (!f)
        return bt_error_set(err, BT_ERR_FORMAT,
                            "slice cache entry %s: no manifest (a partial entry): %s", entry,
                            strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || sb.st_size <= 0 || sb.st_size > MANIFEST_MAX_BYTES) {
        fclose(f);
        return bt_error_set(err, BT_ERR_FORMAT, "slice cache entry %s: manifest of %lld bytes",
                            entry, (long long)sb.st_size);
    }
    m->text = malloc((size_t)sb.st_size + 1);
    size_t got = m->text ? fread(m->text, 1, (size_t)sb.st_size, f) : 0;
    fclose(f);
    if (!m->text || got != (size_t)sb.st_size) {
        free(m->text);
        m->text = NULL;
        return bt_error_set(err, BT_ERR_IO, "slice cache entry %s: cannot read its manifest",
                            entry);
    }
    m->text[got] = '\0';
    char want_hash[2 * BT_MODEL_HASH_BYTES + 1], got_hash[2 * BT_MODEL_HASH_BYTES + 1] = "";
    hex(key->model_hash, BT_MODEL_HASH_BYTES, want_hash);
    int b = -1, e = -1, first = -1, last = -1, used = 0;
    unsigned long long total = 0;
    unsigned n_chunks = 0;
    int n = sscanf(m->text,
                   "baton-slice 1\nmodel %32[0-9a-f]\nlayers %d %d %d %d\ntotal %llu\nchunks "
                   "%u\n%n",
                   got_hash, &b, &e, &first, &last, &total, &n_chunks, &used);
    bt_status st = BT_OK;
    if (n != 7 || used == 0)
        st = bt_error_set(err, BT_ERR_FORMAT,
                          "slice cache entry %s: manifest header unreadable (%d of 7 fields)",
                          entry, n);
    else if (strcmp(got_hash, want_hash) != 0 || b != key->layer_begin || e != key->layer_end ||
             first != key->first || last != key->last)
        st = bt_error_set(err, BT_ERR_FORMAT,
                          "slice cache entry %s: manifest is for model %s layers [%d, %d) "
                          "first %d last %d",
                          entry, got_hash, b, e, first, last);
    else if (n_chunks == 0 || total == 0 || total > BT_SLICE_MAX_BYTES ||
             (uint64_t)n_chunks > total)
        st = bt_error_set(err, BT_ERR_FORMAT,
                          "slice cache entry %s: manifest says %llu bytes in %u chunks", entry,
                          total, n_chunks);
    if (st != BT_OK) {
        free(m->text);
        m->text = NULL;
        return st;
    }
    m->total = total;
    m->n_chunks = n_chunks;
    m->chunks = m->text + used;
    return BT_OK;
}

static const char *entry_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

bt_status bt_slice_cache_verify(const char *dir, const bt_slice_key *key, bt_error *err) {
    char path[4096], mpath[4200];
    bt_slice_cache_path(dir, key, path, sizeof path);
    manifest_path(dir, key, mpath, sizeof mpath);
    const char *entry = entry_name(path);
    struct stat sb;
    bool have_slice = stat(path, &sb) == 0, have_manifest = access(mpath, F_OK) == 0;
    if (!have_slice && !have_manifest)
        return bt_error_set(err, BT_ERR_NOT_FOUND, "slice cache: no entry %s in %s", entry, dir);
    if (!have_slice)
        return bt_error_set(err, BT_ERR_FORMAT, "slice cache entry %s: manifest without a slice",
                            entry);
    manifest m;
    bt_status st = read_manifest(mpath, entry, key, &m, err);
    if (st != BT_OK)
        return st;
    if ((uint64_t)sb.st_size != m.total) {
        free(m.text);
        return bt_error_set(err, BT_ERR_FORMAT,
                            "slice cache entry %s: %lld bytes, its manifest says %" PRIu64
                            " (truncated or grown)",
                            entry, (long long)sb.st_size, m.total);
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    void *map = fd >= 0 ? mmap(NULL, (size_t)m.total, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    if (fd >= 0)
        close(fd);
    if (map == MAP_FAILED) {
        free(m.text);
        return bt_error_set(err, BT_ERR_IO, "slice cache entry %s: cannot map it: %s", entry,
                            strerror(errno));
    }
    const char *line = m.chunks;
    uint64_t next = 0;
    for (uint32_t i = 0; i < m.n_chunks && st == BT_OK; i++) {
        unsigned long long off = 0, len = 0, h = 0;
        int used = 0;
        if (sscanf(line, "%llu %llu %16llx\n%n", &off, &len, &h, &used) != 3 || used == 0)
            st = bt_error_set(err, BT_ERR_FORMAT,
                              "slice cache entry %s: manifest chunk line %u unreadable", entry, i);
        else if (off != next || len == 0 || len > BT_SLICE_CHUNK_MAX || len > m.total - off)
            st = bt_error_set(err, BT_ERR_FORMAT,
                              "slice cache entry %s: manifest chunk %u at %llu of %llu bytes does "
                              "not follow the previous one (which ended at %" PRIu64 ")",
                              entry, i, off, len, next);
        else {
            uint64_t got = bt_hash64((const uint8_t *)map + off, (size_t)len, 0);
            if (got != h)
                st = bt_error_set(err, BT_ERR_FORMAT,
                                  "slice cache entry %s: chunk %u (bytes %llu..%llu) has hash "
                                  "%016" PRIx64 ", its manifest says %016llx",
                                  entry, i, off, off + len, got, h);
            next = off + len;
            line += used;
        }
    }
    if (st == BT_OK && (next != m.total || *line != '\0'))
        st = bt_error_set(err, BT_ERR_FORMAT,
                          "slice cache entry %s: manifest chunks cover %" PRIu64 " of %" PRIu64
                          " bytes%s",
                          entry, next, m.total, *line ? " and trailing text follows" : "");
    munmap(map, (size_t)m.total);
    free(m.text);
    return st;
}

void bt_slice_cache_remove(const char *dir, const bt_slice_key *key) {
    char path[4096], mpath[4200];
    bt_slice_cache_path(dir, key, path, sizeof path);
    manifest_path(dir, key, mpath, sizeof mpath);
    unlink(mpath); /* the manifest first: a slice without one never verifies */
    unlink(path);
}

/* mkdir -p */
static bt_status make_dirs(const char *dir, bt_error *err) {
    char p[4096];
    size_t n = (size_t)snprintf(p, sizeof p, "%s", dir);
    if (n >= sizeof p)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "slice cache: path of %zu bytes", n);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != '\0')
            continue;
        char c = p[i];
        p[i] = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            return bt_error_set(err, BT_ERR_IO, "slice cache: cannot create '%s': %s", p,
                                strerror(errno));
        p[i] = c;
    }
    return BT_OK;
}

bt_status bt_slice_cache_prepare(const char *dir, bt_error *err) {
    bt_status st = make_dirs(dir, err);
    if (st == BT_OK && access(dir, W_OK | X_OK) != 0)
        st = bt_error_set(err, BT_ERR_IO, "slice cache: cannot write in '%s': %s", dir,
                          strerror(errno));
    return st;
}

typedef struct chunk_rec {
    uint64_t off;
    uint32_t len;
    uint64_t hash;
} chunk_rec;

struct bt_slice_writer {
    char dir[4096], path[4200], tmp[4300];
    bt_slice_key key;
    int fd; /* the temp file; -1 once closed */
    uint64_t total, written;
    uint32_t n_chunks, got;
    chunk_rec *chunks; /* [n_chunks] */
    uint8_t *raw;      /* [BT_SLICE_CHUNK_MAX] one decompressed chunk */
    ZSTD_DCtx *zd;
    bool finished;
};

/* Temp files of the entry at `path` (its slice's and its manifest's: PATH.tmp.PID,
 * PATH.manifest.tmp.PID) left by a writer that was killed: removed when their process is gone
 * (a cache is a host's own, so the pid is this host's). One still running is another job
 * fetching the same entry: its file stays. */
static void remove_stale_temps(const char *dir, const char *path) {
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    size_t n = strlen(base);
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *rest = e->d_name + n;
        if (strncmp(e->d_name, base, n) != 0)
            continue;
        if (strncmp(rest, ".manifest", 9) == 0)
            rest += 9;
        if (strncmp(rest, ".tmp.", 5) != 0)
            continue;
        char *end;
        long pid = strtol(rest + 5, &end, 10);
        if (*end != '\0' || pid <= 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue; /* not a temp name, or its process lives (EPERM: it exists) */
        char stale[4400];
        snprintf(stale, sizeof stale, "%s/%s", dir, e->d_name);
        if (unlink(stale) == 0)
            BT_INFO("slice cache: removed '%s', left by process %ld, which is gone", stale, pid);
    }
    closedir(d);
}

bt_status bt_slice_writer_new(const char *dir, const bt_slice_key *key, uint64_t total,
                              uint32_t n_chunks, bt_slice_writer **out, bt_error *err) {
    *out = NULL;
    if (total == 0 || total > BT_SLICE_MAX_BYTES || n_chunks == 0 || n_chunks > total ||
        n_chunks > BT_SLICE_MAX_CHUNKS ||
        (total + BT_SLICE_CHUNK_MAX - 1) / BT_SLICE_CHUNK_MAX > n_chunks)
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "SliceChunk: total_bytes %" PRIu64 " in n_chunks %u", total, n_chunks);
    bt_status st = make_dirs(dir, err);
    if (st != BT_OK)
        return st;
    bt_slice_writer *w = calloc(1, sizeof *w);
    if (!w)
        return bt_error_set(err, BT_ERR_NOMEM, "slice: out of memory");
    w->fd = -1;
    snprintf(w->dir, sizeof w->dir, "%s", dir);
    bt_slice_cache_path(dir, key, w->path, sizeof w->path);
    snprintf(w->tmp, sizeof w->tmp, "%s.tmp.%ld", w->path, (long)getpid());
    w->key = *key;
    w->total = total;
    w->n_chunks = n_chunks;
    w->chunks = calloc(n_chunks, sizeof *w->chunks);
    w->raw = malloc(BT_SLICE_CHUNK_MAX);
    w->zd = ZSTD_createDCtx();
    if (!w->chunks || !w->raw || !w->zd) {
        bt_slice_writer_free(w);
        return bt_error_set(err, BT_ERR_NOMEM, "slice: out of memory for %u chunks", n_chunks);
    }
    /* A stale manifest must not vouch for the bytes about to replace its slice. */
    bt_slice_cache_remove(dir, key);
    remove_stale_temps(dir, w->path);
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        st = bt_error_set(err, BT_ERR_IO, "slice cache: cannot create '%s': %s", w->tmp,
                          strerror(errno));
        bt_slice_writer_free(w);
        return st;
    }
    *out = w;
    return BT_OK;
}

bt_status bt_slice_writer_put(bt_slice_writer *w, const bt_frame_view *f,
                              const Baton__SliceChunk *m, bt_error *err) {
    uint32_t i = w->got;
    if (w->got >= w->n_chunks || m->index != i || m->n_chunks != w->n_chunks ||
        m->total_bytes != w->total || m->offset != w->written)
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "SliceChunk %u of %u at offset %" PRIu64 " (total %" PRIu64
                            "): expected chunk %u of %u at offset %" PRIu64 " (total %" PRIu64 ")",
                            m->index, m->n_chunks, m->offset, m->total_bytes, i, w->n_chunks,
                            w->written, w->total);
    if (m->raw_len == 0 || m->raw_len > BT_SLICE_CHUNK_MAX || m->raw_len > w->total - w->written)
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "SliceChunk %u: raw_len %u (at most %u, %" PRIu64 " left)", i,
                            m->raw_len, BT_SLICE_CHUNK_MAX, w->total - w->written);
    if (!f->zstd || f->payload_len == 0)
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "SliceChunk %u: payload of %zu bytes, zstd flag %d", i, f->payload_len,
                            f->zstd);
    size_t n = ZSTD_decompressDCtx(w->zd, w->raw, m->raw_len, f->payload, f->payload_len);
    if (ZSTD_isError(n) || n != m->raw_len)
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "SliceChunk %u: payload does not decompress to raw_len %u bytes (%s)",
                            i, m->raw_len, ZSTD_isError(n) ? ZSTD_getErrorName(n) : "size");
    uint64_t h = bt_hash64(w->raw, n, 0);
    if (h != m->hash)
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "SliceChunk %u (bytes %" PRIu64 "..%" PRIu64 "): hash %016" PRIx64
                            ", the coordinator sent %016" PRIx64,
                            i, m->offset, m->offset + n, h, m->hash);
    for (size_t done = 0; done < n;) {
        ssize_t k = pwrite(w->fd, w->raw + done, n - done, (off_t)(m->offset + done));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return bt_error_set(err, BT_ERR_IO, "slice cache: writing '%s': %s", w->tmp,
                                k < 0 ? strerror(errno) : "no progress");
        done += (size_t)k;
    }
    w->chunks[i] = (chunk_rec){.off = m->offset, .len = (uint32_t)n, .hash = h};
    w->written += n;
    w->got++;
    return BT_OK;
}

bool bt_slice_writer_complete(const bt_slice_writer *w) {
    return w->got == w->n_chunks && w->written == w->total;
}

uint64_t bt_slice_writer_total(const bt_slice_writer *w) {
    return w->total;
}

static bt_status sync_close(int fd, const char *path, bt_error *err) {
    int rc = fsync(fd);
    int e = errno;
    if (close(fd) != 0 && rc == 0) {
        rc = -1;
        e = errno;
    }
    return rc == 0 ? BT_OK
                   : bt_error_set(err, BT_ERR_IO, "slice cache: fsync '%s': %s", path, strerror(e));
}

bt_status bt_slice_writer_finish(bt_slice_writer *w, bt_error *err) {
    if (!bt_slice_writer_complete(w))
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "slice: %u of %u chunks, %" PRIu64 " of %" PRIu64 " bytes arrived",
                            w->got, w->n_chunks, w->written, w->total);
    int fd = w->fd;
    w->fd = -1;
    bt_status st = sync_close(fd, w->tmp, err);
    if (st != BT_OK)
        return st;
    if (rename(w->tmp, w->path) != 0)
        return bt_error_set(err, BT_ERR_IO, "slice cache: rename to '%s': %s", w->path,
                            strerror(errno));
    /* The manifest last, written the same way: until it is in place the entry is partial. */
    char mpath[4300], mtmp[4400], h[2 * BT_MODEL_HASH_BYTES + 1];
    manifest_path(w->dir, &w->key, mpath, sizeof mpath);
    snprintf(mtmp, sizeof mtmp, "%s.tmp.%ld", mpath, (long)getpid());
    hex(w->key.model_hash, BT_MODEL_HASH_BYTES, h);
    FILE *f = fopen(mtmp, "wb");
    if (!f)
        return bt_error_set(err, BT_ERR_IO, "slice cache: cannot create '%s': %s", mtmp,
                            strerror(errno));
    fprintf(f, "baton-slice 1\nmodel %s\nlayers %d %d %d %d\ntotal %" PRIu64 "\nchunks %u\n", h,
            w->key.layer_begin, w->key.layer_end, (int)w->key.first, (int)w->key.last, w->total,
            w->n_chunks);
    for (uint32_t i = 0; i < w->n_chunks; i++)
        fprintf(f, "%" PRIu64 " %u %016" PRIx64 "\n", w->chunks[i].off, w->chunks[i].len,
                w->chunks[i].hash);
    bool bad = fflush(f) != 0 || ferror(f);
    if (!bad)
        st = sync_close(dup(fileno(f)), mtmp, err);
    if (fclose(f) != 0 || bad) {
        unlink(mtmp);
        return bt_error_set(err, BT_ERR_IO, "slice cache: writing '%s' failed", mtmp);
    }
    if (st != BT_OK || rename(mtmp, mpath) != 0) {
        unlink(mtmp);
        return st != BT_OK ? st
                           : bt_error_set(err, BT_ERR_IO, "slice cache: rename to '%s': %s", mpath,
                                          strerror(errno));
    }
    int dfd = open(w->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) { /* the renames themselves durable; a failure only costs a refetch */
        if (fsync(dfd) != 0)
            BT_WARN("slice cache: fsync of '%s': %s", w->dir, strerror(errno));
        close(dfd);
    }
    w->finished = true;
    return BT_OK;
}

void bt_slice_writer_free(bt_slice_writer *w) {
    if (!w)
        return;
    if (w->fd >= 0)
        close(w->fd);
    if (!w->finished)
        unlink(w->tmp);
    free(w->chunks);
    free(w->raw);
    ZSTD_freeDCtx(w->zd);
    free(w);
}
