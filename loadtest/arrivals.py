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


def timeout_task_ms(rng: random.Random, budget_ms: float, sent: int, over: int, median_share: float = 0.6,
                    max_ms: float = 60_000) -> int:
    """The timeout scenario's next after-response time, ``sent`` requested so far, ``over`` of them over the budget:
    lognormal around ``median_share`` x the budget (sigma 0.6), at most 2 x the budget and ``max_ms``, never within
    ±15 % of the budget -- and at least one request in four over it, the first of them.

    With a long budget (30 s in the Compose stack) the scenario sends only ~4 requests, and the lognormal alone
    (~14 % over) sent none in about half of the runs: a check of lost work with nothing to lose. A forced one is
    drawn from the same lognormal's tail above the avoided band.
    """
    high = min(budget_ms * 2, max_ms)
    low = budget_ms * 1.15 if sent >= 4 * over and budget_ms * 1.15 < high else 10
    return truncated_lognormal_ms(rng, median_ms=budget_ms * median_share, sigma=0.6, low_ms=low, high_ms=high,
                                  avoid=(budget_ms * 0.85, budget_ms * 1.15))
