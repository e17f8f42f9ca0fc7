"""Waits for a worker, with intervals: Erlang C + Allen-Cunneen checked against a simulation of the measured
service times; the simulation's answer wherever the two disagree.

Erlang C is exact for Poisson arrivals and exponential service; Allen-Cunneen's (ca² + cs²)/2 scaling is a
good approximation of the mean wait for other service distributions, and a rougher one of the tail. A pool's
occupancy is rarely exponential (a fixed after-response task, a bimodal route mix), so every prediction also
replays the measured sample (``fcgipool.sizing.simulate``). How the interval is computed:

* **replications**: each of ``replications`` simulated runs first resamples ``service_s`` with replacement (the
  bootstrap: "what else could this sample have looked like") and then simulates ``requests`` arrivals on that
  resample with its own seed. Each run gives P(wait), mean, p90 and p99 wait.
* **interval**: the 2.5 and 97.5 percentiles of those runs' values (linear interpolation). It covers both the
  uncertainty of the measured distribution and the simulation's own noise; with the default 40 replications its
  ends lie between the two lowest and the two highest runs. For 60 samples of 300 exponential service times it
  covered the true p99 wait 54 times (90 %: a percentile bootstrap of a convex statistic under-covers a little).
  The arrival rate is taken as exact: size for a higher rate (``--headroom``) for its uncertainty.
* **agreement**: the closed form *agrees* when its mean wait and p99 wait each lie inside the simulation's
  interval widened by 10 % of the simulated value + 1 ms, and its P(wait) inside the interval ± 0.02 (absolute
  slack so that waits near zero, where percentages mean nothing, do not count as disagreement). Then the
  closed form's values are reported (method ``erlang-c+allen-cunneen``) with the simulation's interval
  stretched to include them; otherwise the simulation's (method ``simulation``), and ``notes`` says where and
  by how much the closed form was off.

Measured (5,000 service times, default settings, 0.7 s each): 4 workers at 30 req/s with exponential 100 ms
occupancy, closed form 375 ms against simulated 371 ms [314-488] (agree; the exact M/M/4 value is 393 ms); with a
fixed 100 ms, Allen-Cunneen's halving gives 197 ms against 184 ms [172-230] (agree); 8 workers at utilisation 0.5
with lognormal occupancy (sigma 1.5, cs² 7), 205 ms against 83 ms [63-116]: the simulation is used.
pool/tests/sizing has the checks, docs/loadtest.md ("The sizing model") the comparison over many cases.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from . import model
from .simulate import WaitStats, simulate_waits, wait_stats

__all__ = ["Interval", "WaitPrediction", "WorkersAdvice", "predict_wait", "workers_for"]

CLOSED_FORM = "erlang-c+allen-cunneen"
SIMULATION = "simulation"
REL_SLACK = 0.10  # relative slack of the agreement test (see the module docstring)
ABS_SLACK_S = 0.001
P_WAIT_SLACK = 0.02
MIN_REQUESTS = 50_000
MAX_REQUESTS = 400_000


@dataclass(frozen=True)
class Interval:
    """A predicted value and its interval (``low <= value <= high``; ``inf`` for an unbounded queue)."""

    value: float
    low: float
    high: float

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def scaled(self, k: float) -> Interval:
        return Interval(self.value * k, self.low * k, self.high * k)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class WaitPrediction:
    """How long requests wait for a worker with ``workers`` workers at ``rate`` req/s (times in seconds)."""

    workers: int
    rate: float
    occupancy_s: float  # mean of the service sample
    cs2: float
    ca2: float
    utilization: float  # rate * occupancy / workers
    stable: bool  # utilization < 1: otherwise the queue grows without bound and every wait is inf
    p_wait: Interval
    mean_wait_s: Interval
    p90_wait_s: Interval
    p99_wait_s: Interval
    method: str  # "erlang-c+allen-cunneen" or "simulation"
    agreed: bool  # did the closed form fall inside the simulation's interval (see the module docstring)
    notes: str
    closed_form: dict[str, float] = field(default_factory=dict)  # the closed form's values, for comparison
    simulated: dict[str, Interval] = field(default_factory=dict)  # the simulation's intervals

    def as_dict(self) -> dict:
        return asdict(self)


def _pct(values: Sequence[float], q: float) -> float:
    """``model.quantile`` that lets ``inf`` (an overloaded resample) through instead of turning it into NaN."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    if math.isinf(xs[hi]) and (hi == lo or pos > lo):
        return math.inf
    return model.quantile(xs, q)


def _interval(values: Sequence[float], confidence: float) -> Interval:
    tail = (1 - confidence) / 2
    return Interval(_pct(values, 0.5), _pct(values, tail), _pct(values, 1 - tail))


