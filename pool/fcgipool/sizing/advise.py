"""``fcgipool advise``'s reasoning, without I/O: from request-log lines (and, optionally, nginx's arrival times and
the waits it measured) to the pool's settings, each with its reason.

* **rate**: the busiest ``window`` seconds of arrivals (a sliding window), times ``headroom``.
* **occupancy**: answer + after-response time of the requests of that window (its route mix is the peak's), or
  of every request when the window holds fewer than 200.
* **workers**: :func:`fcgipool.sizing.predict.workers_for`, by the upper end of the p99 interval.
* **timeouts**: :mod:`fcgipool.sizing.rules`, from answer times (``--timeout``) and from the after-response times
  of requests whose tasks finished (``--background-timeout``); tasks cut at the current budget say it is too small.
* **memory**: workers x the largest RSS a worker reached, plus one worker's worth for the arbiter.
* **overload**: when the memory budget holds fewer workers than needed, the wait it will have and what the
  heaviest route's after-response work would save.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from . import rules
from .logs import AccessLine, Request
from .model import quantile, quantile_ci
from .predict import Interval, WaitPrediction, predict_wait, workers_for

__all__ = ["Advice", "Options", "RouteStats", "Window", "advise", "busiest_windows"]

MIN_WINDOW_SAMPLE = 200  # fewer requests in the busiest window: take the occupancy of the whole log
SATURATED = 0.9  # the workers seen were busy this share of the busiest window: the log shows capacity, not demand
WHAT_IF_REPLICATIONS = 10  # the overload what-ifs only need the worker count, not a tight interval


@dataclass(frozen=True)
class Options:
    p99_ms: float = 100.0
    memory_mb: float | None = None
    headroom: float = 1.5
    window_s: float = 60.0
    kill_grace_s: float = rules.KILL_GRACE_S
    seed: int = 0
    replications: int = 40
    requests: int | None = None  # simulated per replication (None: predict_wait's default)


@dataclass(frozen=True)
class Window:
    start: float
    end: float
    requests: int
    rate: float


@dataclass(frozen=True)
class RouteStats:
    route: str
    requests: int
    share: float  # of the requests
    worker_share: float  # of the worker time (answer + after-response seconds)
    answer_p50_ms: float
    answer_p999_ms: float
    after_mean_ms: float
    after_p999_ms: float
    occupancy_mean_ms: float
    tasks_ok: int
    tasks_failed: int
    tasks_lost_timeout: int
    tasks_lost_other: int
    cut_at_ms: float | None  # after-response time of requests whose tasks were cut by the budget: the budget now
    status_504: int
    timeout_s: int  # what this route alone would need
    background_timeout_s: int


@dataclass
class Advice:
    requests: int
    span_s: float
    windows: list[Window]
    rate: float  # what the pool is sized for: busiest rate x headroom
    occupancy_sample: int
    occupancy_mean_ms: float
    cs2: float
    ca2: float
    workers: int | None
    prediction: WaitPrediction | None
    fewer: WaitPrediction | None
    settings: dict[str, dict] = field(default_factory=dict)  # name -> {"value", "reason"}
    routes: list[RouteStats] = field(default_factory=list)
    memory: dict = field(default_factory=dict)
    overload: dict | None = None
    now: dict = field(default_factory=dict)  # the pool as the log shows it: workers seen, predicted/measured wait
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def busiest_windows(times: Sequence[float], window_s: float, count: int = 3) -> list[Window]:
    """The ``count`` busiest non-overlapping windows of ``window_s`` seconds (each starts at an arrival). A log
    shorter than the window is one window: its mean rate, (n - 1) / span."""
    ts = sorted(times)
    n = len(ts)
    if n < 2:
        raise ValueError("need at least 2 requests to measure a rate")
    span = ts[-1] - ts[0]
    if span < window_s:
        return [Window(ts[0], ts[-1], n, (n - 1) / span if span > 0 else math.inf)]
    counts: list[tuple[int, int]] = []
    j = 0
    for i in range(n):
        if ts[i] + window_s > ts[-1] + 1e-9 and counts:
            break  # a window running past the log's end would under-count
        while j < n and ts[j] < ts[i] + window_s:
            j += 1
        counts.append((j - i, i))
    picked: list[Window] = []
    for c, i in sorted(counts, key=lambda ci: (-ci[0], ci[1])):
        start = ts[i]
        if all(start + window_s <= w.start or start >= w.end for w in picked):
            picked.append(Window(start, start + window_s, c, c / window_s))
            if len(picked) == count:
                break
    return picked


def _ms(x: float) -> float:
    return round(x * 1000, 3)


def route_stats(requests: Sequence[Request], top: int = 8) -> list[RouteStats]:
    """Per route, heaviest (worker time) first; beyond ``top`` routes the rest are summed as "(other routes)"."""
    groups: dict[str, list[Request]] = {}
    for r in requests:
        groups.setdefault(r.route, []).append(r)
    total_busy = sum(r.occupancy_s for r in requests) or 1.0
    ordered = sorted(groups.items(), key=lambda kv: -sum(r.occupancy_s for r in kv[1]))
    if len(ordered) > top:
        rest = [r for _, rs in ordered[top - 1 :] for r in rs]
        ordered = [*ordered[: top - 1], ("(other routes)", rest)]
    out = []
    for route, rs in ordered:
        answers = [r.answer_s for r in rs if r.status != 504] or [r.answer_s for r in rs]
        finished = [r.after_s for r in rs if r.tasks and not any(o.startswith("lost") for _, o in r.tasks)]
        cut = [r.after_s for r in rs if any(o == "lost:timeout" for _, o in r.tasks)]
        outcomes = [o for r in rs for _, o in r.tasks]
        after = [r.after_s for r in rs]
        out.append(RouteStats(
            route=route, requests=len(rs), share=len(rs) / len(requests),
            worker_share=sum(r.occupancy_s for r in rs) / total_busy,
            answer_p50_ms=_ms(quantile(answers, 0.5)), answer_p999_ms=_ms(quantile(answers, 0.999)),
            after_mean_ms=_ms(sum(after) / len(after)),
            after_p999_ms=_ms(quantile(after, 0.999)),
            occupancy_mean_ms=_ms(sum(r.occupancy_s for r in rs) / len(rs)),
            tasks_ok=outcomes.count("ok"), tasks_failed=outcomes.count("failed"),
            tasks_lost_timeout=outcomes.count("lost:timeout"),
            tasks_lost_other=sum(1 for o in outcomes if o.startswith("lost") and o != "lost:timeout"),
            cut_at_ms=_ms(quantile(cut, 0.5)) if cut else None,
            status_504=sum(1 for r in rs if r.status == 504),
            timeout_s=rules.worker_timeout(quantile(answers, 0.999)),
            background_timeout_s=rules.background_timeout(finished),
        ))  # fmt: skip
    return out


def _window_sample(requests: Sequence[Request], w: Window) -> tuple[list[Request], bool]:
    inside = [r for r in requests if w.start <= r.time <= w.end]
    return (inside, True) if len(inside) >= MIN_WINDOW_SAMPLE else (list(requests), False)


def _ca2(times: Sequence[float]) -> float:
    """Burstiness of the arrivals (cv² of the gaps), never below Poisson's 1: the request log's start times are
    smoothed by queueing, and independent users make traffic at least as bursty as Poisson."""
    ts = sorted(times)
    gaps = [b - a for a, b in itertools.pairwise(ts)]
    if len(gaps) < 50:
        return 1.0
    mean = sum(gaps) / len(gaps)
    var = sum((g - mean) ** 2 for g in gaps) / (len(gaps) - 1)
    return max(1.0, var / (mean * mean)) if mean > 0 else 1.0


def advise(requests: Sequence[Request], opts: Options, access: Sequence[AccessLine] = (),
           measured_waits: Sequence[tuple[Request, float]] = ()) -> Advice:  # fmt: skip
    """The advice for a pool that served ``requests`` (sorted by time). ``access``: nginx's lines for the
    arrival times; ``measured_waits``: (request, wait) pairs from :func:`fcgipool.sizing.logs.match_waits`."""
    if len(requests) < 2:
        raise ValueError("need at least 2 requests in the log")
    arrivals = [a.arrival for a in access] if access else [r.time for r in requests]
    windows = busiest_windows(arrivals, opts.window_s)
    peak = windows[0]
    warnings: list[str] = []
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
    if span < opts.window_s:
        warnings.append(f"the log covers {span:.0f} s, less than --window {opts.window_s:g} s: sized for its "
                        "average rate, not a busiest window")  # fmt: skip
    sample, in_window = _window_sample(requests, peak)
    occ = [r.occupancy_s for r in sample]
    ca2 = _ca2([t for t in arrivals if peak.start <= t <= peak.end])
    rate = peak.rate * opts.headroom
    adv = workers_for(rate, occ, opts.p99_ms, ca2=ca2, seed=opts.seed, replications=opts.replications,
                      requests=opts.requests)
    occ_mean = sum(occ) / len(occ)
    answer_mean = sum(r.answer_s for r in sample) / len(sample)
    result = Advice(
        requests=len(requests), span_s=span, windows=windows, rate=rate, occupancy_sample=len(occ),
        occupancy_mean_ms=_ms(occ_mean), cs2=adv.prediction.cs2 if adv.prediction else math.nan, ca2=ca2,
        workers=adv.workers, prediction=adv.prediction, fewer=adv.fewer, warnings=warnings,
    )  # fmt: skip
    if not in_window:
        warnings.append(f"the busiest window holds {peak.requests} requests, fewer than {MIN_WINDOW_SAMPLE}: "
                        "occupancy taken from the whole log")  # fmt: skip
    result.routes = route_stats(requests)
    _workers_setting(result, opts, answer_mean, occ_mean)
    _timeouts(result, requests, opts)
    _memory(result, requests, sample, opts)
    _now(result, requests, peak, occ, ca2, measured_waits, opts, has_access=bool(access))
    return result


def _workers_setting(res: Advice, opts: Options, answer_mean: float, occ_mean: float) -> None:
    p, busy = res.prediction, res.rate * occ_mean
    head = (f"{res.rate:.1f} req/s ({res.windows[0].rate:.1f} busiest x headroom {opts.headroom:g}) x "
            f"{occ_mean * 1000:.0f} ms occupancy ({answer_mean * 1000:.0f} ms answering + "
            f"{(occ_mean - answer_mean) * 1000:.0f} ms after the response) = {busy:.1f} workers busy on average")
    if res.workers is None or p is None:
        res.settings["workers"] = {"value": None, "reason": head + "; no worker count up to 1024 meets the target"}
        return
    reason = (f"{head}; p99 wait for a worker {_fmt_interval(p.p99_wait_s)} with {res.workers} "
              f"(target {opts.p99_ms:g} ms, {p.method}{'' if p.agreed else ': the closed form disagreed'})")
    if res.fewer is not None:
        f = res.fewer
        reason += (f"; {res.workers - 1} would wait {_fmt_interval(f.p99_wait_s)}" if f.stable else
                   f"; {res.workers - 1} cannot keep up (utilization {f.utilization:.2f})")  # fmt: skip
    res.settings["workers"] = {"value": res.workers, "reason": reason}


def _fmt_interval(iv: Interval) -> str:
    if math.isinf(iv.value):
        return "unbounded"
    high = "inf" if math.isinf(iv.high) else f"{iv.high * 1000:.0f}"
    return f"{iv.value * 1000:.0f} ms [{iv.low * 1000:.0f}-{high}]"


def _timeouts(res: Advice, requests: Sequence[Request], opts: Options) -> None:
    # a 504 is a request the pool stopped at the current --timeout: its answer time is the timeout, not what the
    # request needed, so it would feed the current setting back into the advice
    answers = [r.answer_s for r in requests if r.status != 504] or [r.answer_s for r in requests]
    p999 = quantile(answers, 0.999)
    timeout = rules.worker_timeout(p999)
    slowest = max(res.routes, key=lambda rs: rs.answer_p999_ms)
    stopped = [r.answer_s for r in requests if r.status == 504]
    reason = (f"3 x the p99.9 answer time ({p999:.2f} s; slowest route {slowest.route} at "
              f"{slowest.answer_p999_ms / 1000:.2f} s), at least {rules.MIN_TIMEOUT_S} s; the response phase only, "
              "after-response work has its own budget")  # fmt: skip
    if stopped:
        reason += (f"; {len(stopped)} requests answered 504 after about {quantile(stopped, 0.5):.1f} s (stopped at "
                   "the current --timeout?): how long they needed the log cannot tell; they are left out above")
    res.settings["timeout"] = {"value": timeout, "reason": reason}
    finished = [r.after_s for r in requests if r.tasks and not any(o.startswith("lost") for _, o in r.tasks)]
    budget = rules.background_timeout(finished)
    cut_routes = [rs for rs in res.routes if rs.tasks_lost_timeout]
    if finished:
        top = max(res.routes, key=lambda rs: rs.background_timeout_s)
        reason = (f"p99.9 of the after-response time of requests whose tasks finished is "
                  f"{quantile(finished, 0.999):.2f} s (set by {top.route}); x {rules.BACKGROUND_HEADROOM:g} it cuts "
                  f"<= {rules.BACKGROUND_LOSS:.1%} of that work")  # fmt: skip
    else:
        reason = "no request with after-response tasks that finished"
    if cut_routes:
        cut_at = max(rs.cut_at_ms or 0 for rs in cut_routes) / 1000
        lost = sum(rs.tasks_lost_timeout for rs in cut_routes)
        need = max(budget, math.ceil(2 * cut_at))
        reason += (f"; THE CURRENT BUDGET IS TOO SMALL: {lost} tasks were cut at about {cut_at:.1f} s ("
                   + ", ".join(f"{rs.route}: {rs.tasks_lost_timeout}" for rs in cut_routes)
                   + f"); how long they would have run the log cannot tell, so at least {need} s (2 x the cut), "
                   "then run advise again on the new log")  # fmt: skip
        budget = need
    res.settings["background_timeout"] = {"value": budget, "reason": reason}
    read = rules.read_timeout(timeout, opts.kill_grace_s)
    res.settings["fastcgi_read_timeout"] = {"value": f"{read}s", "reason": (
        f"nginx: just above the pool's hard kill ({timeout} s + 2 x kill_grace {opts.kill_grace_s:g} s + 1 s), so "
        "the pool stops a slow request first; after-response work runs after END_REQUEST and never counts")}


def _memory(res: Advice, requests: Sequence[Request], sample: Sequence[Request], opts: Options) -> None:
    per_pid: dict[int, int] = {}
    for r in requests:
        if r.rss > per_pid.get(r.pid, 0):
            per_pid[r.pid] = r.rss
    if not per_pid:
        res.memory = {"rss_mb": None, "reason": "the log has no RSS (a pool run without the fcgipool command)"}
        return
    rss_mb = max(per_pid.values()) / 2**20
    need = res.workers or 0
    total = (need + 1) * rss_mb
    res.memory = {"rss_mb": round(rss_mb, 1), "needed_mb": math.ceil(total), "reason": (
        f"{need} workers x {rss_mb:.0f} MB (the largest RSS a worker reached) + {rss_mb:.0f} MB for the arbiter")}
    res.settings["memory_mb"] = {"value": math.ceil(total), "reason": res.memory["reason"]}
    if opts.memory_mb is None:
        return
    cap = max(0, math.floor((opts.memory_mb - rss_mb) / rss_mb))
    res.memory["cap_workers"] = cap
    if res.workers is not None and cap >= res.workers:
        return
    res.overload = _overload(res, sample, opts, cap, rss_mb)


def _overload(res: Advice, sample: Sequence[Request], opts: Options, cap: int, rss_mb: float) -> dict:
    occ = [r.occupancy_s for r in sample]
    at_cap = predict_wait(cap, res.rate, occ, ca2=res.ca2, seed=opts.seed, replications=opts.replications,
                          requests=opts.requests) if cap >= 1 else None  # fmt: skip
    if at_cap is None:
        wait = "no worker fits"
    elif not at_cap.stable:
        wait = (f"the queue grows without bound ({res.rate * at_cap.occupancy_s:.1f} workers busy on average > "
                f"{cap}): requests wait until nginx's fastcgi_read_timeout answers 504")  # fmt: skip
    else:
        wait = f"p99 wait {_fmt_interval(at_cap.p99_wait_s)}"
    heavy = max(res.routes, key=lambda rs: rs.after_mean_ms * rs.requests)
    fixes = []
    for label, scale in (("moved to a queue (--spill-to, issue 11)", 0.0), ("halved", 0.5)):
        what_if = [r.answer_s + r.after_s * (scale if r.route == heavy.route else 1.0) for r in sample]
        w = workers_for(res.rate, what_if, opts.p99_ms, ca2=res.ca2, seed=opts.seed,
                        replications=min(opts.replications, WHAT_IF_REPLICATIONS), requests=opts.requests).workers
        fits = "fits" if w is not None and w <= cap else "does not fit"
        fixes.append(f"{heavy.route}'s after-response work {label}: {w} workers ({fits} in {opts.memory_mb:g} MB)")
    need = res.workers or 0
    fixes.append(f"or give the pool {math.ceil((need + 1) * rss_mb)} MB ({need} workers x {rss_mb:.0f} MB + the "
                 "arbiter)")  # fmt: skip
    share = sum(r.after_s for r in sample if r.route == heavy.route) / (sum(occ) or 1.0)
    return {"cap_workers": cap, "needed_workers": res.workers, "wait": wait,
            "prediction": at_cap.as_dict() if at_cap else None, "heaviest_route": heavy.route,
            "heaviest_after_share": round(share, 3), "what_to_do": fixes,
            "summary": (f"{opts.memory_mb:g} MB holds {cap} workers of {rss_mb:.0f} MB (one worker's worth kept for "
                        f"the arbiter); {need} are needed. With {cap}: {wait}. {heavy.route}'s after-response work "
                        f"is {share:.0%} of the worker time")}  # fmt: skip


def _now(res: Advice, requests: Sequence[Request], peak: Window, occ: Sequence[float], ca2: float,
         measured: Sequence[tuple[Request, float]], opts: Options, *, has_access: bool) -> None:  # fmt: skip
    """The pool as the log shows it: the workers that served the busiest window, their busy share, the wait the
    model predicts for them and, with the access log, the wait nginx measured."""
    inside = [r for r in requests if peak.start <= r.time <= peak.end]
    pids = {r.pid for r in inside}
    length = max(peak.end - peak.start, 1e-9)
    busy = sum(r.occupancy_s for r in inside) / (length * max(1, len(pids)))
    res.now = {"workers_seen": len(pids), "busy_share": round(busy, 3), "rate": round(peak.rate, 3)}
    if busy > SATURATED and not has_access:
        res.warnings.append(
            f"the {len(pids)} workers seen in the busiest window were busy {busy:.0%} of it: requests queued, and "
            "the request log's times are when a worker began them, so the rate shown is what the pool managed, not "
            "what arrived; pass nginx's --access-log for the arrival times")  # fmt: skip
    if pids and peak.rate * (sum(occ) / len(occ)) < len(pids):
        p = predict_wait(len(pids), peak.rate, occ, ca2=ca2, seed=opts.seed, replications=opts.replications,
                         requests=opts.requests)
        res.now["predicted_p99_wait_s"] = p.p99_wait_s.as_dict()
    waits = [w for r, w in measured if peak.start <= r.time <= peak.end]
    if waits:
        lo, hi = quantile_ci(waits, 0.99)
        res.now["measured_p99_wait_s"] = {"value": quantile(waits, 0.99), "low": lo, "high": hi, "n": len(waits)}
