"""Turns one run's raw measurements into per-scenario findings (no I/O). Stepped scenarios: loadtest/steps.py;
the model check: loadtest/modelcheck.py; the settings: loadtest/advice.py. measure_occupancy / measure_step
serve `python -m loadtest sizing`."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable

from loadtest import model
from loadtest.arrivals import interarrivals
from loadtest.results import Latency, Lock, LockWaits, Signup, SweepCalibration, SweepPoint, Timeout

AGREE = 0.25  # model and measurement "agree" within 25 %


def pct(values: Iterable[float], q: float) -> float | None:
    xs = [v for v in values if v is not None and not math.isnan(v)]
    return round(model.quantile(xs, q), 3) if xs else None


def latency_summary(rows: list[dict]) -> Latency:
    lat = [r["latency_ms"] for r in rows]
    svc = [r["service_ms"] for r in rows]
    return Latency(
        requests=len(rows),
        errors=sum(1 for r in rows if r["error"]),
        status_5xx=sum(1 for r in rows if 500 <= r["status"] < 600),
        status_502=sum(1 for r in rows if r["status"] == 502),
        status_504=sum(1 for r in rows if r["status"] == 504),
        p50_ms=pct(lat, 0.5), p90_ms=pct(lat, 0.9), p99_ms=pct(lat, 0.99), max_ms=pct(lat, 1.0),
        send_p50_ms=pct(svc, 0.5), send_p99_ms=pct(svc, 0.99),
    )


def ledger_delta(before: dict, after: dict) -> dict:
    """Per-kind and total change of started/finished/failed/lost between two /ledger documents."""
    out: dict = {"kinds": {}, "total": {"started": 0, "finished": 0, "failed": 0, "lost": 0}}
    b_kinds = (before or {}).get("kinds", {})
    for kind, counts in (after or {}).get("kinds", {}).items():
        prev = b_kinds.get(kind, {})
        d = {k: int(counts.get(k, 0)) - int(prev.get(k, 0)) for k in out["total"]}
        if any(d.values()):
            out["kinds"][kind] = d
            for k, v in d.items():
                out["total"][k] += v
    return out


def status_delta(before: dict, after: dict) -> dict:
    keys = ("accepted conn", "background tasks run", "background tasks failed", "background tasks lost",
            "background seconds", "max children reached")
    return {k: round(float(after.get(k, 0) or 0) - float(before.get(k, 0) or 0), 6) for k in keys}


def rows_in(sampler_rows: list[dict], label: str) -> list[dict]:
    return [r for r in sampler_rows if r.get("label") == label and not r.get("error")]


def column_mean(rows: list[dict], col: str) -> float | None:
    xs = [float(r[col]) for r in rows if r.get(col) not in ("", None)]
    return round(statistics.fmean(xs), 3) if xs else None


def column_max(rows: list[dict], col: str) -> float | None:
    xs = [float(r[col]) for r in rows if r.get(col) not in ("", None)]
    return max(xs) if xs else None


def step_throughput(rows: list[dict], start: float, end: float) -> float:
    """Successful answers per second completed inside [start, end] (wall clock)."""
    n = sum(1 for r in rows if 200 <= r["status"] < 300 and start <= r["done"] <= end)
    return n / max(1e-9, end - start)


def background_ratio(rows: list[dict], background_seconds: float) -> float:
    """Measured after-response seconds (pool counter) per requested second: the task's own overhead."""
    requested = sum(r.get("bg_ms") or 0 for r in rows if 200 <= r["status"] < 300) / 1000
    return background_seconds / requested if requested and background_seconds else 1.0


