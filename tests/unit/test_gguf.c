/*
 * test_gguf.c - the GGUF reader: a valid file with every kv type read back, every malformed
 * case of bad_gguf_cases refused with a message naming the field, every truncation of a
 * valid file refused, typed getter mismatches, and (when present) the real SmolLM2 model and
 * the vocab-only files in shared/testdata/vocab. Also the reference quantizers of
 * tests/support (quantize -> bt_dequant_row error bounds) and make_tiny_model's output.
 */
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bad_gguf_cases.h"
#include "check.h"
#include "gguf.h"
#include "gguf_writer.h"
#include "quantize_ref.h"
#include "tensor_type.h"

static bool str_is(bt_str s, const char *c) {
    return s.len == strlen(c) && memcmp(s.ptr, c, s.len) == 0;
}

static bt_gw *build_all_types(void) {
    bt_gw *w = bt_gw_new();
    CHECK(w != NULL);
    CHECK_OK(bt_gw_set_alignment(w, 64, true));
    CHECK_OK(bt_gw_add_str(w, "general.architecture", "llama"));
    CHECK_OK(bt_gw_add_u8(w, "t.u8", 200));
    CHECK_OK(bt_gw_add_i8(w, "t.i8", -100));
    CHECK_OK(bt_gw_add_u16(w, "t.u16", 60000));
    CHECK_OK(bt_gw_add_i16(w, "t.i16", -30000));
    CHECK_OK(bt_gw_add_u32(w, "t.u32", 4000000000u));
    CHECK_OK(bt_gw_add_i32(w, "t.i32", -2000000000));
    CHECK_OK(bt_gw_add_u64(w, "t.u64", UINT64_MAX));
    CHECK_OK(bt_gw_add_i64(w, "t.i64", INT64_MIN));
    CHECK_OK(bt_gw_add_f32(w, "t.f32", 1.5f));
    CHECK_OK(bt_gw_add_f64(w, "t.f64", -2.25));
    CHECK_OK(bt_gw_add_bool(w, "t.bool", true));
    CHECK_OK(bt_gw_add_str(w, "t.str", "hello"));
    CHECK_OK(bt_gw_add_str(w, "t.empty_str", ""));
    int16_t a16[3] = {-1, 2, -3};
    CHECK_OK(bt_gw_add_arr(w, "t.arr_i16", BT_GGUF_I16, a16, 3));
    float af[4] = {0.5f, -1.0f, 2.0f, 3.25f};
    CHECK_OK(bt_gw_add_arr(w, "tokenizer.ggml.scores", BT_GGUF_F32, af, 4));
    int32_t ai[4] = {3, 1, 1, 6};
    CHECK_OK(bt_gw_add_arr(w, "tokenizer.ggml.token_type", BT_GGUF_I32, ai, 4));
    uint8_t ab[2] = {1, 0};
    CHECK_OK(bt_gw_add_arr(w, "t.arr_bool", BT_GGUF_BOOL, ab, 2));
    CHECK_OK(bt_gw_add_arr(w, "t.arr_empty", BT_GGUF_U64, NULL, 0));
    const char *toks[4] = {"<s>", "", "Ġthe", "h e llo"};
    CHECK_OK(bt_gw_add_arr_str(w, "tokenizer.ggml.tokens", toks, 4));
    const char *merges[2] = {"Ġ t", "h e"};
    CHECK_OK(bt_gw_add_arr_str(w, "tokenizer.ggml.merges", merges, 2));

    float f[96];
    for (int i = 0; i < 96; i++)
        f[i] = (float)i - 10.0f;
    int64_t ne_a[3] = {8, 4, 3};
    CHECK_OK(bt_gw_add_tensor(w, "a.weight", 3, ne_a, BT_TYPE_F32, f, sizeof f));
    uint8_t q[2 * 20];
    for (int i = 0; i < (int)sizeof q; i++)
        q[i] = (uint8_t)(i * 7);
    int64_t ne_b[2] = {32, 2};
    CHECK_OK(bt_gw_add_tensor(w, "b.weight", 2, ne_b, BT_TYPE_Q4_1, q, sizeof q));
    uint16_t h[256];
    for (int i = 0; i < 256; i++)
        h[i] = (uint16_t)i;
    int64_t ne_c[4] = {4, 4, 4, 4};
    CHECK_OK(bt_gw_add_tensor(w, "c", 4, ne_c, BT_TYPE_F16, h, sizeof h));
    return w;
}

