"""Headless Chromium for the page tests, driven over the DevTools protocol on ``--remote-debugging-pipe``.

The pipe (fd 3 in, fd 4 out, messages ended by NUL) needs no port, no websocket client and no
package beyond the standard library: the browser is Debian's ``chromium`` and nothing is downloaded.
"""

from __future__ import annotations

import base64
import fcntl
import html
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

#: Flags that run as root in a container without a display, GPU or network.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--mute-audio",
    "--window-size=1280,900",
    "--remote-debugging-pipe",
)

#: What the page test needs from the page: every <audio> and <img>, and how far each has loaded.
MEDIA_STATE = """JSON.stringify({
  audio: [...document.querySelectorAll('audio')].map(a => ({
    src: a.getAttribute('src'), ready: a.readyState, duration: a.duration, error: a.error && a.error.code})),
  img: [...document.images].map(i => ({src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth})),
})"""


def _above_9(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Chromium:
    """One headless browser process; :meth:`call` sends a DevTools command and returns its result."""

    def __init__(self, exe: str, timeout: float = 30.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        to_browser, self._w = os.pipe()
        self._r, from_browser = os.pipe()
        # The browser reads fd 3 and writes fd 4. Its pipe ends are moved above 9 first and bash puts them at
        # 3 and 4 after the fork, so no other fd of the child (subprocess's error pipe) can be in the way;
        # bash, because dash takes single-digit fds only.
        to_browser, from_browser = (_above_9(fd) for fd in (to_browser, from_browser))
        cmd = [
            shutil.which("bash") or "/bin/bash",
            "-c",
            f'exec "$@" 3<&{to_browser} 4>&{from_browser} {to_browser}<&- {from_browser}>&-',
            "sh",
            exe,
            *FLAGS,
            f"--user-data-dir={self.profile}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            cmd, pass_fds=(to_browser, from_browser), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buf = b""
        self._next = 0
        self.events: list[dict] = []

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for e in self.events:
                if e.get("method") == method:
                    return e
            self.events.append(self._read(deadline))

    def _read(self, deadline: float | None = None) -> dict:
        deadline = deadline or time.monotonic() + self.timeout
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError(f"chromium sent nothing for {self.timeout:.0f} s")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
                raise RuntimeError(f"chromium closed the DevTools pipe: {err[-2000:]}")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)
        self.proc.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)


def load_page(exe: str, page: Path, screenshot: Path, timeout: float = 30.0) -> dict:
    """Open ``page`` from the file system, wait until its media have loaded (or ``timeout``), write a full-page
    PNG to ``screenshot``; returns ``{"audio": [...], "img": [...], "errors": [...]}`` (see :data:`MEDIA_STATE`;
    ``errors`` = console errors, uncaught exceptions and failed loads the browser logged)."""
    browser = Chromium(exe, timeout)
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.call(f"{domain}.enable", session=session)
        browser.call("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
        browser.wait_event("Page.loadEventFired")
        deadline = time.monotonic() + timeout
        while True:
            value = browser.call(
                "Runtime.evaluate", {"expression": MEDIA_STATE, "returnByValue": True}, session=session
            )["result"]["value"]
            state = json.loads(value)
            loaded = all(a["ready"] >= 1 or a["error"] for a in state["audio"]) and all(
                i["complete"] for i in state["img"]
            )
            if loaded or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        size = browser.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
        shot = browser.call(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
            },
            session=session,
        )
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        state["errors"] = [_error_text(e) for e in browser.events if _is_error(e)]
        return state
    finally:
        browser.close()


def _is_error(event: dict) -> bool:
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.consoleAPICalled":
        return params.get("type") in ("error", "assert")
    if method == "Runtime.exceptionThrown":
        return True
    return method == "Log.entryAdded" and params["entry"].get("level") == "error"


def _error_text(event: dict) -> str:
    params = event["params"]
    if "entry" in params:
        return f"{params['entry'].get('text')} ({params['entry'].get('url', '')})"
    if "exceptionDetails" in params:
        return json.dumps(params["exceptionDetails"])[:500]
    return " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))


def check_page(exe: str, page: Path, screenshot: Path) -> dict:
    """Load ``page`` in Chromium and assert what a reader needs: every <audio> has loaded its metadata and has a
    length, every image has loaded, nothing was logged as an error, every link is a relative path to a file
    next to the page, and a screenshot was taken. Returns :func:`load_page`'s state."""
    text = page.read_text()
    links = [html.unescape(x) for x in re.findall(r'(?:src|href)="([^"]*)"', text)]
    assert links, "the page links nothing"
    for link in links:
        assert "://" not in link and not link.startswith("/"), f"not a relative link: {link}"
        assert (page.parent / link).is_file(), f"the page links a missing file: {link}"
    state = load_page(exe, page, screenshot)
    assert state["errors"] == [], state["errors"]
    silent = [a for a in state["audio"] if a["error"] or a["ready"] < 1 or not (a["duration"] or 0) > 0]
    assert not silent, f"players that cannot play: {silent}"
    assert all(i["complete"] and i["width"] > 0 for i in state["img"]), state["img"]
    assert screenshot.stat().st_size > 10_000
    return state
