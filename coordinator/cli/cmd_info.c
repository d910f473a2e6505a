/*
 * cmd_info.c - `baton info`: what a model file is, without loading weights: architecture,
 * hyper-parameters, tensor types with their bytes, vocabulary, chat template, and the memory
 * the weights and a KV cache of --ctx tokens take (with a sliding window: its global and window
 * pools, common/kv_plan.h, and the size without the window).
 */
#include <stdio.h>
#include <string.h>

#include "chat.h"
#include "cmd_common.h"
#include "commands.h"
#include "hparams.h"
#include "kv_plan.h"
#include "mem_budget.h"
#include "split.h"
#include "stage_layout.h"
#include "tensor_type.h"
#include "vocab.h"

#define MIB (1024.0 * 1024.0)

/* One line naming the steps of this model's forward pass: the hparams fields the forward pass
 * tests and the first layer's optional tensors (every layer has the same ones), so it says
 * what baton runs, not what the architecture's name suggests. */
static void print_uses(const bt_gguf *g, const bt_hparams *hp) {
    static const struct {
        const char *tensor, *what;
    } tensors[] = {{"blk.0.attn_q.bias", "q/k/v biases"},
                   {"blk.0.attn_q_norm.weight", "Q/K norms"},
                   {"blk.0.attn_qkv.weight", "fused qkv"},
                   {"rope_freqs.weight", "rope frequency factors"}};
    printf("uses:         %s rope, %s", hp->rope_neox ? "NeoX" : "normal",
           hp->ffn_act == BT_FFN_GELU ? "GeGLU (tanh GELU)" : "SwiGLU");
    for (size_t i = 0; i < sizeof tensors / sizeof tensors[0]; i++)
        if (bt_gguf_find_tensor(g, tensors[i].tensor))
            printf(", %s", tensors[i].what);
    if (!bt_gguf_find_tensor(g, "blk.0.ffn_gate.weight"))
        printf(", fused gate-up");
    if (hp->post_norms)
        printf(", post norms");
    if (hp->embd_scale != 1.0f)
        printf(", embeddings x %g", (double)hp->embd_scale);
    if (hp->sliding_window > 0) {
        int n_swa = 0;
        for (int il = 0; il < hp->n_layer; il++)
            n_swa += bt_hparams_is_swa(hp, il);
        printf(", sliding window %d on %d of %d layers (rope base %g)", hp->sliding_window, n_swa,
               hp->n_layer, (double)hp->rope_base_swa);
    }
    if (hp->logit_softcap > 0.0f)
        printf(", logit softcap %g", (double)hp->logit_softcap);
    printf(", %s output\n", bt_gguf_find_tensor(g, "output.weight") ? "separate" : "tied");
}