static void check_all_types(const bt_gguf *g) {
    bt_error err;
    bt_error_init(&err);
    CHECK_EQ_INT(bt_gguf_version(g), 3);
    CHECK_EQ_INT(bt_gguf_alignment(g), 64);
    CHECK_EQ_INT(bt_gguf_data_offset(g) % 64, 0);
    CHECK_EQ_INT(bt_gguf_n_kv(g), 22);

    uint32_t u32 = 0;
    int64_t i64 = 0;
    float f32 = 0;
    bool b = false;
    bt_str s = {0};
    CHECK_OK(bt_gguf_get_u32(g, "t.u8", &u32, &err));
    CHECK_EQ_INT(u32, 200);
    CHECK_OK(bt_gguf_get_i64(g, "t.i8", &i64, &err));
    CHECK_EQ_INT(i64, -100);
    CHECK_OK(bt_gguf_get_u32(g, "t.u16", &u32, &err));
    CHECK_EQ_INT(u32, 60000);
    CHECK_OK(bt_gguf_get_i64(g, "t.i16", &i64, &err));
    CHECK_EQ_INT(i64, -30000);
    CHECK_OK(bt_gguf_get_u32(g, "t.u32", &u32, &err));
    CHECK(u32 == 4000000000u);
    CHECK_OK(bt_gguf_get_i64(g, "t.i32", &i64, &err));
    CHECK_EQ_INT(i64, -2000000000);
    CHECK_OK(bt_gguf_get_i64(g, "t.i64", &i64, &err));
    CHECK(i64 == INT64_MIN);
    CHECK_OK(bt_gguf_get_u32(g, "general.alignment", &u32, &err));
    CHECK_EQ_INT(u32, 64);
    CHECK_OK(bt_gguf_get_f32(g, "t.f32", &f32, &err));
    CHECK_NEAR(f32, 1.5, 0);
    CHECK_OK(bt_gguf_get_f32(g, "t.f64", &f32, &err));
    CHECK_NEAR(f32, -2.25, 0);
    CHECK_OK(bt_gguf_get_bool(g, "t.bool", &b, &err));
    CHECK(b);
    CHECK_OK(bt_gguf_get_u32(g, "t.bool", &u32, &err));
    CHECK_EQ_INT(u32, 1);
    CHECK_OK(bt_gguf_get_str(g, "t.str", &s, &err));
    CHECK(str_is(s, "hello"));
    CHECK_OK(bt_gguf_get_str(g, "t.empty_str", &s, &err));
    CHECK_EQ_INT(s.len, 0);
    CHECK_OK(bt_gguf_get_str(g, "general.architecture", &s, &err));
    CHECK(str_is(s, "llama"));

    const void *data = NULL;
    uint64_t n = 0;
    CHECK_OK(bt_gguf_get_arr(g, "t.arr_i16", BT_GGUF_I16, &data, &n, &err));
    CHECK_EQ_INT(n, 3);
    int16_t a16[3];
    memcpy(a16, data, sizeof a16);
    CHECK_EQ_INT(a16[0], -1);
    CHECK_EQ_INT(a16[2], -3);
    CHECK_OK(bt_gguf_get_arr(g, "tokenizer.ggml.scores", BT_GGUF_F32, &data, &n, &err));
    CHECK_EQ_INT(n, 4);
    float af[4];
    memcpy(af, data, sizeof af);
    CHECK_NEAR(af[3], 3.25, 0);
    CHECK_OK(bt_gguf_get_arr(g, "tokenizer.ggml.token_type", BT_GGUF_I32, &data, &n, &err));
    int32_t ai[4];
    memcpy(ai, data, sizeof ai);
    CHECK_EQ_INT(ai[0], 3);
    CHECK_EQ_INT(ai[3], 6);
    CHECK_OK(bt_gguf_get_arr(g, "t.arr_bool", BT_GGUF_BOOL, &data, &n, &err));
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_INT(((const uint8_t *)data)[0], 1);
    CHECK_OK(bt_gguf_get_arr(g, "t.arr_empty", BT_GGUF_U64, &data, &n, &err));
    CHECK_EQ_INT(n, 0);
    CHECK_OK(bt_gguf_get_arr_str_len(g, "tokenizer.ggml.tokens", &n, &err));
    CHECK_EQ_INT(n, 4);
    CHECK(str_is(bt_gguf_get_arr_str(g, "tokenizer.ggml.tokens", 0), "<s>"));
    CHECK(str_is(bt_gguf_get_arr_str(g, "tokenizer.ggml.tokens", 1), ""));
    CHECK(str_is(bt_gguf_get_arr_str(g, "tokenizer.ggml.tokens", 2), "Ġthe"));
    CHECK(str_is(bt_gguf_get_arr_str(g, "tokenizer.ggml.tokens", 3), "h e llo"));
    CHECK_OK(bt_gguf_get_arr_str_len(g, "tokenizer.ggml.merges", &n, &err));
    CHECK_EQ_INT(n, 2);
    CHECK(str_is(bt_gguf_get_arr_str(g, "tokenizer.ggml.merges", 1), "h e"));

    /* kv enumeration matches file order and types. */
    int64_t k = bt_gguf_find_kv(g, "t.arr_i16");
    CHECK(k >= 0);
    if (k >= 0) {
        CHECK(str_is(bt_gguf_kv_key(g, (size_t)k), "t.arr_i16"));
        CHECK_EQ_INT(bt_gguf_kv_type(g, (size_t)k), BT_GGUF_ARRAY);
        CHECK_EQ_INT(bt_gguf_kv_arr_type(g, (size_t)k), BT_GGUF_I16);
        CHECK_EQ_INT(bt_gguf_kv_arr_len(g, (size_t)k), 3);
    }
    k = bt_gguf_find_kv(g, "t.u8");
    CHECK(k >= 0 && bt_gguf_kv_arr_type(g, (size_t)k) == BT_GGUF_TYPE_COUNT);
    CHECK_EQ_INT(bt_gguf_find_kv(g, "general.alignment"), 0);
    CHECK_EQ_INT(bt_gguf_find_kv(g, "missing"), -1);
    CHECK_EQ_INT(bt_gguf_find_kv(g, "t.u"), -1);

    /* Type mismatches name the key and both types. */
    CHECK_EQ_INT(bt_gguf_get_u32(g, "t.str", &u32, &err), BT_ERR_FORMAT);
    CHECK(strstr(err.msg, "'t.str'") && strstr(err.msg, "string") && strstr(err.msg, "u32"));
    CHECK_EQ_INT(bt_gguf_get_u32(g, "t.i8", &u32, &err), BT_ERR_FORMAT);
    CHECK(strstr(err.msg, "out of range") != NULL);
    CHECK_EQ_INT(bt_gguf_get_u32(g, "t.u64", &u32, &err), BT_ERR_FORMAT);
    CHECK_EQ_INT(bt_gguf_get_i64(g, "t.u64", &i64, &err), BT_ERR_FORMAT);
    CHECK_EQ_INT(bt_gguf_get_f32(g, "t.u32", &f32, &err), BT_ERR_FORMAT);
    CHECK(strstr(err.msg, "'t.u32' has type u32, expected f32") != NULL);
    CHECK_EQ_INT(bt_gguf_get_bool(g, "t.u8", &b, &err), BT_ERR_FORMAT);
    CHECK_EQ_INT(bt_gguf_get_str(g, "tokenizer.ggml.tokens", &s, &err), BT_ERR_FORMAT);
    CHECK(strstr(err.msg, "array of string") != NULL);
    CHECK_EQ_INT(bt_gguf_get_arr(g, "t.arr_i16", BT_GGUF_U16, &data, &n, &err), BT_ERR_FORMAT);
    CHECK(strstr(err.msg, "array of i16") && strstr(err.msg, "array of u16"));
    CHECK_EQ_INT(bt_gguf_get_arr_str_len(g, "t.arr_i16", &n, &err), BT_ERR_FORMAT);
    CHECK_EQ_INT(bt_gguf_get_u32(g, "nope", &u32, &err), BT_ERR_NOT_FOUND);
    CHECK(strstr(err.msg, "'nope'") != NULL);

    /* Tensors. */
    CHECK_EQ_INT(bt_gguf_n_tensors(g), 3);
    const bt_gguf_tensor *t = bt_gguf_find_tensor(g, "a.weight");
    CHECK(t != NULL);
    if (t) {
        CHECK_EQ_INT(t->n_dims, 3);
        CHECK_EQ_INT(t->ne[0], 8);
        CHECK_EQ_INT(t->ne[2], 3);
        CHECK_EQ_INT(t->ne[3], 1);
        CHECK_EQ_INT(t->type, BT_TYPE_F32);
        CHECK_EQ_INT(t->n_bytes, 96 * 4);
        CHECK_EQ_INT(t->row_bytes, 32);
        float f[96];
        memcpy(f, t->data, sizeof f);
        CHECK_NEAR(f[95], 85.0, 0);
        CHECK_EQ_INT(((const uint8_t *)t->data - (const uint8_t *)bt_gguf_base(g)) % 64, 0);
    }
    t = bt_gguf_find_tensor(g, "b.weight");
    CHECK(t != NULL);
    if (t) {
        CHECK_EQ_INT(t->type, BT_TYPE_Q4_1);
        CHECK_EQ_INT(t->row_bytes, 20);
        CHECK_EQ_INT(t->n_bytes, 40);
        CHECK_EQ_INT(t->offset % 64, 0);
        CHECK_EQ_INT(((const uint8_t *)t->data)[39], (uint8_t)(39 * 7));
    }
    t = bt_gguf_find_tensor(g, "c");
    CHECK(t != NULL && t->n_bytes == 512 && t->ne[3] == 4);
    CHECK(bt_gguf_find_tensor(g, "b") == NULL);
    CHECK(bt_gguf_find_tensor(g, "zzz") == NULL);
    CHECK(bt_gguf_tensor_at(g, 2) == bt_gguf_find_tensor(g, "c"));
}

