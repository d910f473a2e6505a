/*
 * slice.h - a stage's slice of the model as a file of its own, how it travels from the
 * coordinator, and the cache that keeps it on the stage's host.
 *
 * A slice is a compact, valid GGUF of the original's version: the original's metadata
 * key/values copied verbatim (so hparams, the tokenizer and general.alignment read the same),
 * a tensor directory of exactly the tensors bt_weights_needs (weights.h) names for the
 * stage's layers, with their original names, shapes and types and new offsets (aligned to
 * the original alignment), then their data. bt_gguf_open and bt_weights_load take it as they
 * take the full file.
 *
 * Coordinator: a bt_slice_sender lays the slice out over the opened full model without
 * copying tensor data (bt_slice_plan), and packs chunk i of it as a SliceChunk frame: the raw
 * bytes read from the model's mapping, their bt_hash64, zstd-compressed as the payload. One
 * chunk buffer, whatever the slice's size.
 *
 * Stage: the cache directory holds one entry per (model hash, layers, first/last role):
 *   <model hash, 32 hex>-L<begin>-<end>[-first][-last].gguf       the slice
 *   <same>.gguf.manifest                                          its chunk list, written last
 * A bt_slice_writer streams the SliceChunks of one fetch into a temp file beside the entry
 * (each decompressed, checked against its hash and written as it arrives: nothing is held in
 * memory beyond one chunk), fsyncs it, renames it to the entry, then writes the manifest the
 * same way and fsyncs the directory. A crash leaves a temp file or a slice without a manifest;
 * neither verifies. bt_slice_cache_verify re-hashes every chunk of an entry against its
 * manifest before the entry is mapped; any failure names the entry and why.
 *
 * Manifest, text, one item per line:
 *   baton-slice 1
 *   model <32 hex: Hello.model_hash>
 *   layers <begin> <end> <first 0|1> <last 0|1>
 *   total <bytes>
 *   chunks <n>
 *   <offset> <len> <16 hex: bt_hash64>        n lines, back to back from 0 to total
 *
 * Threading: a plan and a sender are confined to the thread that uses them (the sender's
 * buffers); a writer likewise. bt_slice_cache_* are reentrant.
 */
#ifndef BT_SLICE_H
#define BT_SLICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "msg.h"
#include "status.h"

#define BT_SLICE_CHUNK_MAX (4u << 20)   /* raw bytes per chunk at most */
#define BT_SLICE_MAX_BYTES (1ull << 42) /* a slice's total, as a sanity bound on the wire */
#define BT_SLICE_MAX_CHUNKS (1u << 20)  /* chunks of one slice: bounds a writer's chunk list */

/* What names a cache entry: the model (Hello.model_hash) and the stage's part of it. */
typedef struct bt_slice_key {
    uint8_t model_hash[BT_MODEL_HASH_BYTES];
    int layer_begin, layer_end;
    bool first, last; /* the stage holds the embedding / the output head */
} bt_slice_key;

/* ---- the layout over the full model (coordinator; tests) ---- */

typedef struct bt_slice_plan bt_slice_plan;

/* Lays out the slice of layers [layer_begin, layer_end) of g (borrowed; outlives the plan).
 * BT_ERR_INVALID_ARG for a range outside the model's layers. *out owned: bt_slice_plan_free. */
bt_status bt_slice_plan_new(const bt_gguf *g, int layer_begin, int layer_end, bt_slice_plan **out,
                            bt_error *err);
void bt_slice_plan_free(bt_slice_plan *p); /* NULL is a no-op */
uint64_t bt_slice_plan_size(const bt_slice_plan *p);
size_t bt_slice_plan_n_tensors(const bt_slice_plan *p);
/* Copies bytes [off, off + n) of the slice file (inside its size) into dst. */
void bt_slice_plan_read(const bt_slice_plan *p, uint64_t off, size_t n, void *dst);

/* Raw bytes per chunk for a transport whose frames are at most max_frame bytes (a
 * compressed chunk never grows past it), at most BT_SLICE_CHUNK_MAX; 0 when max_frame is too
 * small to ship a slice. */
