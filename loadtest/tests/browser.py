"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol, for tests. Stdlib only: a minimal
websocket client (RFC 6455: text frames, client masking, ping) -- no Playwright or pyppeteer browser downloads.

    with Chromium() as browser:
        page = browser.open(Path("report/index.html"))
        page.images()         # [{"alt", "complete", "width", "height"}] after every <img> decoded
        page.errors           # console errors, uncaught exceptions, failed loads (Log domain)
        page.screenshot(out)  # the whole page, PNG
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
MISSING = "chromium is not installed: `apt-get install chromium` (make install-system)"
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WebSocket:
    """A blocking websocket client: enough for the DevTools protocol on 127.0.0.1."""

    def __init__(self, url: str, timeout: float = 30) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv_some()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        accept = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
        if not head.startswith(b"HTTP/1.1 101") or accept.encode() not in head:
            raise ConnectionError(f"websocket upgrade refused: {head.decode(errors='replace')}")

    def _recv_some(self) -> bytes:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the browser closed the DevTools connection")
        return chunk

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.buf += self._recv_some()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        length = bytes([0x80 | n]) if n < 126 else (
            bytes([0x80 | 126]) + struct.pack("!H", n) if n < 1 << 16 else bytes([0x80 | 127]) + struct.pack("!Q", n))
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode]) + length + mask + masked)

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def recv(self) -> str:
        parts: list[bytes] = []
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else b""
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise ConnectionError("the browser closed the DevTools connection")
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode in (0x0, 0x1):
                parts.append(payload)
                if b0 & 0x80:
                    return b"".join(parts).decode()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send_frame(0x8, b"")
        self.sock.close()


class Page:
    """One tab: commands by name, events kept in order; ``errors`` collects what a person would see as broken."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.errors: list[str] = []

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        ident = self.next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == ident:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))
            if "method" in msg:
                self._event(msg)
        raise TimeoutError(f"no answer to {method} within {timeout} s")

    def wait_event(self, method: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event["method"] == method:
                return event
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if "method" in msg:
                self._event(msg)
                if msg["method"] == method:
                    return msg
        raise TimeoutError(f"no {method} within {timeout} s")

    def _event(self, msg: dict[str, Any]) -> None:
        self.events.append(msg)
        method, params = msg["method"], msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append(f"uncaught: {details.get('exception', {}).get('description') or details.get('text')}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"evaluate failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def images(self) -> list[dict[str, Any]]:
        """Every <img> once decoded (or failed to): its alt text, whether it loaded, and its natural size."""
        return list(self.evaluate(
            "Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)"
            ".then(() => ({alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}))))"
        ))  # fmt: skip

    def screenshot(self, path: Path, width: int) -> tuple[int, int]:
        """The whole page at ``width`` CSS pixels as a PNG; returns its size in pixels."""
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)  # fmt: skip
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"])
        path.write_bytes(data)
        return png_size(data)


def png_size(data: bytes) -> tuple[int, int]:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    width, height = struct.unpack("!II", data[16:24])
    return width, height


class Chromium:
    """A headless Chromium with its own profile in a temp directory, DevTools on a free port of 127.0.0.1."""

    def __init__(self, width: int = 1100, height: int = 900) -> None:
        self.width, self.height = width, height
        self.dir = Path(tempfile.mkdtemp(prefix="fcgipool-chromium-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.sockets: list[WebSocket] = []

    def start(self) -> Chromium:
        if CHROMIUM is None:
            raise RuntimeError(MISSING)
        argv = [CHROMIUM, "--headless", "--disable-gpu", "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0", f"--user-data-dir={self.dir}", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--mute-audio",
                f"--window-size={self.width},{self.height}", "about:blank"]  # fmt: skip
        if os.geteuid() == 0:
            argv.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        with open(self.dir / "stderr.log", "wb") as stderr:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr,
                                         start_new_session=True)  # its renderer and GPU processes: one group to stop
        active = self.dir / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (active.exists() and active.read_text().count("\n") >= 1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"chromium did not start: {self.log_text()[-2000:]}")
            time.sleep(0.05)
        self.port = int(active.read_text().split()[0])
        return self

    def log_text(self) -> str:
        path = self.dir / "stderr.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def open(self, target: Path, timeout: float = 60) -> Page:
        """Load ``target`` (a file) in the first tab and wait for its load event."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as resp:
            tabs = [t for t in json.load(resp) if t.get("type") == "page"]
        ws = WebSocket(tabs[0]["webSocketDebuggerUrl"], timeout=timeout)
        self.sockets.append(ws)
        page = Page(ws)
        for domain in ("Runtime", "Log", "Page"):
            page.call(f"{domain}.enable")
        page.events.clear()  # only this navigation's load event counts
        page.call("Page.navigate", url=target.resolve().as_uri())
        page.wait_event("Page.loadEventFired", timeout)
        return page

    def stop(self) -> None:
        for ws in self.sockets:
            ws.close()
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
