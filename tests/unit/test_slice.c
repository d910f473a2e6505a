/*
 * test_slice.c - slices of a model (worker/slice.h) and their cache, in process: each slice
 * goes the way a shipped one goes (bt_slice_sender frames, parsed and unpacked, into a
 * bt_slice_writer), then is verified, opened and compared with the full model: the metadata
 * byte for byte, exactly the tensors bt_weights_needs names with their shapes, types and
 * bytes, and bt_weights_load taking it. Then the cache's refusals: a flipped byte (naming the
 * chunk), a truncated slice, a missing manifest, a chunk whose hash or order is wrong on the
 * wire, and an unfinished writer that leaves nothing behind. The coordinator's side against a
 * hand-made stage on a local hub: bad SliceRequests refused, a good one answered with the
 * slice. On the tiny model always, on SmolLM2 when it is there.
 */
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "cluster.h"
#include "gguf.h"
#include "hash64.h"
#include "hparams.h"
#include "msg.h"
#include "slice.h"
#include "weights.h"

static char dir[256];

static int count_files(void) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static void key_of(const bt_gguf *g, int b, int e, int n_layer, bt_slice_key *k) {
    bt_model_hash(bt_gguf_base(g), bt_gguf_data_offset(g), bt_gguf_file_size(g), k->model_hash);
    k->layer_begin = b;
    k->layer_end = e;
    k->first = b == 0;
    k->last = e == n_layer;
}

/* Ships slice [b, e) of g through frames of max_frame bytes into the cache: the stage's path.
 * Returns the writer's status; *n_chunks the chunks sent. */
static bt_status ship(const bt_gguf *g, int b, int e, const bt_slice_key *key, size_t max_frame,
                      uint32_t *n_chunks, bt_error *err) {
    bt_slice_sender *s;
    bt_status st = bt_slice_sender_new(g, b, e, max_frame, &s, err);
    if (st != BT_OK)
        return st;
    uint8_t *frame = malloc(max_frame);
    bt_arena arena;
    bt_arena_init(&arena, 1u << 16, err);
    bt_slice_writer *w = NULL;
    *n_chunks = bt_slice_sender_n_chunks(s);
    for (uint32_t i = 0; i < *n_chunks && st == BT_OK; i++) {
        size_t len, z;
        bt_frame_view f;
        ProtobufCMessage *m;
        bt_arena_reset(&arena);
        if ((st = bt_slice_sender_frame(s, i, frame, max_frame, &len, &z, err)) != BT_OK ||
            (st = bt_frame_parse(frame, len, &f, err)) != BT_OK ||
            (st = bt_msg_unpack(&f, BT_MSG_SLICE_CHUNK, &arena, &m, err)) != BT_OK)
            break;
        const Baton__SliceChunk *c = (const Baton__SliceChunk *)m;
        CHECK(len <= max_frame);
        if (!w && (st = bt_slice_writer_new(dir, key, c->total_bytes, c->n_chunks, &w, err)))
            break;
        st = bt_slice_writer_put(w, &f, c, err);
    }
    if (st == BT_OK)
        st = bt_slice_writer_finish(w, err);
    bt_slice_writer_free(w);
    bt_arena_deinit(&arena);
    free(frame);
    bt_slice_sender_free(s);
    return st;
}

