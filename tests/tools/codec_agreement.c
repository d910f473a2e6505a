/*
 * codec_agreement - what each activation codec does to the real model's output: wire bytes per
 * token and, over a long greedy generation, top-1 agreement and logit error against f32.
 *
 *   codec_agreement [--model M] [--steps 1000] [--split 15] [--threads 2] [--batch 1]
 *                   [--prompt-ids "1 2 3"]
 *
 * tests/bench/codec_agreement.sh runs it with the settings of docs/benchmarks.md.
 *
 * The model is split in two stages, layers [0, split) and [split, n_layer). Every codec
 * configuration (f32 f16 bf16 q8, each with zstd 0, 1, 3) gets its own sequence in the second
 * stage; the first stage runs once per step, because it sees only tokens and is the same for
 * all. Its output is encoded and decoded by each configuration's codec and the decoded rows
 * go through the second stage together, one decode row per configuration (the kernels are
 * batch invariant: a decode row's logits do not depend on the other rows). Configuration 0
 * (f32, no zstd) is the reference: greedy, EOS ignored, its argmax is the next token of every
 * sequence, so the others are a teacher-forced replay of the same tokens. A last, control row
 * sends f32 with every value moved by one ulp: it measures how much the model itself amplifies
 * the smallest possible perturbation, the floor against which a lossy codec is judged.
 *
 * Steps: the prompt (one frame per configuration) gives prediction 0, then
 * steps-1 generated tokens (decode path, one row each) give the rest. Per configuration:
 *   bytes/token (1 row)  mean payload of the 1-row decode frames
 *   bytes/token (B rows) payload of B consecutive decode rows encoded as one frame, per row
 *   top-1 agreement      steps whose argmax equals the reference token
 *   max / mean |dlogit|  over all steps and vocabulary entries, vs the reference's logits
 *   enc+dec us/row       encode plus decode of the 1-row frames (and of the B-row frames)
 *   act rel RMS err      RMS(decoded - sent) / RMS(sent) of the 1-row decode frames
 * B-row frames hold B consecutive steps of the one sequence (a stand-in for B sequences' decode
 * rows: only their size and codec time are measured).
 * Output: a markdown table on stdout; progress and all reference tokens on stderr (they equal
 * `baton generate --chat --temperature 0 --ignore-eos --stages 2 --act-codec f32` of the default
 * prompt, checked once by hand for 1000 tokens). Exit status 1 when f32 (lossless)
 * does not reproduce the reference exactly: the harness, not a codec, would be wrong.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cmd_common.h"
#include "codec.h"
#include "gguf.h"
#include "stage.h"

#define MAX_PROMPT 4096
#define N_LEVELS 3
#define TIMING_REPS 3

static const int zstd_levels[N_LEVELS] = {0, 1, 3};

/* SmolLM2's ChatML rendering (with its default system turn) of
 * "Tell me a long story about a lighthouse keeper.", assistant header included. */
static const int32_t default_prompt[] = {
    1,    9690, 198, 2683,  359,   253, 5356, 5646, 11173, 3365, 3511,  308, 34519, 28,
    7018, 411,  407, 19712, 8182,  2,   198,  1,    4093,  198,  31530, 549, 253,   986,
    1977, 563,  253, 33059, 40061, 30,  2,    198,  1,     520,  9531,  198};

typedef struct cfg {
    bt_codec_kind kind;
    int zstd;
    int control; /* f32 with every value moved by one ulp: the model's own sensitivity */
    bt_codec *codec;
    size_t bytes_1;     /* sum of 1-row decode frame payloads */
    size_t bytes_b;     /* sum of B-row frame payloads */
    long n_1, n_b_rows; /* rows measured in each */
    double ns_1, ns_b;  /* encode+decode time of those rows */
    long n_agree, first_miss;
    double max_err, sum_err;   /* |dlogit| vs the reference */
    double act_sq_err, act_sq; /* sum (decoded - sent)^2 and sum sent^2 over 1-row frames */
} cfg;

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* Parses space- or comma-separated ids into out (cap); returns the count or -1. */
static int parse_ids(const char *s, int32_t *out, int cap, int n_vocab) {
    int n = 0;
    while (*s) {
        if (*s == ' ' || *s == ',' || *s == '\t' || *s == '\n') {
            s++;
            continue;
        }
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v >= n_vocab) {
            fprintf(stderr, "codec_agreement: --prompt-ids: bad id near '%.16s' (vocab %d)\n", s,
                    n_vocab);
            return -1;
        }
        if (n == cap) {
            fprintf(stderr, "codec_agreement: --prompt-ids: more than %d ids\n", cap);
            return -1;
        }
        out[n++] = (int32_t)v;
        s = end;
    }
    return n;
}

