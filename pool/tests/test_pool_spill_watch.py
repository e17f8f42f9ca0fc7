"""SpillWatch's ``saturated`` flag, with a fake status (no sockets, no Redis): it rises when the pool looks
saturated and stays up while the tasks it sends away would saturate the pool again if they came back."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from fcgipool.spill import watch
from fcgipool.spill.flags import PoolFlags
from fcgipool.spill.watch import SATURATED_HOLD, SpillWatch


class FakeTarget:
    def depth(self) -> int | None:
        return 0

    def describe(self) -> str:
        return "redis://fake"


@dataclass
class FakeSnap:
    workers: int = 4
    finishing: int = 0
    tasks_run: int = 100
    background_seconds: float = 6.0  # 60 ms per task run in the pool
    counters: dict[str, int] = field(default_factory=lambda: {"spilled_saturated": 0, "spill_fallbacks": 0})

    @property
    def slots(self) -> list[None]:
        return [None] * self.workers

    def total(self, name: str) -> int:
        return self.counters.get(name, 0)


@dataclass
class FakeStatus:
    snapshot: Any
    listen_queue: int = 0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(watch.time, "monotonic", c)
    return c


def run(sw: SpillWatch, snap: FakeSnap, clock: Clock, seconds: float, spill_rate: float) -> list[bool]:
    """Samples every 0.1 s for ``seconds``; tasks spill at ``spill_rate`` per second while the flag is up."""
    flags = []
    carry = 0.0
    for _ in range(round(seconds / 0.1)):
        clock.now += 0.1
        if sw.flags.saturated:
            carry += spill_rate * 0.1
            snap.counters["spilled_saturated"] += int(carry)
            carry -= int(carry)
        sw.on_sample(FakeStatus(snap))
        flags.append(sw.flags.saturated)
    return flags


def saturate(sw: SpillWatch, snap: FakeSnap, clock: Clock) -> None:
    snap.finishing = 4
    run(sw, snap, clock, 0.1, 0)
    assert sw.flags.saturated
    snap.finishing = 0  # spilling empties the pool of after-response work


def test_flag_stays_up_while_the_spilled_tasks_would_fill_the_pool_again(clock: Clock) -> None:
    """47 tasks/s x 60 ms = 2.8 finishing workers if they came back, threshold 0.5 x 4 = 2: keep spilling."""
    sw = SpillWatch(PoolFlags(), 0.5, FakeTarget(), logging.getLogger("t"))  # type: ignore[arg-type]
    snap = FakeSnap()
    saturate(sw, snap, clock)
    flags = run(sw, snap, clock, 5 * SATURATED_HOLD, spill_rate=47)
    assert all(flags), f"the flag dropped at sample {flags.index(False)} although the load had not"


def test_flag_drops_once_the_spilled_load_would_fit(clock: Clock) -> None:
    """10 tasks/s x 60 ms = 0.6 workers: below the threshold, the tasks come back after SATURATED_HOLD."""
    sw = SpillWatch(PoolFlags(), 0.5, FakeTarget(), logging.getLogger("t"))  # type: ignore[arg-type]
    snap = FakeSnap()
    saturate(sw, snap, clock)
    flags = run(sw, snap, clock, 3 * SATURATED_HOLD, spill_rate=10)
    assert flags[0] and not flags[-1]
    assert flags.index(False) <= round(SATURATED_HOLD / 0.1) + 1


def test_no_task_ran_in_the_pool_yet_means_only_the_hold(clock: Clock) -> None:
    """Without a measured task time there is no estimate: the flag lasts SATURATED_HOLD, as before."""
    sw = SpillWatch(PoolFlags(), 0.5, FakeTarget(), logging.getLogger("t"))  # type: ignore[arg-type]
    snap = FakeSnap(tasks_run=0, background_seconds=0.0)
    saturate(sw, snap, clock)
    flags = run(sw, snap, clock, 3 * SATURATED_HOLD, spill_rate=47)
    assert not flags[-1]


def test_listen_queue_raises_the_flag(clock: Clock) -> None:
    sw = SpillWatch(PoolFlags(), 0.5, FakeTarget(), logging.getLogger("t"))  # type: ignore[arg-type]
    clock.now += 0.1
    sw.on_sample(FakeStatus(FakeSnap(), listen_queue=3))
    assert sw.flags.saturated


class FlakyTarget(FakeTarget):
    """A queue whose probe answers or not, as the test says."""

    def __init__(self) -> None:
        self.up = True

    def depth(self) -> int | None:
        return 0 if self.up else None


def _outage_run(clock: Clock, events: list[tuple[float, str]]) -> tuple[SpillWatch, list[str]]:
    """Samples every 0.1 s for 6 s; at each (second, what) of ``events``: "fail" (a task could not spill),
    "down" or "up" (the probe's answer from then on). Returns the watch and the warnings it logged."""
    target = FlakyTarget()
    logged: list[str] = []

    class Log:
        def warning(self, msg: str, *args: Any) -> None:
            logged.append(msg % args)

    sw = SpillWatch(PoolFlags(), 0.5, target, Log())  # type: ignore[arg-type]
    snap = FakeSnap()
    start = clock.now
    pending = sorted(events)
    for _ in range(60):
        clock.now += 0.1
        while pending and clock.now - start >= pending[0][0] - 1e-9:
            what = pending.pop(0)[1]
            if what == "fail":
                snap.counters["spill_fallbacks"] += 1
            else:
                target.up = what == "up"
        sw.on_sample(FakeStatus(snap))
    return sw, logged


def test_one_outage_while_a_restarted_queue_still_fails_some_tasks(clock: Clock) -> None:
    """Redis back: the probe answers at once, but a worker's enqueue fails 0.3 s later (Redis still loading its
    append-only file, or an old connection): still the same outage, ended once the queue has held for a second."""
    sw, logged = _outage_run(clock, [(0.5, "down"), (0.6, "fail"), (2.0, "up"), (2.3, "fail"), (2.6, "fail")])
    assert sw.outages == 1
    assert not sw.in_outage
    ends = [m for m in logged if "answers again" in m]
    assert len(ends) == 1 and "(3 tasks ran in the pool meanwhile)" in ends[0], logged


def test_a_second_outage_after_the_queue_held(clock: Clock) -> None:
    sw, logged = _outage_run(clock, [(0.5, "down"), (0.6, "fail"), (1.0, "up"), (3.5, "down"), (3.6, "fail")])
    assert sw.outages == 2 and sw.in_outage
    assert sum("does not answer" in m for m in logged) == 2
    assert sum("answers again" in m for m in logged) == 1
