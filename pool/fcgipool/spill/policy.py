"""A worker's side of spill: which task goes to the queue, and why; what happens when the queue is away.

Decided per task, just before it would run (after the response has gone): ``shutdown`` when the worker is
stopping (TERM, HUP, max_requests, max_worker_memory), ``saturated`` when the arbiter's flag says the pool is
full of finishing workers or connections wait for one (fcgipool.spill.flags), ``slow`` for a task name whose
p95 over its last runs passed ``spill_slower_than``. A task that fails to enqueue runs in the pool; for a second
after such a failure no enqueue is tried (a Redis that is down costs one timeout, not one per task).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .flags import PoolFlags
from .target import QueueAway, RQTarget

REASONS = ("shutdown", "saturated", "slow")
#: seconds without an enqueue attempt after the queue failed one
AWAY_BACKOFF = 1.0
#: failed enqueues a worker remembers to take back out of the queue (a long outage: the oldest are kept)
MAX_DOUBTFUL = 10_000
#: runs of a task name kept for its p95, and how many it needs before ``slow`` may judge it
SLOW_WINDOW = 50
SLOW_MIN_RUNS = 10


@dataclass(frozen=True)
class SpilledTask:
    """One task handed to the queue (the ``on_task_spilled`` hook gets it)."""

    name: str
    reason: str
    request_uri: str
    job_id: str
    pid: int = field(default_factory=os.getpid)


class Spiller:
    def __init__(
        self,
        target: RQTarget,
        when: set[str],
        *,
        slower_than_s: float = 0.0,
        flags: PoolFlags | None = None,
        log: Any = None,
        hook: Callable[[Any, SpilledTask], Any] | None = None,
        owner: Any = None,
        stopping: Callable[[], bool] = lambda: False,
        on_fallback: Callable[[], None] | None = None,
        threshold: float = 0.0,
        pool_load: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        unknown = set(when) - set(REASONS)
        if unknown:
            raise ValueError(f"spill_when: unknown {sorted(unknown)}; choose from {', '.join(REASONS)}")
        self.target = target
        self.when = set(when)
        self.slower_than = slower_than_s
        self.flags = flags
        self.log = log
        self.hook = hook
        self.owner = owner
        self._stopping = stopping
        self.threshold = threshold
        self._pool_load = pool_load  # (other workers in after-response work, other live workers): the scoreboard
        self._on_fallback = on_fallback
        self._away_until = 0.0
        self._doubtful: list[str] = []  # job ids of failed enqueues, to take back out of the queue (withdraw)
        self._runs: dict[str, deque[float]] = {}
        self.slow: set[str] = set()

    # --- at background.add -----------------------------------------------------------------------------
    def check(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The task's import path; SpillRefused if the queue could never run it."""
        return self.target.check(fn, args, kwargs)

    # --- before a task runs ------------------------------------------------------------------------------
    def offload(self, task: Any, request_uri: str, forced: str | None = None) -> str | None:
        """fcgipool.background.Spill: enqueue ``task`` if it should not run here; the reason, or None."""
        reason = (
            (forced if forced in self.when else None) if forced else self.reason(task.name, stopping=self._stopping())
        )
        if reason is None or task.spill_path is None:
            return None
        ok = self.spill(task.spill_path, task.args, task.kwargs, name=task.name, reason=reason,
                        request_uri=request_uri)  # fmt: skip
        return reason if ok else None

    def reason(self, name: str, *, stopping: bool) -> str | None:
        when = self.when
        if stopping and "shutdown" in when:
            return "shutdown"
        if "saturated" in when and ((self.flags is not None and self.flags.saturated) or self._full()):
            return "saturated"
        if "slow" in when and name in self.slow:
            return "slow"
        return None

    def _full(self) -> bool:
        """The pool is saturated now, as this worker sees it: the other workers in after-response work, with this
        one, reach the threshold. The arbiter's flag (sampled every 0.1 s, held 1 s) misses the first 0.1 s of
        a burst and the moment it drops: at 2x capacity those were the load test's slow requests -- clusters of
        60-145 ms answers against a p50 of 27 ms, all workers busy with tasks the flag had let in."""
        load = self._pool_load
        if load is None or not self.threshold:
            return False
        busy, live = load()
        return busy + 1 > self.threshold * (live + 1)

    def spill(self, path: str, args: tuple[Any, ...], kwargs: dict[str, Any], *, name: str, reason: str,
              request_uri: str) -> bool:  # fmt: skip
        """Hand the task to the queue; False (and it runs in the pool) when the queue is away."""
        now = time.monotonic()
        if now < self._away_until:
            self._fallback()
            return False
        try:
            if self._doubtful:
                self._withdraw()
            job = self.target.enqueue(path, args, kwargs, name=name, reason=reason, request_uri=request_uri)
        except QueueAway as exc:
            if exc.job_id is not None and len(self._doubtful) < MAX_DOUBTFUL:
                self._doubtful.append(exc.job_id)
            self._away_until = now + AWAY_BACKOFF
            if self.log is not None:  # the arbiter logs the episode once for the pool; this is the detail
                self.log.debug("spill queue away (%s): %s runs in the pool", exc, name)
            self._fallback()
            return False
        if self.hook is not None:
            try:
                self.hook(self.owner, SpilledTask(name, reason, request_uri, job))
            except Exception:
                if self.log is not None:
                    self.log.exception("on_task_spilled hook failed for task %s", name)
        return True

    def _withdraw(self) -> None:
        """Before the first enqueue after an outage: the jobs of the enqueues that failed go back out of the queue.
        Redis may have executed one whose reply died with the connection; its task ran here, and without this a
        queue worker would run it again (5 of 38 runs of the `make faults` Redis row had one task run twice)."""
        taken_out, running = self.target.withdraw(self._doubtful)
        self._doubtful = []
        if self.log is None:
            return
        if taken_out:
            self.log.info("%d job(s) of enqueues that failed were in the spill queue all the same: taken back out "
                          "(their tasks ran in the pool)", len(taken_out))  # fmt: skip
        if running:
            self.log.warning("job(s) %s of enqueues that failed were in the spill queue and a queue worker has them: "
                             "their tasks run twice (in the pool and in the queue)", ", ".join(running))  # fmt: skip

    def _fallback(self) -> None:
        if self._on_fallback is not None:
            self._on_fallback()

    # --- after a task ran in the pool ----------------------------------------------------------------------
    def ran(self, name: str, seconds: float) -> None:
        """Track the task name's durations; past ``slower_than`` at p95 it spills from now on (``slow``)."""
        if not self.slower_than or "slow" not in self.when or name in self.slow:
            return
        runs = self._runs.get(name)
        if runs is None:
            runs = self._runs[name] = deque(maxlen=SLOW_WINDOW)
        runs.append(seconds)
        if len(runs) >= SLOW_MIN_RUNS:
            ordered = sorted(runs)
            p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
            if p95 > self.slower_than:
                self.slow.add(name)
                if self.log is not None:
                    self.log.info("after-response task %s: p95 %.0f ms over its last %d runs is past "
                                  "spill_slower_than (%.0f ms): it goes to the queue from now on", name, p95 * 1000,
                                  len(runs), self.slower_than * 1000)  # fmt: skip
