"""The load for the PHP-FPM rows: the fcgipool rows' own client (loadtest/faults/load.py: closed-loop keep-alive
threads, bounded in count and time), sending app.php's requests; each result keyed by its request id."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from loadtest.faults import load as shared

HOST = "127.0.0.1"  # the only address this load ever talks to


@dataclass
class Result:
    rid: str  # the id in the URI, also in the access log and the ledger
    method: str
    path: str
    start: float  # time.time() when the request was sent
    end: float
    status: int | None  # None: no HTTP answer (connection refused/reset/closed, client timeout)
    error: str | None = None
    bg_ms: int = 0  # after-response work the request asked for

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @classmethod
    def of(cls, r: shared.Result, rid: str, bg_ms: int = 0) -> Result:
        return cls(rid, r.method, r.path, r.started, r.ended, r.status or None, r.error or None, bg_ms)


def app_request(tag: str, method: str = "POST", respond_ms: int = 5, bg_ms: int = 250,
                ) -> Callable[[int], shared.Request]:
    """app.php requests with id ``<tag>-<seq>``: answer after ``respond_ms``, then ``bg_ms`` of after-response
    work (fastcgi_finish_request); a POST carries a small form, like a signup."""

    def make(seq: int) -> shared.Request:
        rid = f"{tag}-{seq}"
        path = "/app.php?" + urlencode({"id": rid, "respond_ms": respond_ms, "bg_ms": bg_ms})
        if method != "POST":
            return method, path, None, {}
        return method, path, urlencode({"email": f"{rid}@example.com"}).encode(), shared.FORM

    return make


def one(port: int, rid: str, method: str, path: str, body: dict | None = None, timeout: float = 30.0) -> Result:
    """One request on a new connection of its own."""
    data = urlencode(body).encode() if body is not None else None
    result, conn = shared.send_one(f"http://{HOST}:{port}", (method, path, data, shared.FORM if data else {}),
                                   timeout)
    if conn is not None:
        conn.close()
    return Result.of(result, rid)


class Load:
    """``clients`` keep-alive connections sending app.php requests until :meth:`stop`, ``seconds`` or
    ``max_requests``, with ``pause`` s between a client's requests (the fcgipool rows use 20 ms)."""

    def __init__(self, port: int, *, tag: str = "r", method: str = "POST", respond_ms: int = 5, bg_ms: int = 250,
                 clients: int = 4, pause: float = 0.02, seconds: float = 120.0, max_requests: int = 20_000,
                 timeout: float = 15.0):
        self.tag, self.bg_ms, self.clients, self.pause = tag, bg_ms, clients, pause
        self._load = shared.Load(f"http://{HOST}:{port}", app_request(tag, method, respond_ms, bg_ms),
                                 connections=clients, duration=seconds, max_requests=max_requests, pause=pause,
                                 timeout=timeout)

    def start(self) -> Load:
        self._load.start()
        return self

    def stop(self) -> None:
        """No new request starts; the ones in flight go on (:meth:`join` waits for them)."""
        self._load.stop(wait=0)

    def join(self) -> list[Result]:
        """Stop, wait for the requests in flight (up to the client timeout), return every result by start time."""
        results = [Result.of(r, f"{self.tag}-{r.seq}", self.bg_ms) for r in self._load.stop()]
        return sorted(results, key=lambda r: r.start)

    def wait(self) -> list[Result]:
        """Let the load run out by itself (``seconds`` or ``max_requests``), then :meth:`join`."""
        self._load.wait()
        return self.join()