static void test_valid_file(void) {
    bt_gw *w = build_all_types();
    uint8_t *buf = NULL;
    size_t size = 0;
    bt_gw_layout lay;
    CHECK_OK(bt_gw_write_mem(w, &buf, &size, &lay));
    CHECK_EQ_INT(lay.size, size);

    bt_error err;
    bt_error_init(&err);
    bt_gguf *g = NULL;
    bt_status st = bt_gguf_open_memory(buf, size, &g, &err);
    CHECK_EQ_INT(st, BT_OK);
    if (st != BT_OK)
        fprintf(stderr, "open_memory: %s\n", err.msg);
    if (g) {
        CHECK_EQ_INT(bt_gguf_file_size(g), size);
        CHECK_EQ_INT(bt_gguf_data_offset(g), lay.data_start);
        check_all_types(g);
    }
    bt_gguf_free(g);

    /* Same through a file and mmap. */
    char path[] = "/tmp/bt_test_gguf_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) {
        close(fd);
        CHECK_OK(bt_gw_write_file(w, path, &err));
        g = NULL;
        st = bt_gguf_open(path, &g, &err);
        CHECK_EQ_INT(st, BT_OK);
        if (g)
            check_all_types(g);
        bt_gguf_free(g);
        unlink(path);
    }
    bt_gguf_free(NULL);

    /* v2 reads the same; v1 is refused. */
    buf[4] = 2;
    g = NULL;
    CHECK_OK(bt_gguf_open_memory(buf, size, &g, &err));
    CHECK(g && bt_gguf_version(g) == 2);
    bt_gguf_free(g);

    /* Every strict prefix of a valid file with tensors is refused, without over-reads (the
     * copy is exact-size so ASan sees any). */
    int n_refused = 0;
    for (size_t cut = 0; cut < size; cut++) {
        uint8_t *p = malloc(cut ? cut : 1);
        memcpy(p, buf, cut);
        g = NULL;
        bt_error_init(&err);
        st = bt_gguf_open_memory(p, cut, &g, &err);
        if (st != BT_OK && g == NULL && strncmp(err.msg, "gguf: ", 6) == 0)
            n_refused++;
        else if (cut + 64 <= size) /* the last tensor's padding may be cut harmlessly */
            check_fail(__FILE__, __LINE__, "prefix %zu of %zu accepted", cut, size);
        bt_gguf_free(g);
        free(p);
    }
    CHECK(n_refused >= (int)size - 64);
    free(buf);
    bt_gw_free(w);
}

