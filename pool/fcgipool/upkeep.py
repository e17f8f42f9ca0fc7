"""A worker's chores beside serving: recycling past ``max_worker_memory``, closing connections that never sent
a request, and writing the request log. Checked after each request (no syscall) and once a second."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .requestlog import RequestLog
from .scoreboard import rss_bytes

#: a connection that sends no request for this long after connecting is closed (with --timeout 0; else timeout)
FRESH_IDLE_LIMIT = 30.0

__all__ = ["FRESH_IDLE_LIMIT", "Upkeep", "make_spiller"]


def make_spiller(worker: Any) -> Any:
    """The worker's spill (fcgipool.spill.Spiller), made after fork: its own Redis connection."""
    from . import config
    from .spill import RQTarget, Spiller

    cfg = worker.cfg
    target = RQTarget(config.get(cfg, "spill_to"), config.get(cfg, "spill_queue"))
    board, index = worker.scoreboard, worker.slot_index
    return Spiller(
        target,
        set(config.get(cfg, "spill_when")),
        slower_than_s=config.get(cfg, "spill_slower_than") / 1000,
        flags=worker.spawn.flags,
        log=worker.log,
        hook=config.get(cfg, "on_task_spilled"),
        owner=worker,
        stopping=lambda: not worker.alive,
        on_fallback=worker.recorder.spill_fallback,
        threshold=config.get(cfg, "spill_threshold"),
        pool_load=None if board is None or index is None else lambda: board.finishing(index),
    )


class Upkeep:
    def __init__(self, log: Any, *, max_memory_mib: int = 0, idle_limit: float = 0.0,
                 request_log: RequestLog | None = None) -> None:  # fmt: skip
        self.log = log
        self.max_memory = max_memory_mib * 1024 * 1024  # bytes; 0 = no limit
        self.idle_limit = idle_limit or FRESH_IDLE_LIMIT
        self.request_log = request_log
        #: :meth:`after_request` has something to do (the loop skips the call otherwise)
        self.after_each = bool(self.max_memory)

    def poll_ms(self, normal_ms: int) -> int:
        """How long an idle worker may sleep: once a second while it has a limit to check or lines to write."""
        log = self.request_log
        return min(normal_ms, 1000) if self.max_memory or (log is not None and log.rows) else normal_ms

    def after_request(self, rss: int) -> bool:
        """After each request, with the scoreboard's RSS reading (at most a second old). True: recycle. (The
        request log is flushed by the server when FLUSH_ROWS wait, fcgipool.server, and here once a second.)"""
        return bool(self.max_memory) and self._over(rss)

    def every_second(self, now: float, idle: Iterable[Any]) -> tuple[list[Any], bool]:
        """The connections (of ``idle``) that sent no request within the limit, and whether to recycle."""
        silent = [c for c in idle if c.idle_since and now - c.idle_since > self.idle_limit]
        for conn in silent:
            self.log.warning("closing a connection from %s that sent no request for %.0f s", conn.peer,
                             now - conn.idle_since)  # fmt: skip
        if self.request_log is not None:
            self.request_log.flush()
        return silent, bool(self.max_memory) and self._over(rss_bytes())

    def _over(self, rss: int) -> bool:
        if rss <= self.max_memory:
            return False
        self.log.warning("worker RSS %.0f MiB is over max_worker_memory (%.0f MiB): recycling it, like max_requests",
                         rss / 2**20, self.max_memory / 2**20)  # fmt: skip
        return True

    def close(self) -> None:
        if self.request_log is not None:
            self.request_log.close()
