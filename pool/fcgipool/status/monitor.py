"""Pool status: what the status page reports, sampled in the arbiter.

``PoolMonitor.sample()`` reads the scoreboard and the listen queue, keeps the high-water marks (max listen
queue, max active processes) and detects "max children reached" episodes: every worker the pool may have
is busy and connections are waiting. Each episode is logged once and counted once, in every pm mode.
``PoolStatus.fields()`` turns a sample into PHP-FPM's field names (see docs/status.md); the formats in
``fcgipool.status.formats`` render those.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import listenq
from ..scoreboard import PoolSnapshot, Scoreboard, SlotSnapshot, WorkerState

#: seconds a "max children reached" episode must stay calm (an idle worker, nobody waiting) to end: a pool
#: that stays overloaded has a free worker for an instant between requests many times a second, and
#: that must not log and count a new episode each time
EPISODE_CALM = 1.0

__all__ = ["PoolMonitor", "PoolStatus", "process_fields"]


@dataclass(frozen=True)
class PoolStatus:
    pool: str
    process_manager: str
    start_time: float
    now: float
    snapshot: PoolSnapshot
    listen_queue: int | None  # None: the kernel could not tell us (not Linux, no sock_diag)
    listen_queue_len: int | None
    max_listen_queue: int
    max_active_processes: int
    max_children_reached: int
    max_children: int
    kept_waiting: int | None = None  # idle kept connections in the hand-off queue; None: no queue
    extra: dict[str, Any] | None = None  # fields of optional parts (spill), after ours

    @property
    def idle(self) -> int:
        return self.snapshot.idle

    @property
    def active(self) -> int:
        return self.snapshot.active

    @property
    def total(self) -> int:
        return len(self.snapshot.slots)

    @property
    def accepted(self) -> int:
        # PHP-FPM counts requests when they are accepted: finished ones plus those in progress
        snap = self.snapshot
        return snap.requests + snap.count(WorkerState.READING, WorkerState.RUNNING)

    def fields(self, full: bool = False) -> dict[str, Any]:
        """Ordered PHP-FPM field names → values (ours after PHP-FPM's); ``processes`` when full."""
        snap = self.snapshot
        out: dict[str, Any] = {
            "pool": self.pool,
            "process manager": self.process_manager,
            "start time": int(self.start_time),
            "start since": int(self.now - self.start_time),
            "accepted conn": self.accepted,
            "listen queue": self.listen_queue,
            "max listen queue": self.max_listen_queue,
            "listen queue len": self.listen_queue_len,
            "idle processes": self.idle,
            "active processes": self.active,
            "total processes": self.total,
            "max active processes": self.max_active_processes,
            "max children reached": self.max_children_reached,
            "slow requests": snap.slow_requests,
            "memory peak": snap.memory_peak,
            "finishing processes": snap.finishing,
            "background tasks run": snap.tasks_run,
            "background tasks failed": snap.tasks_failed,
            "background tasks lost": snap.tasks_lost,
            "background seconds": round(snap.background_seconds, 6),
            "kept connections waiting": self.kept_waiting,
            "request timeouts": snap.request_timeouts,
            "request timeout kills": snap.totals.request_kills,
            "background timeouts": snap.background_timeouts,
            "background timeout kills": snap.totals.background_kills,
            "connections rescued": snap.totals.connections_rescued,
            **(self.extra or {}),
        }
        if full:
            out["processes"] = [process_fields(s, self.now) for s in snap.slots]
        return out


def process_fields(s: SlotSnapshot, now: float) -> dict[str, Any]:
    """One process with PHP-FPM's per-process keys, then ours."""
    duration = s.current_duration(now)
    settled = s.state in (WorkerState.IDLE, WorkerState.FINISHING, WorkerState.ENDING)  # the response phase is over
    cpu = s.last_cpu / s.request_duration * 100.0 if settled and s.request_duration > 0 else 0.0
    uri = s.uri or "-"
    if s.query and "?" not in s.uri:
        uri = f"{uri}?{s.query}"
    return {
        "pid": s.pid,
        "state": s.state.label,
        "start time": int(s.start_time),
        "start since": max(0, int(now - s.start_time)),
        "requests": s.requests,
        "request duration": int(duration * 1_000_000),  # microseconds, as PHP-FPM
        "request method": s.method or "-",
        "request uri": uri,
        "content length": s.content_length,
        "user": "-",
        "script": s.script or "-",
        "last request cpu": round(cpu, 2),
        "last request memory": s.last_memory if settled else 0,
        "memory rss": s.memory_rss,
        "background tasks run": s.tasks_run,
        "background tasks failed": s.tasks_failed,
        "background tasks lost": s.tasks_lost,
        "background seconds": round(s.background_seconds, 6),
        "pending tasks": list(s.pending_names)
        + ([f"... {s.pending_count - len(s.pending_names)} more"] if s.pending_truncated else []),
    }


class PoolMonitor:
    """Arbiter-side sampler. Thread-safe: the status thread and the arbiter's main loop both call it."""

    def __init__(
        self,
        scoreboard: Scoreboard,
        listeners: Callable[[], Sequence[Any]],
        *,
        pool: str,
        process_manager: Callable[[], str],
        max_children: Callable[[], int],
        log: logging.Logger | Any | None = None,
        kept_waiting: Callable[[], int | None] | None = None,
        extra_fields: Callable[[PoolSnapshot], dict[str, Any]] | None = None,
    ) -> None:
        self.scoreboard = scoreboard
        self._kept_waiting = kept_waiting
        self._extra_fields = extra_fields
        self._listeners = listeners
        self.pool = pool
        self._pm_name = process_manager
        self._max_children = max_children
        self.log = log or logging.getLogger("fcgipool.status")
        self.start_time = time.time()
        self.max_listen_queue = 0
        self.max_active = 0
        self.max_children_reached = 0
        self.in_episode = False
        self.episode_calm = EPISODE_CALM
        self._calm_since = 0.0
        self._lock = threading.Lock()
        self.latest: PoolStatus | None = None

    def _queue(self) -> tuple[int | None, int | None]:
        socks = list(self._listeners())
        q = listenq.total(socks)
        if q is not None:
            return q.queue, q.backlog
        # no numbers from the kernel: a readable listener still proves someone is waiting
        return (1 if any(listenq.readable(s) for s in socks) else None), None

    def sample(self) -> PoolStatus:
        snap = self.scoreboard.snapshot()
        queue, backlog = self._queue()
        kept = self._kept_waiting() if self._kept_waiting is not None else None
        with self._lock:
            if queue is not None:
                self.max_listen_queue = max(self.max_listen_queue, queue)
            self.max_active = max(self.max_active, snap.active)
            limit = self._max_children()
            saturated = snap.idle == 0 and len(snap.slots) >= limit > 0 and bool(queue)
            if saturated:
                self._episode(limit)
            elif self.in_episode:
                self._calm_down(snap.idle > 0 and not queue)
            status = PoolStatus(
                pool=self.pool,
                process_manager=self._pm_name(),
                start_time=self.start_time,
                now=snap.taken_at,
                snapshot=snap,
                listen_queue=queue,
                listen_queue_len=backlog,
                max_listen_queue=self.max_listen_queue,
                max_active_processes=self.max_active,
                max_children_reached=self.max_children_reached,
                max_children=limit,
                kept_waiting=kept,
                extra=self._extra_fields(snap) if self._extra_fields is not None else None,
            )
            self.latest = status
        return status

    def note_max_children(self) -> None:
        """A process manager wanted another worker and was not allowed one."""
        with self._lock:
            self._episode(self._max_children())

    def _calm_down(self, calm: bool) -> None:
        # caller holds the lock
        if not calm:
            self._calm_since = 0.0
            return
        now = time.monotonic()
        if not self._calm_since:
            self._calm_since = now
        elif now - self._calm_since >= self.episode_calm:
            self.in_episode = False
            self._calm_since = 0.0

    def _episode(self, limit: int) -> None:
        # caller holds the lock
        self._calm_since = 0.0
        if self.in_episode:
            return
        self.in_episode = True
        self.max_children_reached += 1
        self.log.warning(
            "[pool %s] server reached max children setting (%d), consider raising it "
            "(--pm-max-children, or --workers with pm static)",
            self.pool,
            limit,
        )