static void test_bad_cases(void) {
    uint8_t *buf;
    size_t size;
    CHECK_OK(bt_bad_gguf_build_valid(&buf, &size));
    bt_gguf *g = NULL;
    bt_error err;
    bt_error_init(&err);
    bt_status st = bt_gguf_open_memory(buf, size, &g, &err);
    CHECK_EQ_INT(st, BT_OK); /* otherwise the cases below prove nothing */
    if (st != BT_OK)
        fprintf(stderr, "base case: %s\n", err.msg);
    bt_gguf_free(g);
    free(buf);

    size_t n = bt_bad_gguf_n_cases();
    CHECK(n >= 24);
    for (size_t i = 0; i < n; i++) {
        const char *name = bt_bad_gguf_name(i), *expect = bt_bad_gguf_expect(i);
        st = bt_bad_gguf_build(i, &buf, &size);
        CHECK_EQ_INT(st, BT_OK);
        if (st != BT_OK)
            continue;
        g = NULL;
        bt_error_init(&err);
        st = bt_gguf_open_memory(buf, size, &g, &err);
        if (st == BT_OK || g != NULL)
            check_fail(__FILE__, __LINE__, "case %s: accepted", name);
        else if (!strstr(err.msg, expect))
            check_fail(__FILE__, __LINE__, "case %s: message \"%s\" lacks \"%s\"", name, err.msg,
                       expect);
        else
            bt_check_passed++;
        if (getenv("BT_TEST_VERBOSE"))
            printf("%-28s %s\n", name, err.msg);
        bt_gguf_free(g);
        free(buf);
    }

    /* Missing files and non-files are I/O errors, not crashes. */
    g = NULL;
    CHECK_EQ_INT(bt_gguf_open("/nonexistent/x.gguf", &g, &err), BT_ERR_IO);
    CHECK(g == NULL && strstr(err.msg, "/nonexistent/x.gguf"));
    CHECK_EQ_INT(bt_gguf_open("/tmp", &g, &err), BT_ERR_IO);
}

