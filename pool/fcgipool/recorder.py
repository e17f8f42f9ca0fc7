"""What a worker records in its scoreboard slot, behind one small adapter.

The worker talks to this class only, so the scoreboard's API can change in one place. Without a slot (a
plain ``gunicorn -k fcgipool.worker.FastCGIWorker`` run, or unit tests) it writes to a :class:`NullSlot`, whose
every call is a no-op: no ``if slot`` test on the hot path when there is one.

It remembers whether the slot already says "idle, no deadline", so the worker's per-request ``idle()`` after
a request that ended with ``end_response(rest=True)`` costs no second write.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from .scoreboard import Slot, WorkerState


class NullSlot:
    """A slot that records nothing (no scoreboard): what :class:`~fcgipool.scoreboard.Slot` offers, as no-ops."""

    wall0 = 0.0
    last = (0.0, 0.0)
    rss = 0

    def conn_accepted(self) -> None:
        pass

    def reading(self, deadline: float, t0: float = 0.0) -> None:
        pass

    def begin_request(self, method: str, uri: str, query: str, content_length: int, script: str = "",
                      deadline: float | None = None, t0: float = 0.0) -> None:  # fmt: skip
        pass

    def end_response(self, *, rest: bool = False) -> float:
        return time.monotonic()

    def rest(self) -> float:
        return time.monotonic()

    def cpu_mark(self) -> float:
        return time.monotonic()

    def set_state(self, state: WorkerState) -> None:
        pass

    def set_deadline(self, monotonic: float) -> None:
        pass

    def set_pending(self, names: Iterable[str]) -> None:
        pass

    def task_finished(self, name: str, ok: bool, seconds: float) -> None:
        pass

    def task_spilled(self, name: str, reason: str) -> None:
        pass

    def bump(self, name: str) -> None:
        pass

    def count_timeout(self, phase: str) -> None:
        pass

    def tasks_lost(self, names: list[str]) -> None:
        pass


class Recorder:
    def __init__(self, slot: Slot | None = None) -> None:
        self.slot: Slot | NullSlot = NullSlot() if slot is None else slot
        self._resting = False  # the slot says idle with no deadline
        self._finishing = False  # the slot says after-response work runs
        # the worker's latest monotonic clock reading: END_REQUEST of the last request, or the end of a wait. The
        # next request starts from it (no clock read of its own: one per request, see docs/benchmarks.md)
        self.now = time.monotonic()

    @property
    def rss(self) -> int:
        """The worker's RSS as of its last request (read from /proc at most once a second); 0 without a slot."""
        return self.slot.rss

    def accepted(self) -> None:
        self.slot.conn_accepted()

    def reading(self, deadline: float, t0: float = 0.0) -> None:
        """Reading a request (since ``t0``, monotonic); ``deadline`` is the arbiter's hard limit."""
        self._resting = False
        self.slot.reading(deadline, t0)

    def begin(
        self,
        method: str,
        uri: str,
        query: str,
        content_length: int,
        script: str,
        deadline: float | None = None,
        t0: float = 0.0,
    ) -> None:
        """The app runs (since ``t0``, monotonic); ``deadline``, when given, is set in the same write."""
        self._resting = False
        self.slot.begin_request(method, uri, query, content_length, script, deadline, t0)

    def end_response(self, *, rest: bool = False) -> None:
        """END_REQUEST sent; ``rest``: nothing follows, the worker is idle again (one write for both)."""
        self._resting = rest
        self.now = self.slot.end_response(rest=rest)

    def finishing(self) -> None:
        self._resting = False
        self._finishing = True
        self.slot.set_state(WorkerState.FINISHING)

    def woke(self) -> None:
        """The worker's poll waited and returned: "now" is read again, and the next request's CPU counts from
        here."""
        self.now = self.slot.cpu_mark()

    def idle(self) -> None:
        """Idle, and no deadline: back to gunicorn's heartbeat."""
        if self._resting:
            return
        self._resting = True
        self._finishing = False
        self.now = self.slot.rest()

    def ending(self) -> None:
        """The worker exits. Left at FINISHING if after-response work was cut short (SIGABRT unwinds through
        here): the arbiter then reports the first pending task as one that had started."""
        self._resting = False
        if self._finishing:
            return
        self.slot.set_state(WorkerState.ENDING)

    def deadline(self, monotonic: float) -> None:
        self._resting = False
        self.slot.set_deadline(monotonic)

    def pending(self, names: Iterable[str]) -> None:
        self.slot.set_pending(list(names))

    def task_done(self, task: Any, ok: bool, seconds: float) -> None:
        self.slot.task_finished(task.name, ok, seconds)

    def task_spilled(self, task: Any, reason: str) -> None:
        self.slot.task_spilled(task.name, reason)

    def spill_fallback(self) -> None:
        self.slot.bump("spill_fallbacks")

    def request_timeout(self) -> None:
        self.slot.count_timeout("request")

    def background_timeout(self) -> None:
        self.slot.count_timeout("background")

    def lost(self, names: list[str]) -> None:
        self.slot.tasks_lost(names)