/* The slice of [b, e) against g: metadata, tensors, weights. */
static void check_slice(const bt_gguf *g, const bt_hparams *hp, int b, int e, size_t max_frame) {
    bt_error err;
    bt_error_init(&err);
    bt_slice_key key;
    key_of(g, b, e, hp->n_layer, &key);
    uint32_t n_chunks = 0;
    bt_status st = ship(g, b, e, &key, max_frame, &n_chunks, &err);
    if (st != BT_OK)
        printf("ship [%d, %d): %s\n", b, e, err.msg);
    CHECK_EQ_INT(st, BT_OK);
    CHECK(n_chunks >= 1);
    CHECK_EQ_INT(bt_slice_cache_verify(dir, &key, &err), BT_OK);
    char path[4096];
    bt_slice_cache_path(dir, &key, path, sizeof path);
    bt_gguf *s = NULL;
    st = bt_gguf_open(path, &s, &err);
    if (st != BT_OK)
        printf("open %s: %s\n", path, err.msg);
    CHECK_EQ_INT(st, BT_OK);
    if (!s)
        return;
    /* Metadata verbatim: the same key/values in the same bytes. */
    CHECK_EQ_INT(bt_gguf_version(s), bt_gguf_version(g));
    CHECK_EQ_INT(bt_gguf_n_kv(s), bt_gguf_n_kv(g));
    CHECK_EQ_INT(bt_gguf_alignment(s), bt_gguf_alignment(g));
    CHECK_EQ_INT(bt_gguf_kv_end(s), bt_gguf_kv_end(g));
    CHECK(memcmp((const char *)bt_gguf_base(s) + BT_GGUF_KV_BEGIN,
                 (const char *)bt_gguf_base(g) + BT_GGUF_KV_BEGIN,
                 bt_gguf_kv_end(g) - BT_GGUF_KV_BEGIN) == 0);
    bt_hparams hs;
    CHECK_EQ_INT(bt_hparams_load(s, &hs, &err), BT_OK);
    CHECK_EQ_INT(hs.n_layer, hp->n_layer);
    CHECK_EQ_INT(hs.n_embd, hp->n_embd);
    CHECK_EQ_INT(hs.n_vocab, hp->n_vocab);
    /* Exactly the needed tensors, each the same. */
    size_t n_need = 0;
    int n_same = 0;
    for (size_t i = 0; i < bt_gguf_n_tensors(g); i++) {
        const bt_gguf_tensor *t = bt_gguf_tensor_at(g, i);
        const bt_gguf_tensor *u = bt_gguf_find_tensor(s, t->name);
        bool need = bt_weights_needs(g, t->name, b, e, hp->n_layer);
        n_need += need;
        if (need != (u != NULL))
            printf("[%d, %d): tensor %s needed %d, in the slice %d\n", b, e, t->name, need,
                   u != NULL);
        CHECK(need == (u != NULL));
        if (u && u->type == t->type && u->n_dims == t->n_dims &&
            memcmp(u->ne, t->ne, sizeof t->ne) == 0 && u->n_bytes == t->n_bytes &&
            memcmp(u->data, t->data, t->n_bytes) == 0)
            n_same++;
    }
    CHECK_EQ_INT(bt_gguf_n_tensors(s), n_need);
    CHECK_EQ_INT(n_same, n_need);
    /* The layer before and after the range are not in it. */
    char name[64];
    if (b > 0 || e < hp->n_layer) {
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", b > 0 ? b - 1 : e);
        CHECK(bt_gguf_find_tensor(s, name) == NULL);
    }
    /* bt_weights_load takes it as it takes the full file. */
    bt_weights wg, ws;
    CHECK_EQ_INT(bt_weights_load(g, hp, b, e, &wg, &err), BT_OK);
    st = bt_weights_load(s, &hs, b, e, &ws, &err);
    if (st != BT_OK)
        printf("weights [%d, %d) from the slice: %s\n", b, e, err.msg);
    CHECK_EQ_INT(st, BT_OK);
    if (st == BT_OK) {
        CHECK_EQ_INT(bt_weights_bytes(&ws), bt_weights_bytes(&wg));
        CHECK_EQ_INT(ws.has_embd, wg.has_embd);
        CHECK_EQ_INT(ws.has_head, wg.has_head);
        CHECK(ws.layers[0].wq.row_bytes == wg.layers[0].wq.row_bytes);
        bt_weights_deinit(&ws);
    }
    bt_weights_deinit(&wg);
    bt_gguf_free(s);
}

