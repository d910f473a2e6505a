/* bad_gguf_cases.c - malformed GGUF files, one defect each (see bad_gguf_cases.h). */
#include "bad_gguf_cases.h"

#include <stdlib.h>
#include <string.h>

#include "gguf_writer.h"
#include "tensor_type.h"

/* Layout of the base file (sizes of each encoded item), used to cut it mid-item. The items
 * are big enough that the reader's up-front count plausibility checks pass, so each cut
 * reaches the parser of the item it splits:
 *   kv0 "test.arr" = u32[64]                   288 bytes
 *   kv1 "test.strs" = ["a", "bb", "ccc"]        63 bytes
 *   kv2 "general.architecture" = "llama"        45 bytes
 *   tensor t0 f32 [32, 2] (256 B), tensor t1 q8_0 [64] (68 B) */
#define KV0_BYTES 288
#define KV1_BYTES 63

static bt_gw *base(void) {
    bt_gw *w = bt_gw_new();
    if (!w)
        return NULL;
    uint32_t arr[64];
    for (uint32_t i = 0; i < 64; i++)
        arr[i] = i * i;
    const char *strs[3] = {"a", "bb", "ccc"};
    bt_gw_add_arr(w, "test.arr", BT_GGUF_U32, arr, 64);
    bt_gw_add_arr_str(w, "test.strs", strs, 3);
    bt_gw_add_str(w, "general.architecture", "llama");
    float f[64];
    for (int i = 0; i < 64; i++)
        f[i] = (float)i * 0.25f - 4.0f;
    int64_t ne0[2] = {32, 2};
    bt_gw_add_tensor(w, "t0", 2, ne0, BT_TYPE_F32, f, sizeof f);
    uint8_t q[68] = {0};
    q[1] = 0x3c; /* d = 1.0 in half */
    q[35] = 0x3c;
    int64_t ne1[1] = {64};
    bt_gw_add_tensor(w, "t1", 1, ne1, BT_TYPE_Q8_0, q, sizeof q);
    return w;
}

/* ---- edits of the writer ---- */

static void e_n_dims5(bt_gw *w) {
    int64_t ne[5] = {32, 1, 1, 1, 1};
    float f[32] = {0};
    bt_gw_add_tensor(w, "blk.0.attn_q.weight", 5, ne, BT_TYPE_F32, f, sizeof f);
}

static void e_n_dims0(bt_gw *w) {
    bt_gw_add_tensor(w, "scalar", 0, NULL, BT_TYPE_F32, NULL, 0);
}

static void e_elem_overflow(bt_gw *w) {
    int64_t ne[4] = {32, (int64_t)1 << 31, (int64_t)1 << 31, 4};
    bt_gw_add_tensor(w, "huge", 4, ne, BT_TYPE_F32, NULL, 0);
}

static void e_size_overflow(bt_gw *w) {
    int64_t ne[2] = {(int64_t)1 << 31, (int64_t)1 << 31};
    bt_gw_add_tensor(w, "huge", 2, ne, BT_TYPE_F32, NULL, 0);
}

static void e_ne_negative(bt_gw *w) {
    int64_t ne[2] = {32, -1};
    bt_gw_add_tensor(w, "neg", 2, ne, BT_TYPE_F32, NULL, 0);
}

static void e_ne_zero(bt_gw *w) {
    int64_t ne[2] = {32, 0};
    bt_gw_add_tensor(w, "zero", 2, ne, BT_TYPE_F32, NULL, 0);
}

static void e_align0(bt_gw *w) {
    bt_gw_add_u32(w, "general.alignment", 0);
}

static void e_align3(bt_gw *w) {
    bt_gw_add_u32(w, "general.alignment", 3);
}

static void e_align_type(bt_gw *w) {
    bt_gw_add_u64(w, "general.alignment", 32);
}

static void e_offset_past_end(bt_gw *w) {
    bt_gw_tensor_set_offset(w, 1, (uint64_t)1 << 20);
}

static void e_offset_huge(bt_gw *w) {
    bt_gw_tensor_set_offset(w, 1, UINT64_MAX - 31);
}

static void e_overlap(bt_gw *w) {
    bt_gw_tensor_set_offset(w, 1, 128);
}

static void e_misaligned(bt_gw *w) {
    bt_gw_tensor_set_offset(w, 1, 260);
}

static void e_type_unknown(bt_gw *w) {
    int64_t ne[1] = {32};
    uint8_t d[32] = {0};
    bt_gw_add_tensor(w, "bad_type", 1, ne, 4 /* removed Q4_2 */, d, sizeof d);
}

static void e_type_huge(bt_gw *w) {
    int64_t ne[1] = {32};
    uint8_t d[32] = {0};
    bt_gw_add_tensor(w, "bad_type", 1, ne, 0xdeadbeef, d, sizeof d);
}

