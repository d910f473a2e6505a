/*
 * bench_forward.c - tokens/s of a single stage holding the whole model: prefill of N tokens
 * in batches of B rows, then D decode steps of one row.
 *
 *   bench_forward [model.gguf] [-t threads] [-p prefill_tokens] [-b batch] [-d decode_steps]
 *                 [-r repeats] [-k f16|f32]
 *                 [-k kv_type: f16 (default) | f32]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gguf.h"
#include "stage.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    const char *path = NULL;
    int threads = 2, n_prefill = 512, batch = 512, n_decode = 128, repeats = 1;
    bt_type kv_type = BT_TYPE_F16;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "-t") == 0)
            threads = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "-p") == 0)
            n_prefill = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "-b") == 0)
            batch = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "-d") == 0)
            n_decode = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "-k") == 0)
            kv_type = strcmp(argv[++i], "f32") == 0 ? BT_TYPE_F32 : BT_TYPE_F16;
        else if (i + 1 < argc && strcmp(argv[i], "-r") == 0)
            repeats = atoi(argv[++i]);
        else
            path = argv[i];
    }
    char def[512];
    if (!path) {
        const char *env = getenv("BATON_MODEL"), *home = getenv("HOME");
        if (env)
            path = env;
        else {
            snprintf(def, sizeof(def), "%s/.cache/baton/SmolLM2-135M-Instruct.Q4_1.gguf",
                     home ? home : ".");
            path = def;
        }
    }
    if (threads < 1 || n_prefill < 1 || batch < 1 || n_decode < 0 || repeats < 1) {
        fprintf(stderr, "bench_forward: bad arguments\n");
        return 2;
    }
    bt_error err;
    bt_error_init(&err);
    bt_gguf *g = NULL;
    if (bt_gguf_open(path, &g, &err) != BT_OK) {
        fprintf(stderr, "bench_forward: %s\n", err.msg);
        return 1;
    }
    bt_stage_params p = bt_stage_default_params();
    p.n_threads = threads;
    p.kv_tokens = n_prefill + n_decode + 16;
    p.max_batch = batch;
    p.max_seqs = 1;
    p.kv_type = kv_type;
    bt_stage *st = NULL;
    if (bt_stage_new(g, &p, &st, &err) != BT_OK) {
        fprintf(stderr, "bench_forward: %s\n", err.msg);
        bt_gguf_free(g);
        return 1;
    }
    int V = bt_stage_n_vocab(st), total = n_prefill + n_decode;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)total);
    int32_t *seq = calloc((size_t)batch, sizeof(int32_t));
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)batch);
    float *logits = malloc(sizeof(float) * (size_t)V);
    for (int i = 0; i < total; i++)
        tok[i] = (int32_t)((i * 7919 + 1) % V);
    printf("model %s, %d threads, prefill %d in batches of %d, decode %d, KV %s %.1f MiB\n", path,
           threads, n_prefill, batch, n_decode, bt_type_name((uint32_t)kv_type),
           (double)bt_stage_kv_bytes(st) / 1048576.0);
    int rc = 0;
    for (int rep = 0; rep < repeats && rc == 0; rep++) {
        bt_stage_seq_free(st, 0);
        double t0 = now_s();
        for (int done = 0; done < n_prefill && rc == 0; done += batch) {
            int n = n_prefill - done < batch ? n_prefill - done : batch;
            for (int i = 0; i < n; i++)
                pos[i] = done + i;
            bt_batch b = {n, seq, pos, tok + done, NULL};
            rc = bt_stage_forward(st, &b, NULL, NULL, logits, &err) != BT_OK;
        }
        double t1 = now_s();
        for (int i = 0; i < n_decode && rc == 0; i++) {
            pos[0] = n_prefill + i;
            bt_batch b = {1, seq, pos, tok + n_prefill + i, NULL};
            rc = bt_stage_forward(st, &b, NULL, NULL, logits, &err) != BT_OK;
        }
        double t2 = now_s();
        if (rc)
            fprintf(stderr, "bench_forward: %s\n", err.msg);
        else
            printf(
                "prefill %8.1f tok/s (%.3f s)   decode %7.1f tok/s (%.2f ms/tok at ctx %d..%d)\n",
                n_prefill / (t1 - t0), t1 - t0, n_decode / (t2 - t1),
                1e3 * (t2 - t1) / (n_decode ? n_decode : 1), n_prefill, total);
    }
    free(tok);
    free(seq);
    free(pos);
    free(logits);
    bt_stage_free(st);
    bt_gguf_free(g);
    return rc;
}