/* Copies the first entry's slice bytes, flips one in chunk `chunk`, checks the refusal. */
static void check_refusals(const bt_gguf *g, const bt_hparams *hp, size_t max_frame) {
    bt_error err;
    bt_error_init(&err);
    bt_slice_key key;
    int e = hp->n_layer / 2;
    key_of(g, 0, e, hp->n_layer, &key);
    uint32_t n_chunks = 0;
    CHECK_EQ_INT(ship(g, 0, e, &key, max_frame, &n_chunks, &err), BT_OK);
    CHECK(n_chunks >= 2);
    char path[4096], mpath[4200];
    bt_slice_cache_path(dir, &key, path, sizeof path);
    snprintf(mpath, sizeof mpath, "%s.manifest", path);
    CHECK_EQ_INT(bt_slice_cache_verify(dir, &key, &err), BT_OK);

    /* A flipped byte in the second chunk. */
    size_t chunk = bt_slice_chunk_bytes(max_frame);
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL);
    if (f) {
        fseek(f, (long)(chunk + 17), SEEK_SET);
        int c = fgetc(f);
        fseek(f, (long)(chunk + 17), SEEK_SET);
        fputc(c ^ 0x40, f);
        fclose(f);
    }
    bt_error_init(&err);
    CHECK_EQ_INT(bt_slice_cache_verify(dir, &key, &err), BT_ERR_FORMAT);
    CHECK(strstr(err.msg, "chunk 1 ") != NULL);
    CHECK(strstr(err.msg, "-L0-") != NULL); /* names the entry */
    printf("flipped byte: %s\n", err.msg);

    /* Truncated. */
    CHECK_EQ_INT(ship(g, 0, e, &key, max_frame, &n_chunks, &err), BT_OK);
    CHECK_EQ_INT(bt_slice_cache_verify(dir, &key, &err), BT_OK);
    struct stat sb;
    stat(path, &sb);
    CHECK_EQ_INT(truncate(path, sb.st_size - 3), 0);
    bt_error_init(&err);
    CHECK_EQ_INT(bt_slice_cache_verify(dir, &key, &err), BT_ERR_FORMAT);
    CHECK(strstr(err.msg, "truncated") != NULL);
    printf("truncated: %s\n", err.msg);

    /* No manifest: a partial entry. */
    CHECK_EQ_INT(ship(g, 0, e, &key, max_frame, &n_chunks, &err), BT_OK);
    CHECK_EQ_INT(unlink(mpath), 0);
    bt_error_init(&err);
    CHECK_EQ_INT(bt_slice_cache_verify(dir, &key, &err), BT_ERR_FORMAT);
    CHECK(strstr(err.msg, "no manifest") != NULL);
    printf("no manifest: %s\n", err.msg);

    /* A manifest for other layers does not vouch for this entry. */
    CHECK_EQ_INT(ship(g, 0, e, &key, max_frame, &n_chunks, &err), BT_OK);
    bt_slice_key other = key;
    other.layer_end = e + 1;
    char opath[4096], ompath[4200];
    bt_slice_cache_path(dir, &other, opath, sizeof opath);
    snprintf(ompath, sizeof ompath, "%s.manifest", opath);
    CHECK_EQ_INT(rename(path, opath), 0);
    CHECK_EQ_INT(rename(mpath, ompath), 0);
    CHECK_EQ_INT(bt_slice_cache_verify(dir, &other, &err), BT_ERR_FORMAT);
    CHECK(strstr(err.msg, "manifest is for") != NULL);

    /* No entry at all; remove deletes both files. */
    bt_slice_cache_remove(dir, &other);
    bt_slice_cache_remove(dir, &key);
    CHECK_EQ_INT(count_files(), 0);
    CHECK_EQ_INT(bt_slice_cache_verify(dir, &key, &err), BT_ERR_NOT_FOUND);

    /* On the wire: a chunk whose hash is wrong, one out of order; an unfinished writer
     * leaves no file. */
    bt_slice_sender *s;
    CHECK_EQ_INT(bt_slice_sender_new(g, 0, e, max_frame, &s, &err), BT_OK);
    uint8_t *frame = malloc(max_frame);
    bt_arena arena;
    bt_arena_init(&arena, 1u << 16, &err);
    size_t len, z;
    bt_frame_view fv;
    ProtobufCMessage *m;
    CHECK_EQ_INT(bt_slice_sender_frame(s, 0, frame, max_frame, &len, &z, &err), BT_OK);
    CHECK_EQ_INT(bt_frame_parse(frame, len, &fv, &err), BT_OK);
    CHECK_EQ_INT(bt_msg_unpack(&fv, BT_MSG_SLICE_CHUNK, &arena, &m, &err), BT_OK);
    Baton__SliceChunk *c = (Baton__SliceChunk *)m;
    bt_slice_writer *w = NULL;
    CHECK_EQ_INT(bt_slice_writer_new(dir, &key, c->total_bytes, c->n_chunks, &w, &err), BT_OK);
    c->hash ^= 1;
    CHECK_EQ_INT(bt_slice_writer_put(w, &fv, c, &err), BT_ERR_PROTOCOL);
    CHECK(strstr(err.msg, "SliceChunk 0") && strstr(err.msg, "hash"));
    c->hash ^= 1;
    c->index = 1;
    CHECK_EQ_INT(bt_slice_writer_put(w, &fv, c, &err), BT_ERR_PROTOCOL);
    CHECK(strstr(err.msg, "expected chunk 0") != NULL);
    c->index = 0;
    CHECK_EQ_INT(bt_slice_writer_put(w, &fv, c, &err), BT_OK);
    CHECK_EQ_INT(bt_slice_writer_finish(w, &err), BT_ERR_PROTOCOL); /* chunks missing */
    CHECK_EQ_INT(count_files(), 1);                                 /* the temp file */
    bt_slice_writer_free(w);
    CHECK_EQ_INT(count_files(), 0);
    CHECK_EQ_INT(bt_slice_cache_verify(dir, &key, &err), BT_ERR_NOT_FOUND);
    bt_arena_deinit(&arena);
    free(frame);
    bt_slice_sender_free(s);
}

