"""A stepped scenario's measurements: occupancy from the calibration step, each step's rate, latency, queue and
waits, the capacity check and the model check (no I/O; the runner hands in what it read).

Steps: `calibration` (load ~0.25: occupancy and the wait measurement's zero), `stable` steps below capacity
(the model check), `overload` past it (the capacity check).
"""

from __future__ import annotations

import math
import os
import random
import statistics

from fcgipool.sizing.logs import AccessLine, Request, match_waits

from loadtest import model, modelcheck
from loadtest.analysis import column_max, column_mean, latency_summary, rows_in, step_throughput
from loadtest.arrivals import interarrivals
from loadtest.results import Capacity, Step, StepJudgement, Stepped

CAPACITY_AGREE = 0.15  # measured capacity within 15 % of workers / occupancy
SERVER_WAITS_MIN_MATCH = 0.9  # use nginx-minus-pool waits only when 90 % of a step's requests were matched


def _ok(rows: list[dict]) -> list[dict]:
    return sorted((r for r in rows if 200 <= r["status"] < 400), key=lambda r: r["intended"])


def _window(step: dict) -> tuple[float, float]:
    """When the step's requests can have begun: not before it started, not after its last answer (the next step
    starts as soon as the pool is idle again, so any slack would take in its first requests)."""
    rows = step["rows"]
    end = max((r["done"] for r in rows), default=step["start"] + step["duration"])
    return step["start"] - 0.01, end + 0.01


def access_lines(rows: list[dict]) -> list[AccessLine]:
    """loadtest.accesslog rows as fcgipool.sizing.logs.AccessLine (requests that reached the pool)."""
    out = []
    for r in rows:
        if r.get("msec") and r.get("upstream_response_time") is not None and r.get("request_time") is not None:
            out.append(AccessLine(r["msec"] - r["request_time"], r["msec"], str(r.get("method") or ""),
                                  str(r.get("uri") or "").split("?", 1)[0], r["status"], r["upstream_response_time"]))
    return out


def service_sample(step: dict, log: list[Request], answer_s: list[float] | None, bg_seconds: float | None,
                   bg_ratio: float) -> dict:
    """Each request's occupancy (answer + after-response seconds) at this step, its two parts and their source.

    Best: the pool's request log. Else the answer from nginx's upstream time (or the client's latency) plus
    the after-response time each request asked for (x the pool's measured ratio), or the pool's counter
    `background seconds` spread evenly (its variability unknown)."""
    lo, hi = _window(step)
    mine = [r for r in log if lo <= r.time <= hi and 200 <= r.status < 400]
    ok = _ok(step["rows"])
    if mine and len(mine) >= 0.9 * len(ok):
        return {"samples": [r.occupancy_s for r in mine], "answer": [r.answer_s for r in mine],
                "after": [r.after_s for r in mine], "source": "pool request log (answer + after-response, per request)",
                "measured": True}
    # the client's answer time: each request's own name's median latency at this step (a mix of routes holds a
    # worker for the mix's mean; the median keeps the few requests that waited out of it)
    medians = unloaded_latency(step)
    answers = answer_s or [medians[r.get("name") or ""] for r in ok]
    if not answers:
        return {"samples": [], "answer": [], "after": [], "source": "no successful request", "measured": False}
    src = "nginx upstream time" if answer_s else "client latency"
    if any(r.get("bg_ms") is not None for r in ok):
        after = [(r.get("bg_ms") or 0) / 1000 * bg_ratio for r in ok]
        src += " + requested after-response time x the pool's measured ratio"
        measured = True
    else:
        # only the mean is known (the pool's counter): assume exponential after-response times around it
        # (quantiles of the exponential, shuffled against the answers), and say so
        mean = (bg_seconds or 0.0) / len(ok)
        n = len(ok)
        after = [-mean * math.log(1 - (i + 0.5) / n) for i in range(n)]
        random.Random(n).shuffle(after)
        src += " + ASSUMED exponential after-response times around the pool's background seconds / requests"
        measured = False
    return {"samples": [answers[i % len(answers)] + b for i, b in enumerate(after)], "answer": answers,
            "after": after, "source": src, "measured": measured}


