"""The running stack as the load tests see it: var/stack.json, status page, ledger, mail API, pool resizing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_STACK_FILE = REPO / "var" / "stack.json"
DEFAULT_BACKGROUND_TIMEOUT = 30.0  # fcgipool's --background-timeout default (pool/fcgipool/config.py)


class StackError(RuntimeError):
    """The stack is not there or does not answer as the contract says; the message says what to do."""


def http_get(url: str, timeout: float = 5.0) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise StackError(f"GET {url} failed: {exc}. Is the stack up? Run `make up` first.") from exc


def get_json(url: str, timeout: float = 5.0):
    body = http_get(url, timeout)
    try:
        return json.loads(body)
    except ValueError as exc:
        raise StackError(f"GET {url} did not answer JSON: {body[:200]!r}") from exc


def with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


@dataclass
class Stack:
    """What `make up` wrote to var/stack.json (see docs/architecture.md), plus helpers to talk to it."""

    base_url: str
    mail_url: str
    status_url: str
    mode: str = "native"
    access_log: str | None = None
    compose: list[str] = field(default_factory=list)
    pool_pidfile: str | None = None
    background_timeout: float | None = None  # optional key; see background_budget()
    request_log: str | None = None  # the pool's request log on this host (docs/request-log.md), if on

    @classmethod
    def for_target(cls, target: str, status_url: str | None = None, request_log: str | None = None,
                   access_log: str | None = None) -> Stack:
        """Any app behind nginx + fcgipool (or PHP-FPM): only its URL and its status page are needed."""
        if not target.startswith(("http://", "https://")):
            raise StackError(f"TARGET={target!r} is not an http(s) URL, e.g. TARGET=http://127.0.0.1:8080")
        base = target.rstrip("/")
        return cls(base_url=base, mail_url="", status_url=status_url or f"{base}/pool-status", mode="target",
                   request_log=request_log or None, access_log=access_log or None)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> Stack:
        path = Path(path or os.environ.get("STACK_FILE") or DEFAULT_STACK_FILE)
        if not path.exists():
            raise StackError(f"{path} not found: start the stack with `make up` (it writes this file).")
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise StackError(f"{path} is not valid JSON: {exc}") from exc
        missing = [k for k in ("base_url", "mail_url", "status_url") if not data.get(k)]
        if missing:
            raise StackError(f"{path} lacks {', '.join(missing)} (contract: docs/architecture.md)")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    # --- reading -------------------------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    def status(self, full: bool = False, timeout: float = 5.0) -> dict:
        st = get_json(with_query(self.status_url, "json&full" if full else "json"), timeout)
        if not isinstance(st, dict) or "total processes" not in st:
            raise StackError(f"{self.status_url}?json is not a pool status page (no 'total processes'): point "
                             "STATUS_URL at fcgipool's (or PHP-FPM's) status page")
        return st

    def ledger(self) -> dict:
        return get_json(self.url("/ledger"))

    def mail_text(self) -> str:
        """The mail sink's message list, raw (we only count our own unique addresses in it)."""
        url = self.mail_url.rstrip("/")
        url = url if url.endswith("/messages") else url + "/messages"
        return http_get(url, timeout=15.0).decode("utf-8", "replace")

    def workers(self) -> int:
        return int(self.status()["total processes"])

    def background_budget(self, override: float | None = None) -> tuple[float, str]:
        """The pool's after-response budget in seconds and where it came from: CLI override, stack.json,
        status page, environment, else fcgipool's documented default."""
        if override:
            return float(override), "--background-budget"
        if self.background_timeout:
            return float(self.background_timeout), "var/stack.json background_timeout"
        st = self.status()
        for key in ("background timeout", "background_timeout"):
            if st.get(key):
                return float(st[key]), f"status page '{key}'"
        env = os.environ.get("FCGIPOOL_BACKGROUND_TIMEOUT")
        if env:
            return float(env), "FCGIPOOL_BACKGROUND_TIMEOUT"
        return DEFAULT_BACKGROUND_TIMEOUT, "assumed: fcgipool's default (the stack did not say; --background-budget)"

    def worker_rss_mb(self, status_full: dict | None = None) -> list[float]:
        """Resident memory per worker in MiB: the status page's `memory rss`, else /proc (native mode)."""
        st = status_full or self.status(full=True)
        procs = st.get("processes") or []
        out = [rss_to_mb(p.get("memory rss")) for p in procs if p.get("memory rss")]
        if out:
            return out
        if self.mode == "native":
            for p in procs:
                rss = proc_rss_mb(int(p.get("pid", 0)))
                if rss:
                    out.append(rss)
        return out

    # --- waiting and resizing ------------------------------------------------------------------------------
    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until no worker is busy (answering or finishing) and nothing queues; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status()
            if int(st.get("active processes", 0)) == 0 and int(st.get("listen queue", 0)) == 0:
                return True
            time.sleep(0.25)
        return False

    def signal_pool(self, sig: signal.Signals) -> None:
        if self.mode == "docker":
            if not self.compose:
                raise StackError("stack.json has mode=docker but no 'compose' argv to signal the pool with")
            subprocess.run([*self.compose, "kill", "-s", sig.name, "pool"], check=True, capture_output=True)
            return
        if not self.pool_pidfile:
            raise StackError("stack.json has no 'pool_pidfile': cannot resize the pool in native mode")
        pid = int(Path(self.pool_pidfile).read_text().strip())
        os.kill(pid, sig)

    def resize(self, workers: int, timeout: float = 30.0) -> int:
        """TTIN/TTOU the arbiter until it runs ``workers`` workers, without restarting anything."""
        if workers < 1:
            raise ValueError("workers must be >= 1")
        current = self.workers()
        for _ in range(abs(workers - current)):
            self.signal_pool(signal.SIGTTIN if workers > current else signal.SIGTTOU)
            time.sleep(0.05)  # the arbiter handles one queued signal per loop turn
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status()
            if int(st["total processes"]) == workers:
                return workers
            time.sleep(0.25)
        raise StackError(f"pool did not reach {workers} workers within {timeout}s (has {self.workers()})")


def rss_to_mb(value) -> float:
    """`memory rss` in bytes (PHP-FPM's memory fields are bytes); tolerate 'NNN kB' strings."""
    if isinstance(value, str):
        parts = value.split()
        num = float(parts[0])
        unit = parts[1].lower() if len(parts) > 1 else "b"
        return num / {"kb": 1024, "mb": 1, "b": 1024 * 1024}.get(unit, 1024 * 1024)
    return float(value) / (1024 * 1024)


def proc_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None
