/* cmd_common.c - flags and helpers shared by the subcommands. */
#include "cmd_common.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat.h"
#include "commands.h"
#include "clock.h"
#include "hparams.h"
#include "log.h"
#include "mem_budget.h"
#include "split.h"
#include "term_watch.h"

void bt_model_flags_init(bt_model_flags *f) {
    memset(f, 0, sizeof *f);
}

bt_status bt_model_flags_path(bt_model_flags *f, const char **path, bt_error *err) {
    *path = f->model;
    if (!*path) {
        bt_status st = bt_cli_default_model(f->default_model, sizeof f->default_model, err);
        if (st != BT_OK)
            return st;
        *path = f->default_model;
    }
    return BT_OK;
}

int bt_cmd_exit_status(bt_status st) {
    switch (st) {
    case BT_OK:
        return 0;
    case BT_ERR_IO:
    case BT_ERR_NOT_FOUND:
    case BT_ERR_INVALID_ARG:
    case BT_ERR_RANGE:
    case BT_ERR_FORMAT:
    case BT_ERR_UNSUPPORTED:
    case BT_ERR_LIMIT:
        return 2;
    default:
        return 1;
    }
}

int bt_cmd_parse(const char *cmd, const char *synopsis, const bt_cli_opt *opts, int n_opts,
                 const bool *help, int argc, char **argv) {
    bt_error err;
    bt_error_init(&err);
    if (bt_cli_parse(opts, n_opts, argc, argv, &err) != BT_OK) {
        fprintf(stderr, "baton %s: %s\n", cmd, err.msg);
        bt_cli_usage(cmd, synopsis, opts, n_opts);
        return 2;
    }
    if (*help) {
        bt_cli_usage(cmd, synopsis, opts, n_opts);
        return 0;
    }
    return -1;
}

bt_status bt_read_file(const char *path, size_t max_bytes, char **out, size_t *len, bt_error *err) {
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return bt_error_set(err, BT_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    bt_status st = BT_OK;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = cap ? cap * 2 : 65536 * 2;
            char *p = realloc(buf, cap);
            if (!p) {
                st = bt_error_set(err, BT_ERR_NOMEM, "reading '%s': out of memory", path);
                break;
            }
            buf = p;
        }
        size_t got = fread(buf + n, 1, 65536, f);
        n += got;
        if (n > max_bytes) {
            st = bt_error_set(err, BT_ERR_LIMIT, "'%s' is larger than %zu bytes", path, max_bytes);
            break;
        }
        if (got < 65536) {
            if (ferror(f))
                st = bt_error_set(err, BT_ERR_IO, "reading '%s': %s", path, strerror(errno));
            break;
        }
    }
    fclose(f);
    if (st != BT_OK) {
        free(buf);
        return st;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return BT_OK;
}

bt_status bt_read_text_file(const char *path, size_t max_bytes, char **out, size_t *len,
                            bt_error *err) {
    bt_status st = bt_read_file(path, max_bytes, out, len, err);
    if (st != BT_OK)
        return st;
    const char *nul = memchr(*out, '\0', *len);
    if (nul) {
        st = bt_error_set(err, BT_ERR_FORMAT, "'%s' has a NUL byte at offset %zu; text is expected",
                          path, (size_t)(nul - *out));
        free(*out);
        *out = NULL;
        *len = 0;
    }
    return st;
}

/* The first stdout write error (errno), kept for bt_stdout_close. Main thread only. */
static int stdout_errno;

int bt_chat_template_flag_check(const char *cmd, const char *name) {
    if (!name)
        return 0;
    bt_chat_template t;
    bt_error err;
    bt_error_init(&err);
    if (bt_chat_template_from_name(name, &t, &err) != BT_OK) {
        fprintf(stderr, "baton %s: --chat-template: %s\n", cmd, err.msg);
        return 2;
    }
    return 0;
}

bool bt_stdout_write(const void *p, size_t n) {
    errno = 0;
    if ((n && fwrite(p, 1, n, stdout) != n) || fflush(stdout) != 0) {
        if (!stdout_errno)
            stdout_errno = errno ? errno : EIO;
        return false;
    }
    return true;
}

