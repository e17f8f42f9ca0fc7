"""A stand-in stack for testing the load-test pipeline without nginx and fcgipool (test fixture only).

One process, real sockets: a threaded HTTP server whose ``workers`` slots behave like pool workers (held for
the response *and* the after-response work), the app's routes, a status page with the contract's keys, a
ledger, a mail list, a JSON access log, and TTIN/TTOU resizing. Run: python -m loadtest.tests.fakestack DIR
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse


class Pool:
    def __init__(self, workers: int, budget: float) -> None:
        self.workers = workers
        self.budget = budget
        self.cond = threading.Condition()
        self.busy = self.finishing = self.waiting = self.accepted = self.max_reached = 0
        self.bg_run = self.bg_lost = 0
        self.bg_seconds = 0.0
        self.ledger: dict[str, dict[str, int]] = {}
        self.mail: list[str] = []
        self.locks: dict[str, threading.Lock] = {}

    def acquire(self) -> None:
        with self.cond:
            self.waiting += 1
            if self.busy >= self.workers:
                self.max_reached += 1
            while self.busy >= self.workers:
                self.cond.wait()
            self.waiting -= 1
            self.busy += 1
            self.accepted += 1

    def release(self) -> None:
        with self.cond:
            self.busy -= 1
            self.cond.notify()

    def count(self, kind: str, what: str) -> None:
        with self.cond:
            self.ledger.setdefault(kind, {"started": 0, "finished": 0, "failed": 0, "lost": 0})[what] += 1

    def status(self) -> dict:
        with self.cond:
            return {
                "pool": "fake", "process manager": "static", "accepted conn": self.accepted,
                "listen queue": self.waiting, "max listen queue": 0, "listen queue len": 128,
                "idle processes": max(0, self.workers - self.busy), "active processes": self.busy,
                "total processes": self.workers, "max children reached": self.max_reached,
                "finishing processes": self.finishing, "background tasks run": self.bg_run,
                "background tasks failed": 0, "background tasks lost": self.bg_lost,
                "background seconds": round(self.bg_seconds, 6), "background timeout": self.budget,
                "processes": [{"pid": i, "state": "Idle", "memory rss": 40 * 1024 * 1024}
                              for i in range(self.workers)],
            }


POOL: Pool
LOG_PATH: Path


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args) -> None:  # quiet; we write our own JSON access log
        pass

    def _answer(self, status: int, body: dict | list, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        # after-response work keeps this thread: make the client's next request use a new connection
        self.send_header("Connection", "close")
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()
        self._status = status

    def _log(self, started: float, answered: float) -> None:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "method": self.command, "uri": self.path,
                 "msec": round(answered, 3), "status": self._status, "request_time": round(answered - started, 3),
                 "upstream_connect_time": 0.0, "upstream_header_time": round(answered - started, 3),
                 "upstream_response_time": round(answered - started, 3), "upstream_status": str(self._status)}
        with open(LOG_PATH, "a") as fh:
            fh.write(json.dumps(entry) + "\n")

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def _route(self) -> None:
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/pool-status":
            return self._answer(200, POOL.status())
        if url.path == "/ledger":
            with POOL.cond:
                kinds = json.loads(json.dumps(POOL.ledger))
            return self._answer(200, {"kinds": kinds, "totals": {}})
        if url.path == "/messages":
            return self._answer(200, [{"to": m} for m in POOL.mail])
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        started = time.time()
        POOL.acquire()
        try:
            self._app(url.path, q, body, started)
        finally:
            POOL.release()

    def _app(self, path: str, q: dict, body: bytes, started: float) -> None:
        bg, lock, kind = 0.0, None, "work"
        if path == "/work":
            time.sleep(int(q.get("respond_ms", 0)) / 1000)
            bg = int(q.get("background_ms", 0)) / 1000 * int(q.get("tasks", 1))
            self._answer(200, {"ok": True})
        elif path.startswith("/cart/"):
            lock = POOL.locks.setdefault(path, threading.Lock())
            t = time.time()
            lock.acquire()
            wait_ms = round((time.time() - t) * 1000, 1)
            hold = int(q.get("hold_ms", 0)) / 1000
            if q.get("release") == "early":
                lock.release()
                lock = None
            else:
                bg, kind = hold, "cart"
            self._answer(200, {"ok": True}, {"X-Lock-Wait-Ms": wait_ms})
        elif path == "/signup":
            email = json.loads(body or b"{}").get("email", "")
            self._answer(202, {"accepted": email})
            POOL.mail.append(email)
            kind = "signup"
            POOL.count(kind, "started")
            POOL.count(kind, "finished")
        else:
            self._answer(200, {"hello": "world"})
        answered = time.time()
        self._log(started, answered)
        if bg <= 0 and lock is None:
            return
        with POOL.cond:
            POOL.finishing += 1
        POOL.count(kind, "started")
        time.sleep(min(bg, POOL.budget))
        with POOL.cond:
            POOL.finishing -= 1
            POOL.bg_run += 1
            POOL.bg_seconds += min(bg, POOL.budget)
            lost = bg > POOL.budget
            POOL.bg_lost += lost
        POOL.count(kind, "lost" if lost else "finished")
        if lock is not None:
            lock.release()


def main(argv: list[str]) -> None:
    global POOL, LOG_PATH
    out = Path(argv[0])
    workers = int(argv[1]) if len(argv) > 1 else 4
    budget = float(argv[2]) if len(argv) > 2 else 1.0
    POOL = Pool(workers, budget)
    LOG_PATH = out / "access.json.log"
    LOG_PATH.touch()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True

    def resize(sig, frame) -> None:
        with POOL.cond:
            POOL.workers = max(1, POOL.workers + (1 if sig == signal.SIGTTIN else -1))
            POOL.cond.notify_all()

    signal.signal(signal.SIGTTIN, resize)
    signal.signal(signal.SIGTTOU, resize)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    (out / "pool.pid").write_text(str(os.getpid()))
    (out / "stack.json").write_text(json.dumps({
        "mode": "native", "base_url": base, "mail_url": base, "status_url": f"{base}/pool-status",
        "access_log": str(LOG_PATH), "pool_pidfile": str(out / "pool.pid")}))
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
