"""The report's four settings, each with the numbers behind it, from the scenarios that represent normal traffic.

The sample app's `timeout` scenario (and a user class with `fcgipool_normal = False`) sends work that is too
long on purpose: it shows what the current budget loses, and never sets a recommendation.
"""

from __future__ import annotations

import dataclasses
import math

from fcgipool.sizing import rules
from fcgipool.sizing.predict import WaitPrediction, predict_wait, workers_for

from loadtest import model
from loadtest.results import Recommendations, Setting, Stepped, Timeout, WorkersSetting


def _ms(iv) -> str:
    if math.isinf(iv.value):
        return "unbounded"
    return f"{iv.value * 1000:.0f} ms [{iv.low * 1000:.0f}-{iv.high * 1000:.0f}]"


def _interval_dict(pred: WaitPrediction) -> dict:
    return {k: [round(v, 4) if math.isfinite(v) else None for v in (iv.value, iv.low, iv.high)]
            for k, iv in (("p_wait", pred.p_wait), ("mean_wait_s", pred.mean_wait_s),
                          ("p90_wait_s", pred.p90_wait_s), ("p99_wait_s", pred.p99_wait_s))}


def workers(name: str, sc: Stepped, target_rps: float, target_p99_ms: float, rss_mb: float | None, memory_mb: float,
            seed: int) -> WorkersSetting:
    """The smallest worker count whose p99 wait interval at ``target_rps`` stays under the target (the upper end
    of the interval: it holds for every occupancy distribution the measured sample is compatible with), the
    memory cap, and what to do when memory does not allow it."""
    svc = sc.service_samples_s
    occ = sc.occupancy_s or 0.0
    adv = workers_for(target_rps, svc, target_p99_ms, seed=seed, end="high")
    need = adv.workers
    cap = model.memory_cap(memory_mb, rss_mb, reserve_mb=rss_mb) if rss_mb else None
    value = need if cap is None or need is None else min(need, cap)
    busy = target_rps * occ
    reason = (f"{name}: {target_rps:g} req/s x {occ * 1000:.0f} ms occupancy ({(sc.response_s or 0) * 1000:.0f} ms "
              f"answering + {(sc.background_s or 0) * 1000:.0f} ms after the response; {sc.service_source}) "
              f"= {busy:.2f} busy workers on average")
    out = WorkersSetting(value=value, scenario=name, needed=need, memory_cap=cap)
    if need is None:
        reason += f"; no count up to 1024 keeps the p99 wait under {target_p99_ms:g} ms"
    else:
        pred = adv.prediction
        reason += (f"; with {need} workers the predicted p99 wait is {_ms(pred.p99_wait_s)} ({pred.method}), "
                   f"P(wait) {pred.p_wait.value:.2f} [{pred.p_wait.low:.2f}-{pred.p_wait.high:.2f}]")
        out.prediction = _interval_dict(pred)
        if adv.fewer is not None:
            reason += f"; {need - 1} would give {_ms(adv.fewer.p99_wait_s)}"
    if cap is not None:
        reason += f"; memory {memory_mb:g} MB / {rss_mb:.0f} MB RSS per worker allows {cap}"
        if need is None or cap < need:
            reason += " — " + overload_answer(sc, cap, target_rps, target_p99_ms, rss_mb, need, seed, out)
    out.reason = reason
    return out


