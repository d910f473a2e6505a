/*
 * vocab.c - loading the vocabulary from GGUF tokenizer.* keys, special tokens, the special
 * token partition ahead of BPE/SPM, token pieces and whole-sequence detokenization.
 * Mirrors llama.cpp's llama_vocab::impl (load, tokenizer_st_partition, tokenize,
 * token_to_piece, detokenize); see model-format.md section 4.
 */
#include "vocab.h"

#include "bpe.h"
#include "spm.h"
#include "vocab_map.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static bool str_is(bt_str s, const char *lit) {
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.ptr, lit, n) == 0;
}

/* ---- loading ---- */

static bt_status get_opt_id(const bt_gguf *g, const char *key, int32_t n_tokens, int32_t *id,
                            bt_error *err) {
    if (*id >= n_tokens)
        *id = BT_TOKEN_NULL; /* a default out of range is disabled, as llama.cpp */
    if (bt_gguf_find_kv(g, key) < 0)
        return BT_OK;
    uint32_t u;
    bt_status st = bt_gguf_get_u32(g, key, &u, err);
    if (st != BT_OK)
        return st;
    if (u >= (uint32_t)n_tokens) {
        BT_WARN("vocab: %s = %u out of range (n_tokens %d), keeping %d", key, u, n_tokens, *id);
        return BT_OK;
    }
    *id = (int32_t)u;
    return BT_OK;
}

static bt_status get_opt_bool(const bt_gguf *g, const char *key, bool *val, bt_error *err) {
    if (bt_gguf_find_kv(g, key) < 0)
        return BT_OK;
    return bt_gguf_get_bool(g, key, val, err);
}

/* Token id whose text is exactly lit, or BT_TOKEN_NULL. */
static int32_t find_lit(const bt_vocab *v, const char *lit) {
    return bt_vocab_lookup(v, lit, strlen(lit));
}

/* llama.cpp auto-detects some specials by text when the file does not name them and forces
 * them to CONTROL. Among several candidates it takes whichever its hash map yields first; we
 * take the lowest id (only matters for vocabularies holding two candidates, e.g. both
 * <|im_end|> and <|endoftext|>, which are both end-of-generation anyway). */