int bt_stdout_close(int status) {
    errno = 0;
    bool bad = ferror(stdout) != 0;
    if (fclose(stdout) != 0 && !stdout_errno) /* also flushes what is still buffered */
        stdout_errno = errno ? errno : EIO;
    if (bad && !stdout_errno)
        stdout_errno = EIO; /* a buffered write failed earlier; its errno is gone */
    if (!stdout_errno)
        return status;
    fprintf(stderr, "baton: writing output: %s\n", strerror(stdout_errno));
    return status ? status : 1;
}

void bt_cluster_flags_init(bt_cluster_flags *f) {
    memset(f, 0, sizeof *f);
    f->codec = NULL; /* f32, or f16 with stages on other hosts (bt_cluster_params.codec_auto) */
    f->split = NULL; /* memory, or measured with --stage-speed */
    f->numerics = "fast";
    f->kv_type = "f16";
    f->prefill_chunk = 0; /* 256, or llama.cpp's 512-token micro-batch with --numerics llamacpp */
    f->max_seqs = 64;
    f->max_batch = 512;
    f->stages = 1;
    f->stage_timeout_ms = 30000;
    f->heartbeat_ms = 500;
}

bt_status bt_kv_type_parse(const char *s, bt_type *out, bt_error *err) {
    if (strcmp(s, "f16") == 0)
        *out = BT_TYPE_F16;
    else if (strcmp(s, "q8_0") == 0)
        *out = BT_TYPE_Q8_0;
    else
        return bt_error_set(err, BT_ERR_INVALID_ARG, "--kv-type '%s': not f16 or q8_0", s);
    return BT_OK;
}