/* Encodes n_rows rows of x with c's codec and decodes them into y, TIMING_REPS times (the
 * codec is deterministic); adds the fastest round trip to *ns, so that the other processes of
 * a shared machine disturb the timing less. */
static bt_status round_trip(cfg *c, const float *x, int n_rows, void *buf, size_t cap, float *y,
                            size_t *n_bytes, double *ns, bt_error *err) {
    double best = 0.0;
    for (int r = 0; r < TIMING_REPS; r++) {
        double t0 = now_ns();
        bt_status st = bt_codec_encode(c->codec, x, n_rows, buf, cap, n_bytes, err);
        if (st == BT_OK)
            st = bt_codec_decode(c->codec, c->kind, c->zstd > 0, buf, *n_bytes, n_rows, y, err);
        double t = now_ns() - t0;
        if (st != BT_OK)
            return bt_error_wrap(err, "%s zstd %d", bt_codec_kind_name(c->kind), c->zstd);
        best = r == 0 || t < best ? t : best;
    }
    *ns += best;
    if (c->control) /* n_embd * n_rows values: the f32 payload's size / 4 */
        for (size_t i = 0; i < *n_bytes / sizeof(float); i++)
            y[i] = nextafterf(y[i], (i & 1) ? INFINITY : -INFINITY);
    return BT_OK;
}

static void compare(cfg *c, const float *logits, const float *ref, int n_vocab, int ref_tok,
                    long step) {
    if (argmax(logits, n_vocab) == ref_tok)
        c->n_agree++;
    else if (c->first_miss < 0)
        c->first_miss = step;
    for (int i = 0; i < n_vocab; i++) {
        double e = fabs((double)logits[i] - (double)ref[i]);
        c->max_err = e > c->max_err ? e : c->max_err;
        c->sum_err += e;
    }
}