static void detect_special(bt_vocab *v, int32_t *id, const char *const *names) {
    if (*id != BT_TOKEN_NULL)
        return;
    int32_t best = BT_TOKEN_NULL;
    for (size_t k = 0; names[k]; k++) {
        int32_t t = find_lit(v, names[k]);
        if (t != BT_TOKEN_NULL && (best == BT_TOKEN_NULL || t < best))
            best = t;
    }
    if (best != BT_TOKEN_NULL) {
        *id = best;
        v->attr[best] |= BT_TOKEN_ATTR_CONTROL;
    }
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static void sort_specials(bt_vocab *v) {
    /* Insertion sort by (length desc, id asc): special lists are short (tens to a few
     * thousand) and this keeps load free of global state. */
    for (size_t i = 1; i < v->n_specials; i++) {
        int32_t t = v->specials[i];
        size_t j = i;
        while (j > 0) {
            int32_t p = v->specials[j - 1];
            size_t lp = v->text[p].len, lt = v->text[t].len;
            if (lp > lt || (lp == lt && p < t))
                break;
            v->specials[j] = p;
            j--;
        }
        v->specials[j] = t;
    }
}

static bt_status build_eog(bt_vocab *v, bt_error *err) {
    static const char *const eot_names[] = {"<|eot_id|>",
                                            "<|im_end|>",
                                            "<|end|>",
                                            "<end_of_turn>",
                                            "<|endoftext|>",
                                            "<|end_of_text|>",
                                            "<EOT>",
                                            "_<EOT>",
                                            "[EOT]",
                                            "<\xef\xbd\x9c"
                                            "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                                            "<end_of_utterance>",
                                            NULL};
    static const char *const eom_names[] = {"<|eom_id|>", NULL};
    static const char *const fim_pre[] = {
        "<|fim_prefix|>",    "<fim-prefix>",    "<fim_prefix>", "<PRE>",
        "\xe2\x96\x81<PRE>", "<|code_prefix|>", "<|prefix|>",   NULL};
    static const char *const fim_suf[] = {
        "<|fim_suffix|>",    "<fim-suffix>",    "<fim_suffix>", "<SUF>",
        "\xe2\x96\x81<SUF>", "<|code_suffix|>", "<|suffix|>",   NULL};
    static const char *const fim_mid[] = {
        "<|fim_middle|>",    "<fim-middle>",    "<fim_middle>", "<MID>",
        "\xe2\x96\x81<MID>", "<|code_middle|>", "<|middle|>",   NULL};
    static const char *const fim_pad[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>",
                                          "<PAD>",       "[PAD]",     NULL};
    static const char *const fim_rep[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
                                          "<REPO>",       "<reponame>",    NULL};
    static const char *const fim_sep[] = {"<|file_sep|>", NULL};
    static const char *const eog_names[] = {"<|eot_id|>",
                                            "<|im_end|>",
                                            "<|end|>",
                                            "<end_of_turn>",
                                            "<|endoftext|>",
                                            "<|eom_id|>",
                                            "<EOT>",
                                            "_<EOT>",
                                            "[EOT]",
                                            "[EOS]",
                                            "<|end_of_text|>",
                                            "<end_of_utterance>",
                                            "</s>",
                                            "<eos>",
                                            "<\xef\xbd\x9c"
                                            "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                                            NULL};

    detect_special(v, &v->eot, eot_names);
    detect_special(v, &v->eom, eom_names);
    detect_special(v, &v->fim_pre, fim_pre);
    detect_special(v, &v->fim_suf, fim_suf);
    detect_special(v, &v->fim_mid, fim_mid);
    detect_special(v, &v->fim_pad, fim_pad);
    detect_special(v, &v->fim_rep, fim_rep);
    detect_special(v, &v->fim_sep, fim_sep);

    int32_t cand[6 + sizeof eog_names / sizeof eog_names[0]];
    size_t n = 0;
    cand[n++] = v->fim_pad;
    cand[n++] = v->fim_rep;
    cand[n++] = v->fim_sep;
    cand[n++] = v->eos;
    cand[n++] = v->eot;
    cand[n++] = v->eom;
    for (size_t k = 0; eog_names[k]; k++) {
        int32_t t = find_lit(v, eog_names[k]);
        if (t != BT_TOKEN_NULL)
            v->attr[t] |= BT_TOKEN_ATTR_CONTROL;
        cand[n++] = t;
    }
    qsort(cand, n, sizeof cand[0], cmp_i32);
    v->eog = malloc(n * sizeof *v->eog);
    if (!v->eog)
        return bt_error_set(err, BT_ERR_NOMEM, "vocab: eog list");
    v->n_eog = 0;
    for (size_t i = 0; i < n; i++) {
        if (cand[i] == BT_TOKEN_NULL)
            continue;
        if (v->n_eog && v->eog[v->n_eog - 1] == cand[i])
            continue;
        v->eog[v->n_eog++] = cand[i];
    }
    return BT_OK;
}

/* token_to_piece(id, special = true) of llama.cpp, appended to buf (grown as needed). */
static bt_status piece_compute(const bt_vocab *v, int32_t id, char **buf, size_t *len,
                               size_t *cap) {
    bt_str t = v->text[id];
    uint32_t a = v->attr[id];
    /* Worst case: BPE text of k code points each rendered as "[UNK_BYTE_0x..<text>]". */
    size_t need = *len + (t.len + 1) * (t.len + 32) + 8;
    if (need > *cap) {
        size_t nc = *cap ? *cap : 1 << 16;
        while (nc < need)
            nc *= 2;
        char *nb = realloc(*buf, nc);
        if (!nb)
            return BT_ERR_NOMEM;
        *buf = nb;
        *cap = nc;
    }
    char *o = *buf + *len;
    size_t k = 0;
    if (a & (BT_TOKEN_ATTR_UNKNOWN | BT_TOKEN_ATTR_CONTROL | BT_TOKEN_ATTR_USER_DEFINED)) {
        memcpy(o, t.ptr, t.len);
        k = t.len;
    } else if (a & BT_TOKEN_ATTR_NORMAL) {
        if (v->kind == BT_VOCAB_SPM) {
            for (size_t i = 0; i < t.len;) {
                if (i + 3 <= t.len && memcmp(t.ptr + i, "\xe2\x96\x81", 3) == 0) {
                    o[k++] = ' ';
                    i += 3;
                } else {
                    o[k++] = t.ptr[i++];
                }
            }
        } else {
            const unsigned char *s = (const unsigned char *)t.ptr;
            for (size_t i = 0; i < t.len;) {
                uint32_t cp;
                size_t l = bt_utf8_decode(s + i, t.len - i, &cp);
                if (l == 0) {
                    cp = 0xFFFD;
                    l = 1;
                }
                i += l;
                if (cp < 0x144 && v->cpt_to_byte[cp] >= 0) {
                    o[k++] = (char)v->cpt_to_byte[cp];
                } else {
                    char u[4];
                    size_t ul = bt_utf8_encode(cp, u);
                    k += (size_t)sprintf(o + k, "[UNK_BYTE_0x");
                    for (size_t j = 0; j < ul; j++)
                        k += (size_t)sprintf(o + k, "%02x", (unsigned char)u[j]);
                    memcpy(o + k, t.ptr, t.len);
                    k += t.len;
                    o[k++] = ']';
                }
            }
        }
    } else if (a & BT_TOKEN_ATTR_BYTE) {
        if (t.len >= 5) {
            char hex[3] = {t.ptr[3], t.ptr[4], 0};
            o[k++] = (char)strtol(hex, NULL, 16);
        }
    }
    *len += k;
    return BT_OK;
}

static bt_status build_pieces(bt_vocab *v, bt_error *err) {
    v->piece_off = malloc(((size_t)v->n_tokens + 1) * sizeof *v->piece_off);
    if (!v->piece_off)
        return bt_error_set(err, BT_ERR_NOMEM, "vocab: piece offsets");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    v->max_piece = 0;
    for (int32_t id = 0; id < v->n_tokens; id++) {
        v->piece_off[id] = (uint32_t)len;
        size_t before = len;
        if (piece_compute(v, id, &buf, &len, &cap) != BT_OK) {
            free(buf);
            return bt_error_set(err, BT_ERR_NOMEM, "vocab: piece of token %d", id);
        }
        if (len > UINT32_MAX) {
            free(buf);
            return bt_error_set(err, BT_ERR_LIMIT, "vocab: pieces exceed 4 GiB");
        }
        if (len - before > v->max_piece)
            v->max_piece = len - before;
    }
    v->piece_off[v->n_tokens] = (uint32_t)len;
    v->pieces = buf ? buf : malloc(1);
    if (!v->pieces)
        return bt_error_set(err, BT_ERR_NOMEM, "vocab: pieces");
    return BT_OK;
}

static void init_byte_map(bt_vocab *v) {
    for (int i = 0; i < 0x144; i++)
        v->cpt_to_byte[i] = -1;
    int n = 0;
    for (int b = 0; b < 256; b++) {
        uint32_t cp;
        if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))
            cp = (uint32_t)b;
        else
            cp = 0x100u + (uint32_t)n++;
        v->byte_utf8_len[b] = (uint8_t)bt_utf8_encode(cp, v->byte_utf8[b]);
        v->cpt_to_byte[cp] = (int16_t)b;
    }
}

