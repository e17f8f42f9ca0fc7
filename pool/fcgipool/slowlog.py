"""Slowlog: the Python stack of a request that runs longer than ``slowlog_timeout``.

A daemon thread in each worker watches the worker's own scoreboard slot. When the current request's
response phase (or its after-response work) passes the timeout, it takes the request thread's frame from
``sys._current_frames()`` and appends the traceback, with the request's method and URI, to the slowlog.
Nothing is sent to another process and nothing needs ptrace, so it works in an unprivileged container.
Each request is logged at most once per phase and counted once in ``slow requests``.

Hook (in the worker, after fork, once the slot is set up): ``slowlog.start_for_worker(worker)``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from typing import Any, TextIO

import gunicorn

from . import config
from .config_status import PoolName
from .scoreboard import Scoreboard, SlotSnapshot, WorkerState

__all__ = ["SlowlogWatcher", "format_entry", "start_for_worker"]


def format_entry(pool: str, snap: SlotSnapshot, phase: str, elapsed: float, stack: list[str]) -> str:
    """One slowlog entry: PHP-FPM's header line, the request, then a Python traceback."""
    stamp = time.strftime("%d-%b-%Y %H:%M:%S")
    uri = snap.uri + (f"?{snap.query}" if snap.query and "?" not in snap.uri else "")
    lines = [
        f"\n[{stamp}]  [pool {pool}] pid {snap.pid}\n",
        f"request: {snap.method or '-'} {uri or '-'} ({phase} running for {elapsed:.3f} s)\n",
        f"script_filename = {snap.script or '-'}\n",
    ]
    if snap.pending_names:
        lines.append(f"pending after-response tasks: {', '.join(snap.pending_names)}\n")
    lines.append("Traceback (most recent call last):\n")
    lines.extend(stack or ["  (no Python frame: the thread is in C code or has finished)\n"])
    return "".join(lines)


class SlowlogWatcher:
    def __init__(
        self,
        scoreboard: Scoreboard,
        index: int,
        timeout: float,
        *,
        path: str = "",
        pool: str = PoolName.default,
        log: Any = None,
        thread_ident: int | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"slowlog timeout must be > 0, got {timeout}")
        self.scoreboard = scoreboard
        self.index = index
        self.timeout = timeout
        self.path = path
        self.pool = pool
        self.log = log or logging.getLogger("fcgipool.slowlog")
        self.ident = thread_ident or threading.main_thread().ident
        self.interval = min(0.25, timeout / 4)
        self._stop = threading.Event()
        self._done: set[tuple[float, str]] = set()  # (start time of the phase, phase) already logged
        self._counted: float = 0.0  # request_start of the last request counted as slow
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fcgipool-slowlog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # the watcher must never take the worker down
                self.log.exception("slowlog watcher failed")

    def check(self, now: float | None = None) -> bool:
        """Log the request if it is slow and not yet logged in this phase. Returns True if it logged."""
        snap = self.scoreboard.read(self.index)
        now = time.time() if now is None else now
        if snap.state in (WorkerState.READING, WorkerState.RUNNING) and snap.request_start:
            phase, since = "response", snap.request_start
        elif snap.state == WorkerState.FINISHING and snap.finishing_start:
            phase, since = "after-response", snap.finishing_start
        else:
            if len(self._done) > 64:
                self._done.clear()
            return False
        elapsed = now - since
        if elapsed < self.timeout or (since, phase) in self._done:
            return False
        self._done.add((since, phase))
        frame = sys._current_frames().get(self.ident) if self.ident else None
        stack = _app_stack(frame) if frame is not None else []
        self.write(format_entry(self.pool, snap, phase, elapsed, stack))
        if snap.request_start and snap.request_start != self._counted:
            self._counted = snap.request_start
            self.scoreboard.count_slow(self.index)
        return True

    def write(self, entry: str) -> None:
        if not self.path:
            self.log.warning("slow request%s", entry.rstrip("\n"))
            return
        if self.path == "-":
            _write_all(sys.stderr, entry)
            return
        data = entry.encode("utf-8", "replace")
        # one write() on an O_APPEND file: entries from several workers do not interleave
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            # the entry still reaches the error log: a wrong path or permission must not hide slow requests
            self.log.error(
                "cannot write the slowlog %s: %s (check the path and that the worker's user may write it); "
                "slow request%s", self.path, exc, entry.rstrip("\n"),
            )  # fmt: skip


_FRAMEWORK_DIRS = (os.path.dirname(gunicorn.__file__) + os.sep, os.path.dirname(__file__) + os.sep)


def _app_stack(frame: Any) -> list[str]:
    """The stack from the frame that called the application on; the server plumbing above it is dropped."""
    frames = traceback.extract_stack(frame)

    def framework(f: traceback.FrameSummary) -> bool:
        return f.filename.startswith(_FRAMEWORK_DIRS) or not f.filename.endswith(".py")

    first_app = next((i for i, f in enumerate(frames) if not framework(f)), None)
    if first_app:
        frames = traceback.StackSummary.from_list(frames[first_app - 1 :])
    return frames.format()


def _write_all(stream: TextIO, text: str) -> None:
    stream.write(text)
    stream.flush()


def start_for_worker(worker: Any) -> SlowlogWatcher | None:
    """Start the watcher in a worker process if ``slowlog_timeout`` is set; returns it (or None)."""
    cfg = worker.cfg
    timeout = config.get(cfg, "slowlog_timeout")
    board = getattr(worker, "scoreboard", None)
    index = getattr(worker, "slot_index", None)
    if timeout <= 0 or board is None or index is None:
        return None
    watcher = SlowlogWatcher(
        board,
        index,
        timeout,
        path=config.get(cfg, "slowlog"),
        pool=config.get(cfg, "pool_name"),
        log=worker.log,
        thread_ident=threading.get_ident(),
    )
    watcher.start()
    return watcher
