"""Open an HTML page in headless Chromium and report what went wrong: JS errors, console errors, network use.

Talks to Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``: commands on fd 3,
replies and events on fd 4, JSON messages ended by a NUL byte), so nothing listens on a port. While
the page loads it records

* uncaught exceptions (``Runtime.exceptionThrown``), ``console.error`` / ``console.assert`` calls,
* browser log entries of level error (failed resource loads, blocked content, ...),
* every request to something other than ``file:``, ``data:``, ``blob:`` or ``about:`` (a report must
  open without network access),

waits until ``document.body.dataset.ready == "1"`` (the report sets it when its script has run), can
evaluate expressions in the page, and takes a PNG screenshot. ``python tests/support/browser_check.py
PAGE.html [--screenshot OUT.png]`` prints the findings and exits 1 when there are errors.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--hide-scrollbars",
    "--mute-audio",
)
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome:", "devtools:")


_TRAMPOLINE = "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); os.execv(sys.argv[3], sys.argv[3:])"


def _high_pipe() -> tuple[int, int]:
    """A pipe whose two fds are >= 10 (so redirecting onto fds 3 and 4 cannot clobber them)."""
    r, w = os.pipe()
    hr, hw = fcntl.fcntl(r, fcntl.F_DUPFD_CLOEXEC, 10), fcntl.fcntl(w, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(r)
    os.close(w)
    return hr, hw


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable on PATH (or $LINGTRACE_CHROMIUM), else None."""
    env = os.environ.get("LINGTRACE_CHROMIUM")
    if env:
        return env
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageCheck:
    """What loading a page showed. ``ok``: no errors, no network requests, and the page said it was ready."""

    url: str
    errors: list[str] = field(default_factory=list)
    network: list[str] = field(default_factory=list)
    ready: bool = False
    values: dict[str, Any] = field(default_factory=dict)
    screenshot: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.errors and not self.network and self.ready