int bt_session_open(bt_session *s, const char *cmd, bt_model_flags *mf, bt_cluster_flags *cf) {
    memset(s, 0, sizeof *s);
    bt_error err;
    bt_error_init(&err);
    const char *model_path = NULL;
    bt_engine_params ep = bt_engine_default_params();
    bt_hparams hp;
    bt_status st = bt_model_flags_path(mf, &model_path, &err);
    if (st == BT_OK)
        st = cf->codec ? bt_codec_kind_parse(cf->codec, &ep.cluster.codec, &err) : BT_OK;
    ep.cluster.codec_auto = cf->codec == NULL;
    if (st == BT_OK)
        st = bt_split_mode_of_flags(cf->split, cf->stage_speed, &ep.cluster.split, &err);
    if (st == BT_OK)
        st = bt_numerics_parse(cf->numerics, &ep.cluster.numerics, &err);
    if (st == BT_OK)
        st = bt_kv_type_parse(cf->kv_type, &ep.cluster.kv_type, &err);
    if (st != BT_OK)
        goto fail;
    /* The threads default is capped like --threads, so a many-core host is not refused by a
     * stage. */
    s->n_threads = mf->threads > 0 ? (int)mf->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (s->n_threads > BT_THREADPOOL_MAX_THREADS)
        s->n_threads = BT_THREADPOOL_MAX_THREADS;
    if (bt_launch_is_stage_rank()) {
        /* A stage needs no model file here: after its Hello it takes the file at model_path
         * if that is the coordinator's model, else its slice (cache or shipped). */
        bt_launch_params sl = {.n_threads = s->n_threads,
                               .max_batch = (int)cf->max_batch,
                               .max_seqs = (int)cf->max_seqs,
                               .model_path = model_path,
                               .slice_cache = cf->slice_cache};
        if ((st = bt_launch_start(&s->launch, NULL, &sl, &err)) != BT_OK)
            goto fail;
        s->launched = true;
        if (!s->launch.is_stage) {
            st = bt_error_set(&err, BT_ERR_INTERNAL, "rank %d of %d is not a stage rank",
                              s->launch.rank, s->launch.size);
            goto fail;
        }
        return bt_session_close(s, 0);
    }
    if ((st = bt_gguf_open(model_path, &s->gguf, &err)) != BT_OK ||
        (st = bt_hparams_load(s->gguf, &hp, &err)) != BT_OK ||
        (st = bt_stage_check_model(s->gguf, ep.cluster.numerics, ep.cluster.kv_type, &err)) !=
            BT_OK ||
        (st = bt_vocab_load(s->gguf, &s->vocab, &err)) != BT_OK)
        goto fail;
    int n_ctx = mf->ctx ? (int)mf->ctx : bt_hparams_default_ctx(&hp);
    if (hp.n_ctx_train > 0 && n_ctx > hp.n_ctx_train) {
        st = bt_error_set(&err, BT_ERR_RANGE, "--ctx %d exceeds the model's trained context %d",
                          n_ctx, hp.n_ctx_train);
        goto fail;
    }
    ep.cluster.zstd_level = (int)cf->act_zstd;
    ep.cluster.layers = cf->layers;
    ep.cluster.max_batch = (int)cf->max_batch;
    ep.cluster.max_seqs = (int)cf->max_seqs;
    int64_t kv_seqs = cf->kv_seqs ? cf->kv_seqs : (cf->max_seqs < 4 ? cf->max_seqs : 4);
    ep.cluster.kv_tokens = cf->kv_tokens ? (int)cf->kv_tokens : n_ctx * (int)kv_seqs;
    if (ep.cluster.kv_tokens < n_ctx) {
        st = bt_error_set(&err, BT_ERR_RANGE, "--kv-tokens %d is less than the context %d",
                          ep.cluster.kv_tokens, n_ctx);
        goto fail;
    }
    ep.cluster.n_ctx = n_ctx;
    if (cf->stage_mem) { /* its syntax now; its count once the stages are known */
        uint64_t sizes[BT_MAX_STAGES];
        int n = 1;
        for (const char *p = cf->stage_mem; *p; p++)
            n += *p == ',';
        if ((st = bt_mem_list_parse(cf->stage_mem, n < BT_MAX_STAGES ? n : BT_MAX_STAGES, sizes,
                                    &err)) != BT_OK)
            goto fail;
    }
    ep.cluster.stage_mem = cf->stage_mem;
    ep.cluster.stage_speed = cf->stage_speed;
    ep.cluster.n_threads = s->n_threads;
    ep.cluster.heartbeat_ms = (int)cf->heartbeat_ms;
    size_t n_eog = 0;
    ep.cluster.eog = bt_vocab_eog_ids(s->vocab, &n_eog); /* min_tokens bans these */
    ep.cluster.n_eog = (int)n_eog;
    ep.cluster.stage_timeout_us = cf->stage_timeout_ms * 1000;
    ep.prefill_chunk = cf->prefill_chunk                             ? (int)cf->prefill_chunk
                       : ep.cluster.numerics == BT_NUMERICS_LLAMACPP ? 512
                                                                     : 256;
    ep.max_inflight = (int)cf->inflight;
    ep.queue_capacity = (int)cf->queue_capacity;
    ep.queue_timeout_us = cf->queue_timeout_us;
    ep.n_ctx = n_ctx;

    bt_launch_params lp = {.n_threads = s->n_threads,
                           .local_stages = (int)cf->stages,
                           .max_batch = (int)cf->max_batch,
                           .max_seqs = (int)cf->max_seqs,
                           .n_embd = hp.n_embd,
                           .model_path = model_path,
                           .slice_cache = cf->slice_cache};
    int64_t t_launch = bt_now_us();
    if ((st = bt_launch_start(&s->launch, s->gguf, &lp, &err)) != BT_OK)
        goto fail;
    s->launched = true;
    if (s->launch.is_stage)
        return bt_session_close(s, 0);
    if ((st = bt_engine_new(s->launch.t, s->gguf, s->vocab, &ep, &s->engine, &err)) != BT_OK)
        goto fail;
    s->ready_us = bt_now_us() - t_launch;
    if (bt_log_enabled(BT_LOG_INFO)) {
        char line[2048];
        BT_INFO("%s", bt_session_ready_line(s, line, sizeof line));
    }
    /* Stages on ranks under mpirun (not threads): a dead rank makes the launcher SIGTERM this
     * one; say which stage died. */
    if (s->launch.mpi && !s->launch.hub &&
        (st = bt_term_watch_arm(bt_engine_cluster(s->engine), cmd, &err)) != BT_OK)
        goto fail;
    int remote = 0;
    bt_codec_kind codec = bt_cluster_codec(bt_engine_cluster(s->engine), &remote);
    if (ep.cluster.codec_auto && remote) {
        char name[160];
        fprintf(stderr,
                "baton %s: activations %s: the multi-host default, %s is on another host than "
                "this coordinator (--act-codec f32 for lossless)\n",
                cmd, bt_codec_kind_name(codec),
                bt_cluster_stage_name(bt_engine_cluster(s->engine), remote, name, sizeof name));
    }
    return -1;
fail:
    fprintf(stderr, "baton %s: %s\n", cmd, err.msg[0] ? err.msg : bt_status_str(st));
    return bt_session_close(s, bt_cmd_exit_status(st));
}