static void test_real_model(void) {
    const char *path = check_model_path("test_gguf real model");
    if (!path)
        return;
    bt_gguf *g = NULL;
    bt_error err;
    bt_error_init(&err);
    bt_status st = bt_gguf_open(path, &g, &err);
    CHECK_EQ_INT(st, BT_OK);
    if (st != BT_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return;
    }
    CHECK_EQ_INT(bt_gguf_n_tensors(g), 272);
    bt_str arch;
    CHECK_OK(bt_gguf_get_str(g, "general.architecture", &arch, &err));
    CHECK(str_is(arch, "llama"));
    uint32_t v = 0;
    CHECK_OK(bt_gguf_get_u32(g, "llama.block_count", &v, &err));
    CHECK_EQ_INT(v, 30);
    CHECK_OK(bt_gguf_get_u32(g, "llama.embedding_length", &v, &err));
    CHECK_EQ_INT(v, 576);
    float eps = 0;
    CHECK_OK(bt_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &eps, &err));
    CHECK_NEAR(eps, 1e-5, 1e-9);
    uint64_t n = 0;
    CHECK_OK(bt_gguf_get_arr_str_len(g, "tokenizer.ggml.tokens", &n, &err));
    CHECK_EQ_INT(n, 49152);
    CHECK(str_is(bt_gguf_get_arr_str(g, "tokenizer.ggml.tokens", 1), "<|im_start|>"));
    CHECK_OK(bt_gguf_get_arr_str_len(g, "tokenizer.ggml.merges", &n, &err));
    CHECK_EQ_INT(n, 48900);
    const bt_gguf_tensor *t = bt_gguf_find_tensor(g, "token_embd.weight");
    CHECK(t != NULL);
    if (t) {
        CHECK_EQ_INT(t->type, BT_TYPE_Q8_0);
        CHECK_EQ_INT(t->ne[0], 576);
        CHECK_EQ_INT(t->ne[1], 49152);
        CHECK_EQ_INT(t->n_bytes, 30081024);
    }
    t = bt_gguf_find_tensor(g, "blk.29.ffn_down.weight");
    CHECK(t != NULL && t->type == BT_TYPE_Q4_1 && t->ne[0] == 1536 && t->row_bytes == 960);
    CHECK(bt_gguf_find_tensor(g, "output.weight") == NULL);
    size_t total = 0;
    for (size_t i = 0; i < bt_gguf_n_tensors(g); i++)
        total += bt_gguf_tensor_at(g, i)->n_bytes;
    CHECK_EQ_INT(total, 96576768);
    bt_gguf_free(g);
}