/* The coordinator's side (bt_cluster_start) with a hand-made stage on rank 1 of a local hub:
 * a SliceRequest that differs from the stage's Hello is refused naming it; a good one is
 * answered with the slice, which the stage writes and verifies. */
typedef struct fake_stage {
    bt_transport *t;
    const bt_gguf *g;
    int n_layer;
    int mode; /* 0 good request, 1 other layers, 2 other model hash, 3 another rank */
    bt_status st;
    char msg[512];
} fake_stage;

static void *fake_stage_main(void *arg) {
    fake_stage *fs = arg;
    static uint8_t frame[1u << 20];
    bt_error err;
    bt_error_init(&err);
    size_t len;
    Baton__StageInfo si = BATON__STAGE_INFO__INIT;
    si.protocol_version = BT_PROTOCOL_VERSION;
    si.rank = 1;
    si.hostname = "fake";
    bt_arena arena;
    bt_arena_init(&arena, 1u << 16, &err);
    const void *buf;
    int from;
    bt_frame_view f;
    ProtobufCMessage *m;
    bt_slice_writer *w = NULL;
    bt_slice_key key;
    bt_status st;
    if ((st = bt_frame_finish(frame, sizeof frame, BT_MSG_STAGE_INFO, &si.base, 0, 0, 0, &len,
                              &err)) ||
        (st = bt_transport_send(fs->t, 0, frame, len, 1000000, &err)) ||
        (st = bt_transport_recv(fs->t, 0, &buf, &len, &from, 2000000, &err)) ||
        (st = bt_frame_parse(buf, len, &f, &err)) ||
        (st = bt_msg_unpack(&f, BT_MSG_HELLO, &arena, &m, &err)))
        goto done;
    const Baton__Hello *h = (const Baton__Hello *)m;
    memcpy(key.model_hash, h->model_hash.data, BT_MODEL_HASH_BYTES);
    key.layer_begin = (int)h->layer_begin;
    key.layer_end = (int)h->layer_end;
    key.first = true;
    key.last = true;
    uint8_t hash[BT_MODEL_HASH_BYTES];
    memcpy(hash, h->model_hash.data, sizeof hash);
    hash[3] ^= (uint8_t)(fs->mode == 2);
    Baton__SliceRequest r = BATON__SLICE_REQUEST__INIT;
    r.rank = fs->mode == 3 ? 2 : 1;
    r.model_hash.data = hash;
    r.model_hash.len = sizeof hash;
    r.layer_begin = h->layer_begin;
    r.layer_end = h->layer_end - (fs->mode == 1);
    if ((st = bt_frame_finish(frame, sizeof frame, BT_MSG_SLICE_REQUEST, &r.base, 0, 0, 0, &len,
                              &err)) ||
        (st = bt_transport_send(fs->t, 0, frame, len, 1000000, &err)))
        goto done;
    do { /* mode 0: the chunks; else the coordinator gives up and the hub is killed */
        bt_arena_reset(&arena);
        if ((st = bt_transport_recv(fs->t, 0, &buf, &len, &from, 3000000, &err)) ||
            (st = bt_frame_parse(buf, len, &f, &err)) ||
            (st = bt_msg_unpack(&f, BT_MSG_SLICE_CHUNK, &arena, &m, &err)))
            goto done;
        const Baton__SliceChunk *c = (const Baton__SliceChunk *)m;
        if ((!w && (st = bt_slice_writer_new(dir, &key, c->total_bytes, c->n_chunks, &w, &err))) ||
            (st = bt_slice_writer_put(w, &f, c, &err)))
            goto done;
    } while (!bt_slice_writer_complete(w));
    if ((st = bt_slice_writer_finish(w, &err)) == BT_OK)
        st = bt_slice_cache_verify(dir, &key, &err);
done:
    bt_slice_writer_free(w);
    bt_arena_deinit(&arena);
    fs->st = st;
    snprintf(fs->msg, sizeof fs->msg, "%s", err.msg);
    return NULL;
}