const char *bt_session_ready_line(const bt_session *s, char *buf, size_t cap) {
    size_t n = (size_t)snprintf(buf, cap, "ready in %.2f s", (double)s->ready_us / 1e6);
    const bt_cluster *c = s->engine ? bt_engine_cluster(s->engine) : NULL;
    for (int i = 0; c && i < bt_cluster_n_stages(c) && n < cap; i++) {
        const bt_stage_report *r = bt_cluster_stage(c, i);
        char name[160];
        bt_cluster_stage_name(c, i + 1, name, sizeof name);
        if (r->weights_source == BT_WEIGHTS_SHIPPED)
            n += (size_t)snprintf(buf + n, cap - n,
                                  "; %s: shipped %.1f MiB (%.1f MiB compressed) in %.2f s", name,
                                  (double)r->shipped_bytes / 1048576.0,
                                  (double)r->shipped_zbytes / 1048576.0, (double)r->ship_us / 1e6);
        else
            n += (size_t)snprintf(buf + n, cap - n, "; %s: weights from the %s", name,
                                  r->weights_source == BT_WEIGHTS_CACHE ? "slice cache"
                                                                        : "local file");
    }
    return buf;
}

static bool engine_failed(bt_engine *e) {
    bt_engine_metrics m;
    bt_engine_get_metrics(e, &m);
    return m.failed;
}

int bt_session_close(bt_session *s, int status) {
    /* From here on the coordinator reports any failure itself, once. */
    bt_term_watch_disarm();
    /* Once the stages shook hands, every input was checked: a failure of the cluster is a
     * runtime failure (exit 1), whatever status a stage or the transport gave it (a stage's
     * BT_ERR_LIMIT or BT_ERR_IO is not a bad flag of the user's). */
    if (status != 0 && status < 128 && s->engine && engine_failed(s->engine))
        status = 1;
    /* A failed cluster (or one that never shook hands) cannot be shut down in order: end
     * every stage so that none is left waiting. */
    bool broken = !s->engine || engine_failed(s->engine);
    if (s->launched && !s->launch.is_stage && broken)
        bt_launch_abort(&s->launch, status ? status : 1);
    bt_engine_free(s->engine);
    if (s->launched)
        status = bt_launch_finish(&s->launch, status);
    bt_vocab_free(s->vocab);
    bt_gguf_free(s->gguf);
    memset(s, 0, sizeof *s);
    return status;
}

/* ---- the request-parameter table's flags ---- */

static void flag_name(char *out, size_t cap, const char *prefix, const char *json) {
    size_t n = (size_t)snprintf(out, cap, "%s", prefix);
    for (const char *c = json; *c && n + 1 < cap; c++)
        out[n++] = *c == '_' ? '-' : *c;
    out[n < cap ? n : cap - 1] = '\0';
}

static bt_status push_opt(bt_cli_opt *opts, int *n_opts, int max, bt_cli_opt o, bt_error *err) {
    if (*n_opts >= max)
        return bt_error_set(err, BT_ERR_LIMIT, "more than %d flags", max);
    opts[(*n_opts)++] = o;
    return BT_OK;
}