int bt_cmd_info(int argc, char **argv) {
    bt_model_flags mf;
    bt_model_flags_init(&mf);
    bool tensors = false;
    int64_t stages = 0;
    const char *layers = NULL, *split_by = NULL, *stage_mem = NULL, *stage_speed = NULL;
    const char *kv_type_name = "f16";
    int64_t kv_tokens = 0, max_batch = 512, max_seqs = 64;
    const bt_cli_opt opts[] = {
        BT_MODEL_FLAG_OPTS(mf),
        {"--tensors", BT_CLI_FLAG, &tensors, 0, 0, "list every tensor"},
        {"--stages", BT_CLI_INT, &stages, 1, BT_MAX_STAGES, "show the layer split for S stages"},
        {"--layers", BT_CLI_STR, &layers, 0, 0, "split to show instead, e.g. 0-14,15-29"},
        {"--split", BT_CLI_STR, &split_by, 0, 0,
         "balance 'memory' (default), 'compute' or 'measured' (needs --stage-speed here)"},
        {"--stage-mem", BT_CLI_STR, &stage_mem, 0, 0,
         "memory per stage, e.g. 2G or 1G,3G (default: this host's cgroup limit or free memory)"},
        {"--stage-speed", BT_CLI_STR, &stage_speed, 0, 0,
         "relative speed per stage, e.g. 1,1,0.5: the measured split"},
        {"--kv-tokens", BT_CLI_INT, &kv_tokens, 16, 1 << 26, "KV per stage in tokens (--ctx)"},
        {"--max-batch", BT_CLI_INT, &max_batch, 1, 65536, "rows per micro-batch (512)"},
        {"--max-seqs", BT_CLI_INT, &max_seqs, 1, 4096, "concurrent sequences (64)"},
        {"--kv-type", BT_CLI_STR, &kv_type_name, 0, 0,
         "KV cache element: 'f16' (default) or 'q8_0'"},
    };
    const int n_opts = (int)(sizeof opts / sizeof opts[0]);
    int rc = bt_cmd_parse(
        "info",
        "[--model M] [--ctx N] [--tensors] [--stages S [--layers L] [--stage-mem SIZE[,SIZE...]] "
        "[--stage-speed S1,S2,...]] [--kv-type f16|q8_0]",
        opts, n_opts, &mf.help, argc, argv);
    if (rc >= 0)
        return rc;

    bt_error err;
    bt_error_init(&err);
    const char *model_path = NULL;
    bt_gguf *g = NULL;
    bt_vocab *v = NULL;
    bt_type kv_type = BT_TYPE_F16;
    bt_status st = bt_kv_type_parse(kv_type_name, &kv_type, &err);
    if (st == BT_OK)
        st = bt_model_flags_path(&mf, &model_path, &err);
    if (st != BT_OK || (st = bt_gguf_open(model_path, &g, &err)) != BT_OK)
        goto done;
    bt_hparams hp;
    if ((st = bt_hparams_load(g, &hp, &err)) != BT_OK)
        goto done;
    if ((st = bt_vocab_load(g, &v, &err)) != BT_OK)
        goto done;

    bt_str name = {"", 0};
    bt_gguf_get_str(g, "general.name", &name, NULL);
    printf("model:        %s\n", model_path);
    printf("name:         %.*s\n", (int)name.len, name.ptr);
    printf("gguf:         v%u, %zu metadata keys, %zu tensors, %.1f MiB\n", bt_gguf_version(g),
           bt_gguf_n_kv(g), bt_gguf_n_tensors(g), (double)bt_gguf_file_size(g) / MIB);
    printf("architecture: %s\n", bt_arch_name(hp.arch));
    printf("layers:       %d\n", hp.n_layer);
    printf("embedding:    %d\n", hp.n_embd);
    printf("feed-forward: %d\n", hp.n_ff);
    printf("heads:        %d (kv %d, head dim %d)\n", hp.n_head, hp.n_head_kv, hp.head_dim);
    printf("context:      %d (trained)\n", hp.n_ctx_train);
    printf("rope base:    %g, rms eps %g\n", (double)hp.rope_base, (double)hp.rms_eps);
    printf("tied output:  %s\n", bt_gguf_find_tensor(g, "output.weight") ? "no" : "yes");
    print_uses(g, &hp);

    /* Tensor bytes per type. */
    size_t bytes_by_type[BT_TYPE_MAX_ID] = {0}, count_by_type[BT_TYPE_MAX_ID] = {0};
    size_t total = 0;
    for (size_t i = 0; i < bt_gguf_n_tensors(g); i++) {
        const bt_gguf_tensor *t = bt_gguf_tensor_at(g, i);
        if (t->type < BT_TYPE_MAX_ID) {
            bytes_by_type[t->type] += t->n_bytes;
            count_by_type[t->type]++;
        }
        total += t->n_bytes;
        if (tensors)
            printf("  %-32s %-5s [%lld, %lld, %lld, %lld] %zu bytes\n", t->name,
                   bt_type_name(t->type), (long long)t->ne[0], (long long)t->ne[1],
                   (long long)t->ne[2], (long long)t->ne[3], t->n_bytes);
    }
    printf("tensor types:");
    for (int ty = 0; ty < BT_TYPE_MAX_ID; ty++)
        if (count_by_type[ty])
            printf(" %s x%zu (%.1f MiB)", bt_type_name((uint32_t)ty), count_by_type[ty],
                   (double)bytes_by_type[ty] / MIB);
    printf("\nweights:      %.1f MiB\n", (double)total / MIB);

    int n_ctx = mf.ctx ? (int)mf.ctx : bt_hparams_default_ctx(&hp);
    if (kv_type == BT_TYPE_Q8_0 && hp.head_dim % BT_QK != 0) {
        st =
            bt_error_set(&err, BT_ERR_UNSUPPORTED,
                         "--kv-type q8_0: head_dim %d is not a multiple of %d", hp.head_dim, BT_QK);
        goto done;
    }
    /* The KV of one stage holding every layer, for --kv-tokens (else one context) with the
     * window pool of the local layers sized for --max-seqs and --max-batch (kv_plan.h). */
    int kv_all = kv_tokens ? (int)kv_tokens : n_ctx;
    bt_kv_plan kvp;
    bt_kv_plan_stage(&hp, 0, hp.n_layer, kv_all, (int)max_seqs, (int)max_batch, kv_type, &kvp);
    double kv_bytes = (double)bt_kv_plan_bytes(&kvp);
    if (kvp.n_window_layers == 0) {
        printf("kv cache:     %.1f MiB for %d tokens (%s, %.1f KiB per token)\n", kv_bytes / MIB,
               kv_all, bt_type_name((uint32_t)kv_type), kv_bytes / kv_all / 1024.0);
    } else {
        printf("kv cache:     %.1f MiB global (%d layers) + %.1f MiB window (%d layers, %d "
               "positions) = %.1f MiB at %d tokens (%s), %d sequence%s of up to %d rows a step; "
               "%.1f MiB without the window\n",
               (double)kvp.global_bytes / MIB, kvp.n_global_layers, (double)kvp.window_bytes / MIB,
               kvp.n_window_layers, kvp.n_window_blocks * BT_KV_BLOCK_TOKENS, kv_bytes / MIB,
               kv_all, bt_type_name((uint32_t)kv_type), (int)max_seqs, max_seqs == 1 ? "" : "s",
               (int)max_batch, (double)kvp.full_bytes / MIB);
    }

    size_t n_eog = 0;
    bt_vocab_eog_ids(v, &n_eog);
    printf("vocabulary:   %d tokens, %s, pre-tokenizer '%s', bos %d, eos %d, %zu end-of-generation "
           "ids\n",
           bt_vocab_n_tokens(v), bt_vocab_kind_get(v) == BT_VOCAB_BPE ? "byte-level BPE" : "SPM",
           bt_vocab_pre_name(v), bt_vocab_bos(v), bt_vocab_eos(v), n_eog);
    bt_chat_template tpl;
    bt_error terr;
    bt_error_init(&terr);
    if (bt_chat_template_detect(g, &tpl, &terr) == BT_OK)
        printf("chat template: %s%s\n", bt_chat_kind_name(tpl.kind),
               tpl.default_system[0] ? " (with a default system prompt)" : "");
    else
        printf("chat template: none usable (%s)\n", terr.msg);

    if (stages || layers) {
        int n_stages = (int)stages;
        if (!n_stages) /* count the ranges of --layers */
            for (const char *p = layers; p && *p; p++)
                n_stages += p == layers || p[-1] == ',';
        bt_split split;
        bt_split_mode mode;
        static bt_split_mem mem; /* main thread only */
        memset(&mem, 0, sizeof mem);
        int kv = kv_tokens ? (int)kv_tokens : n_ctx;
        if (kv < n_ctx) {
            st = bt_error_set(&err, BT_ERR_RANGE, "--kv-tokens %d is less than the context %d", kv,
                              n_ctx);
            goto done;
        }
        mem.n_ctx = n_ctx;
        mem.max_batch = (int)max_batch;
        mem.max_seqs = (int)max_seqs;
        if ((st = bt_split_mode_of_flags(split_by, stage_speed, &mode, &err)) != BT_OK)
            goto done;
        /* Nothing to probe here: the measured plan is the one of the speeds given. */
        if (mode == BT_SPLIT_MEASURED && !stage_speed) {
            st = bt_error_set(&err, BT_ERR_INVALID_ARG,
                              "--split measured: info times no stages; give --stage-speed");
            goto done;
        }
        if (n_stages < 1 || n_stages > BT_MAX_STAGES) {
            st = bt_error_set(&err, BT_ERR_INVALID_ARG, "--layers '%s': %d ranges", layers,
                              n_stages);
            goto done;
        }
        if (stage_mem) {
            if ((st = bt_mem_list_parse(stage_mem, n_stages, mem.budget, &err)) != BT_OK)
                goto done;
            for (int i = 0; i < n_stages; i++)
                mem.source[i] = BT_MEM_SOURCE_FLAG;
        } else { /* every stage as if on this host, as the threads of a singleton run are */
            uint64_t b;
            bt_mem_source src;
            bt_mem_budget_read(&b, &src);
            for (int i = 0; i < n_stages; i++) {
                mem.budget[i] = b;
                mem.source[i] = src;
            }
        }
        static double speed[BT_MAX_STAGES]; /* main thread only */
        if (stage_speed && (st = bt_split_speed_parse(stage_speed, n_stages, speed, &err)) != BT_OK)
            goto done;
        if ((st = bt_split_plan(g, n_stages, kv, kv_type, mode, stage_speed ? speed : NULL, layers,
                                &mem, &split, &err)) != BT_OK)
            goto done;
        printf("split:        %d stages (mpirun -np %d), KV for %d tokens asked of each%s\n",
               n_stages, n_stages + 1, kv,
               split.uneven ? "; the balanced split did not fit the budgets" : "");
        printf("  stage rank  layers    weights MiB  kv MiB (tokens)  scratch MiB  total MiB  "
               "budget MiB\n");
        for (int i = 0; i < n_stages; i++) {
            uint64_t need = split.weight_bytes[i] + split.kv_bytes[i] + split.scratch_bytes[i] +
                            split.overhead_bytes;
            char budget[64];
            if (split.budget_bytes[i])
                snprintf(budget, sizeof budget, "%.1f (%s)", (double)split.budget_bytes[i] / MIB,
                         bt_mem_source_name(split.budget_source[i]));
            else
                snprintf(budget, sizeof budget, "none known");
            printf("  %5d %4d  %3d-%-3d   %11.1f %7.1f (%d) %12.1f %10.1f  %s%s\n", i, i + 1,
                   split.begin[i], split.end[i] - 1, (double)split.weight_bytes[i] / MIB,
                   (double)split.kv_bytes[i] / MIB, split.kv_tokens[i],
                   (double)split.scratch_bytes[i] / MIB, (double)need / MIB, budget,
                   split.kv_tokens[i] < kv ? "  KV shrunk to fit" : "");
        }
        printf("  (total = weights + KV + scratch + %.1f MiB overhead per stage)\n",
               (double)split.overhead_bytes / MIB);
        if (mode == BT_SPLIT_MEASURED) {
            printf("measured:     time per token balanced over the stages' relative speeds\n");
            printf("  stage rank  layers    speed  share of a token's time\n");
            for (int i = 0; i < n_stages; i++)
                printf("  %5d %4d  %3d-%-3d   %5.3f  %5.1f%%\n", i, i + 1, split.begin[i],
                       split.end[i] - 1, split.speed[i], 100.0 * split.time_share[i]);
        }
    }

done:
    if (st != BT_OK)
        fprintf(stderr, "baton info: %s\n", err.msg[0] ? err.msg : bt_status_str(st));
    bt_vocab_free(v);
    bt_gguf_free(g);
    return bt_cmd_exit_status(st);
}