def overload_answer(sc: Stepped, cap: int, rate: float, target_p99_ms: float, rss_mb: float, need: int | None,
                    seed: int, out: WorkersSetting) -> str:
    """Memory-bound: what the allowed workers give, and what to change instead of adding workers."""
    svc = sc.service_samples_s
    words = ["MEMORY-BOUND: "]
    at_cap = predict_wait(max(1, cap), rate, svc, seed=seed) if cap >= 1 else None
    if at_cap is None or not at_cap.stable:
        words.append(f"{cap} workers cannot keep up at all ({rate:g} req/s needs more than "
                     f"{rate * (sc.occupancy_s or 0.0):.1f} busy workers): the queue grows until nginx answers 502/504")
    else:
        words.append(f"with {cap} workers the predicted p99 wait is {_ms(at_cap.p99_wait_s)}")
        out.prediction_at_cap = _interval_dict(at_cap)
    after = sc.background_s or 0.0
    answers = sc.answer_samples_s
    if after > 0 and answers:
        without = workers_for(rate, answers, target_p99_ms, seed=seed, end="high").workers
        words.append(f". What to do: the after-response work holds {rate * after:.1f} workers busy on average "
                     f"({after * 1000:.0f} ms per request); move it to a queue served outside the pool (see the "
                     f"spill issue) and the pool needs {without} workers, or cut it: every 10 ms less per request "
                     f"frees {rate * 0.01:.2f} workers")
    else:
        words.append(". What to do: shorten the answer, or add memory")
    if need is not None:
        words.append(f"; or give the pool {math.ceil((need + 1) * rss_mb)} MB for {need} workers")
    return "".join(words)


def recommend(normal: dict[str, Stepped], timeout: Timeout | None, answer_p999_s: float, rss_mb: float | None, *,
              target_rps: dict[str, float], target_p99_ms: float, memory_mb: float, budget_now: float | None,
              seed: int = 1, after_s: tuple[list[float], list[str]] | None = None) -> Recommendations:
    """``normal``: the stepped scenarios of normal traffic by name (the sample's exhaustion, a user's classes);
    the worker count is the largest any of them needs. ``after_s``: the after-response times the request log
    has for every normal scenario, and their names (else the stepped scenarios' own)."""
    per = {name: workers(name, sc, target_rps[name], target_p99_ms, rss_mb, memory_mb, seed)
           for name, sc in normal.items() if sc.service_samples_s and sc.occupancy_s}
    most = None
    if per:
        most = dataclasses.replace(max(per.values(), key=lambda w: (w.value or 0)))
        if len(per) > 1:
            most.reason += "; the most any normal scenario needs (" + ", ".join(
                f"{n}: {w.value}" for n, w in per.items()) + ")"
    after, sources = after_s or ([x for sc in normal.values() for x in sc.after_samples_s], list(normal))
    not_derived = None
    if not after and normal:
        mean = max((sc.background_s or 0.0) for sc in normal.values())
        not_derived = {"background_timeout": (
            f"needs each request's after-response time, which only the pool's request log has (REQUEST_LOG=, "
            f"fcgipool --request-log); the pool's counter gives only the mean, {mean * 1000:.0f} ms per request")}
    background = None
    if after:
        budget = rules.background_timeout(after)
        lost_now = ""
        if timeout and budget_now:
            lost_now = (f". The timeout scenario (over budget on purpose, not used here) lost {timeout.ledger_lost} "
                        f"of {timeout.ledger_started} tasks at the current {budget_now:g} s budget")
        background = Setting(value=budget, reason=(
            f"p99.9 of the after-response time of normal traffic ({', '.join(sources)}; {len(after)} requests) is "
            f"{model.quantile(after, 0.999):.3f} s; x 1.5, at least 1 s: a budget of {budget} s cuts "
            f"{model.lost_share(after, budget) * 100:.2f} % of it{lost_now}"))
    worker_timeout = rules.worker_timeout(answer_p999_s)
    read_timeout = rules.read_timeout(worker_timeout)
    return Recommendations(
        workers=most, workers_by_scenario=per or None, not_derived=not_derived, background_timeout=background,
        timeout=Setting(value=worker_timeout, reason=(
            f"the response phase only (after-response work has its own budget): 3 x the measured p99.9 answer time "
            f"of normal traffic including queueing ({answer_p999_s:.2f} s), at least 10 s; a request past it is "
            f"stopped and its worker replaced, like PHP-FPM's request_terminate_timeout")),
        fastcgi_read_timeout=Setting(value=f"{read_timeout}s", reason=(
            f"just above the pool's hard kill ({worker_timeout} s + 2 x kill_grace {rules.KILL_GRACE_S:g} s): the "
            "pool stops a slow request first (logged, its tasks reported), nginx answers 504 only when the pool does "
            "not answer at all; after-response work runs after END_REQUEST and never counts against it")))
