"""Runs one stepped open-loop scenario: a calibration step, stable steps below capacity, one step past it.

Used by the sample app's `exhaustion` scenario and by every user class of a LOCUSTFILE alike: the rates are
planned from the occupancy the calibration step measures, and each stable step runs long enough for the
model check to judge its p99 (1,000 requests).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from loadtest import accesslog, analysis, requestlog, steps
from loadtest.results import Stepped

CALIBRATION_LOAD = 0.25  # Erlang C: at 4 workers fewer than 2 % of requests wait; the wait measurement's zero
STABLE_LOADS = (0.5, 0.65, 0.8)
OVERLOAD_LOAD = 1.3
# per stable step: >= 1,000 requests (the p99 threshold) with 99.9 % probability (a Poisson count of 1,100 has a
# standard deviation of 33), capped so that a slow pool does not run for hours (its p99 then goes unjudged)
TARGET_REQUESTS = 1100
MAX_STABLE_S = 60.0
CALIBRATION_S = 12.0  # ~130 requests at 4 workers: the occupancy's mean within a few %
OVERLOAD_S = 14.0  # long enough for a 20 % warm-up and a steady throughput, short enough for the queue to drain
SMOKE_S = {"calibration": 4.0, "stable": 4.0, "overload": 6.0}  # overload: a 20 % warm-up + ~5 s at capacity
SMOKE_LOADS = (0.6,)
PROBE_RATE, PROBE_S = 1.0, 8.0  # a user class's first guess: 8 requests, 1 a second


@dataclass
class Plan:
    loads: tuple[float, ...]
    overload: float | None

    def steps(self, cap: float, smoke: bool, total_s: float | None) -> list[tuple[str, float, float]]:
        """(phase, rate, seconds) of each step after the calibration, for an estimated capacity ``cap``."""
        out = []
        for load in self.loads:
            rate = round(cap * load, 2)
            if smoke:
                secs = SMOKE_S["stable"]
            elif total_s:
                secs = round(total_s * 0.75 / len(self.loads), 1)
            else:
                secs = round(min(MAX_STABLE_S, TARGET_REQUESTS / rate), 1) if rate > 0 else MAX_STABLE_S
            out.append(("stable", rate, secs))
        if self.overload:
            secs = SMOKE_S["overload"] if smoke else round(total_s * 0.15, 1) if total_s else OVERLOAD_S
            out.append(("overload", round(cap * self.overload, 2), secs))
        return out


def calibration_seconds(smoke: bool, total_s: float | None) -> float:
    return SMOKE_S["calibration"] if smoke else round(total_s * 0.1, 1) if total_s else CALIBRATION_S


def probe_occupancy(run, name: str, user_cls: type, params: dict) -> float:
    """A user class's occupancy guess before anything is known: a few requests at 1 a second (a pool of one
    worker with 1 s per request stays stable), answer time + the pool's background seconds per request."""
    st0 = run.stack.status()
    secs = PROBE_S / 2 if run.cfg.smoke else PROBE_S
    rows, _ = run.drive(name, f"{name}:probe", {**params, "rate": PROBE_RATE}, secs, user_cls=user_cls)
    ok = [r for r in rows if 200 <= r["status"] < 400]
    if not ok:
        raise RuntimeError(f"{name}: none of the {len(rows)} probe requests succeeded (first error: "
                           f"{rows[0]['error'] if rows else 'no request sent'}); check TARGET and the locustfile")
    bg = analysis.status_delta(st0, run.stack.status())["background seconds"]
    # the mean, not the median: a mix of routes holds a worker for its mean time
    return statistics.fmean(r["latency_ms"] / 1000 for r in ok) + max(0.0, bg) / len(ok)


def run_stepped(run, name: str, user_cls: type, params: Callable[[float], dict], est_occ: float | None,
                plan: Plan, answer_prefix: str = "/") -> Stepped:
    """Run the steps of one scenario and analyse them. ``params(rate)`` gives the user class's parameters;
    ``est_occ`` the first occupancy guess (None: probe for it)."""
    cfg = run.cfg
    total_s = cfg.duration
    acc_offset = accesslog.log_size(run.stack.access_log)
    log_offset = requestlog.log_size(run.stack.request_log)
    before = run.stack.status()
    if est_occ is None:
        est_occ = probe_occupancy(run, name, user_cls, params(PROBE_RATE))
    est_cap = run.workers / est_occ
    done: list[dict] = []

    def step(phase: str, rate: float, secs: float) -> dict:
        label = f"{name}@{rate:g}/s"
        st0 = run.stack.status()
        rows, view = run.drive(name, label, {**params(rate), "rate": rate, "drain": 60.0}, secs, user_cls=user_cls)
        st = {"label": label, "phase": phase, "rate": rate, "duration": secs, "start": view.start, "rows": rows,
              "locust": view, "bg_seconds": analysis.status_delta(st0, run.stack.status())["background seconds"]}
        done.append(st)
        return st

    cal_rate = round(est_cap * CALIBRATION_LOAD, 2)
    cal = step("calibration", cal_rate, calibration_seconds(cfg.smoke, total_s))
    ok = [r for r in cal["rows"] if 200 <= r["status"] < 400]
    if ok:  # plan the other steps from what the calibration measured
        occ = statistics.fmean(r["latency_ms"] / 1000 for r in ok) + max(0.0, cal["bg_seconds"]) / len(ok)
        est_cap = run.workers / occ if occ > 0 else est_cap
    for phase, rate, secs in plan.steps(est_cap, cfg.smoke, total_s):
        step(phase, rate, secs)
    time.sleep(1.5)  # workers write their request-log lines once a second
    delta = analysis.status_delta(before, run.stack.status())
    access_rows = accesslog.read_from(run.stack.access_log, acc_offset)
    log = requestlog.read_from(run.stack.request_log, log_offset)
    all_rows = [r for s in done for r in s["rows"]]
    ratio = analysis.background_ratio(all_rows, delta["background seconds"])
    answer = accesslog.upstream_times(access_rows, answer_prefix, cal["start"],
                                      cal["start"] + cal["duration"] + 5)
    out = steps.analyse(done, run.workers, sampler_rows=run.sampler.rows, log=log, access_rows=access_rows,
                        answer_s=answer or None, bg_seconds=cal["bg_seconds"], bg_ratio=ratio, seed=cfg.seed)
    out.pool_delta, out.estimated_capacity_before = delta, round(est_cap, 2)
    out.background_ratio, out.request_log_lines = round(ratio, 4), len(log)
    out.locust = [s["locust"] for s in done]
    out.answer_latency_samples_s = [r["latency_ms"] / 1000 for s in done if s["phase"] != "overload"
                                    for r in s["rows"] if 200 <= r["status"] < 400]
    if out.expected_capacity is None or math.isinf(out.expected_capacity):
        out.note = "no successful request at the calibration step: no occupancy, no model"
    return out