static void e_block(bt_gw *w) {
    int64_t ne[1] = {40};
    uint8_t d[68] = {0};
    bt_gw_add_tensor(w, "blk.0.ffn_up.weight", 1, ne, BT_TYPE_Q8_0, d, sizeof d);
}

static void e_dup_key(bt_gw *w) {
    bt_gw_add_u32(w, "test.dup", 1);
    bt_gw_add_u32(w, "test.dup", 2);
}

static void e_dup_tensor(bt_gw *w) {
    int64_t ne[1] = {32};
    float f[32] = {0};
    bt_gw_add_tensor(w, "t0", 1, ne, BT_TYPE_F32, f, sizeof f);
}

static void e_long_name(bt_gw *w) {
    char name[65];
    memset(name, 'n', 64);
    name[64] = '\0';
    int64_t ne[1] = {32};
    float f[32] = {0};
    bt_gw_add_tensor(w, name, 1, ne, BT_TYPE_F32, f, sizeof f);
}

static void e_nested(bt_gw *w) {
    bt_gw_buf b = {0};
    bt_gw_buf_u32(&b, BT_GGUF_ARRAY);
    bt_gw_buf_u64(&b, 1);
    bt_gw_buf_u32(&b, BT_GGUF_U8);
    bt_gw_buf_u64(&b, 1);
    bt_gw_buf_u8(&b, 7);
    bt_gw_add_raw(w, "test.nested", BT_GGUF_ARRAY, b.data, b.len);
    bt_gw_buf_free(&b);
}

static void e_kv_type(bt_gw *w) {
    uint32_t v = 0;
    bt_gw_add_raw(w, "test.weird", 13, &v, sizeof v);
}

static void e_arr_elem_type(bt_gw *w) {
    bt_gw_buf b = {0};
    bt_gw_buf_u32(&b, 42);
    bt_gw_buf_u64(&b, 0);
    bt_gw_add_raw(w, "test.weird_arr", BT_GGUF_ARRAY, b.data, b.len);
    bt_gw_buf_free(&b);
}

static void e_huge_str(bt_gw *w) {
    uint64_t len = (uint64_t)1 << 40;
    bt_gw_add_raw(w, "test.huge_str", BT_GGUF_STRING, &len, sizeof len);
}

static void e_huge_arr(bt_gw *w) {
    bt_gw_buf b = {0};
    bt_gw_buf_u32(&b, BT_GGUF_U32);
    bt_gw_buf_u64(&b, (uint64_t)1 << 40);
    bt_gw_add_raw(w, "test.huge_arr", BT_GGUF_ARRAY, b.data, b.len);
    bt_gw_buf_free(&b);
}

static void e_arr_overflow(bt_gw *w) {
    bt_gw_buf b = {0};
    bt_gw_buf_u32(&b, BT_GGUF_U64);
    bt_gw_buf_u64(&b, (uint64_t)1 << 62);
    bt_gw_add_raw(w, "test.overflow_arr", BT_GGUF_ARRAY, b.data, b.len);
    bt_gw_buf_free(&b);
}

static void e_huge_str_arr(bt_gw *w) {
    bt_gw_buf b = {0};
    bt_gw_buf_u32(&b, BT_GGUF_STRING);
    bt_gw_buf_u64(&b, (uint64_t)1 << 50);
    bt_gw_add_raw(w, "test.huge_str_arr", BT_GGUF_ARRAY, b.data, b.len);
    bt_gw_buf_free(&b);
}

static void e_tokens_type(bt_gw *w) {
    int32_t v[3] = {1, 2, 3};
    bt_gw_add_arr(w, "tokenizer.ggml.tokens", BT_GGUF_I32, v, 3);
}

static void e_token_type_type(bt_gw *w) {
    float v[3] = {1, 2, 3};
    bt_gw_add_arr(w, "tokenizer.ggml.token_type", BT_GGUF_F32, v, 3);
}

static void e_merges_type(bt_gw *w) {
    bt_gw_add_str(w, "tokenizer.ggml.merges", "a b");
}

static void e_scores_type(bt_gw *w) {
    double v[2] = {1, 2};
    bt_gw_add_arr(w, "tokenizer.ggml.scores", BT_GGUF_F64, v, 2);
}

static void e_empty_key(bt_gw *w) {
    bt_gw_add_u32(w, "", 1);
}

static void e_bool2(bt_gw *w) {
    uint8_t v = 2;
    bt_gw_add_raw(w, "test.flag", BT_GGUF_BOOL, &v, 1);
}

/* ---- patches of the written bytes ---- */

