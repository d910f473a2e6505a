"""lib.py - shared by the server tests (tests/server/test_*.py): start a real `baton serve`
(singleton, or under mpirun with N stages) on a free port, wait for /ready, talk to it, and
always tear it down, every rank included, even when a test fails or the test itself is killed.

Environment (set by tests/CMakeLists.txt): BATON (the binary), BATON_MODEL (the GGUF; absent ->
the test is skipped, exit 77), BT_MPIEXEC (mpiexec, for stages > 1).

A test file is a list of test_* functions run by run_tests(): each prints "ok" or "FAIL" with
its traceback; the exit status is 0 when all passed, 1 otherwise, 77 when the file is skipped.
"""

import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback

SKIP = 77
ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


class Skip(Exception):
    """Raised when the test cannot run here (no model, no browser): the file exits 77."""


def model_path():
    m = os.environ.get("BATON_MODEL") or os.path.join(
        os.environ.get("BATON_CACHE", os.path.expanduser("~/.cache/baton")),
        "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.access(m, os.R_OK):
        raise Skip("model %s not found (run deploy/fetch-model.sh)" % m)
    return m


def baton_path():
    b = os.environ.get("BATON")
    if not b or not os.access(b, os.X_OK):
        raise Skip("BATON (the baton binary) is not set or not executable: %r" % b)
    return b


def model_name():
    return os.path.basename(model_path())[: -len(".gguf")]


# ---- processes ----

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _child_setup():
    # The server dies with the test: ctest's timeout kills the test, whose children are in
    # their own process group and would otherwise survive it.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _ppid_map():
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
            # comm may contain spaces and parentheses: the fields follow the last ')'.
            rest = s[s.rindex(")") + 2:].split()
            out[int(d)] = (int(rest[1]), s[s.index("(") + 1: s.rindex(")")], rest[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


def descendants(pid):
    """{pid: (comm, state)} of every live descendant of pid."""
    m = _ppid_map()
    kids = {}
    frontier = [pid]
    while frontier:
        p = frontier.pop()
        for c, (pp, comm, state) in m.items():
            if pp == p and c not in kids:
                kids[c] = (comm, state)
                frontier.append(c)
    return kids


def rank_of(pid):
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            for kv in f.read().split(b"\0"):
                if kv.startswith(b"OMPI_COMM_WORLD_RANK="):
                    return int(kv.split(b"=", 1)[1])
    except (OSError, ValueError):
        pass
    return None


LISTEN_RE = re.compile(
    r"baton serve: listening on http://([^:/\s]+):(\d+) \(model (.+?), (\d+) stages?[;)]")


class Server:
    """One `baton serve` on --port 0. stages=1: singleton; stages=S>1: mpirun -np S+1.

    with Server(stages=2, args=["--max-queue", "8"]) as s:
        requests.get(s.url + "/health")
    """

    def __init__(self, stages=1, args=(), api_key=None, threads=1, wait_ready=True,
                 start_timeout=180, env=None):
        self.stages = stages
        self.api_key = api_key
        self.args = list(args)
        self.threads = threads
        self.start_timeout = start_timeout
        self.extra_env = env or {}
        self.do_wait_ready = wait_ready
        self.proc = None
        self.port = None
        self.host = None
        self.reported_stages = None
        self.reported_model = None
        self.lines = []
        self._lock = threading.Lock()
        self._listening = threading.Event()
        self.returncode = None
        self.known_pids = set()  # every process seen under the launcher once ready
        # In the environment of every process of this server: teardown kills only those.
        self.marker = "%d-%d-%f" % (os.getpid(), id(self), time.time())

    # The command line, also used by tests that start baton generate the same way.
    def command(self):
        cmd = [baton_path(), "serve", "--model", model_path(), "--port", "0",
               "--threads", str(self.threads)] + self.args
        if self.api_key is not None:
            cmd += ["--api-key", self.api_key]
        return mpi_prefix(self.stages) + cmd

    def start(self):
        env = dict(os.environ)
        env.update(mpi_env())
        env.update(self.extra_env)
        env["BT_SERVER_TEST_ID"] = self.marker
        cmd = self.command()
        self.cmdline = " ".join(cmd)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                     preexec_fn=_child_setup)
        self.t_start = time.monotonic()
        threading.Thread(target=self._read_output, daemon=True).start()
        if not self._listening.wait(self.start_timeout):
            raise AssertionError("no 'listening on' line within %d s from %s; output:\n%s" %
                                 (self.start_timeout, self.cmdline, self.output()))
        if self.port is None:
            raise AssertionError("the server ended before listening (exit %s); output:\n%s" %
                                 (self.proc.poll(), self.output()))
        self.url = "http://%s:%d" % (self.host, self.port)
        if self.do_wait_ready:
            self.wait_ready()
        return self

    def _read_output(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._lock:
                self.lines.append(line)
            m = LISTEN_RE.search(line)
            if m and self.port is None:
                self.host, self.port = m.group(1), int(m.group(2))
                self.reported_model, self.reported_stages = m.group(3), int(m.group(4))
                self._listening.set()
        self._listening.set()  # ended without the line: start() reports it

    def output(self):
        with self._lock:
            return "\n".join(self.lines)

    def wait_ready(self, timeout=None):
        import requests
        deadline = time.monotonic() + (timeout or self.start_timeout)
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("server exited %d before /ready; output:\n%s" %
                                     (self.proc.returncode, self.output()))
            try:
                r = requests.get(self.url + "/ready", timeout=5)
                last = r.status_code
                if r.status_code == 200:
                    self.known_pids |= set(descendants(self.proc.pid))
                    return
            except requests.RequestException as e:
                last = repr(e)
            time.sleep(0.2)
        raise AssertionError("/ready not 200 within the limit (last: %s); output:\n%s" %
                             (last, self.output()))

    def headers(self):
        return {"Authorization": "Bearer " + self.api_key} if self.api_key else {}

    def rank_pids(self):
        """{rank: pid} of the baton processes (singleton: {0: pid})."""
        if self.stages == 1:
            return {0: self.proc.pid}
        out = {}
        for pid, (comm, _state) in descendants(self.proc.pid).items():
            if comm == "baton":
                r = rank_of(pid)
                if r is not None:
                    out[r] = pid
        return out

    def signal_server(self, sig):
        """Sends sig to the HTTP process (rank 0), as a supervisor stopping the service does."""
        pid = self.rank_pids().get(0)
        if pid is None:
            raise AssertionError("no rank 0 process found under %d" % self.proc.pid)
        os.kill(pid, sig)

    def _ours(self, pid):
        try:
            with open("/proc/%d/environ" % pid, "rb") as f:
                return ("BT_SERVER_TEST_ID=" + self.marker).encode() in f.read().split(b"\0")
        except OSError:
            return False

    def stop_cleanly(self, timeout=60):
        """SIGTERM to rank 0 with nothing running: the server must drain and exit 0, every
        rank with it (under ASan this is where LeakSanitizer reports, making the exit
        non-zero)."""
        self.signal_server(signal.SIGTERM)
        rc = self.wait_exit(timeout)
        assert rc == 0, "exit %r after SIGTERM (want 0); output:\n%s" % (rc, self.output()[-3000:])
        wait_until(lambda: not self.alive_processes(), 10, "every rank gone")

    def wait_exit(self, timeout):
        """The launcher's exit status (mpirun's under mpirun), or None if still running."""
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def alive_processes(self):
        """Processes of this server still alive (not zombies), the launcher included."""
        left = {p: c for p, (c, st) in descendants(self.proc.pid).items() if st != "Z"}
        # Ranks that outlive the launcher are reparented: check those seen before by pid.
        m = _ppid_map()
        for p in self.known_pids:
            if p in m and m[p][2] != "Z" and self._ours(p):
                left[p] = m[p][1]
        if self.proc.poll() is None:
            left[self.proc.pid] = "launcher"
        return left

    def stop(self):
        """Tears everything down: SIGTERM, then SIGKILL of the group and of every rank."""
        if self.proc is None:
            return
        pids = set(descendants(self.proc.pid)) | self.known_pids
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except OSError:
                pass
            if self.wait_exit(10) is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                self.wait_exit(10)
        for p in pids | set(descendants(self.proc.pid)):
            if self._ours(p):  # never a recycled pid of someone else's process
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()
        return False

    # ---- talking to it ----

    def get(self, path, **kw):
        import requests
        kw.setdefault("timeout", 60)
        h = dict(self.headers())
        h.update(kw.pop("headers", {}))
        return requests.get(self.url + path, headers=h, **kw)

    def post(self, path, body=None, raw=None, **kw):
        import requests
        kw.setdefault("timeout", 120)
        h = dict(self.headers())
        h.update(kw.pop("headers", {}))
        if raw is not None:
            h.setdefault("Content-Type", "application/json")
            return requests.post(self.url + path, data=raw, headers=h, **kw)
        return requests.post(self.url + path, json=body, headers=h, **kw)

    def openai(self, **kw):
        import openai
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 120)
        kw.setdefault("api_key", self.api_key or "none")
        return openai.OpenAI(base_url=self.url + "/v1", **kw)

    def metrics(self):
        """{family name: prometheus_client Metric} parsed by prometheus_client's own parser."""
        from prometheus_client.parser import text_string_to_metric_families
        r = self.get("/metrics")
        assert r.status_code == 200, "/metrics -> %d %s" % (r.status_code, r.text[:300])
        return {f.name: f for f in text_string_to_metric_families(r.text)}

    def metric_values(self, name):
        """[(labels, value)] of the samples named exactly name (e.g. baton:kv_blocks_used)."""
        out = []
        for fam in self.metrics().values():
            for s in fam.samples:
                if s.name == name:
                    out.append((dict(s.labels), s.value))
        return out

    def tokenize(self, text, add_special=False):
        r = self.post("/tokenize", {"prompt": text, "add_special": add_special})
        assert r.status_code == 200, "/tokenize -> %d %s" % (r.status_code, r.text[:300])
        return r.json()["tokens"]


def mpi_prefix(stages):
    if stages <= 1:
        return []
    mpiexec = os.environ.get("BT_MPIEXEC") or "mpiexec"
    # Under deploy/mpirun-guard, as deploy/baton-run runs mpirun: an mpirun that hangs in its
    # finalize after every rank has ended is ended with the ranks' status.
    guard = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy",
                         "mpirun-guard")
    flags = [guard, mpiexec, "-np", str(stages + 1), "--bind-to", "none"]
    if os.getuid() == 0:
        flags.append("--allow-run-as-root")
    if stages + 1 > (os.cpu_count() or 1):
        flags.append("--oversubscribe")
    return flags


def mpi_env():
    # As tests/mpi/run_mpi_test.sh: shared memory without CMA, no network probing.
    return {"OMPI_MCA_btl_vader_single_copy_mechanism":
            os.environ.get("OMPI_MCA_btl_vader_single_copy_mechanism", "none"),
            "OMPI_MCA_btl": os.environ.get("OMPI_MCA_btl", "self,vader"),
            "OMPI_MCA_rmaps_base_oversubscribe":
            os.environ.get("OMPI_MCA_rmaps_base_oversubscribe", "1")}


# ---- raw HTTP over a socket (for what the clients hide: partial sends, trickles) ----

def raw_connect(server, timeout=30):
    s = socket.create_connection((server.host, server.port), timeout=timeout)
    return s


def read_http_response(sock, timeout=30):
    """Reads one response (status line, headers, Content-Length body or what arrives until
    close). Returns (status, {lower header: value}, body bytes)."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("connection closed before a full header: %r" % buf[:200])
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if "content-length" in hdrs:
        n = int(hdrs["content-length"])
        while len(body) < n:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return status, hdrs, body


def error_body(resp):
    """Checks OpenAI's error shape and returns the error object."""
    try:
        j = resp.json()
    except ValueError:
        raise AssertionError("error body is not JSON: %d %r" % (resp.status_code, resp.text[:300]))
    assert isinstance(j, dict) and isinstance(j.get("error"), dict), \
        "error body is not {error: {...}}: %r" % j
    e = j["error"]
    for k in ("message", "type", "param", "code"):
        assert k in e, "error object lacks %r: %r" % (k, e)
    assert isinstance(e["message"], str) and e["message"], "empty error message: %r" % e
    return e


def wait_until(pred, timeout, what, interval=0.2):
    """Polls pred() until it returns a true value (returned) or the deadline passes."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("%s: not within %.0f s (last: %r)" % (what, timeout, last))


def sse_events(resp):
    """The data payloads of a requests streaming response, [DONE] included as the string."""
    out = []
    for line in resp.iter_lines():
        if not line:
            continue
        line = line.decode("utf-8")
        if line.startswith("data:"):
            d = line[5:].strip()
            out.append(d if d == "[DONE]" else json.loads(d))
    return out


# ---- running the tests of one file ----

def run_tests(tests):
    """Runs each function, reports ok/FAIL; exits 0, 1 (a failure) or 77 (skipped).
    Arguments on the command line select the tests whose names contain one of them."""
    only = sys.argv[1:]
    if only:
        tests = [t for t in tests if any(o in t.__name__ for o in only)]
        if not tests:
            print("no test matches %r" % only)
            sys.exit(1)
    n_pass = n_fail = 0
    for t in tests:
        t0 = time.monotonic()
        try:
            t()
        except Skip as e:
            print("SKIP: %s" % e, flush=True)
            sys.exit(SKIP)
        except Exception:
            n_fail += 1
            print("FAIL %s (%.1f s)\n%s" % (t.__name__, time.monotonic() - t0,
                                            traceback.format_exc()), flush=True)
        else:
            n_pass += 1
            print("ok   %s (%.1f s)" % (t.__name__, time.monotonic() - t0), flush=True)
    print("%d passed, %d failed" % (n_pass, n_fail))
    sys.exit(0 if n_fail == 0 else 1)
