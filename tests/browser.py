"""A headless Chromium driven over the DevTools protocol, for tests of the pages nnrun writes.

`--remote-debugging-pipe` makes Chromium read protocol commands from its fd 3 and write replies and
events to its fd 4, each message JSON ended by a NUL byte: no websocket client and no port are needed.
`Chromium.open(url)` loads a page in a fresh profile and records what a page's user would not want:
console errors and warnings, uncaught exceptions, log entries of level error (a blocked script or style,
an image that did not load, a refused Content-Security-Policy) and JavaScript dialogs (an `alert` that
injected markup would open; they are dismissed). Skip a test with `find_chromium() is None`.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
"""Executables tried, in this order (`NNRUN_TEST_CHROMIUM` names another)."""


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) executable, None when there is none."""
    given = os.environ.get("NNRUN_TEST_CHROMIUM")
    if given:
        return shutil.which(given)
    return next((path for path in map(shutil.which, NAMES) if path), None)


class BrowserError(AssertionError):
    """The browser did not answer as expected (with the end of its stderr)."""


class Chromium:
    """One headless browser with one page attached (`session`), driven by `call`."""

    def __init__(self, executable: str, *, width: int = 1280, height: int = 1000, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._profile = tempfile.TemporaryDirectory(prefix="nnrun-chromium-")
        self._log = open(Path(self._profile.name) / "stderr.log", "wb")  # noqa: SIM115 (closed in close())
        commands_read, commands_write = os.pipe()
        replies_read, replies_write = os.pipe()
        # Above fd 10, so that placing them at 3 and 4 in the child never overwrites one with the other.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands_read, replies_write)]
        os.close(commands_read)
        os.close(replies_write)

        def place() -> None:
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        profile = Path(self._profile.name) / "profile"
        self.process = subprocess.Popen(
            [executable, "--headless=new", "--disable-gpu", "--no-sandbox", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--disable-background-networking", "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, pass_fds=(3, 4), preexec_fn=place)
        for fd in high:
            os.close(fd)
        self._out = commands_write
        self._in = replies_read
        self._buffer = b""
        self._next_id = 0
        self.session: str | None = None
        try:
            targets = self.call("Target.getTargets", session=False)["targetInfos"]
            page = next(t for t in targets if t["type"] == "page")
            self.session = self.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True},
                                     session=False)["sessionId"]
            for domain in ("Runtime", "Log", "Page"):
                self.call(f"{domain}.enable")
        except BaseException:
            self.close()
            raise

    # -- the protocol --

    def _send(self, method: str, params: dict[str, Any] | None, session: str | None) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._out, data):]
        return self._next_id

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise BrowserError(f"no answer from Chromium within {self.timeout:.0f} s{self.stderr_tail()}")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium closed the connection{self.stderr_tail()}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        parsed = json.loads(message)
        if parsed.get("method") == "Page.javascriptDialogOpening":  # answer it, or the page hangs
            self._send("Page.handleJavaScriptDialog", {"accept": False}, parsed.get("sessionId"))
        return parsed

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True) -> dict[str, Any]:
        """Send one command (to the page unless `session` is False) and return its result; events that arrive
        meanwhile go to `events`."""
        ident = self._send(method, params, self.session if session else None)
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._receive(deadline)
            if message.get("id") == ident:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, method: str) -> dict[str, Any]:
        """The first event `method` not seen yet (events before it go to `events` too)."""
        for event in self.events:
            if event["method"] == method and not event.get("_seen"):
                event["_seen"] = True
                return event
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._receive(deadline)
            if "method" in message:
                self.events.append(message)
                if message["method"] == method:
                    message["_seen"] = True
                    return message

    # -- what tests use --

    def open(self, url: str) -> None:
        """Load `url` and wait for its load event."""
        self.call("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serializable values)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: str | Path) -> Path:
        """The whole page (not only the window) as a PNG file."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                    "clip": clip})["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions, error log entries and dialogs, as text."""
        found = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                found.append(f"console.{params['type']}: {[a.get('value') for a in params.get('args', [])]}")
            elif method == "Runtime.exceptionThrown":
                found.append(f"exception: {params.get('exceptionDetails')}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
                entry = params["entry"]
                where = f" {entry['url']}" if entry.get("url") else ""
                found.append(f"log {entry.get('level')} ({entry.get('source')}): {entry.get('text')}{where}")
            elif method == "Page.javascriptDialogOpening":
                found.append(f"dialog {params.get('type')}: {params.get('message')}")
        return found

    def stderr_tail(self) -> str:
        self._log.flush()
        try:
            text = (Path(self._profile.name) / "stderr.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\nChromium's stderr ends:\n" + text[-2000:] if text else ""

    def close(self) -> None:
        """Close the browser (the protocol's Browser.close, then terminate it if it lingers)."""
        try:
            if self.process.poll() is None:
                try:
                    self._send("Browser.close", None, None)
                except OSError:
                    pass
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=5)
        finally:
            for fd in (self._out, self._in):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._log.close()
            self._profile.cleanup()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