size_t bt_slice_chunk_bytes(size_t max_frame);

/* ---- coordinator: shipping ---- */

typedef struct bt_slice_sender bt_slice_sender;

/* A sender of the slice [layer_begin, layer_end) of g in chunks that fit max_frame; *out
 * owned: bt_slice_sender_free. */
bt_status bt_slice_sender_new(const bt_gguf *g, int layer_begin, int layer_end, size_t max_frame,
                              bt_slice_sender **out, bt_error *err);
void bt_slice_sender_free(bt_slice_sender *s); /* NULL is a no-op */
uint32_t bt_slice_sender_n_chunks(const bt_slice_sender *s);
uint64_t bt_slice_sender_size(const bt_slice_sender *s);
/* Packs chunk i as a whole SliceChunk frame into frame[0..cap); *len its length, *zbytes the
 * compressed payload's. */
bt_status bt_slice_sender_frame(bt_slice_sender *s, uint32_t i, uint8_t *frame, size_t cap,
                                size_t *len, size_t *zbytes, bt_error *err);

/* ---- stage: the cache ---- */

/* The cache directory when no --slice-cache is given: $BATON_SLICE_CACHE, else
 * $XDG_CACHE_HOME/baton/slices, else $HOME/.cache/baton/slices. BT_ERR_NOT_FOUND when none
 * of them is set. */
bt_status bt_slice_cache_default(char *out, size_t cap, bt_error *err);

/* "<dir>/<entry>.gguf" of key into out. */
void bt_slice_cache_path(const char *dir, const bt_slice_key *key, char *out, size_t cap);

/* Checks the entry of key in dir: its manifest (for this key), the slice's size, every
 * chunk's hash. BT_OK: the slice at bt_slice_cache_path verifies. BT_ERR_NOT_FOUND: no entry
 * (neither file). Otherwise BT_ERR_FORMAT (or BT_ERR_IO) and err names the entry and why: no
 * manifest (a partial entry), a manifest line, the size, or the first chunk that differs. */
bt_status bt_slice_cache_verify(const char *dir, const bt_slice_key *key, bt_error *err);

/* Deletes the entry of key (slice and manifest); best effort. */
void bt_slice_cache_remove(const char *dir, const bt_slice_key *key);

/* Creates dir (with its parents) if missing and checks that this process may write there;
 * BT_ERR_IO naming the directory otherwise. A stage calls it before asking for its slice. */
bt_status bt_slice_cache_prepare(const char *dir, bt_error *err);

typedef struct bt_slice_writer bt_slice_writer;

/* Starts writing the entry of key in dir (created with its parents if missing): total bytes
 * in n_chunks chunks, as the first SliceChunk announced them (checked: 1 <= n_chunks <=
 * BT_SLICE_MAX_CHUNKS, chunks of at most BT_SLICE_CHUNK_MAX covering total <=
 * BT_SLICE_MAX_BYTES). *out owned:
 * bt_slice_writer_free. */
bt_status bt_slice_writer_new(const char *dir, const bt_slice_key *key, uint64_t total,
                              uint32_t n_chunks, bt_slice_writer **out, bt_error *err);

/* Takes the next SliceChunk m with its frame f (both borrowed for the call): index, offset,
 * totals and raw_len as expected, the payload decompresses to exactly raw_len bytes whose
 * bt_hash64 is m->hash, then writes them. BT_ERR_PROTOCOL naming the chunk and the field. */
bt_status bt_slice_writer_put(bt_slice_writer *w, const bt_frame_view *f,
                              const Baton__SliceChunk *m, bt_error *err);
bool bt_slice_writer_complete(const bt_slice_writer *w);  /* every chunk taken */
uint64_t bt_slice_writer_total(const bt_slice_writer *w); /* the slice's bytes */

/* After the last chunk: fsync, rename into place, then the manifest (fsync, rename) and the
 * directory's fsync. */
bt_status bt_slice_writer_finish(bt_slice_writer *w, bt_error *err);

/* Frees w; an unfinished entry's temp file is deleted. NULL is a no-op. */
void bt_slice_writer_free(bt_slice_writer *w);

#endif
