/*
 * fuzz_gguf.c - libFuzzer target for the GGUF reader: open the bytes from memory and, when
 * they are accepted, walk every kv and tensor through the accessors, touching every byte the
 * reader says is valid (so a sanitizer sees any pointer that escapes the input).
 */
#include <stdint.h>
#include <string.h>

#include "gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t sink;

static void touch(const void *p, size_t n) {
    const uint8_t *b = p;
    uint8_t x = 0;
    for (size_t i = 0; i < n; i++)
        x ^= b[i];
    sink ^= x;
}

static void walk_kv(const bt_gguf *g, size_t i) {
    bt_str k = bt_gguf_kv_key(g, i);
    touch(k.ptr, k.len);
    char key[256];
    if (k.len >= sizeof key || memchr(k.ptr, '\0', k.len))
        return; /* the getters take C strings */
    memcpy(key, k.ptr, k.len);
    key[k.len] = '\0';
    bt_error err;
    bt_error_init(&err);
    uint32_t u32;
    int64_t i64;
    float f32;
    bool b;
    bt_str s;
    (void)bt_gguf_get_u32(g, key, &u32, &err);
    (void)bt_gguf_get_i64(g, key, &i64, &err);
    (void)bt_gguf_get_f32(g, key, &f32, &err);
    (void)bt_gguf_get_bool(g, key, &b, &err);
    if (bt_gguf_get_str(g, key, &s, &err) == BT_OK)
        touch(s.ptr, s.len);
    bt_gguf_type t = bt_gguf_kv_type(g, i);
    if (t != BT_GGUF_ARRAY)
        return;
    bt_gguf_type et = bt_gguf_kv_arr_type(g, i);
    uint64_t n = bt_gguf_kv_arr_len(g, i);
    if (et == BT_GGUF_STRING) {
        uint64_t m = 0;
        if (bt_gguf_get_arr_str_len(g, key, &m, &err) == BT_OK && m == n) {
            for (uint64_t j = 0; j < m; j++) {
                bt_str e = bt_gguf_get_arr_str(g, key, j);
                touch(e.ptr, e.len);
            }
        }
        return;
    }
    const void *p;
    uint64_t m;
    if (bt_gguf_get_arr(g, key, et, &p, &m, &err) == BT_OK) {
        size_t es = (et == BT_GGUF_U8 || et == BT_GGUF_I8 || et == BT_GGUF_BOOL)    ? 1
                    : (et == BT_GGUF_U16 || et == BT_GGUF_I16)                      ? 2
                    : (et == BT_GGUF_U64 || et == BT_GGUF_I64 || et == BT_GGUF_F64) ? 8
                                                                                    : 4;
        touch(p, (size_t)m * es);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    bt_gguf *g = NULL;
    bt_error err;
    bt_error_init(&err);
    if (bt_gguf_open_memory(data, size, &g, &err) != BT_OK)
        return 0;
    touch(bt_gguf_base(g), bt_gguf_data_offset(g) <= size ? bt_gguf_data_offset(g) : 0);
    for (size_t i = 0; i < bt_gguf_n_kv(g); i++)
        walk_kv(g, i);
    for (size_t i = 0; i < bt_gguf_n_tensors(g); i++) {
        const bt_gguf_tensor *t = bt_gguf_tensor_at(g, i);
        touch(t->data, t->n_bytes);
        const bt_gguf_tensor *u = bt_gguf_find_tensor(g, t->name);
        if (u != t)
            __builtin_trap(); /* names are unique: lookup must find this very entry */
    }
    (void)bt_gguf_alignment(g);
    (void)bt_gguf_version(g);
    bt_gguf_free(g);
    return 0;
}
