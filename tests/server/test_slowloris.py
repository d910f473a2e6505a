"""test_slowloris.py - a client that trickles its request one byte every 2 s never completes
it: with --idle-timeout 4 the server closes the connection within the limit (plus slack),
though each byte arrives well inside it, and meanwhile a normal client is served. Two
trickles: in the headers, and in a body whose Content-Length was announced. Server: 2
stages under mpirun."""

import socket
import threading
import time

import lib

IDLE = 4
SLACK = 3
S = None


def trickle(data, result, head=b""):
    """Sends head at once, then data one byte every 2 s; records (seconds until the server closed, bytes sent,
    what the server answered) in result."""
    sock = socket.create_connection((S.host, S.port), timeout=60)
    if head:
        sock.sendall(head)
    t0 = time.monotonic()
    sent = 0
    got = b""
    try:
        sock.settimeout(2.0)
        for b in data:
            try:
                sock.sendall(bytes([b]))
                sent += 1
            except OSError:
                break
            try:
                chunk = sock.recv(4096)  # waits up to 2 s: the pacing of the trickle
                if not chunk:
                    break
                got += chunk
            except socket.timeout:
                continue
            except OSError:
                break
            if time.monotonic() - t0 > IDLE + 30:
                break
    finally:
        result.append((time.monotonic() - t0, sent, got))
        sock.close()


def run_trickle(data, what, head=b""):
    result = []
    t = threading.Thread(target=trickle, args=(data, result, head))
    t.start()
    # Meanwhile an ordinary client is served, twice, at once.
    time.sleep(1)
    for _ in range(2):
        t0 = time.monotonic()
        r = S.post("/v1/completions", {"prompt": "Hello", "max_tokens": 4}, timeout=30)
        assert r.status_code == 200, "normal client during the %s: %d %s" % (what,
                                                                            r.status_code, r.text)
        assert time.monotonic() - t0 < 10, "normal client waited %.1f s" % (time.monotonic() - t0)
    t.join(IDLE + 60)
    dt, sent, got = result[0]
    assert sent < len(data), "%s: the whole request (%d bytes) got through in %.1f s" % (
        what, len(data), dt)
    assert dt <= IDLE + SLACK, "%s: closed after %.1f s (--idle-timeout %d), %d bytes sent" % (
        what, dt, IDLE, sent)
    # An answer is allowed (408), a completion is not.
    assert not got.startswith(b"HTTP/1.1 200"), got[:200]
    print("  %s: closed after %.1f s, %d bytes trickled" % (what, dt, sent), flush=True)


def test_trickled_headers():
    req = (b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slowloris\r\n"
           b"X-Padding: " + b"a" * 60 + b"\r\nContent-Type: application/json\r\n"
           b"Content-Length: 30\r\n\r\n" + b'{"prompt": "x", "max_tokens":1}')
    run_trickle(req, "trickled headers")


def test_trickled_body():
    body = b'{"prompt": "' + b"b" * 80 + b'", "max_tokens": 1}'
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
    run_trickle(body, "trickled body", head=head)


def test_idle_keepalive_closed():
    # A connection that sends nothing at all is closed too.
    sock = socket.create_connection((S.host, S.port), timeout=IDLE + 20)
    t0 = time.monotonic()
    try:
        data = sock.recv(100)
    except OSError:
        data = b""
    dt = time.monotonic() - t0
    sock.close()
    assert dt <= IDLE + SLACK, "a silent connection lived %.1f s" % dt
    assert not data or data.startswith(b"HTTP/1.1 408"), data


if __name__ == "__main__":
    try:
        S = lib.Server(stages=2, args=["--idle-timeout", str(IDLE)])
        with S:
            lib.run_tests([test_trickled_headers, test_trickled_body, test_idle_keepalive_closed])
    except lib.Skip as e:
        print("SKIP: %s" % e)
        raise SystemExit(lib.SKIP)
