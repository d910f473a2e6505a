"""test_chat_page.py - the chat page at GET / of `baton serve` (2 stages under mpirun), in
Debian's headless Chromium driven over the DevTools protocol (websocket-client from the
venv): the page loads, a message is typed (Input.insertText) and sent (Enter, or a click
on its send button), the page POSTs a streamed request to /v1/chat/completions (seen in the
browser's Network events: "stream": true, an event-stream answer), and the answer grows on
the page in several steps before it settles. A screenshot goes to $BT_BUILD_DIR/chat_page.png
(docs/chat_page.png is a copy of one). Exit 77 if chromium is not installed."""

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time

import requests
import websocket

import lib

MESSAGE = "Say hello in French."


class CDP:
    """A DevTools protocol session on one page target."""

    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events = []

    def call(self, method, **params):
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            m = json.loads(self.ws.recv())
            if m.get("id") == mid:
                if "error" in m:
                    raise AssertionError("%s: %r" % (method, m["error"]))
                return m.get("result", {})
            if "method" in m:
                self.events.append(m)

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError("page JS %r threw: %r" % (expr, r["exceptionDetails"]))
        return r["result"].get("value")

    def pump(self, seconds):
        """Collects events for a while (the page keeps working meanwhile)."""
        end = time.monotonic() + seconds
        self.ws.settimeout(0.05)
        try:
            while time.monotonic() < end:
                try:
                    m = json.loads(self.ws.recv())
                    if "method" in m:
                        self.events.append(m)
                except websocket.WebSocketTimeoutException:
                    pass
        finally:
            self.ws.settimeout(60)


def start_chromium(profile):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        raise lib.Skip("chromium is not installed (Debian: apt-get install chromium)")
    cmd = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--no-default-browser-check", "--remote-debugging-port=0",
           "--remote-allow-origins=*", "--user-data-dir=" + profile,
           "--window-size=1000,800", "about:blank"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True, preexec_fn=lib._child_setup)
    # Chromium writes its port to DevToolsActivePort in the profile once listening.
    path = os.path.join(profile, "DevToolsActivePort")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                lines = f.read().split("\n")
            if lines and lines[0].strip().isdigit():
                return p, int(lines[0])
        if p.poll() is not None:
            raise AssertionError("chromium exited %d: %s" % (p.returncode,
                                                             p.stderr.read().decode()[-2000:]))
        time.sleep(0.2)
    raise AssertionError("chromium did not open its DevTools port within 60 s")


def page_text(cdp):
    return cdp.eval("document.body ? document.body.innerText : ''") or ""


