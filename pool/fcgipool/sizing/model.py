"""Sizing model: Erlang C (M/M/c) with the Allen-Cunneen correction for G/G/c, and lost work for a budget.

A pool worker is a server: it is held for the whole *occupancy* of a request — the time to answer plus the
after-response (background) time. Requests arrive at rate ``rate`` per second, so the offered load is
``a = rate * occupancy`` Erlangs and the pool needs ``workers > a`` to be stable.

Pure math, no I/O: everything here is unit-tested against closed forms and published values
(pool/tests/sizing/test_sizing_model.py). ``fcgipool.sizing.predict`` checks it against a simulation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass


def erlang_b(workers: int, load: float) -> float:
    """Blocking probability of M/M/c/c (Erlang B), by the numerically stable recursion."""
    if workers < 0 or load < 0:
        raise ValueError("workers and load must be >= 0")
    b = 1.0
    for k in range(1, workers + 1):
        b = load * b / (k + load * b)
    return b


def erlang_c(workers: int, load: float) -> float:
    """Probability that an arrival waits in M/M/c (Erlang C); 1.0 when the pool is overloaded (load >= workers)."""
    if workers <= 0:
        raise ValueError("workers must be >= 1")
    if load <= 0:
        return 0.0
    if load >= workers:
        return 1.0
    b = erlang_b(workers, load)
    return workers * b / (workers - load * (1.0 - b))


def cv2(samples: Sequence[float]) -> float:
    """Squared coefficient of variation (variance / mean²) of positive samples; 1.0 (exponential) if too few."""
    n = len(samples)
    if n < 2:
        return 1.0
    mean = sum(samples) / n
    if mean <= 0:
        return 1.0
    var = sum((x - mean) ** 2 for x in samples) / (n - 1)
    return var / (mean * mean)


@dataclass(frozen=True)
class QueueEstimate:
    """What the model predicts for one pool size and arrival rate (times in seconds)."""

    workers: int
    rate: float
    occupancy: float
    ca2: float
    cs2: float
    load: float  # offered load, Erlangs
    utilization: float
    stable: bool
    p_wait: float  # probability a request waits for a worker at all
    mean_wait: float  # Wq
    mean_queue: float  # Lq = rate * Wq (Little)
    quantile: float
    wait_quantile: float  # e.g. p99 wait
    capacity: float  # workers / occupancy, requests per second

    def as_dict(self) -> dict:
        return asdict(self)


def allen_cunneen_factor(ca2: float, cs2: float) -> float:
    """G/G/c waits ≈ M/M/c waits * (ca² + cs²) / 2 (Allen-Cunneen)."""
    return (ca2 + cs2) / 2.0


def predict(
    workers: int, rate: float, occupancy: float, ca2: float = 1.0, cs2: float = 1.0, quantile: float = 0.99
) -> QueueEstimate:
    """Predict waiting for ``workers`` at ``rate`` req/s with mean occupancy ``occupancy`` s.

    M/M/c gives P(W > t) = C · exp(-(c·μ - λ)·t). For G/G/c the Allen-Cunneen factor scales the conditional
    wait (so the mean wait and the tail) by (ca² + cs²)/2; the probability of waiting stays Erlang C.
    """
    if occupancy <= 0:
        raise ValueError("occupancy must be > 0")
    if not 0 < quantile < 1:
        raise ValueError("quantile must be in (0, 1)")
    load = rate * occupancy
    capacity = workers / occupancy
    stable = load < workers
    if not stable:
        inf = math.inf
        return QueueEstimate(workers, rate, occupancy, ca2, cs2, load, load / workers, False, 1.0, inf, inf,
                             quantile, inf, capacity)
    c = erlang_c(workers, load)
    k = allen_cunneen_factor(ca2, cs2)
    drain = workers / occupancy - rate  # c·μ - λ: how fast the queue empties
    mean_wait = c / drain * k
    tail = 1.0 - quantile
    wq = 0.0 if c <= tail else math.log(c / tail) / drain * k
    return QueueEstimate(workers, rate, occupancy, ca2, cs2, load, load / workers, True, c, mean_wait,
                         rate * mean_wait, quantile, wq, capacity)


def relaxation_time(workers: int, rate: float, occupancy: float) -> float:
    """Rough time for the queue to reach its steady state, 1 / (c·μ·(1 - sqrt(rho))²) (Morse's M/M/1 result applied
    to the pooled service rate): a measurement shorter than a few of these under-reports the tail."""
    rho = rate * occupancy / workers
    if rho >= 1:
        return math.inf
    return 1.0 / (workers / occupancy * (1 - math.sqrt(rho)) ** 2)


def smallest_workers(
    rate: float,
    occupancy: float,
    target_wait: float,
    ca2: float = 1.0,
    cs2: float = 1.0,
    quantile: float = 0.99,
    max_workers: int = 1024,
) -> int | None:
    """Smallest worker count whose predicted ``quantile`` wait is <= ``target_wait`` s at ``rate``; None if none."""
    start = max(1, math.floor(rate * occupancy) + 1)
    for workers in range(start, max_workers + 1):
        if predict(workers, rate, occupancy, ca2, cs2, quantile).wait_quantile <= target_wait:
            return workers
    return None


def memory_cap(memory_mb: float, rss_mb_per_worker: float, reserve_mb: float = 0.0) -> int:
    """How many workers fit in a memory budget (RSS per worker measured; reserve for the arbiter etc.)."""
    if rss_mb_per_worker <= 0:
        raise ValueError("rss_mb_per_worker must be > 0")
    return max(0, math.floor((memory_mb - reserve_mb) / rss_mb_per_worker))


def lost_share(background_times: Sequence[float], budget: float) -> float:
    """Expected share of after-response work lost for a budget: P(background time > budget), empirical."""
    if not background_times:
        return 0.0
    return sum(1 for b in background_times if b > budget) / len(background_times)


def quantile(samples: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default), NaN for no samples."""
    if not samples:
        return math.nan
    xs = sorted(samples)
    pos = (len(xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def quantile_ci(samples: Sequence[float], q: float, z: float = 1.96) -> tuple[float, float]:
    """Distribution-free ~95 % confidence interval of the ``q`` quantile: order statistics at ranks
    n·q ± z·sqrt(n·q·(1-q)) (normal approximation of the binomial). NaNs for no samples."""
    n = len(samples)
    if n == 0:
        return math.nan, math.nan
    xs = sorted(samples)
    half = z * math.sqrt(n * q * (1 - q))
    lo = max(0, math.floor(n * q - half) - 1)
    hi = min(n - 1, math.ceil(n * q + half) - 1)
    return xs[lo], xs[hi]


def budget_for_loss(background_times: Sequence[float], max_lost: float, headroom: float = 1.5) -> float:
    """Smallest budget that loses at most ``max_lost`` of the measured work, times a headroom factor."""
    if not background_times:
        raise ValueError("need measured background times")
    return quantile(background_times, 1.0 - max_lost) * headroom


def relative_error(predicted: float, measured: float) -> float:
    """|predicted - measured| / measured (inf when measured is 0 and predicted is not)."""
    if measured == 0:
        return 0.0 if predicted == 0 else math.inf
    return abs(predicted - measured) / abs(measured)