static void print_table(const cfg *cfgs, int n_cfg, int batch, int n_embd, int n_vocab, long steps,
                        int split, int n_layer, int n_prompt) {
    printf("Split at layer %d of %d, n_embd %d; %d prompt tokens, then %ld steps (1 prefill "
           "prediction + %ld decode rows), greedy on f32, EOS ignored.\n\n",
           split, n_layer, n_embd, n_prompt, steps, steps - 1);
    char rows[32] = "batched: --batch > 1";
    if (batch > 1)
        snprintf(rows, sizeof rows, "%d rows", batch);
    printf("| codec | zstd | B/token (1 row) | B/token (%s) | ratio vs f32 | top-1 agreement "
           "| max \\|dlogit\\| | mean \\|dlogit\\| | act rel RMS err | enc+dec us/row (1 row) "
           "| enc+dec us/row (%s) |\n",
           rows, rows);
    printf("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    double f32_bytes = (double)n_embd * 4.0;
    for (int i = 0; i < n_cfg; i++) {
        const cfg *c = &cfgs[i];
        if (!c->codec)
            continue;
        char z[16] = "-";
        if (!c->control)
            snprintf(z, sizeof z, "%d", c->zstd);
        char b1[32] = "-", ratio[32] = "-", t1[32] = "-", ae[32] = "-", bb[32] = "-", tb[32] = "-";
        if (c->n_1) {
            double bytes = (double)c->bytes_1 / (double)c->n_1;
            snprintf(b1, sizeof b1, "%.1f", bytes);
            snprintf(ratio, sizeof ratio, "%.3f", bytes / f32_bytes);
            snprintf(t1, sizeof t1, "%.2f", c->ns_1 / (double)c->n_1 / 1e3);
            snprintf(ae, sizeof ae, "%.2g", c->act_sq > 0 ? sqrt(c->act_sq_err / c->act_sq) : 0.0);
        }
        if (c->n_b_rows) {
            snprintf(bb, sizeof bb, "%.1f", (double)c->bytes_b / (double)c->n_b_rows);
            snprintf(tb, sizeof tb, "%.2f", c->ns_b / (double)c->n_b_rows / 1e3);
        }
        printf("| %s | %s | %s | %s | %s | %.2f%% (%ld/%ld) | %.4g | %.3g | %s | %s | %s |\n",
               c->control ? "f32 + 1 ulp (control)" : bt_codec_kind_name(c->kind), z, b1, bb, ratio,
               100.0 * (double)c->n_agree / (double)steps, c->n_agree, steps, c->max_err,
               c->sum_err / ((double)steps * (double)n_vocab), ae, t1, tb);
    }
    printf("\nFirst disagreeing step (-1 = none):");
    for (int i = 0; i < n_cfg; i++)
        if (cfgs[i].codec)
            printf(" %s/z%d: %ld%s",
                   cfgs[i].control ? "f32+1ulp" : bt_codec_kind_name(cfgs[i].kind), cfgs[i].zstd,
                   cfgs[i].first_miss, i + 1 < n_cfg ? ";" : "");
    printf("\n");
}

int main(int argc, char **argv) {
    char default_model[4096];
    /* Without a default path, --model must be given (bt_gguf_open names the empty path). */
    const char *model = bt_cli_default_model(default_model, sizeof default_model, NULL) == BT_OK
                            ? default_model
                            : "";
    const char *prompt_ids = NULL;
    int64_t steps = 1000, split = 15, threads = 2, batch = 1;
    bool help = false;
    const bt_cli_opt opts[] = {
        {"--model", BT_CLI_STR, &model, 0, 0, "GGUF file (default: the cached SmolLM2)"},
        {"--steps", BT_CLI_INT, &steps, 1, 1 << 20, "predictions compared (1000)"},
        {"--split", BT_CLI_INT, &split, 1, 1 << 16, "first layer of stage 2 (15)"},
        {"--threads", BT_CLI_INT, &threads, 1, 1024, "compute threads per stage (2)"},
        {"--batch", BT_CLI_INT, &batch, 1, 4096, "rows per frame for the batched size (1)"},
        {"--prompt-ids", BT_CLI_STR, &prompt_ids, 0, 0, "prompt token ids (SmolLM2 chat)"},
        {"--help", BT_CLI_FLAG, &help, 0, 0, "show this help"},
    };
    int rc = bt_cmd_parse("codec_agreement", "[flags]", opts, (int)(sizeof opts / sizeof opts[0]),
                          &help, argc - 1, argv + 1);
    if (rc >= 0)
        return rc;

    enum { N_CFG = BT_CODEC_KIND_COUNT * N_LEVELS + 1 };
    cfg cfgs[N_CFG];
    memset(cfgs, 0, sizeof cfgs);
    bt_error err;
    bt_error_init(&err);
    bt_status st = BT_OK;
    bt_gguf *g = NULL;
    bt_stage *s1 = NULL, *s2 = NULL;
    int32_t *prompt = NULL, *tokens = NULL, *pos = NULL, *seq = NULL;
    uint8_t *want = NULL;
    float *act = NULL, *hist = NULL, *scratch = NULL, *dec = NULL, *logits = NULL;
    uint8_t *buf = NULL;
    rc = 1;

    if ((st = bt_gguf_open(model, &g, &err)) != BT_OK)
        goto cleanup;
    prompt = malloc(sizeof *prompt * MAX_PROMPT);
    if (!prompt)
        goto nomem;
    int n_prompt;
    if (prompt_ids) {
        uint64_t n_vocab_tok = 0;
        if ((st = bt_gguf_get_arr_str_len(g, "tokenizer.ggml.tokens", &n_vocab_tok, &err)) != BT_OK)
            goto cleanup;
        n_prompt = parse_ids(prompt_ids, prompt, MAX_PROMPT, (int)n_vocab_tok);
        if (n_prompt < 0)
            goto cleanup;
        if (n_prompt == 0) {
            fprintf(stderr, "codec_agreement: --prompt-ids is empty\n");
            goto cleanup;
        }
    } else {
        n_prompt = (int)(sizeof default_prompt / sizeof default_prompt[0]);
        memcpy(prompt, default_prompt, sizeof default_prompt);
    }

    int n_tokens = n_prompt + (int)steps; /* KV rows per sequence, with one to spare */
    bt_stage_params p1 = bt_stage_default_params();
    p1.layer_begin = 0;
    p1.layer_end = (int)split;
    p1.n_threads = (int)threads;
    p1.max_seqs = 1;
    p1.max_batch = n_prompt;
    p1.kv_tokens = n_tokens;
    p1.max_seq_tokens = n_tokens;
    if ((st = bt_stage_new(g, &p1, &s1, &err)) != BT_OK) {
        bt_error_wrap(&err, "stage 1 (layers [0, %d))", (int)split);
        goto cleanup;
    }
    int n_layer = bt_stage_n_layer_total(s1), n_embd = bt_stage_n_embd(s1);
    if (split >= n_layer) {
        fprintf(stderr, "codec_agreement: --split %d leaves no layers for stage 2 (n_layer %d)\n",
                (int)split, n_layer);
        goto cleanup;
    }

    int per_seq = (n_tokens + 15) / 16 * 16;
    bt_stage_params p2 = bt_stage_default_params();
    p2.layer_begin = (int)split;
    p2.layer_end = -1;
    p2.n_threads = (int)threads;
    p2.max_seqs = N_CFG;
    p2.max_batch = n_prompt > N_CFG ? n_prompt : N_CFG;
    p2.kv_tokens = N_CFG * per_seq;
    p2.max_seq_tokens = n_tokens;
    if ((st = bt_stage_new(g, &p2, &s2, &err)) != BT_OK) {
        bt_error_wrap(&err, "stage 2 (layers [%d, %d))", (int)split, n_layer);
        goto cleanup;
    }
    int n_vocab = bt_stage_n_vocab(s2);

    int max_rows = n_prompt > (int)batch ? n_prompt : (int)batch;
    size_t cap = 0;
    for (int i = 0; i < N_CFG; i++) {
        cfg *c = &cfgs[i];
        c->control = i == N_CFG - 1;
        c->kind = c->control ? BT_CODEC_F32 : (bt_codec_kind)(i / N_LEVELS);
        c->zstd = c->control ? 0 : zstd_levels[i % N_LEVELS];
        c->first_miss = -1;
        bt_codec_params cp = {
            .kind = c->kind, .zstd_level = c->zstd, .n_embd = n_embd, .max_rows = max_rows};
        if ((st = bt_codec_new(&cp, &c->codec, &err)) != BT_OK) {
            bt_error_wrap(&err, "%s zstd %d", bt_codec_kind_name(c->kind), c->zstd);
            goto cleanup;
        }
        size_t m = bt_codec_max_encoded_bytes(c->codec, max_rows);
        cap = m > cap ? m : cap;
    }

    size_t row_bytes = sizeof(float) * (size_t)n_embd;
    tokens = malloc(sizeof *tokens * (size_t)steps);
    pos = malloc(sizeof *pos * (size_t)p2.max_batch); /* max_batch = max(n_prompt, N_CFG) */
    seq = malloc(sizeof *seq * (size_t)p2.max_batch);
    want = malloc((size_t)p2.max_batch);
    act = malloc(row_bytes * (size_t)n_prompt);
    hist = malloc(row_bytes * (size_t)batch);
    scratch = malloc(row_bytes * (size_t)batch);
    dec = malloc(row_bytes * (size_t)(max_rows > N_CFG ? max_rows : N_CFG));
    logits = malloc(sizeof(float) * (size_t)n_vocab * N_CFG);
    buf = malloc(cap);
    if (!tokens || !pos || !seq || !want || !act || !hist || !scratch || !dec || !logits || !buf)
        goto nomem;

    /* Prediction 0: the prompt through both stages, one frame per config. */
    for (int i = 0; i < n_prompt; i++) {
        pos[i] = i;
        seq[i] = 0;
    }
    bt_batch b1 = {.n_rows = n_prompt, .seq = seq, .pos = pos, .token = prompt};
    if ((st = bt_stage_forward(s1, &b1, NULL, act, NULL, &err)) != BT_OK)
        goto cleanup;
    for (int c = 0; c < N_CFG; c++) {
        size_t n_bytes;
        double ns = 0.0;
        if ((st = round_trip(&cfgs[c], act, n_prompt, buf, cap, dec, &n_bytes, &ns, &err)) != BT_OK)
            break;
        for (int i = 0; i < n_prompt; i++)
            seq[i] = c;
        bt_batch b2 = {.n_rows = n_prompt, .seq = seq, .pos = pos};
        if ((st = bt_stage_forward(s2, &b2, dec, NULL, logits + (size_t)c * n_vocab, &err)) !=
            BT_OK)
            break;
    }
    if (st != BT_OK)
        goto cleanup;
    tokens[0] = argmax(logits, n_vocab);
    for (int c = 0; c < N_CFG; c++)
        compare(&cfgs[c], logits + (size_t)c * n_vocab, logits, n_vocab, tokens[0], 0);

    /* Predictions 1..steps-1: one decode row per step; stage 2 takes one row per config. */
    for (int c = 0; c < N_CFG; c++) {
        seq[c] = c;
        want[c] = 1;
    }
    double t_start = now_ns();
    for (long s = 1; s < steps; s++) {
        int32_t p = (int32_t)(n_prompt + s - 1);
        int32_t zero = 0;
        bt_batch d1 = {.n_rows = 1, .seq = &zero, .pos = &p, .token = &tokens[s - 1]};
        if ((st = bt_stage_forward(s1, &d1, NULL, act, NULL, &err)) != BT_OK)
            goto cleanup;
        int slot = (int)((s - 1) % batch);
        memcpy(hist + (size_t)slot * n_embd, act, row_bytes);
        for (int c = 0; c < N_CFG; c++) {
            cfg *cf = &cfgs[c];
            size_t n_bytes;
            if ((st = round_trip(cf, act, 1, buf, cap, dec + (size_t)c * n_embd, &n_bytes,
                                 &cf->ns_1, &err)) != BT_OK)
                goto cleanup;
            cf->bytes_1 += n_bytes;
            cf->n_1++;
            for (int i = 0; i < n_embd; i++) {
                double d = (double)dec[(size_t)c * n_embd + i] - (double)act[i];
                cf->act_sq_err += d * d;
                cf->act_sq += (double)act[i] * (double)act[i];
            }
            if (batch > 1 && slot == batch - 1) {
                /* size and time of a B-row frame; the decoded rows are only checked by the
                 * codec, the model gets the 1-row frames */
                if ((st = round_trip(cf, hist, (int)batch, buf, cap, scratch, &n_bytes, &cf->ns_b,
                                     &err)) != BT_OK)
                    goto cleanup;
                cf->bytes_b += n_bytes;
                cf->n_b_rows += batch;
            }
        }
        for (int c = 0; c < N_CFG; c++)
            pos[c] = p;
        bt_batch d2 = {.n_rows = N_CFG, .seq = seq, .pos = pos, .logits = want};
        if ((st = bt_stage_forward(s2, &d2, dec, NULL, logits, &err)) != BT_OK)
            goto cleanup;
        tokens[s] = argmax(logits, n_vocab);
        for (int c = 0; c < N_CFG; c++)
            compare(&cfgs[c], logits + (size_t)c * n_vocab, logits, n_vocab, tokens[s], s);
        if (s % 100 == 0)
            fprintf(stderr, "codec_agreement: step %ld/%ld, %.1f s\n", s, (long)steps,
                    (now_ns() - t_start) / 1e9);
    }

    fprintf(stderr, "codec_agreement: reference tokens:");
    for (long s = 0; s < steps; s++)
        fprintf(stderr, " %d", tokens[s]);
    fprintf(stderr, "\n");
    print_table(cfgs, N_CFG, (int)batch, n_embd, n_vocab, steps, (int)split, n_layer, n_prompt);
    /* f32 is lossless: any difference means the harness, not the codec, is wrong */
    for (int l = 0; l < N_LEVELS; l++) {
        if (cfgs[l].max_err != 0.0 || cfgs[l].n_agree != steps) {
            fprintf(stderr, "codec_agreement: f32 zstd %d differs from the reference\n",
                    cfgs[l].zstd);
            goto cleanup;
        }
    }
    rc = 0;
    goto cleanup;
nomem:
    st = bt_error_set(&err, BT_ERR_NOMEM, "out of memory");
cleanup:
    if (st != BT_OK)
        fprintf(stderr, "codec_agreement: %s\n", err.msg);
    for (int c = 0; c < N_CFG; c++)
        bt_codec_free(cfgs[c].codec);
    free(buf);
    free(logits);
    free(dec);
    free(scratch);
    free(hist);
    free(act);
    free(want);
    free(seq);
    free(pos);
    free(tokens);
    free(prompt);
    bt_stage_free(s2);
    bt_stage_free(s1);
    bt_gguf_free(g);
    return rc;
}