def test_chat_page_streams_an_answer():
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        raise lib.Skip("chromium is not installed (Debian: apt-get install chromium)")
    with lib.Server(stages=2) as s:
        r = requests.get(s.url + "/", timeout=10)
        assert r.status_code == 200 and "text/html" in r.headers.get("Content-Type", ""), \
            (r.status_code, r.headers)
        profile = tempfile.mkdtemp(prefix="bt-chromium-")
        browser = None
        try:
            browser, port = start_chromium(profile)
            tab = requests.put("http://127.0.0.1:%d/json/new?about:blank" % port, timeout=10)
            if tab.status_code != 200:
                tab = requests.get("http://127.0.0.1:%d/json/new?about:blank" % port, timeout=10)
            cdp = CDP(tab.json()["webSocketDebuggerUrl"])
            cdp.call("Network.enable")
            cdp.call("Page.enable")
            cdp.call("Page.navigate", url=s.url + "/")
            lib.wait_until(lambda: cdp.eval("document.readyState") == "complete", 30,
                           "the page loaded")
            before = page_text(cdp)
            # The message box: a textarea, else a text input.
            found = cdp.eval("""(() => {
                const el = document.querySelector('textarea') ||
                           document.querySelector('input[type=text], input:not([type])');
                if (!el) return false;
                el.focus();
                return true; })()""")
            assert found, "no textarea or text input on the page:\n%s\nserver (exit %r):\n%s" % (
                before[:500], s.proc.poll(), s.output()[-1500:])
            cdp.call("Input.insertText", text=MESSAGE)
            # Send it: a button saying send, else Enter in the box.
            clicked = cdp.eval("""(() => {
                const bs = [...document.querySelectorAll('button, input[type=submit]')];
                const b = bs.find(b => /send/i.test(b.innerText || b.value || '')) ||
                          document.querySelector('button[type=submit], input[type=submit]');
                if (!b) return false;
                b.click();
                return true; })()""")
            if not clicked:
                for kind in ("keyDown", "keyUp"):
                    cdp.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter",
                             windowsVirtualKeyCode=13, text="\r" if kind == "keyDown" else "")
            # Watch the answer grow: the page text sampled every 50 ms until it is stable for
            # 3 s, or for at most 30 s once it grows (the page asks for up to 512 tokens, which
            # can take longer than that on 2 cores; a streamed part is what is checked).
            lengths = []
            last_change = time.monotonic()
            first_growth = None
            shot = None
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                cdp.pump(0.05)
                n = len(page_text(cdp))
                if not lengths or n != lengths[-1]:
                    if lengths and first_growth is None:
                        first_growth = time.monotonic()
                    lengths.append(n)
                    last_change = time.monotonic()
                elif time.monotonic() - last_change > 3 and len(lengths) > 2:
                    break
                if first_growth is not None and time.monotonic() - first_growth > 30:
                    break
                # The screenshot 3 s into the answer: the message and the answer's start.
                if shot is None and first_growth and time.monotonic() - first_growth > 3:
                    shot = cdp.call("Page.captureScreenshot", format="png")
            after = page_text(cdp)
            if shot is None:
                shot = cdp.call("Page.captureScreenshot", format="png")
            out = os.path.join(os.environ.get("BT_BUILD_DIR", tempfile.gettempdir()),
                               "chat_page.png")
            with open(out, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
            print("  screenshot: %s" % out)
            # The request the page made.
            reqs = [e["params"] for e in cdp.events if e["method"] == "Network.requestWillBeSent"
                    and e["params"]["request"]["url"].endswith("/v1/chat/completions")]
            assert reqs, "the page sent no request to /v1/chat/completions; events: %r" % (
                sorted({e["method"] for e in cdp.events}))
            body = json.loads(reqs[-1]["request"].get("postData") or "{}")
            assert body.get("stream") is True, "the page's request is not streamed: %r" % body
            assert any(MESSAGE in (m.get("content") or "") for m in body.get("messages", [])), \
                "the typed message is not in the request: %r" % body
            rid = reqs[-1]["requestId"]
            resp = [e["params"]["response"] for e in cdp.events
                    if e["method"] == "Network.responseReceived" and
                    e["params"]["requestId"] == rid]
            assert resp and resp[0]["status"] == 200, "response: %r" % resp
            assert "text/event-stream" in resp[0].get("mimeType", "") + json.dumps(
                resp[0].get("headers", {})), "not an event stream: %r" % resp[0]
            # The answer is on the page, and it came in steps (streamed), not at once.
            assert MESSAGE in after, "the sent message is not shown:\n%s" % after[:800]
            added = len(after) - len(before) - len(MESSAGE)
            assert added > 3, "no answer shown (page text grew by %d chars):\n%s" % (
                added, after[:800])
            steps = [b for a, b in zip(lengths, lengths[1:]) if b > a]
            assert len(steps) >= 3, "the answer appeared in %d step(s) %r: not streamed" % (
                len(steps), lengths)
            print("  answer shown in %d steps; page text:\n%s" % (len(steps), after[-400:]))
        finally:
            if browser is not None and browser.poll() is None:
                os.killpg(browser.pid, 9)
                browser.wait(10)
            shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    lib.run_tests([test_chat_page_streams_an_answer])