bt_status bt_param_flags_add(bt_param_flags *f, const bt_request_params *defaults, bt_cli_opt *opts,
                             int *n_opts, int max, bt_error *err) {
    size_t n_rows;
    const bt_param_desc *tab = bt_request_param_table(&n_rows);
    f->n = 0;
    for (size_t i = 0; i < n_rows; i++) {
        const bt_param_desc *d = &tab[i];
        if (d->flag && strcmp(d->flag, BT_PARAM_HAND_FLAG) == 0)
            continue;
        if (f->n >= BT_PARAM_FLAGS_MAX)
            return bt_error_set(err, BT_ERR_LIMIT, "more than %d table flags", BT_PARAM_FLAGS_MAX);
        int k = f->n++;
        f->d[k] = d;
        f->iv[k] = INT64_MIN;
        f->fv[k] = NAN;
        f->bv[k] = false;
        double dv = bt_request_param_get(defaults, d);
        bt_cli_opt o = {f->name[k], BT_CLI_FLOAT, &f->fv[k], d->min, d->max, f->help[k]};
        switch (d->kind) {
        case BT_PARAM_BOOL:
            flag_name(f->name[k], sizeof f->name[k], dv != 0 ? "--no-" : "--", d->name);
            snprintf(f->help[k], sizeof f->help[k], "%s%s", dv != 0 ? "turn off: " : "", d->doc);
            o.kind = BT_CLI_FLAG;
            o.target = &f->bv[k];
            f->fv[k] = dv != 0 ? 0 : 1; /* the value the flag sets */
            break;
        case BT_PARAM_INT:
        case BT_PARAM_U64:
            flag_name(f->name[k], sizeof f->name[k], "--", d->name);
            snprintf(f->help[k], sizeof f->help[k], "%s (%.0f)", d->doc, dv);
            o.kind = BT_CLI_INT;
            o.target = &f->iv[k];
            break;
        case BT_PARAM_FLOAT:
            flag_name(f->name[k], sizeof f->name[k], "--", d->name);
            snprintf(f->help[k], sizeof f->help[k], "%s (%g)", d->doc, dv);
            break;
        }
        bt_status st = push_opt(opts, n_opts, max, o, err);
        if (st == BT_OK && d->flag) { /* the older name, same target */
            o.name = d->flag;
            o.help = "same as the flag above";
            st = push_opt(opts, n_opts, max, o, err);
        }
        if (st != BT_OK)
            return st;
    }
    return BT_OK;
}

static bool given_at(const bt_param_flags *f, int k) {
    switch (f->d[k]->kind) {
    case BT_PARAM_BOOL:
        return f->bv[k];
    case BT_PARAM_INT:
    case BT_PARAM_U64:
        return f->iv[k] != INT64_MIN;
    case BT_PARAM_FLOAT:
        return !isnan(f->fv[k]);
    }
    return false;
}

bool bt_param_flags_given(const bt_param_flags *f, const char *name) {
    for (int k = 0; k < f->n; k++)
        if (strcmp(f->d[k]->name, name) == 0)
            return given_at(f, k);
    return false;
}

bt_status bt_param_flags_apply(const bt_param_flags *f, bt_request_params *p, bt_error *err) {
    for (int k = 0; k < f->n; k++) {
        if (!given_at(f, k))
            continue;
        const bt_param_desc *d = f->d[k];
        double v =
            d->kind == BT_PARAM_BOOL || d->kind == BT_PARAM_FLOAT ? f->fv[k] : (double)f->iv[k];
        bt_status st = bt_request_param_set(p, d, v, err);
        if (st != BT_OK)
            return bt_error_wrap(err, "%s", f->name[k]);
    }
    return BT_OK;
}

void bt_cmd_model_id(const char *path, char *out, size_t cap) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && strcmp(base + n - 5, ".gguf") == 0)
        n -= 5;
    snprintf(out, cap, "%.*s", (int)n, base);
}

int bt_cmd_api_model_init(bt_cmd_api_model *am, const char *cmd, const bt_session *s,
                          const bt_model_flags *mf, const char *model_name, const char *chat_name) {
    memset(am, 0, sizeof *am);
    bt_cmd_model_id(mf->model ? mf->model : mf->default_model, am->name, sizeof am->name);
    bt_engine_info info;
    bt_engine_get_info(s->engine, &info);
    bt_error err;
    bt_error_init(&err);
    bt_status st = bt_chat_template_for_model(s->gguf, chat_name, &am->tmpl, &err);
    if (st != BT_OK && chat_name) {
        fprintf(stderr, "baton %s: --chat-template: %s\n", cmd, err.msg);
        return 2;
    }
    if (st != BT_OK) {
        snprintf(am->chat_error, sizeof am->chat_error, "%s", err.msg);
        fprintf(stderr, "baton %s: chat requests will get 400: %s\n", cmd, err.msg);
    }
    am->m = (bt_api_model){
        .name = model_name ? model_name : am->name,
        .vocab = s->vocab,
        .chat = st == BT_OK ? &am->tmpl : NULL,
        .chat_error = am->chat_error,
        .n_ctx = info.n_ctx,
    };
    return 0;
}