static void test_vocab_files(void) {
    const char *shared = check_shared_dir("test_gguf vocab files");
    if (!shared)
        return;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/testdata/vocab", shared);
    DIR *d = opendir(dir);
    if (!d) {
        check_fail(__FILE__, __LINE__, "test_gguf vocab files: %s absent", dir);
        return;
    }
    int n_files = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 5, ".gguf") != 0)
            continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        bt_gguf *g = NULL;
        bt_error err;
        bt_error_init(&err);
        bt_status st = bt_gguf_open(path, &g, &err);
        if (st != BT_OK) {
            check_fail(__FILE__, __LINE__, "%s: %s", e->d_name, err.msg);
            continue;
        }
        n_files++;
        uint64_t n = 0;
        CHECK_OK(bt_gguf_get_arr_str_len(g, "tokenizer.ggml.tokens", &n, &err));
        CHECK(n > 1000);
        bt_str model;
        CHECK_OK(bt_gguf_get_str(g, "tokenizer.ggml.model", &model, &err));
        CHECK_EQ_INT(bt_gguf_n_tensors(g), 0);
        bt_gguf_free(g);
    }
    closedir(d);
    CHECK(n_files > 0);
}

/* Each reference quantizer round-trips through the scalar dequantizer within its format's
 * precision, and is deterministic. */
