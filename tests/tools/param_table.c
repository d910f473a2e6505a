/*
 * param_table.c - prints the request-parameter table (bt_request_param_table) as the
 * markdown table of docs/api.md; e2e.test_params_doc checks that the document matches.
 * Usage: param_table > table.md
 */
#include <stdio.h>
#include <string.h>

#include "request.h"

/* A number as the docs write it: integers plainly, 2^24 and UINT64_MAX by name. */
static void num(char *buf, size_t cap, const bt_param_desc *d, double v) {
    if (d->kind == BT_PARAM_BOOL)
        snprintf(buf, cap, "%s", v != 0 ? "true" : "false");
    else if (v == (double)(1 << 24))
        snprintf(buf, cap, "2^24");
    else if (d->kind == BT_PARAM_U64 && v >= 1.8e19)
        snprintf(buf, cap, "2^64-1");
    else
        snprintf(buf, cap, "%g", v);
}

static void flag_of(char *buf, size_t cap, const bt_param_desc *d, double cli) {
    if (d->flag && strcmp(d->flag, BT_PARAM_HAND_FLAG) == 0) {
        snprintf(buf, cap, "(own flag)");
        return;
    }
    size_t n =
        (size_t)snprintf(buf, cap, "`--%s", d->kind == BT_PARAM_BOOL && cli != 0 ? "no-" : "");
    for (const char *c = d->name; *c && n + 1 < cap; c++)
        buf[n++] = *c == '_' ? '-' : *c;
    buf[n] = '\0';
    if (d->flag)
        snprintf(buf + n, cap - n, "`, `%s`", d->flag);
    else
        snprintf(buf + n, cap - n, "`");
}

int main(void) {
    size_t n;
    const bt_param_desc *tab = bt_request_param_table(&n);
    printf("| JSON name | flag of `generate` | type | range | CLI default | OpenAI default | "
           "meaning |\n");
    printf("|---|---|---|---|---|---|---|\n");
    static const char *const kinds[] = {"int", "float", "bool", "uint64"};
    for (size_t i = 0; i < n; i++) {
        const bt_param_desc *d = &tab[i];
        char lo[32], hi[32], cli[32], oai[32], flag[128];
        num(lo, sizeof lo, d, d->min);
        num(hi, sizeof hi, d, d->max);
        num(cli, sizeof cli, d, d->cli_default);
        num(oai, sizeof oai, d, d->openai_default);
        flag_of(flag, sizeof flag, d, d->cli_default);
        printf("| `%s` | %s | %s | ", d->name, flag, kinds[d->kind]);
        if (d->kind == BT_PARAM_BOOL)
            printf("| ");
        else
            printf("[%s, %s] | ", lo, hi);
        printf("%s | %s | %s |\n", cli, oai, d->doc);
    }
    return 0;
}
