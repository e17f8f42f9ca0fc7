"""The arbiter's own FastCGI listener for the status page and ping, outside the worker pool.

One daemon thread in the arbiter: it serves ``status_path`` and ``ping_path`` on ``status_listen`` and,
every ``interval`` seconds, samples the pool (high-water marks, max-children episodes, the process
manager's view). Workers never touch it, so it answers while every worker is busy. It speaks FastCGI
through the sans-IO ``fcgipool.protocol`` and holds no lock a worker could hold.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import config, protocol
from ..config_status import PingPath, PingResponse, StatusPath
from ..peer import describe_peer
from .address import parse_address
from .formats import parse_query, render
from .monitor import PoolMonitor, PoolStatus

__all__ = ["StatusServer", "handle_request"]

_NO_CACHE = (
    b"Expires: Thu, 01 Jan 1970 00:00:00 GMT\r\nCache-Control: no-cache, no-store, must-revalidate, max-age=0\r\n"
)
_SEND_TIMEOUT = 2.0
_MAX_CONNS = 64


def _request_path(params: dict[str, str]) -> tuple[str, str]:
    query = params.get("QUERY_STRING", "")
    for key in ("DOCUMENT_URI", "SCRIPT_NAME"):
        if params.get(key):
            return params[key], query
    uri = params.get("REQUEST_URI", "")
    path, _, q = uri.partition("?")
    return path, query or q


def handle_request(
    params: dict[str, str],
    *,
    status_path: str,
    ping_path: str,
    ping_response: str,
    sample: Callable[[], PoolStatus],
) -> bytes:
    """CGI-style response (headers + body) for one request to the status listener."""
    path, query = _request_path(params)
    head = params.get("REQUEST_METHOD", "GET").upper() == "HEAD"
    if ping_path and path == ping_path:
        body = ping_response.encode()
        ctype = "text/plain"
        status = "200 OK"
    elif status_path and path == status_path:
        fmt, full, extra = parse_query(query)
        ctype, body = render(sample(), fmt, full, extra)
        status = "200 OK"
    else:
        status, ctype = "404 Not Found", "text/plain"
        known = " and ".join(p for p in (status_path, ping_path) if p)
        body = f"File not found. This listener serves only {known}.\n".encode()
    headers = f"Status: {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n".encode()
    return headers + _NO_CACHE + b"\r\n" + (b"" if head else body)


class _Client:
    __slots__ = ("conn", "params", "peer", "sock")

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        self.conn = protocol.Connection(max_params_size=64 * 1024)
        self.params: dict[str, str] | None = None


class StatusServer:
    def __init__(
        self,
        monitor: PoolMonitor,
        address: str = "",
        *,
        status_path: str = StatusPath.default,
        ping_path: str = PingPath.default,
        ping_response: str = PingResponse.default,
        interval: float = 0.1,
        on_sample: Callable[[PoolStatus], None] | None = None,
        umask: int = 0,
        log: Any = None,
    ) -> None:
        self.monitor = monitor
        self.address = address
        self.status_path = status_path
        self.ping_path = ping_path
        self.ping_response = ping_response
        self.interval = interval
        self.on_sample = on_sample
        self.umask = umask
        self.log = log or logging.getLogger("fcgipool.status")
        self.sock: socket.socket | None = None
        self._sel: selectors.BaseSelector | None = None
        self._clients: dict[int, _Client] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = -1, -1
        self._unix_path: str | None = None
        self._unix_ino = 0
        os.register_at_fork(after_in_child=self._after_fork_in_child)

    @classmethod
    def from_config(cls, cfg: Any, monitor: PoolMonitor, *, on_sample: Any = None, log: Any = None) -> StatusServer:
        return cls(
            monitor,
            config.get(cfg, "status_listen"),
            status_path=config.get(cfg, "status_path"),
            ping_path=config.get(cfg, "ping_path"),
            ping_response=config.get(cfg, "ping_response"),
            on_sample=on_sample,
            umask=config.get(cfg, "umask") or 0,
            log=log,
        )

    # --- lifecycle (arbiter main thread) -------------------------------------------------------------------
    def start(self) -> None:
        if self.address:
            self.sock = self._bind(self.address)
            self.log.info(
                "Status listener at %s (status %s, ping %s)",
                self.address,
                self.status_path or "off",
                self.ping_path or "off",
            )
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        if self.sock is not None:
            self._sel.register(self.sock, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="fcgipool-status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self._close_all()
        if self._unix_path:
            with contextlib.suppress(OSError):
                if os.stat(self._unix_path).st_ino == self._unix_ino:  # not a successor's socket
                    os.unlink(self._unix_path)

    def _bind(self, address: str) -> socket.socket:
        family, addr = parse_address(address)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if family == socket.AF_UNIX:
                # a stale socket of an earlier run goes; a live one only when we are the new master of a
                # USR2 upgrade (gunicorn sets GUNICORN_PID), otherwise bind() reports "address in use"
                with contextlib.suppress(FileNotFoundError):
                    if os.path.exists(addr) and (not _in_use(addr) or os.environ.get("GUNICORN_PID")):
                        os.unlink(addr)
                old = os.umask(self.umask)
                try:
                    sock.bind(addr)
                finally:
                    os.umask(old)
                self._unix_path = addr
                self._unix_ino = os.stat(addr).st_ino
            else:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(addr)
            sock.listen(64)
        except OSError as exc:
            sock.close()
            raise RuntimeError(f"cannot listen for status on {address}: {exc.strerror or exc}") from exc
        sock.setblocking(False)
        os.set_inheritable(sock.fileno(), False)
        return sock

    def _after_fork_in_child(self) -> None:
        # a worker must not hold the status listener open (nor answer on it)
        self._stop.set()
        self._close_all(unlink=False)

    def _close_all(self, unlink: bool = True) -> None:
        for c in list(self._clients.values()):
            with contextlib.suppress(OSError):
                c.sock.close()
        self._clients.clear()
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None
        if self._sel is not None:
            with contextlib.suppress(OSError, ValueError):
                self._sel.close()
            self._sel = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_r = self._wake_w = -1

    # --- the thread --------------------------------------------------------------------------------------
    def sample(self) -> PoolStatus:
        status = self.monitor.sample()
        if self.on_sample is not None:
            try:
                self.on_sample(status)
            except Exception:
                self.log.exception("status sample hook failed")
        return status

    def _run(self) -> None:
        next_sample = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_sample:
                try:
                    self.sample()
                except Exception:
                    self.log.exception("sampling the pool failed")
                next_sample = now + self.interval
            sel = self._sel
            if sel is None:
                return
            try:
                events = sel.select(max(0.0, next_sample - time.monotonic()))
            except (OSError, ValueError):
                return
            for key, _ in events:
                if key.fileobj == self._wake_r:
                    return
                if self.sock is not None and key.fileobj is self.sock:
                    self._accept()
                else:
                    self._readable(key.data)

    def _accept(self) -> None:
        assert self.sock is not None and self._sel is not None
        for _ in range(16):
            try:
                sock, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    self.log.error("status listener: %s", exc)
                return
            if len(self._clients) >= _MAX_CONNS:
                sock.close()
                continue
            sock.setblocking(False)
            client = _Client(sock, describe_peer(sock, addr))
            self._clients[sock.fileno()] = client
            self._sel.register(sock, selectors.EVENT_READ, client)

    def _drop(self, client: _Client) -> None:
        self._clients.pop(client.sock.fileno(), None)
        if self._sel is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._sel.unregister(client.sock)
        with contextlib.suppress(OSError):
            client.sock.close()

    def _send(self, client: _Client, data: bytes) -> bool:
        if not data:
            return True
        client.sock.settimeout(_SEND_TIMEOUT)
        try:
            client.sock.sendall(data)
        except OSError:
            return False
        finally:
            with contextlib.suppress(OSError):
                client.sock.setblocking(False)
        return True

    def _readable(self, client: _Client) -> None:
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        conn = client.conn
        try:
            conn.receive_data(data)
            while True:
                event = conn.next_event()
                if event is protocol.NEED_DATA:
                    break
                if isinstance(event, protocol.RequestStarted):
                    client.params = event.params
                elif isinstance(event, protocol.StdinEnd):
                    if not self._respond(client, event.request_id):
                        return
                elif isinstance(event, protocol.AbortRequested):
                    if not self._send(client, conn.end_request(event.request_id)):
                        self._drop(client)
                        return
                elif isinstance(event, protocol.ConnectionClosed):
                    self._drop(client)
                    return
                if not self._send(client, conn.data_to_send()):
                    self._drop(client)
                    return
                if conn.our_state is protocol.State.MUST_CLOSE:
                    self._drop(client)
                    return
            if not self._send(client, conn.data_to_send()):
                self._drop(client)
                return
        except protocol.FastCGIError as exc:
            with contextlib.suppress(Exception):
                self._send(client, conn.data_to_send())
            self.log.warning("status listener: closing connection from %s: %s", client.peer, exc)
            self._drop(client)
            return
        if not data:
            self._drop(client)

    def _respond(self, client: _Client, request_id: int) -> bool:
        try:
            body = handle_request(
                client.params or {},
                status_path=self.status_path,
                ping_path=self.ping_path,
                ping_response=self.ping_response,
                sample=self.sample,
            )
        except Exception:
            self.log.exception("status page failed")
            body = b"Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\nstatus page failed\n"
        client.params = None
        if not self._send(client, client.conn.send_response(request_id, body)):
            self._drop(client)
            return False
        return True


def _in_use(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.settimeout(0.5)
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()