static void test_quantize_ref(void) {
    static const struct {
        bt_type type;
        double max_rel_rmse; /* rmse / rms of the input */
    } cases[] = {{BT_TYPE_F32, 0},     {BT_TYPE_F16, 1e-3},  {BT_TYPE_BF16, 5e-3},
                 {BT_TYPE_Q8_0, 0.01}, {BT_TYPE_Q5_0, 0.08}, {BT_TYPE_Q5_1, 0.06},
                 {BT_TYPE_Q4_0, 0.16}, {BT_TYPE_Q4_1, 0.12}, {BT_TYPE_Q4_K, 0.1},
                 {BT_TYPE_Q6_K, 0.03}};
    enum { N = 1024 };
    static float x[N], y[N];
    static uint8_t q[N * 4], q2[N * 4];
    uint32_t s = 12345;
    for (int i = 0; i < N; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = ((float)(s >> 8) / (float)(1u << 24) - 0.5f) * (i % 97 == 0 ? 8.0f : 1.0f);
    }
    double rms = 0;
    for (int i = 0; i < N; i++)
        rms += (double)x[i] * x[i];
    rms = sqrt(rms / N);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bt_type t = cases[c].type;
        size_t n_bytes = 0, n_bytes2 = 0, row_bytes = 0;
        CHECK_OK(bt_quantize_ref(t, x, q, N / 2, 2, &n_bytes));
        CHECK_OK(bt_type_row_bytes((uint32_t)t, N / 2, &row_bytes));
        CHECK_EQ_INT(n_bytes, 2 * row_bytes);
        CHECK_OK(bt_quantize_ref(t, x, q2, N / 2, 2, &n_bytes2));
        CHECK(memcmp(q, q2, n_bytes) == 0);
        bt_dequant_row(t, q, y, N / 2);
        bt_dequant_row(t, q + row_bytes, y + N / 2, N / 2);
        double err = 0;
        for (int i = 0; i < N; i++)
            err += (double)(x[i] - y[i]) * (x[i] - y[i]);
        err = sqrt(err / N) / rms;
        if (getenv("BT_TEST_VERBOSE"))
            printf("%s rel rmse %g\n", bt_type_name((uint32_t)t), err);
        if (err > cases[c].max_rel_rmse)
            check_fail(__FILE__, __LINE__, "%s: relative rmse %g > %g", bt_type_name((uint32_t)t),
                       err, cases[c].max_rel_rmse);
        else
            bt_check_passed++;
    }
    CHECK_EQ_INT(bt_quantize_row_ref(BT_TYPE_Q4_1, x, q, 48), BT_ERR_FORMAT);
    CHECK_EQ_INT(bt_quantize_row_ref(BT_TYPE_Q2_K, x, q, 256), BT_ERR_UNSUPPORTED);
    bt_type t;
    CHECK_OK(bt_quantize_type_from_name("Q4_K", &t));
    CHECK_EQ_INT(t, BT_TYPE_Q4_K);
    CHECK_EQ_INT(bt_quantize_type_from_name("q2_k", &t), BT_ERR_NOT_FOUND);
}

/* make_tiny_model's file (when the tool is built next to this test) opens, carries the
 * llama keys, and its merges only combine existing tokens into existing tokens. */