def _requests_for(workers: int, rate: float, occupancy: float, requests: int | None) -> int:
    """Enough simulated requests for ~200 relaxation times of the queue (a p99 from a run shorter than a few
    relaxation times under-reports the tail), within [50k, 400k] (400k: 0.13 s of CPU)."""
    if requests:
        return requests
    relax = model.relaxation_time(workers, rate, occupancy) if occupancy > 0 else 0.0
    want = 200 * rate * relax if math.isfinite(relax) else MAX_REQUESTS
    return int(min(MAX_REQUESTS, max(MIN_REQUESTS, want)))


def _closed_form(workers: int, rate: float, occ: float, ca2: float, cs2: float) -> dict[str, float]:
    if occ <= 0:
        return {"p_wait": 0.0, "mean_wait_s": 0.0, "p90_wait_s": 0.0, "p99_wait_s": 0.0}
    p90 = model.predict(workers, rate, occ, ca2, cs2, quantile=0.90)
    p99 = model.predict(workers, rate, occ, ca2, cs2, quantile=0.99)
    return {"p_wait": p99.p_wait, "mean_wait_s": p99.mean_wait, "p90_wait_s": p90.wait_quantile,
            "p99_wait_s": p99.wait_quantile}  # fmt: skip


def _agrees(name: str, closed: float, sim: Interval) -> bool:
    if math.isinf(closed) or math.isinf(sim.value):
        return math.isinf(closed) == math.isinf(sim.value) or sim.contains(closed)
    slack = P_WAIT_SLACK if name == "p_wait" else REL_SLACK * sim.value + ABS_SLACK_S
    return sim.low - slack <= closed <= sim.high + slack


def _describe(name: str, closed: float, sim: Interval) -> str:
    if name == "p_wait":
        return f"P(wait) {closed:.3f} vs simulated {sim.value:.3f} [{sim.low:.3f}, {sim.high:.3f}]"
    label = name.removesuffix("_s").replace("_", " ")
    return (f"{label} {closed * 1000:.1f} ms vs simulated {sim.value * 1000:.1f} ms "
            f"[{sim.low * 1000:.1f}, {sim.high * 1000:.1f}]")  # fmt: skip


def predict_wait(
    workers: int,
    rate: float,
    service_s: Sequence[float],
    *,
    ca2: float = 1.0,
    seed: int = 0,
    replications: int = 40,
    requests: int | None = None,
    interarrivals_s: Sequence[float] | None = None,
    confidence: float = 0.95,
) -> WaitPrediction:
    """Predict the wait for a worker with ``workers`` workers at ``rate`` requests/s, each request holding a
    worker for a time drawn from ``service_s`` (measured occupancies, seconds: answer + after-response).

    Returns P(wait), the mean, p90 and p99 wait, each an :class:`Interval` (value, low, high), the method whose
    values are reported, whether the closed form agreed with the simulation, and notes. ``ca2`` is the squared
    coefficient of variation of the inter-arrival times (1 = Poisson), used by both methods;
    ``interarrivals_s`` (measured gaps) replaces it in the simulation. ``replications`` simulated runs of
    ``requests`` arrivals each (default: enough for ~200 relaxation times, 50k-400k) give the interval at
    ``confidence``. Deterministic for a seed. About 0.7-5 s of CPU with the defaults.
    """
    if workers < 1:
        raise ValueError("workers must be >= 1")
    if rate <= 0:
        raise ValueError("rate must be > 0")
    if replications < 2:
        raise ValueError("replications must be >= 2")
    svc = [float(s) for s in service_s if math.isfinite(s) and s >= 0]
    if not svc:
        raise ValueError("service_s must hold at least one finite service time >= 0")
    occ = sum(svc) / len(svc)
    cs2 = model.cv2(svc)
    util = rate * occ / workers
    closed = _closed_form(workers, rate, occ, ca2, cs2)
    names = ("p_wait", "mean_wait_s", "p90_wait_s", "p99_wait_s")
    if util >= 1:
        inf = Interval(math.inf, math.inf, math.inf)
        note = (f"overloaded: {rate:g} req/s x {occ * 1000:.1f} ms = {rate * occ:.2f} busy workers on average, "
                f">= {workers} workers; the queue grows without bound")  # fmt: skip
        return WaitPrediction(workers, rate, occ, cs2, ca2, util, False, Interval(1.0, 1.0, 1.0), inf, inf, inf,
                              CLOSED_FORM, True, note, closed, {})  # fmt: skip

    n = _requests_for(workers, rate, occ, requests)
    rng = random.Random(seed)
    runs: list[WaitStats | None] = []
    for _ in range(replications):
        resample = [svc[int(rng.random() * len(svc))] for _ in svc]
        if rate * sum(resample) / len(resample) >= workers:
            runs.append(None)  # this resample overloads the pool: its waits are unbounded
            continue
        waits = simulate_waits(workers, rate, resample, requests=n, seed=rng.getrandbits(32), ca2=ca2,
                               interarrivals_s=interarrivals_s)  # fmt: skip
        runs.append(wait_stats(waits))
    sim: dict[str, Interval] = {}
    for name in names:
        worst = 1.0 if name == "p_wait" else math.inf
        sim[name] = _interval([worst if r is None else getattr(r, name) for r in runs], confidence)

    off = [name for name in names if name != "p90_wait_s" and not _agrees(name, closed[name], sim[name])]
    unstable = sum(r is None for r in runs)
    notes = [f"{replications} simulated runs of {n} requests, each on a bootstrap resample of {len(svc)} "
             f"service times; interval {confidence:.1%}"]  # fmt: skip
    if unstable:
        notes.append(f"{unstable} of {replications} resamples overload {workers} workers (utilization near 1)")
    if len(svc) < 100:
        notes.append(f"only {len(svc)} service times: the interval is wide")
    if off:
        notes.append("closed form outside the simulation's interval: " + "; ".join(
            _describe(name, closed[name], sim[name]) for name in off) + " - the simulation is used")
        values = sim
        method = SIMULATION
    else:
        values = {name: Interval(closed[name], min(sim[name].low, closed[name]), max(sim[name].high, closed[name]))
                  for name in names}  # fmt: skip
        method = CLOSED_FORM
    return WaitPrediction(workers, rate, occ, cs2, ca2, util, True, values["p_wait"], values["mean_wait_s"],
                          values["p90_wait_s"], values["p99_wait_s"], method, not off, "; ".join(notes), closed,
                          sim)  # fmt: skip