def measure_occupancy(rate: float, light_rows: list[dict], bg_ratio: float, answer_s: list[float] | None = None
                      ) -> SweepCalibration:
    """What one request costs a worker, from a light step where nothing queues.

    Occupancy = the answer part (nginx's upstream response time; the client's latency if there is no access
    log) + the after-response time (requested x the measured ratio). cs² is its squared coefficient of
    variation, for the Allen-Cunneen correction.
    """
    ok = [r for r in light_rows if 200 <= r["status"] < 300]
    client = [r["latency_ms"] / 1000 for r in ok] or [0.0]
    resp = answer_s or client
    bg = [r["bg_ms"] / 1000 * bg_ratio for r in ok if r.get("bg_ms") is not None] or [0.0]
    occupancy = model.quantile(resp, 0.5) + statistics.fmean(bg)
    cs2 = (statistics.pvariance(resp) + statistics.pvariance(bg)) / occupancy**2 if occupancy > 0 else 1.0
    return SweepCalibration(
        rate=rate, response_s=round(model.quantile(resp, 0.5), 4),
        client_unloaded_s=round(model.quantile(client, 0.5), 4),
        answer_source="nginx upstream_response_time" if answer_s else "client latency",
        background_s=round(statistics.fmean(bg), 4), occupancy_s=round(occupancy, 4), cs2=round(cs2, 4),
        background_ratio=round(bg_ratio, 4), background_samples_s=bg, response_samples_s=resp)


def measure_step(rows: list[dict], label: str, start: float, duration: float, workers: int, occ: SweepCalibration,
                 sampler_rows: list[dict]) -> SweepPoint:
    """One open-loop step: arrivals, throughput, latency, measured wait vs the model's, queue, errors.

    Wait = open-loop latency - the unloaded latency of the same request (median at the light step).
    """
    ok = [r for r in rows if 200 <= r["status"] < 300]
    ca2 = model.cv2(interarrivals(sorted(r["intended"] for r in rows)))
    thr = step_throughput(rows, start + duration * 0.2, start + duration)
    arrival = len(rows) / duration
    waits = [max(0.0, r["latency_ms"] / 1000 - occ.client_unloaded_s) for r in ok]
    measured_p99 = model.quantile(waits, 0.99) if waits else math.nan
    ci = model.quantile_ci(waits, 0.99)
    est = model.predict(workers, arrival, occ.occupancy_s, ca2=ca2, cs2=occ.cs2)
    srows = rows_in(sampler_rows, label)
    active = column_mean(srows, "active")
    return SweepPoint(
        label=label, workers=workers, arrival_rate=round(arrival, 3), throughput=round(thr, 3), ca2=round(ca2, 3),
        latency=latency_summary(rows), error_rate=round((len(rows) - len(ok)) / len(rows), 4) if rows else None,
        measured_p99_wait_ms=round(measured_p99 * 1000, 1),
        measured_p99_wait_ci_ms=[round(ci[0] * 1000, 1), round(ci[1] * 1000, 1)] if waits else None,
        measured_p_wait=round(sum(w > 0.005 for w in waits) / len(waits), 3) if waits else None,
        predicted_p99_wait_ms=round(est.wait_quantile * 1000, 1) if est.stable else None,
        predicted_p_wait=round(est.p_wait, 3), predicted_mean_queue=round(est.mean_queue, 3) if est.stable else None,
        # beyond capacity the excess arrivals cannot be served in steady state
        predicted_error_rate=0.0 if est.stable else round(1 - 1 / est.utilization, 4),
        utilization=round(est.utilization, 3), stable=est.stable,
        mean_listen_queue=column_mean(srows, "listen_queue"), max_listen_queue=column_max(srows, "listen_queue"),
        mean_answering=column_mean(srows, "answering"), mean_finishing=column_mean(srows, "finishing"),
        mean_active=active, mean_loadavg=column_mean(srows, "loadavg1"),
        little_occupancy_s=round(active / thr, 4) if active is not None and thr > 0 else None)