static void check_tiny(const char *tool, const char *type, int n_embd, uint32_t want_type) {
    char path[256], cmd[8192];
    snprintf(path, sizeof path, "/tmp/bt_test_tiny_%d_%s.gguf", (int)getpid(), type);
    snprintf(cmd, sizeof cmd, "'%s' '%s' --type %s --layers 2 --seed 3 > /dev/null", tool, path,
             type);
    CHECK_EQ_INT(system(cmd), 0);
    bt_gguf *g = NULL;
    bt_error err;
    bt_error_init(&err);
    bt_status st = bt_gguf_open(path, &g, &err);
    CHECK_EQ_INT(st, BT_OK);
    if (st != BT_OK) {
        fprintf(stderr, "%s\n", err.msg);
        unlink(path);
        return;
    }
    uint32_t v = 0;
    CHECK_OK(bt_gguf_get_u32(g, "llama.embedding_length", &v, &err));
    CHECK_EQ_INT(v, n_embd);
    CHECK_OK(bt_gguf_get_u32(g, "llama.block_count", &v, &err));
    CHECK_EQ_INT(v, 2);
    CHECK_EQ_INT(bt_gguf_n_tensors(g), 2 + 2 * 9);
    const bt_gguf_tensor *t = bt_gguf_find_tensor(g, "blk.1.ffn_down.weight");
    CHECK(t && t->type == want_type && t->ne[1] == n_embd);
    t = bt_gguf_find_tensor(g, "token_embd.weight");
    CHECK(t && t->type == want_type && t->ne[0] == n_embd && t->ne[1] == 300);
    if (t) {
        /* Dequantized embeddings have about the intended spread, 2/sqrt(n_embd). */
        float *row = malloc((size_t)n_embd * sizeof *row);
        double ss = 0;
        for (int r = 0; r < 300; r++) {
            bt_dequant_row((bt_type)t->type, (const uint8_t *)t->data + (size_t)r * t->row_bytes,
                           row, n_embd);
            for (int i = 0; i < n_embd; i++)
                ss += (double)row[i] * row[i];
        }
        free(row);
        double std = sqrt(ss / (300.0 * n_embd)), want = 2.0 / sqrt((double)n_embd);
        CHECK(std > 0.8 * want && std < 1.2 * want);
    }
    uint64_t n_tok = 0, n_merges = 0;
    CHECK_OK(bt_gguf_get_arr_str_len(g, "tokenizer.ggml.tokens", &n_tok, &err));
    CHECK_EQ_INT(n_tok, 300);
    CHECK_OK(bt_gguf_get_arr_str_len(g, "tokenizer.ggml.merges", &n_merges, &err));
    CHECK_EQ_INT(n_merges, 41);
    CHECK(str_is(bt_gguf_get_arr_str(g, "tokenizer.ggml.tokens", 0), "<|bos|>"));
    CHECK(str_is(bt_gguf_get_arr_str(g, "tokenizer.ggml.tokens", 3 + ' '), "Ġ"));
    CHECK(str_is(bt_gguf_get_arr_str(g, "tokenizer.ggml.tokens", 3 + 'a'), "a"));
    for (uint64_t m = 0; m < n_merges; m++) {
        bt_str ms = bt_gguf_get_arr_str(g, "tokenizer.ggml.merges", m);
        const char *sp = ms.len > 1 ? memchr(ms.ptr + 1, ' ', ms.len - 1) : NULL;
        CHECK(sp != NULL && ms.len < 64);
        if (!sp || ms.len >= 64)
            continue;
        char joined[64];
        size_t nl = (size_t)(sp - ms.ptr);
        memcpy(joined, ms.ptr, nl);
        memcpy(joined + nl, sp + 1, ms.len - nl - 1);
        joined[ms.len - 1] = '\0';
        bool found = false;
        for (uint64_t i = 0; i < n_tok && !found; i++)
            found = str_is(bt_gguf_get_arr_str(g, "tokenizer.ggml.tokens", i), joined);
        if (!found)
            check_fail(__FILE__, __LINE__, "merge %.*s: result %s is not a token", (int)ms.len,
                       ms.ptr, joined);
    }
    const void *types;
    uint64_t n_types;
    CHECK_OK(bt_gguf_get_arr(g, "tokenizer.ggml.token_type", BT_GGUF_I32, &types, &n_types, &err));
    int32_t tt[4];
    memcpy(tt, types, sizeof tt);
    CHECK(n_types == 300 && tt[0] == 3 && tt[2] == 3 && tt[3] == 1);
    bt_gguf_free(g);
    unlink(path);
}

static void test_tiny_model(void) {
    const char *bdir = check_build_dir("test_gguf tiny model");
    if (!bdir)
        return;
    char tool[4096];
    snprintf(tool, sizeof tool, "%s/tests/make_tiny_model", bdir);
    if (access(tool, X_OK) != 0) {
        check_fail(__FILE__, __LINE__, "test_gguf tiny model: %s not built", tool);
        return;
    }
    check_tiny(tool, "q4_1", 64, BT_TYPE_Q4_1);
    check_tiny(tool, "q6_k", 256, BT_TYPE_Q6_K);
    check_tiny(tool, "bf16", 64, BT_TYPE_BF16);
}

int main(void) {
    test_valid_file();
    test_bad_cases();
    test_real_model();
    test_vocab_files();
    test_quantize_ref();
    test_tiny_model();
    return check_finish();
}