@dataclass(frozen=True)
class WorkersAdvice:
    """The smallest worker count whose p99 wait meets a target, with the predictions that decided it."""

    workers: int | None  # None: no count up to max_workers meets it
    target_s: float
    end: str  # which end of the p99 interval had to meet the target
    prediction: WaitPrediction | None  # at ``workers``
    fewer: WaitPrediction | None  # at ``workers - 1``: why one fewer is not enough

    def as_dict(self) -> dict:
        return asdict(self)


def workers_for(
    rate: float,
    service_s: Sequence[float],
    p99_ms: float,
    *,
    ca2: float = 1.0,
    seed: int = 0,
    replications: int = 40,
    end: str = "high",
    max_workers: int = 1024,
    interarrivals_s: Sequence[float] | None = None,
    requests: int | None = None,
) -> WorkersAdvice:
    """Smallest worker count whose predicted p99 wait at ``rate`` is <= ``p99_ms``.

    ``end="high"`` (default) requires the upper end of the interval to meet the target: the advice then holds
    for every service distribution the measured sample is compatible with, not just for the sample itself; a
    short log costs a worker or two rather than a missed target. ``end="value"`` uses the point estimate.
    Starts at the closed form's answer and walks up or down, simulating a few counts (~0.1-1 s each).
    """
    if end not in ("high", "value"):
        raise ValueError("end must be 'high' or 'value'")
    svc = [float(s) for s in service_s if math.isfinite(s) and s >= 0]
    if not svc:
        raise ValueError("service_s must hold at least one finite service time >= 0")
    target = p99_ms / 1000
    occ = sum(svc) / len(svc)
    cache: dict[int, WaitPrediction] = {}

    def at(c: int) -> WaitPrediction:
        if c not in cache:
            cache[c] = predict_wait(c, rate, svc, ca2=ca2, seed=seed, replications=replications,
                                    requests=requests, interarrivals_s=interarrivals_s)  # fmt: skip
        return cache[c]

    def meets(c: int) -> bool:
        p99 = at(c).p99_wait_s
        return (p99.high if end == "high" else p99.value) <= target

    floor = max(1, math.floor(rate * occ) + 1)  # the smallest stable count
    start = model.smallest_workers(rate, occ, target, ca2, model.cv2(svc), max_workers=max_workers) if occ else 1
    c = max(floor, start or max_workers)
    if meets(c):
        while c > floor and meets(c - 1):
            c -= 1
    else:
        while not meets(c):
            if c >= max_workers:
                return WorkersAdvice(None, target, end, at(c), None)
            c += 1
    return WorkersAdvice(c, target, end, at(c), at(c - 1) if c > 1 else None)
