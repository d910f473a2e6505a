/* sigwatch.c - a sigwait() thread for SIGINT, SIGTERM and SIGUSR1 (see sigwatch.h). */
#include "sigwatch.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>

static pthread_t g_thread;
static bool g_started;
static sigset_t g_old; /* the starting thread's mask before */
static void (*g_fn)(int, void *);
static void *g_ctx;
static atomic_bool g_stopping;

static void watched(sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGUSR1);
}

static void *watch_main(void *arg) {
    (void)arg;
    sigset_t set;
    watched(&set);
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (atomic_load(&g_stopping))
            return NULL; /* bt_sigwatch_stop's own signal, or one that came with it */
        g_fn(sig, g_ctx);
    }
}

bt_status bt_sigwatch_start(void (*fn)(int sig, void *ctx), void *ctx, bt_error *err) {
    if (g_started)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "sigwatch: already started");
    sigset_t set;
    watched(&set);
    g_fn = fn;
    g_ctx = ctx;
    atomic_store(&g_stopping, false);
    if (pthread_sigmask(SIG_BLOCK, &set, &g_old) != 0)
        return bt_error_set(err, BT_ERR_INTERNAL, "sigwatch: cannot block SIGINT/SIGTERM/SIGUSR1");
    if (pthread_create(&g_thread, NULL, watch_main, NULL) != 0) {
        pthread_sigmask(SIG_SETMASK, &g_old, NULL);
        return bt_error_set(err, BT_ERR_INTERNAL, "sigwatch: cannot start its thread");
    }
    g_started = true;
    return BT_OK;
}

void bt_sigwatch_stop(void) {
    if (!g_started)
        return;
    atomic_store(&g_stopping, true);
    pthread_kill(g_thread, SIGTERM); /* sigwait takes it: directed at that thread only */
    pthread_join(g_thread, NULL);
    g_started = false;
    pthread_sigmask(SIG_SETMASK, &g_old, NULL);
}

void bt_sigwatch_die(int sig) {
    signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    raise(sig); /* pending in this thread until unblocked just below */
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}