static bt_status load_tokens(const bt_gguf *g, bt_vocab *v, bt_error *err) {
    const char *key = "tokenizer.ggml.tokens";
    uint64_t n;
    bt_status st = bt_gguf_get_arr_str_len(g, key, &n, err);
    if (st != BT_OK)
        return st;
    if (n == 0 || n > INT32_MAX / 2)
        return bt_error_set(err, BT_ERR_FORMAT, "vocab: %s has %llu entries", key,
                            (unsigned long long)n);
    v->n_tokens = (int32_t)n;
    bt_str *text = malloc(n * sizeof *text);
    v->score = calloc(n, sizeof *v->score);
    v->attr = malloc(n * sizeof *v->attr);
    v->text = text;
    if (!text || !v->score || !v->attr)
        return bt_error_set(err, BT_ERR_NOMEM, "vocab: %llu tokens", (unsigned long long)n);
    for (uint64_t i = 0; i < n; i++) {
        text[i] = bt_gguf_get_arr_str(g, key, i);
        v->attr[i] = BT_TOKEN_ATTR_NORMAL;
    }

    const char *skey = "tokenizer.ggml.scores";
    int64_t ki = bt_gguf_find_kv(g, skey);
    if (ki >= 0) {
        bt_gguf_type at = bt_gguf_kv_arr_type(g, (size_t)ki);
        if (bt_gguf_kv_type(g, (size_t)ki) != BT_GGUF_ARRAY ||
            (at != BT_GGUF_F32 && at != BT_GGUF_I32))
            return bt_error_set(err, BT_ERR_FORMAT, "vocab: %s must be f32[] or i32[]", skey);
        const void *data;
        uint64_t ns;
        st = bt_gguf_get_arr(g, skey, at, &data, &ns, err);
        if (st != BT_OK)
            return st;
        if (ns < n)
            return bt_error_set(err, BT_ERR_FORMAT, "vocab: %s has %llu entries < %llu tokens",
                                skey, (unsigned long long)ns, (unsigned long long)n);
        for (uint64_t i = 0; i < n; i++) {
            if (at == BT_GGUF_F32) {
                memcpy(&v->score[i], (const char *)data + 4 * i, 4);
            } else {
                int32_t x;
                memcpy(&x, (const char *)data + 4 * i, 4);
                v->score[i] = (float)x;
            }
        }
    }

    const char *tkey = "tokenizer.ggml.token_type";
    if (bt_gguf_find_kv(g, tkey) >= 0) {
        const void *data;
        uint64_t nt;
        st = bt_gguf_get_arr(g, tkey, BT_GGUF_I32, &data, &nt, err);
        if (st != BT_OK)
            return st;
        if (nt < n)
            return bt_error_set(err, BT_ERR_FORMAT, "vocab: %s has %llu entries < %llu tokens",
                                tkey, (unsigned long long)nt, (unsigned long long)n);
        for (uint64_t i = 0; i < n; i++) {
            int32_t t;
            memcpy(&t, (const char *)data + 4 * i, 4);
            switch (t) {
            case 1:
                v->attr[i] = BT_TOKEN_ATTR_NORMAL;
                break;
            case 2:
                v->attr[i] = BT_TOKEN_ATTR_UNKNOWN;
                break;
            case 3:
                v->attr[i] = BT_TOKEN_ATTR_CONTROL;
                break;
            case 4:
                v->attr[i] = BT_TOKEN_ATTR_USER_DEFINED;
                break;
            case 5:
                v->attr[i] = BT_TOKEN_ATTR_UNUSED;
                break;
            case 6:
                v->attr[i] = BT_TOKEN_ATTR_BYTE;
                break;
            default:
                v->attr[i] = BT_TOKEN_ATTR_UNDEFINED;
                break;
            }
        }
    }

    st = bt_strmap_init(&v->token_map, n, err);
    if (st != BT_OK)
        return st;
    uint32_t mask = v->token_map.cap - 1;
    for (uint64_t i = 0; i < n; i++) {
        if (text[i].len == 0) {
            BT_WARN("vocab: empty token at index %llu", (unsigned long long)i);
            continue;
        }
        uint32_t s = bt_vocab_hash(text[i].ptr, text[i].len, BT_HASH_SEED) & mask;
        for (;; s = (s + 1) & mask) {
            int32_t o = v->token_map.slots[s];
            if (o < 0) {
                v->token_map.slots[s] = (int32_t)i;
                break;
            }
            if (text[o].len == text[i].len && memcmp(text[o].ptr, text[i].ptr, text[i].len) == 0)
                return bt_error_set(err, BT_ERR_FORMAT,
                                    "vocab: duplicate token '%.*s' has ids %d and %llu",
                                    (int)(text[i].len > 64 ? 64 : text[i].len), text[i].ptr, o,
                                    (unsigned long long)i);
        }
    }
    return BT_OK;
}