def after_samples(steps: list[dict], log: list[Request], bg_ratio: float) -> list[float]:
    """Every step's after-response times: the request log's, else what each request asked for x the ratio."""
    out: list[float] = []
    for st in steps:
        lo, hi = _window(st)
        mine = [r.after_s for r in log if lo <= r.time <= hi and 200 <= r.status < 400]
        out += mine or [(r.get("bg_ms") or 0) / 1000 * bg_ratio for r in _ok(st["rows"]) if r.get("bg_ms") is not None]
    return out


def unloaded_latency(cal_step: dict) -> dict[str, float]:
    """Median latency of each request name at the calibration step: a page, a search and an order each have
    their own answer time, and only the excess over it is a wait."""
    by: dict[str, list[float]] = {}
    for r in _ok(cal_step["rows"]):
        by.setdefault(r.get("name") or "", []).append(r["latency_ms"] / 1000)
    return {k: statistics.median(v) for k, v in by.items()}


def step_values(step: dict, log: list[Request], access: list[AccessLine], unloaded: dict[str, float],
                server: bool = True) -> tuple[list[float], str]:
    """The value each request's wait is read from, in arrival order: nginx upstream time minus the pool's answer
    time where both logs matched the step's requests (and ``server``), else the client's open-loop latency minus
    the unloaded latency of the same request name."""
    ok = _ok(step["rows"])
    lo, hi = _window(step)
    if server and log and access:
        mine = [r for r in log if lo <= r.time <= hi]
        lines = [a for a in access if lo <= a.arrival <= hi]
        matched = match_waits(mine, lines)
        if ok and len(matched) >= SERVER_WAITS_MIN_MATCH * len(ok):
            return [w for _, w in sorted(matched, key=lambda m: m[0].time)], "server"
    overall = statistics.median(unloaded.values()) if unloaded else 0.0
    return [r["latency_ms"] / 1000 - unloaded.get(r.get("name") or "", overall) for r in ok], "client"


def measure(step: dict, workers: int, service_s: list[float], sampler_rows: list[dict]) -> Step:
    """Rate, throughput, latency, utilisation and the pool's queue at one step."""
    rows = step["rows"]
    ok = _ok(rows)
    occ = statistics.fmean(service_s) if service_s else math.nan
    arrival = len(rows) / step["duration"]
    util = arrival * occ / workers if math.isfinite(occ) else math.nan
    srows = rows_in(sampler_rows, step["label"])
    return Step(
        label=step["label"], phase=step["phase"], offered_rate=step["rate"], duration_s=step["duration"],
        workers=workers, arrival_rate=round(arrival, 3),
        throughput=round(step_throughput(rows, step["start"] + step["duration"] * 0.2,
                                         step["start"] + step["duration"]), 3),
        ca2=round(model.cv2(interarrivals([r["intended"] for r in ok])), 3), latency=latency_summary(rows),
        error_rate=round((len(rows) - len(ok)) / len(rows), 4) if rows else None,
        occupancy_s=round(occ, 4) if math.isfinite(occ) else None, service_n=len(service_s),
        utilization=round(util, 3) if math.isfinite(util) else None,
        stable=bool(math.isfinite(util) and util < 1), relaxation_s=model.relaxation_time(
            workers, arrival, occ) if math.isfinite(occ) and occ > 0 else None,
        mean_listen_queue=column_mean(srows, "listen_queue"), max_listen_queue=column_max(srows, "listen_queue"),
        mean_answering=column_mean(srows, "answering"), mean_finishing=column_mean(srows, "finishing"),
        mean_active=column_mean(srows, "active"), mean_loadavg=column_mean(srows, "loadavg1"),
        cores=os.cpu_count() or 1,
    )


