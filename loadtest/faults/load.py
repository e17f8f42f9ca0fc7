"""A small threaded keep-alive HTTP load for the fault rows: N connections, bounded in count and time.

Every request carries the row's marker (``fault=<tag>-<seq>`` in the query, and in a signup's address), so
the row finds exactly its own requests in nginx's access log and in the ledger's lost-task list.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

# (method, path with query, body or None, headers)
Request = tuple[str, str, bytes | None, dict[str, str]]
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass
class Result:
    seq: int
    method: str
    path: str
    status: int  # 0: no HTTP answer (connection refused, reset, timed out)
    error: str
    started: float  # time.time()
    ended: float

    @property
    def latency_ms(self) -> float:
        return (self.ended - self.started) * 1000


def marked(path: str, tag: str, seq: int) -> str:
    return f"{path}{'&' if '?' in path else '?'}fault={tag}-{seq}"


def signup(tag: str) -> Callable[[int], Request]:
    """POST /signup with a unique address per request; answered 202, owes record_signup + welcome_mail."""

    def make(seq: int) -> Request:
        return "POST", marked("/signup", tag, seq), f"email=f-{tag}-{seq}%40example.com".encode(), FORM

    return make


def post(path: str, tag: str) -> Callable[[int], Request]:
    """POST ``path`` with a small form body (nginx never resends a POST: every failure reaches the client)."""

    def make(seq: int) -> Request:
        return "POST", marked(path, tag, seq), b"hello=1", FORM

    return make


def get(path: str, tag: str) -> Callable[[int], Request]:
    def make(seq: int) -> Request:
        return "GET", marked(path, tag, seq), None, {}

    return make


def send_one(base_url: str, req: Request, timeout: float, seq: int = 0,
             conn: http.client.HTTPConnection | None = None) -> tuple[Result, http.client.HTTPConnection | None]:
    """Send one request (on ``conn`` if given); returns the result and the connection to reuse, if any."""
    method, path, body, headers = req
    url = urlsplit(base_url)
    started = time.time()
    try:
        if conn is None:
            conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=timeout)
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        result = Result(seq, method, path, resp.status, "", started, time.time())
        if resp.will_close:
            conn.close()
            conn = None
        return result, conn
    except (OSError, http.client.HTTPException) as exc:
        if conn is not None:
            conn.close()
        return Result(seq, method, path, 0, f"{type(exc).__name__}: {exc}", started, time.time()), None


class Load:
    """``connections`` threads send ``make(seq)`` in a closed loop (``pause`` s between requests) until
    :meth:`stop`, ``duration`` s or ``max_requests`` requests, whichever comes first."""

    running: set[Load] = set()  # so a row that raised cannot leave its load running into the next row

    def __init__(self, base_url: str, make: Callable[[int], Request], *, connections: int = 4,
                 duration: float = 60.0, max_requests: int = 5000, pause: float = 0.02, timeout: float = 70.0,
                 first_seq: int = 0) -> None:
        self.base_url = base_url
        self.make = make
        self.connections = connections
        self.duration = duration
        self.max_requests = max_requests
        self.pause = pause
        self.timeout = timeout
        self.results: list[Result] = []
        self._seq = itertools.count(first_seq)
        self._sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Load:
        Load.running.add(self)
        deadline = time.monotonic() + self.duration
        for i in range(self.connections):
            t = threading.Thread(target=self._run, args=(deadline,), name=f"faults-load-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _next(self) -> int | None:
        with self._lock:
            if self._sent >= self.max_requests:
                return None
            self._sent += 1
            return next(self._seq)

    def _run(self, deadline: float) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            seq = self._next()
            if seq is None:
                break
            result, conn = send_one(self.base_url, self.make(seq), self.timeout, seq, conn)
            with self._lock:
                self.results.append(result)
            if self.pause:
                self._stop.wait(self.pause)
        if conn is not None:
            conn.close()

    def stop(self, wait: float | None = None) -> list[Result]:
        """Stop sending; wait (up to the client timeout) for the requests in flight; return every result."""
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5 if wait is None else wait)
        Load.running.discard(self)
        with self._lock:
            return sorted(self.results, key=lambda r: r.seq)

    def wait(self) -> list[Result]:
        """Let the load run out by itself (duration or max_requests), then return every result."""
        for t in self._threads:
            t.join()
        return self.stop()


def stop_all() -> None:
    for load in list(Load.running):
        load.stop()


def burst(base_url: str, make: Callable[[int], Request], count: int, timeout: float = 30.0,
          first_seq: int = 0) -> list[Result]:
    """``count`` requests at once, one connection each (in-flight work for the TERM and down rows)."""
    results: list[Result] = []
    lock = threading.Lock()

    def one(seq: int) -> None:
        result, conn = send_one(base_url, make(seq), timeout, seq)
        if conn is not None:
            conn.close()
        with lock:
            results.append(result)

    threads = [threading.Thread(target=one, args=(first_seq + i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 5)
    return sorted(results, key=lambda r: r.seq)