static bt_status load_merges(const bt_gguf *g, bt_vocab *v, bt_error *err) {
    const char *key = "tokenizer.ggml.merges";
    uint64_t n;
    if (bt_gguf_find_kv(g, key) < 0)
        return bt_error_set(err, BT_ERR_FORMAT, "vocab: %s missing (required for gpt2)", key);
    bt_status st = bt_gguf_get_arr_str_len(g, key, &n, err);
    if (st != BT_OK)
        return st;
    if (n > INT32_MAX / 2)
        return bt_error_set(err, BT_ERR_FORMAT, "vocab: %s has %llu entries", key,
                            (unsigned long long)n);
    bt_str *m = malloc((n ? n : 1) * sizeof *m);
    v->merge_split = malloc((n ? n : 1) * sizeof *v->merge_split);
    v->merge = m;
    v->n_merges = n;
    if (!m || !v->merge_split)
        return bt_error_set(err, BT_ERR_NOMEM, "vocab: %llu merges", (unsigned long long)n);
    st = bt_strmap_init(&v->merge_map, n, err);
    if (st != BT_OK)
        return st;
    uint32_t mask = v->merge_map.cap - 1;
    for (uint64_t i = 0; i < n; i++) {
        m[i] = bt_gguf_get_arr_str(g, key, i);
        const char *sp = m[i].len > 1 ? memchr(m[i].ptr + 1, ' ', m[i].len - 1) : NULL;
        if (!sp)
            continue; /* llama.cpp maps such an entry to ("", ""), which never matches */
        size_t split = (size_t)(sp - m[i].ptr);
        v->merge_split[i] = (uint32_t)split;
        if (bt_vocab_merge_rank(v, m[i].ptr, split, sp + 1, m[i].len - split - 1) >= 0)
            continue; /* first occurrence wins (std::unordered_map::emplace) */
        uint32_t s = bt_vocab_hash(m[i].ptr, m[i].len, BT_HASH_SEED) & mask;
        while (v->merge_map.slots[s] >= 0)
            s = (s + 1) & mask;
        v->merge_map.slots[s] = (int32_t)i;
    }
    return BT_OK;
}

static bt_status load_specials(const bt_gguf *g, bt_vocab *v, bt_error *err) {
    struct {
        const char *key;
        int32_t *id;
    } keys[] = {
        {"tokenizer.ggml.bos_token_id", &v->bos},
        {"tokenizer.ggml.eos_token_id", &v->eos},
        {"tokenizer.ggml.eot_token_id", &v->eot},
        {"tokenizer.ggml.eom_token_id", &v->eom},
        {"tokenizer.ggml.unknown_token_id", &v->unk},
        {"tokenizer.ggml.seperator_token_id", &v->sep},
        {"tokenizer.ggml.padding_token_id", &v->pad},
        {"tokenizer.ggml.fim_pre_token_id", &v->fim_pre},
        {"tokenizer.ggml.fim_suf_token_id", &v->fim_suf},
        {"tokenizer.ggml.fim_mid_token_id", &v->fim_mid},
        {"tokenizer.ggml.fim_pad_token_id", &v->fim_pad},
        {"tokenizer.ggml.fim_rep_token_id", &v->fim_rep},
        {"tokenizer.ggml.fim_sep_token_id", &v->fim_sep},
        {"tokenizer.ggml.prefix_token_id", &v->fim_pre},
        {"tokenizer.ggml.suffix_token_id", &v->fim_suf},
        {"tokenizer.ggml.middle_token_id", &v->fim_mid},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        bt_status st = get_opt_id(g, keys[i].key, v->n_tokens, keys[i].id, err);
        if (st != BT_OK)
            return st;
    }
    bt_status st = get_opt_bool(g, "tokenizer.ggml.add_bos_token", &v->add_bos, err);
    if (st == BT_OK)
        st = get_opt_bool(g, "tokenizer.ggml.add_eos_token", &v->add_eos, err);
    if (st != BT_OK)
        return st;
    if (v->add_bos && v->bos == BT_TOKEN_NULL)
        return bt_error_set(err, BT_ERR_FORMAT,
                            "vocab: tokenizer.ggml.add_bos_token is true, but "
                            "tokenizer.ggml.bos_token_id is not set");
    if (v->add_eos && v->eos == BT_TOKEN_NULL)
        return bt_error_set(err, BT_ERR_FORMAT,
                            "vocab: tokenizer.ggml.add_eos_token is true, but "
                            "tokenizer.ggml.eos_token_id is not set");
    return BT_OK;
}

/* Optional string key, {NULL, 0} when absent or not a string. */
static bt_str opt_str(const bt_gguf *g, const char *key) {
    bt_str s = {NULL, 0};
    if (bt_gguf_find_kv(g, key) >= 0 && bt_gguf_get_str(g, key, &s, NULL) != BT_OK)
        s = (bt_str){NULL, 0};
    return s;
}