def disagreement_reason(step: SweepPoint, pred: float, meas: float, occupancy_s: float, duration_s: float) -> str:
    """Why a step's measured p99 wait is not within 25 % of the model's, from what the run measured."""
    relax = model.relaxation_time(step.workers, step.arrival_rate, occupancy_s)
    cores = os.cpu_count() or 1
    load = step.mean_loadavg
    ci = step.measured_p99_wait_ci_ms
    requests = step.latency.requests
    if ci and ci[0] * (1 - AGREE) <= pred <= ci[1] * (1 + AGREE):
        return (f"within sampling error: the measured p99's 95 % confidence interval is {ci[0]:.0f}-{ci[1]:.0f} ms "
                f"({requests} requests, the tail rests on ~{max(1, requests // 100)} samples); "
                "a longer step (DURATION=) narrows it")
    if meas > pred and load is not None and load > cores:
        return (f"the machine was overloaded during the step (load average {load:.1f} on {cores} cores): "
                "service times stretch under CPU contention, which the model's occupancy (measured light) omits")
    if meas < pred and duration_s < 3 * relax:
        return (f"the step ({duration_s:.0f} s) is shorter than 3 x the queue's relaxation time ({relax:.1f} s) at "
                f"utilization {step.utilization:.2f}: the measured tail has not reached its steady state")
    if requests < 500:
        return (f"only {requests} requests: the measured p99 rests on "
                f"{max(1, requests // 100)} sample(s), too few for a stable tail")
    if pred < meas:
        return ("measured wait is longer than M/M/c predicts: workers are not fully independent servers here "
                "(shared CPU on a 2-core machine, process restarts, keep-alive connection stickiness)")
    return "measured wait is shorter than predicted: service times are less variable than the correction assumes"


def analyse_timeout(rows: list[dict], budget: float, ledger: dict, status: dict) -> Timeout:
    bg = [r["bg_ms"] / 1000 for r in rows if r.get("bg_ms") is not None and 200 <= r["status"] < 300]
    sent_over = sum(1 for r in rows if r.get("over_budget") and 200 <= r["status"] < 300)
    total = ledger["total"]
    pool_lost = int(status.get("background tasks lost", 0))
    return Timeout(
        budget_s=budget, latency=latency_summary(rows), tasks_sent=len(bg), sent_over_budget=sent_over,
        ledger_started=total["started"], ledger_finished=total["finished"], ledger_lost=total["lost"],
        pool_lost=pool_lost, lost_agrees=total["lost"] == pool_lost == sent_over,
        predicted_lost_share=round(model.lost_share(bg, budget), 4),
        measured_lost_share=round(total["lost"] / total["started"], 4) if total["started"] else None,
        background_samples_s=bg)


def _lock_waits(rows: list[dict], release: str) -> LockWaits:
    waits = [r["lock_wait_ms"] for r in rows if r.get("release") == release and r.get("role") == "follow"
             and r.get("lock_wait_ms") is not None]
    return LockWaits(n=len(waits), mean_ms=round(statistics.fmean(waits), 1) if waits else None,
                     p50_ms=pct(waits, 0.5), p99_ms=pct(waits, 0.99), samples=waits)


def analyse_lock(rows: list[dict], hold_ms: float) -> Lock:
    early, late = _lock_waits(rows, "early"), _lock_waits(rows, "late")
    return Lock(hold_ms=hold_ms, latency=latency_summary(rows), early=early, late=late,
                late_waits_about_hold=late.p50_ms is not None and abs(late.p50_ms - hold_ms) <= 0.5 * hold_ms,
                early_does_not_wait=early.p50_ms is not None and early.p50_ms < 0.2 * hold_ms)


def analyse_signup(rows: list[dict], mail_text: str, ledger: dict) -> Signup:
    accepted = [r["email"] for r in rows if r.get("email") and r["status"] == 202]
    missing = [e for e in accepted if e not in mail_text]
    return Signup(latency=latency_summary(rows), signups_sent=sum(1 for r in rows if r.get("email")),
                  signups_accepted=len(accepted), mail_arrived=len(accepted) - len(missing),
                  mail_missing=len(missing), missing_sample=missing[:5], no_mail_lost=not missing, ledger=ledger)
