"""The arbiter's side of spill: sets the ``saturated`` flag, watches the queue, logs an outage once per episode.

Called from the status sampler (every 0.1 s, a thread of the arbiter). Workers count the tasks that could not
spill (``spill_fallbacks`` in their slots); the first increase opens an episode -- one warning for the whole
pool, not one per worker --, and the episode ends once the arbiter's own probe of the queue (every 0.5 s) has
answered for RECOVERED_AFTER with no task failing to spill meanwhile.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from .flags import PoolFlags
from .target import RQTarget

PROBE_EVERY = 0.5
#: seconds the ``saturated`` flag stays up after the last sample that saw the pool saturated. Without it, at a rate
#: past capacity the pool flips every 0.1 s sample between spilling and filling itself with finishing workers
#: again: at 2x capacity (4 workers, 20 ms answers, 60 ms tasks) the request p99 was 216 ms against 41 ms
#: unloaded; the tasks spilled for one second more run in the queue all the same (``make loadtest``, spill)
SATURATED_HOLD = 1.0
#: seconds the queue must answer, with no task failing to spill meanwhile, before an outage ends. A Redis that has
#: just restarted answers the probe while some workers' enqueues still fail (it refuses commands while it loads
#: its append-only file, 0.28 s for 40 MB; a worker's old connection fails once): without it one outage was
#: counted and logged as 2 or 3 in 4 of 12 runs of the `make faults` Redis row (2026-11-27)
RECOVERED_AFTER = 1.0
#: seconds over which the rate of tasks spilled for saturation is measured (for the hold below)
RATE_WINDOW = 1.0


class SpillWatch:
    def __init__(self, flags: PoolFlags, threshold: float, target: RQTarget, log: Any) -> None:
        self.flags = flags
        self.threshold = threshold
        self.target = target
        self.log = log
        self.outages = 0
        self.in_outage = False
        self.depth: int | None = target.depth()  # None: Redis does not answer (at start: not yet)
        self._fallbacks = -1
        self._fallbacks_at_start = 0
        self._next_probe = 0.0
        self._answering_since: float | None = None  # in an outage: since when the probe answers
        self._hot_until = 0.0
        self._spilled: deque[tuple[float, int]] = deque()  # (time, tasks spilled for saturation so far)

    def on_sample(self, status: Any) -> None:
        snap = status.snapshot
        total = len(snap.slots)
        now = time.monotonic()
        limit = self.threshold * total
        returning = self.returning(snap, now)  # sampled every time: the rate needs the whole window
        saturated = total > 0 and snap.finishing >= limit
        # while spilling: would the tasks sent away saturate the pool if they came back?
        still = self.flags.saturated and total > 0 and snap.finishing + returning >= limit
        if status.listen_queue or saturated or still:
            self._hot_until = now + SATURATED_HOLD
        self.flags.saturated = now < self._hot_until
        fallbacks = snap.total("spill_fallbacks")
        if self._fallbacks >= 0 and fallbacks > self._fallbacks:
            self._answering_since = None
            if not self.in_outage:
                self.in_outage = True
                self.outages += 1
                self._fallbacks_at_start = self._fallbacks
                self.log.warning("spill queue (%s) does not answer: after-response tasks run in the pool until it "
                                 "does (nothing is lost); spill queue outage %d", self.target.describe(),
                                 self.outages)  # fmt: skip
        self._fallbacks = fallbacks
        if now >= self._next_probe:
            self._next_probe = now + PROBE_EVERY
            self.depth = self.target.depth()
            if self.depth is None:
                self._answering_since = None
            elif self.in_outage and self._answering_since is None:
                self._answering_since = now
        if self.in_outage and self._answering_since is not None and now - self._answering_since >= RECOVERED_AFTER:
            self.in_outage = False
            self._answering_since = None
            self.log.warning(
                "spill queue (%s) answers again: spilling resumes (%d tasks ran in the pool meanwhile)",
                self.target.describe(),
                fallbacks - self._fallbacks_at_start,
            )

    def returning(self, snap: Any, now: float) -> float:
        """The finishing workers the tasks now spilling would occupy if they ran in the pool again: their rate
        over the last RATE_WINDOW times the mean in-pool task time (Little's law); 0 before any task ran here.

        Without it the flag drops SATURATED_HOLD after the pool stops looking saturated -- which spilling itself
        causes --, the tasks come back, the pool fills again for a sample or two and requests queue behind them:
        at 1x-2x capacity (4 workers, 20 ms answers, 60 ms tasks) the flag cycled every ~1.2 s, ~6 % of the tasks
        ran in the pool in those bursts, and the request p99 was 97-102 ms against 32 ms unloaded
        (`make loadtest SCENARIOS=spill`, 2026-11-26 16:42).
        """
        spilled = snap.total("spilled_saturated")
        self._spilled.append((now, spilled))
        while len(self._spilled) > 2 and self._spilled[1][0] <= now - RATE_WINDOW:
            self._spilled.popleft()
        t0, n0 = self._spilled[0]
        ran = snap.tasks_run
        if now <= t0 or ran <= 0:
            return 0.0
        return (spilled - n0) / (now - t0) * (snap.background_seconds / ran)

    def fields(self, snap: Any) -> dict[str, Any]:
        """The status page's spill fields."""
        by_reason = {r: snap.total(f"spilled_{r}") for r in ("shutdown", "saturated", "slow")}
        return {
            "background tasks spilled": sum(by_reason.values()),
            "spilled at shutdown": by_reason["shutdown"],
            "spilled saturated": by_reason["saturated"],
            "spilled slow": by_reason["slow"],
            "spill fallbacks": snap.total("spill_fallbacks"),
            "spill queue outages": self.outages,
            "spill queue depth": self.depth,
            "pool saturated": self.flags.saturated,
        }