static bool contains_ci(bt_str s, const char *lit) {
    size_t n = strlen(lit);
    for (size_t i = 0; s.ptr && i + n <= s.len; i++) {
        size_t k = 0;
        while (k < n && tolower((unsigned char)s.ptr[i + k]) == lit[k])
            k++;
        if (k == n)
            return true;
    }
    return false;
}

static void set_attr(bt_vocab *v, const char *lit, uint32_t attr, bool on) {
    int32_t id = find_lit(v, lit);
    if (id == BT_TOKEN_NULL)
        return; /* llama.cpp would throw (phi-3) or warn (<mask>): nothing to strip */
    v->attr[id] = on ? (v->attr[id] | attr) : (v->attr[id] & ~attr);
}

/* Per-token strip attributes, which GGUF files do not carry: llama.cpp sets them from
 * general.name, tokenizer.ggml.pre and general.architecture (llama-vocab.cpp, end of load).
 * Phi-3's specials drop the whitespace after them: "<|user|>\nHi" splits as <|user|>, "Hi". */
static void set_strip_attrs(const bt_gguf *g, bt_vocab *v, const char *pre) {
    bt_str name = opt_str(g, "general.name"), arch = opt_str(g, "general.architecture");
    bt_str pre_s = {pre, strlen(pre)};
    if (contains_ci(pre_s, "jina-v2-de") || contains_ci(pre_s, "jina-v2-es") ||
        contains_ci(pre_s, "jina-v2-code") || contains_ci(arch, "nomic-bert-moe") ||
        contains_ci(arch, "jina-bert-v3")) {
        set_attr(v, "<mask>", BT_TOKEN_ATTR_LSTRIP, true);
    } else if (contains_ci(name, "phi-3") || contains_ci(name, "phi3")) {
        for (int32_t i = 0; i < v->n_tokens; i++)
            if (v->attr[i] &
                (BT_TOKEN_ATTR_CONTROL | BT_TOKEN_ATTR_USER_DEFINED | BT_TOKEN_ATTR_UNKNOWN))
                v->attr[i] |= BT_TOKEN_ATTR_RSTRIP;
        set_attr(v, "</s>", BT_TOKEN_ATTR_RSTRIP, true);
        set_attr(v, "<unk>", BT_TOKEN_ATTR_RSTRIP, false);
        set_attr(v, "<s>", BT_TOKEN_ATTR_RSTRIP, false);
        set_attr(v, "<|endoftext|>", BT_TOKEN_ATTR_RSTRIP, false);
    } else if (contains_ci(name, "modern-bert")) {
        set_attr(v, "[MASK]", BT_TOKEN_ATTR_LSTRIP, true);
    }
}

bt_status bt_vocab_load(const bt_gguf *g, bt_vocab **out, bt_error *err) {
    *out = NULL;
    bt_vocab *v = calloc(1, sizeof *v);
    if (!v)
        return bt_error_set(err, BT_ERR_NOMEM, "vocab: struct");
    bt_status st;
    init_byte_map(v);
    v->eot = v->eom = v->sep = v->pad = v->nl = BT_TOKEN_NULL;
    v->fim_pre = v->fim_suf = v->fim_mid = BT_TOKEN_NULL;
    v->fim_pad = v->fim_rep = v->fim_sep = BT_TOKEN_NULL;

    bt_str model;
    st = bt_gguf_get_str(g, "tokenizer.ggml.model", &model, err);
    if (st != BT_OK)
        goto fail;
    bt_str pre = {NULL, 0};
    if (bt_gguf_find_kv(g, "tokenizer.ggml.pre") >= 0) {
        st = bt_gguf_get_str(g, "tokenizer.ggml.pre", &pre, err);
        if (st != BT_OK)
            goto fail;
    }
    char pre_name[64];
    if (pre.len >= sizeof pre_name) {
        st = bt_error_set(err, BT_ERR_UNSUPPORTED, "vocab: unknown pre-tokenizer '%.*s'",
                          (int)(pre.len > 200 ? 200 : pre.len), pre.ptr);
        goto fail;
    }
    memcpy(pre_name, pre.ptr ? pre.ptr : "", pre.len);
    pre_name[pre.len] = 0;

    if (str_is(model, "gpt2")) {
        v->kind = BT_VOCAB_BPE;
        v->bos = v->eos = 11;
        v->unk = BT_TOKEN_NULL;
        v->add_bos = v->add_eos = false;
        v->clean_spaces = true;
        v->add_space_prefix = false;
    } else if (str_is(model, "llama")) {
        v->kind = BT_VOCAB_SPM;
        v->bos = 1, v->eos = 2, v->unk = 0;
        v->add_bos = true, v->add_eos = false;
        v->add_space_prefix = true;
        v->clean_spaces = false;
    } else {
        st = bt_error_set(err, BT_ERR_UNSUPPORTED,
                          "vocab: tokenizer.ggml.model '%.*s' is not supported (gpt2, llama)",
                          (int)(model.len > 100 ? 100 : model.len), model.ptr);
        goto fail;
    }

    st = load_tokens(g, v, err);
    if (st != BT_OK)
        goto fail;
    if (v->kind == BT_VOCAB_BPE) {
        if (pre.len == 0) {
            BT_WARN("vocab: missing tokenizer.ggml.pre, using 'default': "
                    "GENERATION QUALITY WILL BE DEGRADED");
            strcpy(pre_name, "default");
        }
        st = load_merges(g, v, err);
        if (st == BT_OK)
            st = bt_bpe_init(v, pre_name, err);
        if (st != BT_OK)
            goto fail;
        snprintf(v->pre_name, sizeof v->pre_name, "%s", pre_name);
    }
    st = get_opt_bool(g, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix, err);
    if (st != BT_OK)
        goto fail;
    st = load_specials(g, v, err);
    if (st != BT_OK)
        goto fail;
    st = build_eog(v, err);
    if (st != BT_OK)
        goto fail;

    size_t ns = 0;
    for (int32_t i = 0; i < v->n_tokens; i++)
        if ((v->attr[i] &
             (BT_TOKEN_ATTR_CONTROL | BT_TOKEN_ATTR_USER_DEFINED | BT_TOKEN_ATTR_UNKNOWN)) &&
            v->text[i].len > 0)
            ns++;
    v->specials = malloc((ns ? ns : 1) * sizeof *v->specials);
    if (!v->specials) {
        st = bt_error_set(err, BT_ERR_NOMEM, "vocab: special list");
        goto fail;
    }
    for (int32_t i = 0; i < v->n_tokens; i++)
        if ((v->attr[i] &
             (BT_TOKEN_ATTR_CONTROL | BT_TOKEN_ATTR_USER_DEFINED | BT_TOKEN_ATTR_UNKNOWN)) &&
            v->text[i].len > 0)
            v->specials[v->n_specials++] = i;
    sort_specials(v);
    set_strip_attrs(g, v, pre_name);

    st = build_pieces(v, err);
    if (st != BT_OK)
        goto fail;

    /* The newline token. */
    if (v->kind == BT_VOCAB_SPM) {
        v->nl = find_lit(v, "<0x0A>");
        if (v->nl == BT_TOKEN_NULL)
            v->nl = find_lit(v, "\n");
        if (v->nl == BT_TOKEN_NULL)
            v->nl = v->pad;
    } else {
        int32_t ids[4];
        size_t n = 0;
        st = bt_tokenize(v, "\n", 1, false, false, ids, 4, &n, err);
        if (st != BT_OK && st != BT_ERR_LIMIT)
            goto fail;
        v->nl = n > 0 ? ids[0] : v->pad;
    }
    *out = v;
    return BT_OK;
fail:
    bt_vocab_free(v);
    return st;
}

