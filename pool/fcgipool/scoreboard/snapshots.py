"""What the scoreboard's reader returns: one worker's slot as read (SlotSnapshot), the pool's (PoolSnapshot), and
the counters the arbiter keeps for workers that are gone (PoolTotals)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .layout import WorkerState

__all__ = ["PoolSnapshot", "PoolTotals", "SlotSnapshot"]


@dataclass(frozen=True)
class SlotSnapshot:
    index: int
    pid: int
    state: WorkerState
    start_time: float
    state_since: float
    requests: int
    accepted: int
    method: str
    uri: str
    query: str
    script: str
    content_length: int
    request_start: float
    request_duration: float
    last_cpu: float
    last_memory: int
    memory_peak: int
    memory_rss: int
    tasks_run: int
    tasks_failed: int
    tasks_lost: int
    background_seconds: float
    finishing_start: float
    deadline: float
    request_timeouts: int
    background_timeouts: int
    slow_requests: int
    pending_count: int
    pending_names: tuple[str, ...]
    spilled_shutdown: int = 0
    spilled_saturated: int = 0
    spilled_slow: int = 0
    spill_fallbacks: int = 0
    torn: bool = False  # the writer was mid-write for every retry (stuck or killed while writing)

    @property
    def pending_truncated(self) -> bool:
        """True when more tasks are pending than names fit in the slot."""
        return self.pending_count > len(self.pending_names)

    @property
    def busy(self) -> bool:
        return self.state in (WorkerState.READING, WorkerState.RUNNING, WorkerState.FINISHING)

    def current_duration(self, now: float | None = None) -> float:
        """Elapsed response-phase seconds while reading/running, otherwise the last request's duration."""
        if self.state in (WorkerState.READING, WorkerState.RUNNING) and self.request_start:
            return max(0.0, (time.time() if now is None else now) - self.request_start)
        return self.request_duration


#: slot counters the arbiter keeps adding up after their worker is gone (besides the ones PoolTotals.add names)
_FOLDED = ("request_timeouts", "background_timeouts", "spilled_shutdown", "spilled_saturated", "spilled_slow",
           "spill_fallbacks")  # fmt: skip


@dataclass
class PoolTotals:
    """Counters of workers that are gone, kept by the arbiter."""

    accepted: int = 0
    requests: int = 0
    tasks_run: int = 0
    tasks_failed: int = 0
    tasks_lost: int = 0
    background_seconds: float = 0.0
    slow_requests: int = 0
    memory_peak: int = 0
    request_timeouts: int = 0
    background_timeouts: int = 0
    spilled_shutdown: int = 0
    spilled_saturated: int = 0
    spilled_slow: int = 0
    spill_fallbacks: int = 0
    # arbiter-only counters (no slot has them): hard kills past a deadline, connections of dead workers rescued
    request_kills: int = 0
    background_kills: int = 0
    connections_rescued: int = 0

    def add(self, s: SlotSnapshot, lost_pending: int = 0) -> None:
        self.accepted += s.accepted
        self.requests += s.requests
        self.tasks_run += s.tasks_run
        self.tasks_failed += s.tasks_failed
        self.tasks_lost += s.tasks_lost + lost_pending
        self.background_seconds += s.background_seconds
        self.slow_requests += s.slow_requests
        self.memory_peak = max(self.memory_peak, s.memory_peak)
        for name in _FOLDED:
            setattr(self, name, getattr(self, name) + getattr(s, name))


@dataclass(frozen=True)
class PoolSnapshot:
    """Live slots plus totals: counters are retained totals + live slots' counters."""

    taken_at: float
    slots: tuple[SlotSnapshot, ...]
    totals: PoolTotals = field(default_factory=PoolTotals)

    def count(self, *states: WorkerState) -> int:
        return sum(1 for s in self.slots if s.state in states)

    @property
    def idle(self) -> int:
        return self.count(WorkerState.IDLE)

    @property
    def active(self) -> int:
        return self.count(WorkerState.READING, WorkerState.RUNNING, WorkerState.FINISHING)

    @property
    def finishing(self) -> int:
        return self.count(WorkerState.FINISHING)

    def _sum(self, name: str) -> int | float:
        return getattr(self.totals, name) + sum(getattr(s, name) for s in self.slots)

    @property
    def accepted(self) -> int:
        return int(self._sum("accepted"))

    @property
    def requests(self) -> int:
        return int(self._sum("requests"))

    @property
    def tasks_run(self) -> int:
        return int(self._sum("tasks_run"))

    @property
    def tasks_failed(self) -> int:
        return int(self._sum("tasks_failed"))

    @property
    def tasks_lost(self) -> int:
        return int(self._sum("tasks_lost"))

    @property
    def background_seconds(self) -> float:
        return float(self._sum("background_seconds"))

    @property
    def slow_requests(self) -> int:
        return int(self._sum("slow_requests"))

    @property
    def memory_peak(self) -> int:
        return max([self.totals.memory_peak, *(s.memory_peak for s in self.slots)])

    def total(self, name: str) -> int:
        """A counter over the pool: the retained totals of gone workers plus every live slot's."""
        return int(self._sum(name))

    @property
    def request_timeouts(self) -> int:
        return self.total("request_timeouts")

    @property
    def background_timeouts(self) -> int:
        return self.total("background_timeouts")
