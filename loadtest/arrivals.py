"""Arrival schedules for the open-loop driver (pure functions, seeded, testable)."""

from __future__ import annotations

import itertools
import random


def poisson_schedule(rate: float, duration: float, rng: random.Random) -> list[float]:
    """Intended send times (seconds from the start) of a Poisson process at ``rate`` per second."""
    if rate <= 0 or duration <= 0:
        return []
    times = []
    t = rng.expovariate(rate)
    while t < duration:
        times.append(t)
        t += rng.expovariate(rate)
    return times


def interarrivals(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def truncated_lognormal_ms(
    rng: random.Random, median_ms: float, sigma: float, low_ms: float, high_ms: float, avoid: tuple[float, float]
) -> int:
    """A background time in ms: lognormal around ``median_ms``, within [low, high], never inside ``avoid``.

    The timeout scenario keeps requested times out of a band around the pool's budget, so whether a task is
    lost is decided by the budget and not by scheduling jitter, and the client's count can match the ledger.
    """
    for _ in range(1000):
        v = rng.lognormvariate(0.0, sigma) * median_ms
        if low_ms <= v <= high_ms and not avoid[0] <= v <= avoid[1]:
            return round(v)
    raise ValueError("no admissible value: check median, bounds and the avoided band")
