"""Drive a real headless Chromium over the Chrome DevTools Protocol, with no extra package.

Chromium's ``--remote-debugging-pipe`` speaks CDP as NUL-separated JSON messages on file
descriptors 3 (commands in) and 4 (replies and events out), the transport Puppeteer uses.
https://chromedevtools.github.io/devtools-protocol/ documents the methods used here
(Target, Page, Runtime, Network, Log, Emulation).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--metrics-recording-only",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    """Path of an installed Chromium/Chrome binary, or None."""
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _high(fd: int) -> int:
    """Move a descriptor above 9 so the 3</4> redirections (bash: multi-digit fds) cannot clobber it."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return moved


class Chromium:
    """One headless browser with one page, attached in flat session mode."""

    def __init__(self, binary: str, profile: Path, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._buffer = b""
        self._next = 0
        commands_read, commands_write = (_high(fd) for fd in os.pipe())
        replies_read, replies_write = (_high(fd) for fd in os.pipe())
        argv = [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"]
        script = f"exec {shlex.join(argv)} 3<&{commands_read} 4>&{replies_write}"
        self.process = subprocess.Popen(
            [shutil.which("bash") or "/bin/bash", "-c", script],
            pass_fds=(commands_read, replies_write),
            stdout=subprocess.DEVNULL,
            stderr=None if os.environ.get("RADVQA_CHROMIUM_LOG") else subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so close() can end every process it spawned
        )
        os.close(commands_read)
        os.close(replies_write)
        self._out, self._in = commands_write, replies_read
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

    def close(self) -> None:
        """End the browser (the process this helper started) and its pipes."""
        try:
            self.send("Browser.close")
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)  # the group this helper started, nothing else
            self.process.wait()
        for fd in (self._out, self._in):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- transport

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from Chromium")
            ready, _, _ = select.select([self._in], [], [], left)
            if ready:
                chunk = os.read(self._in, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed its debugging pipe")
                self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        data: dict[str, Any] = json.loads(message)
        return data

    def send(self, method: str, params: dict[str, Any] | None = None, page: bool = False) -> dict[str, Any]:
        """Send one command (to the page's session when ``page``) and return its result."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if page:
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            if "method" in reply:
                self.events.append(reply)

    def page(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A command to the page."""
        return self.send(method, params, page=True)

    def wait_event(self, method: str) -> dict[str, Any]:
        """Wait for (and return) the first event named ``method`` not yet consumed."""
        deadline = time.monotonic() + self.timeout
        while True:
            for event in self.events:
                if event["method"] == method and not event.get("_seen"):
                    event["_seen"] = True
                    return event
            message = self._read_message(deadline)
            if "method" in message:
                self.events.append(message)

    # ---------------------------------------------------------------- page helpers

    def viewport(self, width: int, height: int, mobile: bool = False) -> None:
        """Emulate a screen of ``width`` x ``height`` CSS pixels."""
        self.page(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
        )

    def open(self, url: str) -> None:
        """Navigate and wait until the gallery script marked the page ready."""
        self.page("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")
        deadline = time.monotonic() + self.timeout
        while not self.evaluate("document.documentElement.getAttribute('data-ready') === 'true'"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}: the gallery never became ready")
            time.sleep(0.05)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page; a page exception raises."""
        reply = self.page("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def key(self, key: str, code: str | None = None, key_code: int = 0) -> None:
        """Press and release one key, as a user would (trusted input events)."""
        params = {"key": key, "code": code or key, "windowsVirtualKeyCode": key_code}
        if len(key) == 1:
            params["text"] = key
        self.page("Input.dispatchKeyEvent", {"type": "keyDown", **params})
        self.page("Input.dispatchKeyEvent", {"type": "keyUp", **params})

    def screenshot(self, path: Path, full_page: bool = False) -> bytes:
        """Save a PNG screenshot of the viewport (or the whole page) and return its bytes."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
        data = base64.b64decode(self.page("Page.captureScreenshot", params)["data"])
        path.write_bytes(data)
        return data
