/*
 * http_ttft - what the HTTP layer adds to time to first token, measured by a client that
 * adds almost nothing itself (tests/bench/http_overhead.sh --client c runs it).
 *
 *   http_ttft --port P --prompt TEXT [--host 127.0.0.1] [--requests 100] [--warmup 3]
 *
 * Each request, one at a time: a new TCP connection, POST /v1/completions with
 * {"prompt": TEXT, "max_tokens": 1, "stream": true}, timed from just before connect() to the
 * arrival of the first server-sent event that carries a token; then the stream is read to its
 * end and the connection closed. Before the first and after the last timed request the
 * server's own TTFT histogram (baton:time_to_first_token_seconds: from bt_engine_submit to
 * the first token on the engine thread) is read from /metrics; the difference of its sums
 * over the same requests gives the server's mean, so client mean - server mean is what the
 * connection, HTTP, JSON, tokenization and the event's way to the socket add, paired over the
 * same requests (the compute noise cancels).
 *
 * Prints one JSON line: requests, client mean/p50/p99 ms, server mean ms, difference ms.
 * A plain blocking socket client: the server under test is libmicrohttpd; this only needs to
 * write one request and find "data: " lines, and Python's client costs are what it removes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RESP_MAX (1 << 20)

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int dial(const char *host, int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "http_ttft: --host '%s' is not an IPv4 address\n", host);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        fprintf(stderr, "http_ttft: connect %s:%d: %s\n", host, port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static bool send_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* One request on a new connection. *first_ms: time to the first event with a token (from
 * before connect); the response (headers and body) is read into buf until the server closes
 * or the stream ends. Returns the bytes read, or -1. */
static ssize_t exchange(const char *host, int port, const char *method, const char *path,
                        const char *body, char *buf, double *first_ms) {
    double t0 = now_ms();
    int fd = dial(host, port);
    if (fd < 0)
        return -1;
    char head[512];
    size_t blen = body ? strlen(body) : 0;
    int hn = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                      method, path, host, port, blen);
    if (!send_all(fd, head, (size_t)hn) || (blen && !send_all(fd, body, blen))) {
        close(fd);
        return -1;
    }
    size_t n = 0;
    bool seen = false;
    for (;;) {
        if (n >= RESP_MAX - 1) {
            fprintf(stderr, "http_ttft: response over %d bytes\n", RESP_MAX);
            close(fd);
            return -1;
        }
        ssize_t r = read(fd, buf + n, RESP_MAX - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            close(fd);
            return -1;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        buf[n] = '\0';
        /* The first event with a token: its "text" field (the role-less completions chunk). */
        if (!seen && first_ms && strstr(buf, "data: {") && strstr(buf, "\"text\"")) {
            *first_ms = now_ms() - t0;
            seen = true;
        }
        if (strstr(buf, "data: [DONE]"))
            break;
    }
    close(fd);
    buf[n] = '\0';
    if (first_ms && !seen) {
        fprintf(stderr, "http_ttft: no token event in the response:\n%.2000s\n", buf);
        return -1;
    }
    return (ssize_t)n;
}

/* The server's TTFT histogram: its _sum (seconds) and _count. */
static bool server_ttft(const char *host, int port, char *buf, double *sum, double *count) {
    if (exchange(host, port, "GET", "/metrics", NULL, buf, NULL) < 0)
        return false;
    const char *s = strstr(buf, "\nbaton:time_to_first_token_seconds_sum ");
    const char *c = strstr(buf, "\nbaton:time_to_first_token_seconds_count ");
    if (!s || !c) {
        fprintf(stderr, "http_ttft: /metrics has no baton:time_to_first_token_seconds\n");
        return false;
    }
    *sum = strtod(strchr(s + 1, ' ') + 1, NULL);
    *count = strtod(strchr(c + 1, ' ') + 1, NULL);
    return true;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *prompt = NULL;
    int port = 0, requests = 100, warmup = 3;
    for (int i = 1; i < argc; i += 2) { /* --flag value pairs */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "http_ttft: %s needs a value\n", a);
            return 2;
        }
        if (strcmp(a, "--host") == 0)
            host = v;
        else if (strcmp(a, "--port") == 0)
            port = atoi(v);
        else if (strcmp(a, "--prompt") == 0)
            prompt = v;
        else if (strcmp(a, "--requests") == 0)
            requests = atoi(v);
        else if (strcmp(a, "--warmup") == 0)
            warmup = atoi(v);
        else {
            fprintf(stderr, "http_ttft: unknown flag '%s'\n", a);
            return 2;
        }
    }
    if (port <= 0 || port > 65535 || !prompt || requests < 1 || warmup < 0) {
        fprintf(stderr, "usage: http_ttft --port P --prompt TEXT [--host H] [--requests N >= 1] "
                        "[--warmup N]\n");
        return 2;
    }
    json_t *req = json_pack("{s:s, s:i, s:b}", "prompt", prompt, "max_tokens", 1, "stream", 1);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    char *buf = malloc(RESP_MAX);
    double *ms = calloc((size_t)requests, sizeof *ms);
    if (!body || !buf || !ms)
        return 1;
    double first;
    for (int i = 0; i < warmup; i++)
        if (exchange(host, port, "POST", "/v1/completions", body, buf, &first) < 0)
            return 1;
    double sum0, count0, sum1, count1;
    if (!server_ttft(host, port, buf, &sum0, &count0))
        return 1;
    double total = 0;
    for (int i = 0; i < requests; i++) {
        if (exchange(host, port, "POST", "/v1/completions", body, buf, &ms[i]) < 0)
            return 1;
        total += ms[i];
    }
    if (!server_ttft(host, port, buf, &sum1, &count1))
        return 1;
    if ((int)(count1 - count0 + 0.5) != requests) {
        fprintf(stderr, "http_ttft: the server counted %.0f first tokens for %d requests\n",
                count1 - count0, requests);
        return 1;
    }
    qsort(ms, (size_t)requests, sizeof *ms, cmp_double);
    double client = total / requests, server = (sum1 - sum0) * 1e3 / requests;
    int i99 = (requests * 99 + 99) / 100 - 1; /* nearest rank */
    printf("{\"requests\": %d, \"client_ttft_mean_ms\": %.3f, \"client_ttft_p50_ms\": %.3f, "
           "\"client_ttft_p99_ms\": %.3f, \"server_ttft_mean_ms\": %.3f, "
           "\"http_overhead_ms\": %.3f}\n",
           requests, client, ms[requests / 2], ms[i99], server, client - server);
    free(ms);
    free(buf);
    free(body);
    return 0;
}
