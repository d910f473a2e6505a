/* clock.h - monotonic time for metrics and deadlines, and condition variables whose timed
 * waits take such deadlines. Thread-safe. */
#ifndef BT_CLOCK_H
#define BT_CLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

static inline int64_t bt_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Initialises cv so that bt_cond_wait_until measures on bt_now_us's clock (CLOCK_MONOTONIC: a
 * change of the wall clock moves no deadline). Returns 0 or the error number. */
static inline int bt_cond_init_monotonic(pthread_cond_t *cv) {
    pthread_condattr_t ca;
    int rc = pthread_condattr_init(&ca);
    if (rc != 0)
        return rc;
    if ((rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC)) == 0)
        rc = pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
    return rc;
}

/* Waits on cv (made by bt_cond_init_monotonic, mu held) until signalled or until deadline_us
 * (bt_now_us). Returns pthread_cond_timedwait's result: 0, or ETIMEDOUT. */
static inline int bt_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_us) {
    struct timespec ts = {.tv_sec = (time_t)(deadline_us / 1000000),
                          .tv_nsec = (long)(deadline_us % 1000000) * 1000};
    return pthread_cond_timedwait(cv, mu, &ts);
}

#endif
