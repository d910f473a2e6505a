/* mpi_transport_bench.c - measures the MPI transport between ranks 0 and 1 (mpirun -np 2):
 * round-trip latency of small frames, bandwidth of 1 MB frames (streamed with max_pending in
 * flight, and ping-pong), and the CPU a rank uses while it waits in recv. Not a test: prints
 * numbers. Usage: mpi_transport_bench [idle_seconds] (rank 1 waits that long at the end, so
 * `ps`/`top` can watch it; default 0). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "mpi_common.h"
#include "transport.h"

#define MB (1u << 20)
#define TIMEOUT_US 60000000

static void die(bt_transport *t, bt_status st, const bt_error *err) {
    if (st == BT_OK)
        return;
    fprintf(stderr, "rank %d: %s\n", t->rank, err->msg);
    bt_transport_abort(t, 1);
}

/* n round trips of `len` bytes; returns microseconds per round trip (on rank 0). */
static double ping_pong(bt_transport *t, uint8_t *buf, size_t len, int n) {
    bt_error err;
    bt_error_init(&err);
    const void *f;
    size_t got;
    int from;
    int64_t t0 = bt_now_us();
    for (int i = 0; i < n; i++) {
        if (t->rank == 0) {
            die(t, bt_transport_send(t, 1, buf, len, TIMEOUT_US, &err), &err);
            die(t, bt_transport_recv(t, 1, &f, &got, &from, TIMEOUT_US, &err), &err);
        } else {
            die(t, bt_transport_recv(t, 0, &f, &got, &from, TIMEOUT_US, &err), &err);
            die(t, bt_transport_send(t, 0, f, got, TIMEOUT_US, &err), &err);
        }
    }
    return (double)(bt_now_us() - t0) / n;
}

int main(int argc, char **argv) {
    int rank, size;
    bt_error err;
    bt_error_init(&err);
    if (bt_mpi_init(&argc, &argv, &rank, &size, &err) != BT_OK || size != 2) {
        fprintf(stderr, "mpi_transport_bench: needs mpirun -np 2 (%s)\n", err.msg);
        bt_mpi_finalize();
        return 1;
    }
    double idle_s = argc > 1 ? atof(argv[1]) : 0.0;
    bt_transport *t = NULL;
    if (bt_transport_mpi_new(2 * MB, 8, &t, &err) != BT_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    uint8_t *buf = malloc(2 * MB);
    if (!buf)
        bt_transport_abort(t, 1);
    mt_fill(buf, 2 * MB, 7);

    ping_pong(t, buf, 64, 200); /* warm-up */
    double lat64 = ping_pong(t, buf, 64, 5000);
    double lat4k = ping_pong(t, buf, 4096, 2000);
    ping_pong(t, buf, MB, 10);
    double rt1m = ping_pong(t, buf, MB, 200);

    /* Streaming: rank 0 sends N frames of 1 MB (up to 8 in flight), rank 1 acks the last. */
    const int n = 500;
    const void *f;
    size_t got;
    int from;
    int64_t t0 = bt_now_us();
    if (rank == 0) {
        for (int i = 0; i < n; i++)
            die(t, bt_transport_send(t, 1, buf, MB, TIMEOUT_US, &err), &err);
        die(t, bt_transport_recv(t, 1, &f, &got, &from, TIMEOUT_US, &err), &err);
    } else {
        for (int i = 0; i < n; i++)
            die(t, bt_transport_recv(t, 0, &f, &got, &from, TIMEOUT_US, &err), &err);
        die(t, bt_transport_send(t, 0, "ok", 2, TIMEOUT_US, &err), &err);
    }
    double stream_s = (double)(bt_now_us() - t0) / 1e6;

    if (rank == 0) {
        printf("round trip  64 B: %8.1f us\n", lat64);
        printf("round trip 4 KB: %8.1f us\n", lat4k);
        printf("round trip 1 MB: %8.1f us  (%.0f MB/s each way)\n", rt1m, 2.0 * MB / rt1m);
        printf("stream     1 MB: %d frames in %.3f s = %.0f MB/s\n", n, stream_s,
               (double)n * MB / stream_s / 1e6);
    }

    /* Idle: rank 1 waits in recv while rank 0 sleeps; CPU of the whole rank 1 process. */
    if (idle_s <= 0)
        idle_s = 1.0;
    if (rank == 1) {
        double c0 = mt_process_cpu_us();
        t0 = bt_now_us();
        die(t, bt_transport_recv(t, 0, &f, &got, &from, TIMEOUT_US, &err), &err);
        double wall = (double)(bt_now_us() - t0);
        printf("rank 1 waited %.2f s in recv: %.2f%% of a core (process CPU time)\n", wall / 1e6,
               100.0 * (mt_process_cpu_us() - c0) / wall);
        fflush(stdout);
    } else {
        mt_sleep_us((int64_t)(idle_s * 1e6));
        die(t, bt_transport_send(t, 1, "wake", 4, TIMEOUT_US, &err), &err);
    }
    die(t, bt_transport_flush(t, TIMEOUT_US, &err), &err);
    bt_transport_free(t);
    free(buf);
    bt_mpi_finalize();
    return 0;
}