void bt_vocab_free(bt_vocab *v) {
    if (!v)
        return;
    bt_bpe_deinit(v);
    free((void *)v->text);
    free(v->score);
    free(v->attr);
    free(v->token_map.slots);
    free((void *)v->merge);
    free(v->merge_split);
    free(v->merge_map.slots);
    free(v->eog);
    free(v->specials);
    free(v->pieces);
    free(v->piece_off);
    free(v);
}

/* ---- accessors ---- */

bt_vocab_kind bt_vocab_kind_get(const bt_vocab *v) {
    return v->kind;
}
int32_t bt_vocab_n_tokens(const bt_vocab *v) {
    return v->n_tokens;
}
int32_t bt_vocab_bos(const bt_vocab *v) {
    return v->bos;
}
int32_t bt_vocab_eos(const bt_vocab *v) {
    return v->eos;
}
int32_t bt_vocab_eot(const bt_vocab *v) {
    return v->eot;
}
int32_t bt_vocab_unk(const bt_vocab *v) {
    return v->unk;
}
int32_t bt_vocab_pad(const bt_vocab *v) {
    return v->pad;
}
int32_t bt_vocab_nl(const bt_vocab *v) {
    return v->nl;
}
bool bt_vocab_add_bos(const bt_vocab *v) {
    return v->add_bos;
}
bool bt_vocab_add_eos(const bt_vocab *v) {
    return v->add_eos;
}
const char *bt_vocab_pre_name(const bt_vocab *v) {
    return v->pre_name;
}
size_t bt_vocab_max_piece_bytes(const bt_vocab *v) {
    return v->max_piece;
}