typedef struct patch_ctx {
    uint8_t *buf;
    size_t size;
    const bt_gw_layout *lay;
} patch_ctx;

static void p_magic(patch_ctx *c) {
    memcpy(c->buf, "GGML", 4);
}
static void p_version1(patch_ctx *c) {
    bt_gw_patch_u32(c->buf, c->size, 4, 1);
}
static void p_version4(patch_ctx *c) {
    bt_gw_patch_u32(c->buf, c->size, 4, 4);
}
static void p_big_endian(patch_ctx *c) {
    bt_gw_patch_u32(c->buf, c->size, 4, 0x03000000u);
}
static void p_huge_tensors(patch_ctx *c) {
    bt_gw_patch_u64(c->buf, c->size, 8, (uint64_t)1 << 40);
}
static void p_huge_kvs(patch_ctx *c) {
    bt_gw_patch_u64(c->buf, c->size, 16, UINT64_MAX);
}
static void p_trunc_magic(patch_ctx *c) {
    c->size = 2;
}
static void p_trunc_version(patch_ctx *c) {
    c->size = 6;
}
static void p_trunc_tensor_count(patch_ctx *c) {
    c->size = 12;
}
static void p_trunc_kv_count(patch_ctx *c) {
    c->size = 20;
}
#define KV2_START (c->lay->kv_start + KV0_BYTES + KV1_BYTES)
static void p_trunc_key(patch_ctx *c) {
    c->size = KV2_START + 8 + 5;
}
static void p_trunc_type(patch_ctx *c) {
    c->size = KV2_START + 8 + 20 + 2;
}
static void p_trunc_value(patch_ctx *c) {
    c->size = KV2_START + 8 + 20 + 4 + 8 + 2;
}
static void p_trunc_array(patch_ctx *c) {
    c->size = c->lay->kv_start + 8 + 8 + 4 + 4 + 8 + 100;
}
static void p_trunc_str_array(patch_ctx *c) {
    /* inside "ccc", the last element */
    c->size = c->lay->kv_start + KV0_BYTES + 8 + 9 + 4 + 4 + 8 + 9 + 10 + 8 + 1;
}
static void p_trunc_tensor_info(patch_ctx *c) {
    c->size = c->lay->tensor_start + 8 + 2 + 4 + 8 + 3;
}
static void p_trunc_data(patch_ctx *c) {
    c->size = c->lay->data_start + 100;
}
static void p_arch_type(patch_ctx *c) {
    /* kv2's type field: string -> u32; the value's first 4 bytes (its length) become the
     * u32, and the known-key check refuses it before the rest is parsed. */
    bt_gw_patch_u32(c->buf, c->size, KV2_START + 8 + 20, BT_GGUF_U32);
}
static void p_name_nul(patch_ctx *c) {
    c->buf[c->lay->tensor_start + 8 + 1] = 0; /* "t0" -> "t\0" */
}

typedef struct bad_case {
    const char *name;
    const char *expect;
    void (*edit)(bt_gw *w);
    void (*patch)(patch_ctx *c);
} bad_case;