static void check_coordinator(const char *path) {
    static const char *const want[] = {"", "layers [0, 5) or model hash differ",
                                       "layers [0, 6) or model hash differ", "rank 2, layers"};
    bt_error err;
    bt_error_init(&err);
    bt_gguf *g = NULL;
    if (bt_gguf_open(path, &g, &err) != BT_OK) {
        check_fail(__FILE__, __LINE__, "%s: %s", path, err.msg);
        return;
    }
    for (int mode = 0; mode < 4; mode++) {
        bt_local_hub *hub = NULL;
        CHECK_EQ_INT(bt_local_hub_new(2, 1u << 20, 4, &hub, &err), BT_OK);
        if (!hub)
            break;
        fake_stage fs = {.t = bt_local_hub_endpoint(hub, 1), .g = g, .mode = mode};
        pthread_t th;
        pthread_create(&th, NULL, fake_stage_main, &fs);
        bt_cluster_params p = bt_cluster_default_params();
        p.max_batch = 16;
        p.max_seqs = 2;
        p.kv_tokens = 64;
        p.n_ctx = 64;
        p.hello_timeout_us = 3000000;
        bt_cluster *c = NULL;
        bt_error_init(&err);
        bt_status st = bt_cluster_start(bt_local_hub_endpoint(hub, 0), g, &p, &c, &err);
        if (mode == 0) {
            /* Shipped; then no HelloReply from the fake stage: the start-up times out. */
            CHECK_EQ_INT(st, BT_ERR_TIMEOUT);
            CHECK(strstr(err.msg, "HelloReply") != NULL);
        } else {
            CHECK_EQ_INT(st, BT_ERR_PROTOCOL);
            if (!strstr(err.msg, "SliceRequest from rank 1") || !strstr(err.msg, want[mode]))
                check_fail(__FILE__, __LINE__, "mode %d: '%s' lacks '%s'", mode, err.msg,
                           want[mode]);
        }
        bt_local_hub_kill(hub, 1);
        pthread_join(th, NULL);
        if (mode == 0) {
            if (fs.st != BT_OK)
                printf("fake stage: %s\n", fs.msg);
            CHECK_EQ_INT(fs.st, BT_OK); /* the whole slice arrived and verifies */
        } else {
            CHECK(fs.st != BT_OK); /* no chunk came */
        }
        bt_cluster_free(c);
        bt_local_hub_free(hub);
    }
    bt_hparams hp;
    bt_slice_key key;
    CHECK_EQ_INT(bt_hparams_load(g, &hp, &err), BT_OK);
    key_of(g, 0, hp.n_layer, hp.n_layer, &key); /* the one stage's entry */
    bt_slice_cache_remove(dir, &key);
    CHECK_EQ_INT(count_files(), 0);
    bt_gguf_free(g);
}