bool bt_vocab_is_eog(const bt_vocab *v, int32_t id) {
    size_t lo = 0, hi = v->n_eog;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v->eog[mid] == id)
            return true;
        if (v->eog[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

const int32_t *bt_vocab_eog_ids(const bt_vocab *v, size_t *n) {
    *n = v->n_eog;
    return v->eog;
}

uint32_t bt_vocab_token_attr(const bt_vocab *v, int32_t id) {
    return id >= 0 && id < v->n_tokens ? v->attr[id] : 0;
}

bool bt_vocab_is_control(const bt_vocab *v, int32_t id) {
    return (bt_vocab_token_attr(v, id) & BT_TOKEN_ATTR_CONTROL) != 0;
}

bt_str bt_vocab_token_text(const bt_vocab *v, int32_t id) {
    if (id < 0 || id >= v->n_tokens)
        return (bt_str){NULL, 0};
    return v->text[id];
}

float bt_vocab_token_score(const bt_vocab *v, int32_t id) {
    return id >= 0 && id < v->n_tokens ? v->score[id] : 0.0f;
}

int32_t bt_vocab_find(const bt_vocab *v, const char *text, size_t len) {
    return bt_vocab_lookup(v, text, len);
}

/* ---- tokenize ---- */

/* One fragment of the input after the special-token partition: a special id, or raw text
 * [off, off + len). */
typedef struct frag {
    int32_t id; /* BT_TOKEN_NULL for raw text */
    size_t off, len;
} frag;

typedef struct frag_vec {
    frag *a;
    size_t n, cap;
} frag_vec;

static bool frag_push(frag_vec *fv, frag f) {
    if (fv->n == fv->cap) {
        size_t nc = fv->cap ? fv->cap * 2 : 16;
        frag *na = realloc(fv->a, nc * sizeof *na);
        if (!na)
            return false;
        fv->a = na;
        fv->cap = nc;
    }
    fv->a[fv->n++] = f;
    return true;
}

static const char *find_bytes(const char *h, size_t hn, const char *nd, size_t nn) {
    if (nn == 0 || nn > hn)
        return NULL;
    const char *end = h + hn - nn + 1;
    for (const char *p = h; p < end;) {
        p = memchr(p, nd[0], (size_t)(end - p));
        if (!p)
            return NULL;
        if (memcmp(p, nd, nn) == 0)
            return p;
        p++;
    }
    return NULL;
}

/* isspace in the C locale, as llama.cpp's partition uses it. */
static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* llama.cpp tokenizer_st_partition: for each special (longest first), split every raw
 * fragment at each of its occurrences, left to right. */
static bt_status partition(const bt_vocab *v, const char *text, size_t len, bool parse_special,
                           frag_vec *cur, bt_error *err) {
    frag_vec nxt = {0};
    cur->n = 0;
    if (len == 0)
        return BT_OK;
    if (!frag_push(cur, (frag){BT_TOKEN_NULL, 0, len}))
        goto oom;
    for (size_t s = 0; s < v->n_specials; s++) {
        int32_t id = v->specials[s];
        if (!parse_special && (v->attr[id] & (BT_TOKEN_ATTR_CONTROL | BT_TOKEN_ATTR_UNKNOWN)))
            continue;
        bt_str t = v->text[id];
        if (!find_bytes(text, len, t.ptr, t.len))
            continue; /* fast path: nowhere in the input */
        nxt.n = 0;
        for (size_t i = 0; i < cur->n; i++) {
            frag f = cur->a[i];
            if (f.id != BT_TOKEN_NULL) {
                if (!frag_push(&nxt, f))
                    goto oom;
                continue;
            }
            size_t off = f.off, rem = f.len;
            for (;;) {
                const char *m = find_bytes(text + off, rem, t.ptr, t.len);
                if (!m) {
                    if (rem > 0 && !frag_push(&nxt, (frag){BT_TOKEN_NULL, off, rem}))
                        goto oom;
                    break;
                }
                size_t mo = (size_t)(m - text);
                size_t left = mo - off;
                if (v->attr[id] & BT_TOKEN_ATTR_LSTRIP)
                    while (left > 0 && is_space(text[off + left - 1]))
                        left--;
                if (left > 0 && !frag_push(&nxt, (frag){BT_TOKEN_NULL, off, left}))
                    goto oom;
                if (!frag_push(&nxt, (frag){id, 0, 0}))
                    goto oom;
                rem -= mo + t.len - off;
                off = mo + t.len;
                if (v->attr[id] & BT_TOKEN_ATTR_RSTRIP)
                    while (rem > 0 && is_space(text[off]))
                        off++, rem--;
            }
        }
        frag_vec tmp = *cur;
        *cur = nxt;
        nxt = tmp;
    }
    free(nxt.a);
    return BT_OK;
oom:
    free(nxt.a);
    return bt_error_set(err, BT_ERR_NOMEM, "tokenize: fragment list");
}

bt_status bt_tokenize(const bt_vocab *v, const char *text, size_t len, bool add_special,
                      bool parse_special, int32_t *ids, size_t cap, size_t *n_out, bt_error *err) {
    bt_tok_out out = {ids, ids ? cap : 0, 0};
    frag_vec fv = {0};
    char *esc = NULL;
    *n_out = 0;
    if (!text && len)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "tokenize: text is NULL, len %zu", len);
    bt_status st = partition(v, text, len, parse_special, &fv, err);
    if (st != BT_OK)
        goto done;

    if (v->kind == BT_VOCAB_SPM) {
        bool prev_special = true;
        if (add_special && v->add_bos)
            bt_tok_out_push(&out, v->bos);
        size_t maxf = 0;
        for (size_t i = 0; i < fv.n; i++)
            if (fv.a[i].id == BT_TOKEN_NULL && fv.a[i].len > maxf)
                maxf = fv.a[i].len;
        if (maxf > (SIZE_MAX - 3) / 3) {
            st = bt_error_set(err, BT_ERR_LIMIT, "tokenize: text of %zu bytes", len);
            goto done;
        }
        esc = malloc(3 * (maxf + 1));
        if (!esc) {
            st = bt_error_set(err, BT_ERR_NOMEM, "tokenize: %zu bytes of scratch", 3 * maxf);
            goto done;
        }
        for (size_t i = 0; i < fv.n; i++) {
            frag f = fv.a[i];
            if (f.id != BT_TOKEN_NULL) {
                bt_tok_out_push(&out, f.id);
                prev_special = true;
                continue;
            }
            size_t k = 0;
            if (v->add_space_prefix && prev_special) {
                memcpy(esc, "\xe2\x96\x81", 3);
                k = 3;
            }
            for (size_t j = 0; j < f.len; j++) {
                if (text[f.off + j] == ' ') {
                    memcpy(esc + k, "\xe2\x96\x81", 3);
                    k += 3;
                } else {
                    esc[k++] = text[f.off + j];
                }
            }
            st = bt_spm_tokenize(v, esc, k, &out, err);
            if (st != BT_OK)
                goto done;
            prev_special = false;
        }
        if (add_special && v->add_eos)
            bt_tok_out_push(&out, v->eos);
    } else {
        if (add_special && v->add_bos)
            bt_tok_out_push(&out, v->bos);
        for (size_t i = 0; i < fv.n; i++) {
            frag f = fv.a[i];
            if (f.id != BT_TOKEN_NULL) {
                bt_tok_out_push(&out, f.id);
                continue;
            }
            st = bt_bpe_tokenize(v, text + f.off, f.len, &out, err);
            if (st != BT_OK)
                goto done;
        }
        if (add_special && v->add_eos)
            bt_tok_out_push(&out, v->eos);
    }
    *n_out = out.n;
    if (out.n > out.cap)
        st = bt_error_set(err, BT_ERR_LIMIT, "tokenize: %zu tokens needed, room for %zu", out.n,
                          out.cap);
done:
    free(fv.a);
    free(esc);
    return st;
}

/* ---- pieces and detokenize ---- */

bt_status bt_token_to_piece(const bt_vocab *v, int32_t id, bool special, char *buf, size_t cap,
                            size_t *n_out) {
    *n_out = 0;
    if (id < 0 || id >= v->n_tokens)
        return BT_ERR_RANGE;
    if (!special && (v->attr[id] & (BT_TOKEN_ATTR_UNKNOWN | BT_TOKEN_ATTR_CONTROL)))
        return BT_OK;
    size_t n = v->piece_off[id + 1] - v->piece_off[id];
    *n_out = n;
    if (n > cap)
        return BT_ERR_LIMIT;
    memcpy(buf, v->pieces + v->piece_off[id], n);
    return BT_OK;
}

bt_str bt_vocab_token_piece(const bt_vocab *v, int32_t id, bool special) {
    if (id < 0 || id >= v->n_tokens ||
        (!special && (v->attr[id] & (BT_TOKEN_ATTR_UNKNOWN | BT_TOKEN_ATTR_CONTROL))))
        return (bt_str){"", 0};
    return (bt_str){v->pieces + v->piece_off[id], v->piece_off[id + 1] - v->piece_off[id]};
}

/* llama.cpp's clean_up_tokenization_spaces passes over text[0..n); returns the new length. */
static size_t clean_spaces(char *text, size_t total) {
    /* first pass: " ?", " !", " .", " ," */
    size_t t1 = total;
    total = total ? 1 : 0;
    for (size_t i = 1; i < t1; ++i) {
        char x = text[i];
        if (text[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ','))
            total--;
        text[total++] = x;
    }
    /* second pass: strip single apostrophe between spaces " ' " */
    size_t t2 = total;
    total = total ? 1 : 0;
    for (size_t i = 1; i < t2; ++i) {
        char x = text[i];
        if (x == '\'' && i + 1 < t2 && text[i - 1] == ' ' && text[i + 1] == ' ') {
            total--;
            text[++i] = '\0';
        }
        text[total++] = x;
    }
    /* third pass: " 's", " 'm", " 're", " 've" */
    size_t t3 = total;
    total = total ? 1 : 0;
    for (size_t i = 1; i < t3; ++i) {
        char x = text[i];
        if (text[i - 1] == ' ' && x == '\'' && i + 1 < t3) {
            char x1 = text[i + 1];
            if (x1 == 's' || x1 == 'm') {
                total--;
            } else if (i + 2 < t3) {
                char x2 = text[i + 2];
                if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e'))
                    total--;
            }
        }
        text[total++] = x;
    }
    return total;
}

bt_status bt_detokenize(const bt_vocab *v, const int32_t *ids, size_t n_ids, bool remove_special,
                        bool unparse_special, char *buf, size_t cap, size_t *n_out, bt_error *err) {
    *n_out = 0;
    bool remove_space = v->add_space_prefix;
    if (remove_special && v->add_bos && n_ids > 0 && ids[0] == v->bos) {
        remove_space = false;
        ids++;
        n_ids--;
    }
    if (remove_special && v->add_eos && n_ids > 0 && ids[n_ids - 1] == v->eos)
        n_ids--;
    size_t total = 0;
    for (size_t i = 0; i < n_ids; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= v->n_tokens)
            return bt_error_set(err, BT_ERR_RANGE, "detokenize: token %zu = %d out of [0, %d)", i,
                                id, v->n_tokens);
        if (!unparse_special && (v->attr[id] & (BT_TOKEN_ATTR_UNKNOWN | BT_TOKEN_ATTR_CONTROL))) {
            remove_space = false;
            continue;
        }
        const char *p = v->pieces + v->piece_off[id];
        size_t n = v->piece_off[id + 1] - v->piece_off[id];
        if (remove_space && n > 0 && p[0] == ' ') {
            p++;
            n--;
        }
        remove_space = false;
        if (total + n <= cap)
            memcpy(buf + total, p, n);
        total += n;
    }
    if (total > cap) {
        *n_out = total;
        return bt_error_set(err, BT_ERR_LIMIT, "detokenize: %zu bytes needed, room for %zu", total,
                            cap);
    }
    if (v->clean_spaces)
        total = clean_spaces(buf, total);
    *n_out = total;
    return BT_OK;
}