def analyse(steps: list[dict], workers: int, *, sampler_rows: list[dict], log: list[Request], access_rows: list[dict],
            answer_s: list[float] | None = None, bg_seconds: float | None = None, bg_ratio: float = 1.0,
            seed: int = 1) -> Stepped:
    """steps: [{"label", "phase", "rate", "duration", "start", "rows"}], the calibration step first."""
    access = access_lines(access_rows)
    cal_step = steps[0]
    cal = service_sample(cal_step, log, answer_s, bg_seconds, bg_ratio)
    unloaded = unloaded_latency(cal_step)
    cal_values, cal_src = step_values(cal_step, log, access, unloaded)
    client_cal = modelcheck.Calibration.from_values(step_values(cal_step, [], [], unloaded)[0],
                                                    "client latency - the same request's unloaded latency")
    cals = {"client": client_cal, "server": modelcheck.Calibration.from_values(
        cal_values, "nginx upstream time - pool answer time") if cal_src == "server" else client_cal}
    out_steps, points, per_step = [], [], []
    for st in steps:
        one = service_sample(st, log, None, None, bg_ratio) if log else {}
        svc = one.get("samples") if one.get("source", "").startswith("pool request log") else None
        if svc and st["phase"] != "overload":
            per_step.append(one)
        svc = svc or cal["samples"]  # without a request log the calibration's occupancy stands for every step
        entry = measure(st, workers, svc, sampler_rows)
        if st["phase"] == "stable" and entry.stable and (entry.utilization or 0) <= modelcheck.MAX_UTILIZATION:
            # a step is measured the way its calibration was (server-side only if the calibration was)
            values, src = step_values(st, log, access, unloaded, server=cal_src == "server")
            # the step's whole count decides what is judged; both it and the simulation drop their first 10 %
            measured = modelcheck.measure_waits(modelcheck.after_warmup(values), cals[src])
            measured["requests"] = len(values)
            gaps = interarrivals([r["intended"] for r in _ok(st["rows"])])
            pred = modelcheck.predict_step(workers, entry.arrival_rate, svc, gaps, len(values), seed)
            entry.judged = StepJudgement(
                wait_source=cals[src].source, prediction_method=pred.method, prediction_notes=pred.notes,
                measured_p99_wait_ms=modelcheck._fmt("p99_wait_s", measured.get("p99_wait_s", [math.nan])[0]),
                predicted_p99_wait_ms=modelcheck._fmt("p99_wait_s", pred.p99_wait_s.value))
            points += modelcheck.compare(entry, measured, pred, cals[src], None if cal["measured"] else (
                "the occupancy's variability was not measured (no per-request after-response times: pass the "
                "pool's request log, REQUEST_LOG=), so the model's input is an assumption"))
        out_steps.append(entry)
    # The occupancy that sizes the pool and predicts its capacity: every request the pool logged below
    # capacity (thousands) where the request log has them, else the calibration step's (a few hundred: a mix
    # with 20 % of 200 ms orders has a standard error of ~10 % there)
    pooled = {k: [x for one in per_step for x in one[k]] for k in ("samples", "answer", "after")} if per_step else cal
    svc = pooled["samples"]
    occ = statistics.fmean(svc) if svc else math.nan
    capacity = workers / occ if occ and math.isfinite(occ) else math.inf
    se = statistics.stdev(svc) / math.sqrt(len(svc)) if len(svc) > 1 else math.nan
    return Stepped(
        workers=workers, occupancy_s=round(occ, 4) if math.isfinite(occ) else None,
        occupancy_se_s=round(se, 5) if math.isfinite(se) else None, occupancy_n=len(svc),
        cs2=round(model.cv2(svc), 4), service_source=cal["source"],
        response_s=round(statistics.fmean(pooled["answer"]), 4) if pooled["answer"] else None,
        background_s=round(statistics.fmean(pooled["after"]), 4) if pooled["after"] else None,
        after_samples_s=after_samples(steps, log, bg_ratio) or (cal["after"] if cal["measured"] else []),
        variability_measured=cal["measured"], expected_capacity=round(capacity, 3), steps=out_steps,
        model_points=points, calibration={k: c.summary() for k, c in cals.items()}, service_samples_s=svc,
        answer_samples_s=pooled["answer"],
        capacity=capacity_check(out_steps, capacity, se / occ if occ and math.isfinite(se) else 0.0))


def capacity_check(steps: list[Step], capacity: float, occupancy_rel_se: float = 0.0) -> Capacity:
    """Throughput at the overload step against workers / occupancy: within 15 %, or within two standard errors
    of the occupancy's mean when that is wider (the expected capacity is itself an estimate)."""
    over = [s for s in steps if s.phase == "overload" and s.arrival_rate > capacity * 1.05]
    tolerance = max(CAPACITY_AGREE, 2 * occupancy_rel_se)
    out = Capacity(measured_capacity=None, capacity_error=None, capacity_ok=None,
                   capacity_tolerance=round(tolerance, 3))
    if over:
        top = max(over, key=lambda s: s.arrival_rate)
        out.measured_capacity = top.throughput
        out.capacity_error = round(model.relative_error(capacity, top.throughput), 3)
        out.capacity_ok = out.capacity_error <= tolerance
    return out
