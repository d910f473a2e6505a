/* sched_text.c - the text of each completion: with a vocabulary (params.vocab) every
 * completion detokenizes incrementally and runs its stop strings (stop.h); text that is final
 * (never a stop string, never a partial one) goes to r->text and on_text. A completed stop
 * string ends the completion (FINISH_STOP, sched_core.c). The text buffer grows by doubling;
 * the per-token scratch (tbuf, sbuf) is the scheduler's, sized at creation. */
#include <stdlib.h>
#include <string.h>

#include "detok.h"
#include "sched_impl.h"

static void text_append(bt_request *r, const char *t, size_t n) {
    if (n == 0)
        return;
    if (r->n_text + n + 1 > r->text_cap) {
        size_t cap = r->text_cap ? r->text_cap : 256;
        while (cap < r->n_text + n + 1)
            cap *= 2;
        char *p = realloc(r->text, cap);
        if (!p)
            return; /* the text is lost, the tokens are not */
        r->text = p;
        r->text_cap = cap;
    }
    memcpy(r->text + r->n_text, t, n);
    r->n_text += n;
    r->text[r->n_text] = '\0';
    if (r->p.on_text)
        r->p.on_text(r, t, n, r->p.ctx);
}

void sched_text_begin(bt_sched *s, bt_request *r) {
    r->n_text = 0;
    if (r->text)
        r->text[0] = '\0';
    if (s->p.vocab)
        bt_detok_init(&r->detok, s->p.vocab, !r->p.skip_special_tokens);
    bt_stop_init(&r->stop, r->p.stop, r->p.n_stop);
    r->stop.include_match = r->p.include_stop_str_in_output;
}

/* Feeds token's text through the detokenizer and the stop strings. True: a stop string
 * completed. */
bool sched_text_push(bt_sched *s, bt_request *r, int32_t token) {
    if (!s->p.vocab)
        return false;
    size_t n = 0, m = 0;
    if (bt_detok_push(&r->detok, token, s->tbuf, s->tcap, &n) != BT_OK)
        return false;
    bool hit = bt_stop_push(&r->stop, s->tbuf, n, s->sbuf, &m);
    text_append(r, s->sbuf, m);
    return hit;
}

/* The completion ended without a stop string: what is held back becomes final. */
void sched_text_end(bt_sched *s, bt_request *r) {
    if (!s->p.vocab || r->stop.matched)
        return;
    size_t n = 0, m = 0;
    if (bt_detok_flush(&r->detok, s->tbuf, s->tcap, &n) == BT_OK && n) {
        if (bt_stop_push(&r->stop, s->tbuf, n, s->sbuf, &m)) {
            text_append(r, s->sbuf, m);
            return;
        }
        text_append(r, s->sbuf, m);
    }
    bt_stop_flush(&r->stop, s->sbuf, &m);
    text_append(r, s->sbuf, m);
}

/* The whole text of a finished hypothesis (no callbacks). */
void sched_text_whole(bt_sched *s, bt_request *r) {
    bt_request_text_fn fn = r->p.on_text;
    r->p.on_text = NULL;
    sched_text_begin(s, r);
    for (int32_t i = r->n_prompt; i < r->n_tokens; i++)
        sched_text_push(s, r, r->tokens[i]);
    sched_text_end(s, r);
    r->p.on_text = fn;
}
