/* term_watch.c - the coordinator's SIGTERM handler that names dead stages (see term_watch.h). */
#include "term_watch.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LINE_BYTES 256

typedef struct watched {
    pid_t pid;
    char line[LINE_BYTES]; /* written if pid is gone */
} watched;

/* What the handler reads. Filled before the handler is installed; never freed while a
 * handler could run in another thread: disarming only restores the default action, and the
 * lines stay allocated (reachable) until the next arm. */
static watched *g_stages;
static int g_n_stages;
static char g_none[LINE_BYTES]; /* written when no local stage is gone */

static void put(const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

/* Ends the process by the signal it got, as the default action would have. */
static void die_of(int sig) {
    signal(sig, SIG_DFL);
    raise(sig);
    /* Called outside a handler (bt_term_watch_fire), sig may be blocked in this thread. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

static void on_term(int sig) {
    int saved = errno;
    int n_gone = 0;
    for (int i = 0; i < g_n_stages; i++) {
        /* ESRCH only: a zombie is a stage that died after mpirun began (see cluster.c). */
        if (kill(g_stages[i].pid, 0) != 0 && errno == ESRCH) {
            put(g_stages[i].line);
            n_gone++;
        }
    }
    if (n_gone == 0)
        put(g_none);
    errno = saved;
    die_of(sig);
}

static void on_term_linger(int sig) {
    struct timespec ts = {.tv_sec = BT_TERM_LINGER_MS / 1000,
                          .tv_nsec = (long)(BT_TERM_LINGER_MS % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    die_of(sig);
}

static void block_term(sigset_t *old) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, old);
}

static void install(void (*fn)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND; /* a second SIGTERM while in the handler ends it at once */
    sigaction(SIGTERM, &sa, NULL);
}

bt_status bt_term_watch_arm(const bt_cluster *c, const char *cmd, bt_error *err) {
    bt_term_watch_disarm();
    free(g_stages); /* the handler is not installed: nothing reads it now */
    g_stages = NULL;
    g_n_stages = 0;
    int n = bt_cluster_n_stages(c);
    watched *w = calloc((size_t)n, sizeof *w);
    if (!w)
        return bt_error_set(err, BT_ERR_NOMEM, "term watch: out of memory");
    int n_local = 0, n_remote = 0;
    char where[128];
    for (int i = 0; i < n; i++) {
        const bt_stage_report *r = bt_cluster_stage(c, i);
        if (!r->local) {
            n_remote++;
            continue;
        }
        w[n_local].pid = (pid_t)r->pid;
        snprintf(w[n_local].line, LINE_BYTES,
                 "baton %s: %s is gone: its process %d ended before the launcher stopped the "
                 "job\n",
                 cmd, bt_cluster_stage_name(c, r->rank, where, sizeof where), r->pid);
        n_local++;
    }
    sigset_t old;
    block_term(&old); /* this thread's handler cannot run while the table is half-made */
    g_stages = w;
    g_n_stages = n_local;
    if (n_remote > 0)
        snprintf(g_none, sizeof g_none,
                 "baton %s: stopped by SIGTERM; every stage on this host was running, %d on "
                 "other hosts could not be checked\n",
                 cmd, n_remote);
    else
        snprintf(g_none, sizeof g_none, "baton %s: stopped by SIGTERM; every stage was running\n",
                 cmd);
    install(on_term);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return BT_OK;
}

void bt_term_watch_disarm(void) {
    if (g_stages)
        signal(SIGTERM, SIG_DFL);
}

void bt_term_watch_fire(int sig) {
    int n_gone = 0;
    for (int i = 0; g_stages && i < g_n_stages; i++)
        if (kill(g_stages[i].pid, 0) != 0 && errno == ESRCH) {
            put(g_stages[i].line);
            n_gone++;
        }
    if (n_gone > 0)
        die_of(sig);
}

void bt_term_watch_linger(void) {
    install(on_term_linger);
}
