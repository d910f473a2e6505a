/* mpi_truncation_test.c - a frame larger than the receiver's max_frame (mpirun -np 2).
 * Rank 0 is built with max_frame 1024, rank 1 with 8192 (a misconfigured job): rank 1's
 * 4096-byte frame is BT_ERR_PROTOCOL naming rank 1 at rank 0, and the frames after it still
 * arrive (the receive is re-posted). Prints "rank R: N passed, N failed". */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "mpi_common.h"
#include "transport.h"

#define TIMEOUT_US 20000000

int main(int argc, char **argv) {
    int rank = -1, size = 0;
    bt_error err;
    bt_error_init(&err);
    if (bt_mpi_init(&argc, &argv, &rank, &size, &err) != BT_OK) {
        fprintf(stderr, "bt_mpi_init: %s\n", err.msg);
        return 1;
    }
    if (size != 2) {
        printf("SKIP mpi_truncation_test: needs 2 ranks, have %d\n", size);
        bt_mpi_finalize();
        return 77;
    }
    bt_transport *t = NULL;
    if (bt_transport_mpi_new(rank == 0 ? 1024 : 8192, 4, &t, &err) != BT_OK) {
        fprintf(stderr, "rank %d: bt_transport_mpi_new: %s\n", rank, err.msg);
        return 1;
    }
    static uint8_t buf[8192];
    const void *f;
    size_t len;
    int from = -1;
    if (rank == 1) {
        mt_fill(buf, 4096, 1);
        CHECK_OK(bt_transport_send(t, 0, buf, 4096, TIMEOUT_US, &err_));
        mt_fill(buf, 1024, 2);
        CHECK_OK(bt_transport_send(t, 0, buf, 1024, TIMEOUT_US, &err_)); /* exactly max_frame */
        CHECK_OK(bt_transport_send(t, 0, "tail", 4, TIMEOUT_US, &err_));
        CHECK_OK(bt_transport_recv(t, 0, &f, &len, &from, TIMEOUT_US, &err_));
        CHECK(len == 3 && memcmp(f, "ack", 3) == 0);
    } else {
        CHECK_EQ_INT(bt_transport_recv(t, BT_RANK_ANY, &f, &len, &from, TIMEOUT_US, &err),
                     BT_ERR_PROTOCOL);
        CHECK(strstr(err.msg, "rank 1") != NULL);
        printf("rank 0: oversize frame: %s\n", err.msg);
        CHECK_OK(bt_transport_recv(t, 1, &f, &len, &from, TIMEOUT_US, &err_));
        CHECK(from == 1 && len == 1024 && mt_same(f, len, 2));
        CHECK_OK(bt_transport_recv(t, BT_RANK_ANY, &f, &len, &from, TIMEOUT_US, &err_));
        CHECK(from == 1 && len == 4 && memcmp(f, "tail", 4) == 0);
        CHECK_OK(bt_transport_send(t, 1, "ack", 3, TIMEOUT_US, &err_));
    }
    CHECK_OK(bt_transport_flush(t, TIMEOUT_US, &err_));
    bt_transport_free(t);
    printf("rank %d: ", rank);
    int rc = check_finish();
    bt_mpi_finalize();
    return rc;
}
