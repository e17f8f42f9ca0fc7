"""The sizing model against one run, step by step: each stable step's measured wait for a worker against the
prediction for a run of the same length (fcgipool.sizing.predict), compared only where the step has enough
requests for the quantity.

A request's wait is measured in one of two ways. With the pool's request log and nginx's access log (the
stack from `make up`), the wait is nginx's upstream time minus the pool's answer time for the same request
(fcgipool.sizing.logs.match_waits): what the request spent in the listen queue, to a fraction of a ms. Without
them (a TARGET of your own), it is the open-loop latency minus the median latency of the calibration step
(load ~0.25, where fewer than 2 % of requests wait). Either way, the calibration step also measures the
*resolution*: the spread (p95 - p50) of that value when nothing queues; a difference smaller than it is not a
measurable wait.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from fcgipool.sizing.predict import Interval, WaitPrediction, predict_wait

from loadtest import model
from loadtest.results import Check, ModelPoint, Step, WaitCalibration

# Up to 12 comparisons per run (4 quantities x 3 stable steps): each uses the 99.8 % interval of 1,000 simulated
# runs, so a correct model fails a run with probability <= 12 x 0.2 % = 2.4 % (Bonferroni).
CONFIDENCE = 0.998
REPLICATIONS = 1000
WARMUP = 0.1  # the first 10 % of a step are dropped, as the simulation drops its own (both start empty)
BATCHES = 10  # batch means for the measured values' confidence intervals (consecutive waits are correlated)
T_975_9 = 2.262  # Student's t, 97.5 %, 9 degrees of freedom
# fewest requests in a step for each comparison: a p-quantile rests on n·(1 - p) tail samples, so a p99 needs
# 1,000 requests for 10 of them and a p90 200 for 20; P(wait) and the mean use every request
MIN_REQUESTS = {"p_wait": 200, "mean_wait_s": 200, "p90_wait_s": 200, "p99_wait_s": 1000}
QUANTITIES = (("p_wait", "P(wait)"), ("mean_wait_s", "mean wait"), ("p90_wait_s", "p90 wait"),
              ("p99_wait_s", "p99 wait"))
MAX_UTILIZATION = 0.9  # above it a step of half a minute has not reached its steady state


@dataclass(frozen=True)
class Calibration:
    """The measured value (latency, or nginx-minus-pool time) with no queue: every step's wait is measured
    against it."""

    median_s: float
    mean_s: float
    resolution_s: float  # spread not due to queueing: p95 - p50 at the calibration step, at least 0.5 ms
    tau_s: float  # a request 'waited' when its value is above the median by more than this (2 x resolution)
    false_wait: float  # share of calibration requests above tau: noise, subtracted from every step's P(wait)
    source: str
    # its standard error (the calibration step has ~150 requests: 0.04 +- 0.016): what the subtraction may be off by
    false_wait_se: float = 0.0

    @classmethod
    def from_values(cls, xs: list[float], source: str) -> Calibration:
        if not xs:
            return cls(0.0, 0.0, 0.001, 0.002, 0.0, source)
        med = model.quantile(xs, 0.5)
        resolution = max(0.0005, model.quantile(xs, 0.95) - med)
        tau = 2 * resolution
        above = sum(1 for x in xs if x - med > tau)
        smoothed = (above + 1) / (len(xs) + 2)  # never a standard error of 0 from a calibration with no noise
        se = math.sqrt(smoothed * (1 - smoothed) / len(xs))
        return cls(med, statistics.fmean(xs), resolution, tau, above / len(xs), source, se)

    def summary(self) -> WaitCalibration:
        return WaitCalibration(source=self.source, median_ms=round(self.median_s * 1000, 2),
                               resolution_ms=round(self.resolution_s * 1000, 2), tau_ms=round(self.tau_s * 1000, 2),
                               false_wait=round(self.false_wait, 4))


def after_warmup(values: list[float]) -> list[float]:
    return values[int(len(values) * WARMUP):]


def batch_mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean with a ~95 % interval from 10 batch means (valid for correlated values; NaN ends if too few)."""
    if not values:
        return math.nan, math.nan, math.nan
    mean = statistics.fmean(values)
    n = len(values)
    if n < 2 * BATCHES:
        return mean, math.nan, math.nan
    means = [statistics.fmean(values[i * n // BATCHES:(i + 1) * n // BATCHES]) for i in range(BATCHES)]
    half = T_975_9 * math.sqrt(statistics.variance(means) / BATCHES)
    return mean, mean - half, mean + half


def measure_waits(xs: list[float], cal: Calibration) -> dict:
    """P(wait > tau), mean, p90 and p99 wait of one step (values in arrival order, warm-up already dropped):
    each (value, low, high), the interval a ~95 % one for the report (batch means; order statistics)."""
    out: dict = {"requests": len(xs)}
    if not xs:
        return out
    waits = [max(0.0, x - cal.median_s) for x in xs]
    keep = 1 - cal.false_wait

    def corrected(f: float) -> float:
        return min(1.0, max(0.0, (f - cal.false_wait) / keep)) if keep > 0 and math.isfinite(f) else f

    out["p_wait"] = tuple(corrected(v) for v in batch_mean_ci([float(w > cal.tau_s) for w in waits]))
    out["mean_wait_s"] = tuple(v - cal.mean_s for v in batch_mean_ci(xs))
    for key, q in (("p90_wait_s", 0.9), ("p99_wait_s", 0.99)):
        lo, hi = model.quantile_ci(waits, q)
        out[key] = (model.quantile(waits, q), lo, hi)
    return out


def predict_step(workers: int, rate: float, service_s: list[float], interarrivals_s: list[float], requests: int,
                 seed: int) -> WaitPrediction:
    """What a run of ``requests`` arrivals at ``rate`` would measure, from the measured service times."""
    return predict_wait(workers, rate, service_s, seed=seed, replications=REPLICATIONS, confidence=CONFIDENCE,
                        requests=max(requests, 50), interarrivals_s=interarrivals_s or None)


def p_wait_above(pred: WaitPrediction, tau: float) -> Interval:
    """P(W > tau) from P(W > 0): the conditional wait is close to exponential (exact for M/M/c, Allen-Cunneen
    keeps the shape), with mean = mean wait / P(wait)."""
    p, mean = pred.p_wait.value, pred.mean_wait_s.value
    factor = math.exp(-tau * p / mean) if mean > 0 and math.isfinite(mean) else 1.0
    return pred.p_wait.scaled(factor)


def _fmt(key: str, v: float) -> float | None:
    if not math.isfinite(v):
        return None
    return round(v, 3) if key == "p_wait" else round(v * 1000, 1)


def compare(step: Step, measured: dict, pred: WaitPrediction, cal: Calibration, unjudged: str | None = None
            ) -> list[ModelPoint]:
    """One point per quantity: it agrees when the measured value lies inside the prediction's interval for a run
    of this length, widened by the resolution for times (a difference below it is not a measurable wait) and,
    for P(wait), by 3 standard errors of the calibration's false-wait share, which every step's P(wait) is
    corrected by (a run of 2026-11-26 failed with a measured 0.039 against [0.039-0.104]: its calibration step
    counted 0.039 +- 0.016 of its ~150 requests as false waits).
    ``unjudged``: why no point can be judged (the prediction's input was assumed, not measured)."""
    n = measured.get("requests", 0)
    points = []
    for key, name in QUANTITIES:
        p = p_wait_above(pred, cal.tau_s) if key == "p_wait" else getattr(pred, key)
        point = ModelPoint(quantity=key, name=name, label=step.label, rate=step.arrival_rate,
                           utilization=step.utilization or 0.0, requests=n, agrees=None, why="",
                           predicted=[_fmt(key, p.value), _fmt(key, p.low), _fmt(key, p.high)])
        if n < MIN_REQUESTS[key] or key not in measured or unjudged:
            point.why = unjudged or f"{n} requests, fewer than the {MIN_REQUESTS[key]} a {name} needs"
            if unjudged and key in measured:
                point.measured_unjudged = [_fmt(key, v) for v in measured[key]]
            points.append(point)
            continue
        m = measured[key]
        point.measured = [_fmt(key, v) for v in m]
        slack = 3 * cal.false_wait_se / max(1e-9, 1 - cal.false_wait) if key == "p_wait" else cal.resolution_s
        point.agrees = p.low - slack <= m[0] <= p.high + slack
        point.error = round(model.relative_error(p.value, m[0]), 3) if m[0] and math.isfinite(p.value) else None
        point.why = "" if point.agrees else disagreement_reason(step, m[0], p.value)
        points.append(point)
    return points


def disagreement_reason(step: Step, meas: float, pred: float) -> str:
    """What the run itself says about a miss: CPU contention, a step too short to settle, or the model."""
    load = step.mean_loadavg
    cores = step.cores or 1
    if meas > pred and load is not None and load > cores:
        return (f"the machine was overloaded during the step (load average {load:.1f} on {cores} cores): "
                "requests waited for a CPU as well as for a worker")
    if pred < meas:
        return ("measured longer than the model: the workers are not independent servers here (shared CPU, "
                "restarts, connection stickiness)")
    return "measured shorter than the model: arrivals or service times were more regular than the sample"


def summarize(points: list[ModelPoint], scenario: str) -> list[Check]:
    """One check per quantity over the stable steps: PASS when every judged step agrees, n/a when none could be
    judged (the detail says why: too few requests)."""
    out = []
    for key, name in QUANTITIES:
        mine = [p for p in points if p.quantity == key]
        judged = [p for p in mine if p.agrees is not None]
        unit = "" if key == "p_wait" else " ms"
        parts = []
        for p in mine:
            value, lo, hi = p.predicted
            head = (f"{p.rate:.1f}/s (u {p.utilization:.2f}, {p.requests} req): predicted "
                    f"{value}{unit} [{lo}-{'inf' if hi is None else hi}]")
            if p.agrees is None:
                parts.append(f"{head}; not judged: {p.why}")
            else:
                measured = p.measured[0] if p.measured else None
                parts.append(f"{head}, measured {measured}{unit}" + (f" ({p.why})" if p.why else ""))
        what = "P(wait > tau)" if key == "p_wait" else name
        need = f" (steps with >= {MIN_REQUESTS[key]} requests)" if key == "p99_wait_s" else ""
        out.append(Check(name=f"{scenario}: model {what} within its interval at every stable step{need}",
                         ok=all(p.agrees for p in judged) if judged else None, kind="model",
                         detail="; ".join(parts) or "no stable step", judged=len(judged)))
    return out
