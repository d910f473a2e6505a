/*
 * test_gguf_stream.c - the GGUF writer's streaming mode (tests/support/gguf_writer.h), which
 * tests/tools/synth_model writes multi-GiB files with: the streamed file is byte-identical to
 * the in-memory writer's for the same tensors (payloads given in pieces that span tensors,
 * sizes that need padding), the reader opens it and finds each payload; a
 * short tensor at close, bytes past the last tensor and a forced offset are refused by name.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "gguf.h"
#include "gguf_writer.h"

#define N_T 3

/* Bytes of F32 tensors: one needing padding, one aligned, one short. */
static const int64_t SIZES[N_T] = {36, 64, 12};

static void declare(bt_gw *w, bool info_only, uint8_t payload[N_T][64]) {
    bt_gw_add_str(w, "general.architecture", "llama");
    bt_gw_add_u32(w, "test.n", 7);
    for (int i = 0; i < N_T; i++) {
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        int64_t ne[1] = {SIZES[i] / 4};
        if (info_only)
            CHECK_OK(bt_gw_add_tensor_info(w, name, 1, ne, 0, (size_t)SIZES[i]));
        else
            CHECK_OK(bt_gw_add_tensor(w, name, 1, ne, 0, payload[i], (size_t)SIZES[i]));
    }
}

static uint8_t *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(len > 0 ? (size_t)len : 1);
    *n = b ? fread(b, 1, (size_t)len, f) : 0;
    fclose(f);
    return b;
}

int main(void) {
    uint8_t payload[N_T][64];
    for (int i = 0; i < N_T; i++)
        for (int k = 0; k < 64; k++)
            payload[i][k] = (uint8_t)(i * 64 + k + 1);
    char path[64];
    snprintf(path, sizeof path, "/tmp/bt_gguf_stream_%d.gguf", (int)getpid());
    bt_error err;
    bt_error_init(&err);

    /* The in-memory reference. */
    bt_gw *ref = bt_gw_new();
    declare(ref, false, payload);
    uint8_t *want;
    size_t want_n;
    bt_gw_layout want_layout;
    CHECK_OK(bt_gw_write_mem(ref, &want, &want_n, &want_layout));

    /* Streamed: all payloads concatenated, handed over in 7-byte pieces (pieces span the
     * tensors' ends, the empty tensor and the padding). */
    bt_gw *w = bt_gw_new();
    declare(w, true, payload);
    bt_gw_stream *s;
    bt_gw_layout layout;
    CHECK_OK(bt_gw_stream_open(w, path, &s, &layout, &err));
    uint8_t all[N_T * 64];
    size_t total = 0;
    for (int i = 0; i < N_T; i++) {
        memcpy(all + total, payload[i], (size_t)SIZES[i]);
        total += (size_t)SIZES[i];
    }
    CHECK_EQ_INT(bt_gw_stream_tensor(s), 0);
    for (size_t off = 0; off < total; off += 7)
        CHECK_OK(bt_gw_stream_write(s, all + off, total - off < 7 ? total - off : 7, &err));
    CHECK_EQ_INT(bt_gw_stream_tensor(s), N_T);
    CHECK_OK(bt_gw_stream_close(s, &err));
    CHECK_EQ_INT(layout.size, want_layout.size);
    CHECK_EQ_INT(layout.data_start, want_layout.data_start);
    size_t got_n = 0;
    uint8_t *got = read_file(path, &got_n);
    CHECK(got != NULL);
    CHECK_EQ_INT(got_n, want_n);
    CHECK(got && got_n == want_n && memcmp(got, want, want_n) == 0);
    free(got);

    bt_gguf *g = NULL;
    CHECK_OK(bt_gguf_open(path, &g, &err));
    if (g) {
        for (int i = 0; i < N_T; i++) {
            char name[16];
            snprintf(name, sizeof name, "t%d", i);
            const bt_gguf_tensor *t = bt_gguf_find_tensor(g, name);
            CHECK(t != NULL);
            if (t) {
                CHECK_EQ_INT(t->n_bytes, SIZES[i]);
                CHECK(memcmp(t->data, payload[i], (size_t)SIZES[i]) == 0);
            }
        }
        bt_gguf_free(g);
    }

    /* A tensor short at close: refused naming it and the counts. */
    CHECK_OK(bt_gw_stream_open(w, path, &s, NULL, &err));
    CHECK_OK(bt_gw_stream_write(s, all, 39, &err)); /* t0 (36) and 3 of t1's 64 */
    CHECK_EQ_INT(bt_gw_stream_tensor(s), 1);
    bt_status st = bt_gw_stream_close(s, &err);
    CHECK_EQ_INT(st, BT_ERR_IO);
    CHECK(strstr(err.msg, "tensor 't1' got 3 of its 64 bytes") != NULL);

    /* Bytes past the last tensor: refused with their count. */
    bt_error_init(&err);
    CHECK_OK(bt_gw_stream_open(w, path, &s, NULL, &err));
    uint8_t extra[N_T * 64 + 9] = {0};
    st = bt_gw_stream_write(s, extra, total + 9, &err);
    CHECK_EQ_INT(st, BT_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "9 bytes beyond the last tensor") != NULL);
    CHECK_OK(bt_gw_stream_close(s, &err)); /* every tensor did get its bytes */

    /* A forced offset cannot be streamed. */
    bt_error_init(&err);
    bt_gw_tensor_set_offset(w, 2, 0);
    st = bt_gw_stream_open(w, path, &s, NULL, &err);
    CHECK_EQ_INT(st, BT_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "tensor 't2' has a forced offset") != NULL);

    /* An uncreatable path is named. */
    bt_error_init(&err);
    bt_gw *w2 = bt_gw_new();
    declare(w2, true, payload);
    st = bt_gw_stream_open(w2, "/nonexistent/dir/x.gguf", &s, NULL, &err);
    CHECK_EQ_INT(st, BT_ERR_IO);
    CHECK(strstr(err.msg, "cannot create /nonexistent/dir/x.gguf") != NULL);

    bt_gw_free(w2);
    bt_gw_free(w);
    bt_gw_free(ref);
    free(want);
    unlink(path);
    return check_finish();
}