class _Pipe:
    """A minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, write_fd: int, read_fd: int):
        self.write_fd = write_fd
        self.read_fd = read_fd
        self.buf = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            n = os.write(self.write_fd, data)
            data = data[n:]
        return self.next_id

    def receive(self, deadline: float) -> dict[str, Any] | None:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the debugging pipe")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30.0) -> dict:
        i = self.send(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            msg = self.receive(deadline)
            if msg is None:
                raise TimeoutError(f"Chromium did not answer {method} within {timeout:.0f} s")
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error'].get('message')}")
                return msg.get("result", {})
            self.events.append(msg)

    def drain(self, seconds: float, until: str | None = None) -> None:
        deadline = time.monotonic() + seconds
        while True:
            msg = self.receive(deadline)
            if msg is None:
                return
            self.events.append(msg)
            if until and msg.get("method") == until:
                return


def _describe_exception(details: dict) -> str:
    exc = details.get("exception") or {}
    text = exc.get("description") or details.get("text", "exception")
    where = f"{details.get('url', '')}:{details.get('lineNumber', 0) + 1}:{details.get('columnNumber', 0) + 1}"
    return f"uncaught {text.splitlines()[0]} at {where}"


def _collect(events: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    errors, network = [], []
    for ev in events:
        method, p = ev.get("method"), ev.get("params", {})
        if method == "Runtime.exceptionThrown":
            errors.append(_describe_exception(p.get("exceptionDetails", {})))
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            errors.append(f"console.{p['type']}: {args}")
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            errors.append(f"log ({e.get('source')}): {e.get('text')} {e.get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            url = p.get("request", {}).get("url", "")
            if not url.startswith(LOCAL_SCHEMES):
                network.append(url)
        elif method == "Network.loadingFailed" and not p.get("canceled"):
            errors.append(f"failed to load a resource: {p.get('errorText')}")
    return errors, network


def check_page(
    page: str | Path,
    screenshot: str | Path | None = None,
    width: int = 1280,
    height: int = 1600,
    full_page: bool = False,
    evaluate: dict[str, str] | None = None,
    timeout: float = 60.0,
    chromium: str | None = None,
) -> PageCheck:
    """Load ``page`` (a file path) in headless Chromium; see the module docstring.

    ``evaluate``: name -> JavaScript expression, evaluated (awaiting promises) after the page is ready;
    the values land in ``PageCheck.values``. ``full_page``: screenshot the whole page (up to 16,000 px).
    """
    exe = chromium or find_chromium()
    if exe is None:
        raise FileNotFoundError("no Chromium found (install Debian's `chromium` package or set LINGTRACE_CHROMIUM)")
    url = Path(page).resolve().as_uri()
    result = PageCheck(url=url)
    profile = tempfile.mkdtemp(prefix="lingtrace-chromium-")
    to_chrome_r, to_chrome_w = _high_pipe()
    from_chrome_r, from_chrome_w = _high_pipe()
    log_path = Path(profile) / "chromium.log"
    args = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", "--remote-debugging-pipe", "about:blank"]
    with open(log_path, "wb") as log:
        # a tiny trampoline puts the protocol pipes on fds 3 (commands) and 4 (replies), then becomes Chromium
        proc = subprocess.Popen(
            [sys.executable, "-c", _TRAMPOLINE, str(to_chrome_r), str(from_chrome_w), exe, *args],
            pass_fds=(to_chrome_r, from_chrome_w),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    cdp = _Pipe(to_chrome_w, from_chrome_r)
    try:
        target = cdp.call("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
        session = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for method in ("Runtime.enable", "Log.enable", "Page.enable", "Network.enable"):
            cdp.call(method, session=session)
        cdp.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        cdp.call("Page.navigate", {"url": url}, session=session)
        cdp.drain(timeout, until="Page.loadEventFired")
        deadline = time.monotonic() + min(timeout, 20.0)
        while time.monotonic() < deadline:
            r = cdp.call("Runtime.evaluate", {"expression": "document.body ? document.body.dataset.ready || '' : ''", "returnByValue": True}, session=session)
            if r.get("result", {}).get("value") == "1":
                result.ready = True
                break
            if any(ev.get("method") == "Runtime.exceptionThrown" for ev in cdp.events):
                break  # the page's script crashed: it will never say it is ready
            cdp.drain(0.1)
        for name, expr in (evaluate or {}).items():
            r = cdp.call("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True}, session=session)
            if "exceptionDetails" in r:
                result.errors.append(f"evaluating {name}: {_describe_exception(r['exceptionDetails'])}")
            else:
                result.values[name] = r.get("result", {}).get("value")
        cdp.drain(0.3)
        if screenshot is not None:
            params: dict[str, Any] = {"format": "png"}
            if full_page:
                metrics = cdp.call("Page.getLayoutMetrics", session=session)
                size = metrics.get("cssContentSize") or metrics.get("contentSize")
                params.update(
                    {
                        "captureBeyondViewport": True,
                        "clip": {"x": 0, "y": 0, "width": width, "height": min(float(size["height"]), 16000.0), "scale": 1},
                    }
                )
            shot = cdp.call("Page.captureScreenshot", params, session=session, timeout=timeout)
            out = Path(screenshot)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(base64.b64decode(shot["data"]))
            result.screenshot = out
        try:
            cdp.call("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError):
            pass
    except (RuntimeError, TimeoutError) as e:
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        raise RuntimeError(f"headless Chromium failed: {e}\n{tail}") from e
    finally:
        os.close(to_chrome_w)
        os.close(from_chrome_r)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)
    errors, network = _collect(cdp.events)
    result.errors = errors + result.errors
    result.network = network
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Load an HTML page in headless Chromium; report JS/console errors and network use.")
    p.add_argument("page", help="HTML file")
    p.add_argument("--screenshot", help="write a PNG screenshot here")
    p.add_argument("--full-page", action="store_true", help="screenshot the whole page, not only the window")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=1600)
    args = p.parse_args(argv)
    res = check_page(args.page, args.screenshot, args.width, args.height, full_page=args.full_page)
    for e in res.errors:
        print(f"error: {e}")
    for u in res.network:
        print(f"network request: {u}")
    print(f"ready: {res.ready}")
    if res.screenshot:
        print(f"screenshot: {res.screenshot}")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