static void check_model(const char *path, size_t max_frame) {
    bt_error err;
    bt_error_init(&err);
    bt_gguf *g = NULL;
    bt_hparams hp;
    if (bt_gguf_open(path, &g, &err) != BT_OK || bt_hparams_load(g, &hp, &err) != BT_OK) {
        check_fail(__FILE__, __LINE__, "%s: %s", path, err.msg);
        bt_gguf_free(g);
        return;
    }
    int L = hp.n_layer, mid = L / 2;
    check_slice(g, &hp, 0, mid, max_frame);   /* first: the embedding */
    check_slice(g, &hp, mid, L, max_frame);   /* last: the head */
    check_slice(g, &hp, 1, L - 1, max_frame); /* middle: neither */
    check_slice(g, &hp, 0, L, max_frame);     /* one stage: both */
    check_slice(g, &hp, L - 1, L, max_frame); /* one layer */
    CHECK_EQ_INT(count_files(), 2 * 5);       /* five entries, each slice + manifest */
    /* Clear the entries for the refusals. */
    int ranges[5][2] = {{0, mid}, {mid, L}, {1, L - 1}, {0, L}, {L - 1, L}};
    for (int i = 0; i < 5; i++) {
        bt_slice_key k;
        key_of(g, ranges[i][0], ranges[i][1], L, &k);
        bt_slice_cache_remove(dir, &k);
    }
    CHECK_EQ_INT(count_files(), 0);
    check_refusals(g, &hp, max_frame);
    /* Layers outside the model are refused. */
    bt_slice_plan *p = NULL;
    CHECK_EQ_INT(bt_slice_plan_new(g, 0, L + 1, &p, &err), BT_ERR_INVALID_ARG);
    CHECK(p == NULL);
    bt_gguf_free(g);
}

int main(void) {
    /* bt_hash64 is XXH64: the reference's published values. */
    const char *s = "Nobody inspects the spammish repetition";
    CHECK(bt_hash64("", 0, 0) == 0xEF46DB3751D8E999ull);
    CHECK(bt_hash64("abc", 3, 0) == 0x44BC2CF5AD770999ull);
    CHECK(bt_hash64(s, strlen(s), 0) == 0xFBCEA83C8A378BF1ull);

    /* Chunks fit their frames, compressed or not; tiny frames cannot ship. */
    CHECK_EQ_INT(bt_slice_chunk_bytes(1000), 0);
    size_t sizes[] = {16384, 65536, 1u << 20, 64u << 20};
    for (size_t i = 0; i < 4; i++) {
        size_t c = bt_slice_chunk_bytes(sizes[i]);
        CHECK(c >= 1024 && c <= BT_SLICE_CHUNK_MAX && c < sizes[i]);
    }

    snprintf(dir, sizeof dir, "/tmp/bt_test_slice_%d/cache/nested", (int)getpid());
    const char *tiny = check_make_tiny_model("slice");
    if (tiny) {
        check_model(tiny, 16384); /* several chunks per slice */
        check_coordinator(tiny);
        unlink(tiny);
    }
    const char *smol = check_model_path("SmolLM2 slices");
    if (smol)
        check_model(smol, 1u << 20);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf /tmp/bt_test_slice_%d", (int)getpid());
    if (system(cmd) != 0)
        printf("could not remove the test directory\n");
    return check_finish();
}