static const bad_case CASES[] = {
    {"bad_magic", "magic", NULL, p_magic},
    {"version_1", "version 1", NULL, p_version1},
    {"version_4", "version 4", NULL, p_version4},
    {"version_big_endian", "big-endian", NULL, p_big_endian},
    {"empty_file", "magic", NULL, NULL}, /* special-cased: size 0 */
    {"trunc_magic", "magic", NULL, p_trunc_magic},
    {"trunc_version", "version", NULL, p_trunc_version},
    {"trunc_tensor_count", "tensor_count", NULL, p_trunc_tensor_count},
    {"trunc_kv_count", "kv_count", NULL, p_trunc_kv_count},
    {"trunc_mid_key", "kv #2: key length 20", NULL, p_trunc_key},
    {"trunc_mid_value_type", "'general.architecture': truncated reading value type", NULL,
     p_trunc_type},
    {"trunc_mid_value", "string value", NULL, p_trunc_value},
    {"trunc_mid_array", "truncated array", NULL, p_trunc_array},
    {"trunc_mid_string_array", "'test.strs': array string element length 3", NULL,
     p_trunc_str_array},
    {"trunc_mid_tensor_info", "tensor 't0': truncated reading ne", NULL, p_trunc_tensor_info},
    {"trunc_mid_data", "past end of file", NULL, p_trunc_data},
    {"huge_tensor_count", "tensor_count 1099511627776", NULL, p_huge_tensors},
    {"huge_kv_count", "kv_count 18446744073709551615", NULL, p_huge_kvs},
    {"huge_string_length", "length 1099511627776", e_huge_str, NULL},
    {"huge_array_count", "array count 1099511627776", e_huge_arr, NULL},
    {"huge_string_array_count", "array count 1125899906842624", e_huge_str_arr, NULL},
    {"array_size_overflow", "overflows", e_arr_overflow, NULL},
    {"n_dims_5", "tensor 'blk.0.attn_q.weight': n_dims 5 > 4", e_n_dims5, NULL},
    {"n_dims_0", "n_dims 0", e_n_dims0, NULL},
    {"element_count_overflow", "element count overflows", e_elem_overflow, NULL},
    {"byte_size_overflow", "byte size overflows", e_size_overflow, NULL},
    {"ne_negative", "ne[1] -1 is negative", e_ne_negative, NULL},
    {"ne_zero", "ne[1] is 0", e_ne_zero, NULL},
    {"alignment_0", "general.alignment 0", e_align0, NULL},
    {"alignment_3", "general.alignment 3", e_align3, NULL},
    {"alignment_wrong_type", "'general.alignment': wrong type: expected u32, found u64",
     e_align_type, NULL},
    {"offset_past_end", "past end of file", e_offset_past_end, NULL},
    {"offset_overflow", "past end of file", e_offset_huge, NULL},
    {"overlapping_tensors", "overlaps", e_overlap, NULL},
    {"misaligned_offset", "offset 260 is not aligned", e_misaligned, NULL},
    {"unknown_tensor_type", "unknown tensor type 4", e_type_unknown, NULL},
    {"unknown_tensor_type_huge", "unknown tensor type 3735928559", e_type_huge, NULL},
    {"ne0_not_block_multiple", "ne[0] 40 is not a multiple", e_block, NULL},
    {"duplicate_key", "duplicate key 'test.dup' (kv 3 and kv 4)", e_dup_key, NULL},
    {"duplicate_tensor_name", "duplicate tensor name 't0'", e_dup_tensor, NULL},
    {"tensor_name_too_long", "name length 64 > 63", e_long_name, NULL},
    {"tensor_name_nul", "NUL", NULL, p_name_nul},
    {"nested_array", "nested array", e_nested, NULL},
    {"unknown_kv_type", "unknown value type 13", e_kv_type, NULL},
    {"unknown_array_elem_type", "unknown array element type 42", e_arr_elem_type, NULL},
    {"empty_key", "empty key", e_empty_key, NULL},
    {"bool_not_0_1", "bool value 2", e_bool2, NULL},
    {"tokens_wrong_type", "'tokenizer.ggml.tokens': wrong type", e_tokens_type, NULL},
    {"token_type_wrong_type", "'tokenizer.ggml.token_type': wrong type", e_token_type_type, NULL},
    {"merges_wrong_type", "'tokenizer.ggml.merges': wrong type", e_merges_type, NULL},
    {"scores_wrong_type", "'tokenizer.ggml.scores': wrong type", e_scores_type, NULL},
    {"architecture_wrong_type", "'general.architecture': wrong type", NULL, p_arch_type},
};

#define N_CASES (sizeof CASES / sizeof CASES[0])

size_t bt_bad_gguf_n_cases(void) {
    return N_CASES;
}

const char *bt_bad_gguf_name(size_t i) {
    return i < N_CASES ? CASES[i].name : NULL;
}

const char *bt_bad_gguf_expect(size_t i) {
    return i < N_CASES ? CASES[i].expect : NULL;
}

static bt_status build(const bad_case *c, uint8_t **buf, size_t *size) {
    *buf = NULL;
    *size = 0;
    bt_gw *w = base();
    if (!w)
        return BT_ERR_NOMEM;
    if (c && c->edit)
        c->edit(w);
    bt_gw_layout lay;
    uint8_t *b;
    size_t n;
    bt_status st = bt_gw_write_mem(w, &b, &n, &lay);
    bt_gw_free(w);
    if (st != BT_OK)
        return st;
    patch_ctx pc = {b, n, &lay};
    if (c && c->patch)
        c->patch(&pc);
    if (c && strcmp(c->name, "empty_file") == 0)
        pc.size = 0;
    if (pc.size < n) {
        /* Exact-size copy, so a sanitizer sees any read past the end. */
        uint8_t *t = malloc(pc.size ? pc.size : 1);
        if (!t) {
            free(b);
            return BT_ERR_NOMEM;
        }
        memcpy(t, b, pc.size);
        free(b);
        b = t;
    }
    *buf = b;
    *size = pc.size;
    return BT_OK;
}

bt_status bt_bad_gguf_build(size_t i, uint8_t **buf, size_t *size) {
    if (i >= N_CASES)
        return BT_ERR_INVALID_ARG;
    return build(&CASES[i], buf, size);
}

bt_status bt_bad_gguf_build_valid(uint8_t **buf, size_t *size) {
    return build(NULL, buf, size);
}
