"""The `spill` scenario: after-response work past the pool's capacity, spill off then on, in one run.

The same `GET /work` as `exhaustion` (20 ms answer, 30..90 ms after-response task) at LOADS x the capacity
the pool has when it runs every task itself (workers / occupancy). The first half sends `spill=0`: every task
stays in the pool, so past 1x the pool is exhausted and requests wait. The second half lets the pool spill
(`--spill-when saturated`, docs/spill.md): once finishing workers reach the threshold, tasks go to Redis + RQ
and the workers only answer. Per step: latency (p50/p99), 502/504, where the tasks went (the sample app's
ledger: `spilled`, `ran_in_queue`, `lost`), the spill queue's depth (sampled from the status page); after the
on half, how long the queue took to drain. Needs the stack's spill queue (stack.json `spill_to`).
"""

from __future__ import annotations

import math
import time

from loadtest import analysis
from loadtest.modelcheck import MIN_REQUESTS
from loadtest.results import Spill, SpillAdvice, SpillFacts, SpillStep, SpillVerdict, TaskCounts

LOADS = (0.25, 1.0, 1.5, 2.0)  # x the pool-only capacity; 0.25 is the unloaded reference
SMOKE_LOADS = (0.25, 2.0)
STEP_S, SMOKE_STEP_S = 12.0, 4.0
#: the p99 check compares two p99s, so each rests on this many requests (10 in the tail): the top step's with
#: spill on, and the unloaded reference's (the lowest load, spill off). 12-s steps gave the reference ~150 requests,
#: a p99 that was nearly the slowest request: 30-50 ms from run to run, and the check failed one run in three
P99_REQUESTS = MIN_REQUESTS["p99_wait_s"]
#: a judged step runs until it has its requests, but no longer than this (the reference, at a quarter of the rate,
#: may take longer: ~94 s at the sample stack's 11.7 req/s)
MAX_STEP_S, MAX_REFERENCE_S = 60.0, 120.0
DRAIN_TIMEOUT_S = 120.0
SETTLE_S = 15.0  # after the queue is empty, how long its last running jobs may take to be counted
#: a queue worker's share of time busy that the advice sizes for (M/M/c: the wait stays short below ~0.7)
QUEUE_UTILISATION = 0.7
EVENTS = ("started", "finished", "failed", "lost", "spilled", "ran_in_queue")


def ledger_counts(ledger: dict, kind: str = "work") -> dict[str, int]:
    counts = (ledger or {}).get("kinds", {}).get(kind, {})
    return {e: int(counts.get(e, 0)) for e in EVENTS}


def delta(before: dict[str, int], after: dict[str, int]) -> TaskCounts:
    return TaskCounts(**{e: after[e] - before[e] for e in EVENTS})


class Skipped(Exception):
    """The scenario cannot run against this stack; the message says why."""


def queue_depth(status: dict) -> int | None:
    value = status.get("spill queue depth")
    return None if value in (None, "") else int(value)


def wait_drained(run, timeout: float = DRAIN_TIMEOUT_S) -> tuple[float | None, int | None]:
    """Seconds until the spill queue was empty (None: not within ``timeout``), and its depth at the start."""
    t0 = time.monotonic()
    first = None
    while time.monotonic() - t0 < timeout:
        depth = queue_depth(run.stack.status())
        first = depth if first is None else first
        if not depth:
            return round(time.monotonic() - t0, 2), first
        time.sleep(0.5)
    return None, first


def wait_ran(run, before: dict[str, int], timeout: float = SETTLE_S) -> dict[str, int]:
    """The ledger once every task spilled since ``before`` has run in the queue (or ``timeout`` passed: the counts
    then say what did not run). An empty queue is not enough: its last jobs may still be running, and a job is
    counted when it ends (one run counted a task spilled but not run that ran ~0.1 s later)."""
    t0 = time.monotonic()
    while True:
        after = ledger_counts(run.stack.ledger())
        behind = (after["spilled"] - before["spilled"]) - (after["ran_in_queue"] - before["ran_in_queue"])
        if behind <= 0 or time.monotonic() - t0 >= timeout:
            return after
        time.sleep(0.2)


def run_spill(run, capacity: float, base_ms: float) -> Spill:
    """Both halves; ``capacity`` is the pool-only capacity in req/s (measured by exhaustion, or estimated)."""
    cfg = run.cfg
    st = run.stack.status()
    if "spill queue depth" not in st:
        raise Skipped("the pool has no spill queue (start the stack with FCGIPOOL_SPILL_TO, docs/spill.md)")
    loads = SMOKE_LOADS if cfg.smoke else LOADS
    secs = SMOKE_STEP_S if cfg.smoke else (cfg.duration or STEP_S)
    work = {"respond_ms": cfg.respond_ms, "background_ms": cfg.background_ms}
    out = Spill(capacity=round(capacity, 2), loads=list(loads), step_s=secs, steps=[], background_ms=cfg.background_ms)
    for spill in (0, 1):
        half = "on" if spill else "off"
        for load in loads:
            rate = round(capacity * load, 2)
            label = f"spill-{half}@{load:g}x"
            step_s = step_seconds(half, load, loads, rate, secs, smoke=cfg.smoke)
            before = ledger_counts(run.stack.ledger())
            rows, view = run.drive("spill", label, {"rate": rate, "spill": spill, **work}, step_s)
            # the pool is idle again (drive waits); what it spilled may still be queued: drain before counting
            drained_s, depth = wait_drained(run) if spill else (0.0, 0)
            after = wait_ran(run, before) if spill else ledger_counts(run.stack.ledger())
            samples = analysis.rows_in(run.sampler.rows, label)
            depths = [int(r["spill_depth"]) for r in samples if r.get("spill_depth") not in ("", None)]
            out.steps.append(SpillStep(
                spill=half, load=load, offered_rate=rate, label=label, seconds=step_s,
                latency=analysis.latency_summary(rows),
                throughput=round(analysis.step_throughput(rows, view.start + step_s * 0.2, view.start + step_s), 2),
                tasks=delta(before, after), queue_depth_max=max(depths, default=depth or 0), drain_s=drained_s,
                depth_at_end=depth))
    out.verdict = verdict(out)
    out.advice = advice(out)
    return out


def step_seconds(half: str, load: float, loads: tuple[float, ...], rate: float, secs: float, *, smoke: bool) -> float:
    """How long a step runs: ``secs``, but the two steps the p99 check compares (the top load with spill on, the
    lowest with spill off) run until they have P99_REQUESTS requests, at most MAX_STEP_S (MAX_REFERENCE_S for the
    lowest). A smoke run keeps its short steps, and its p99 check says it was not judged."""
    if smoke or rate <= 0:
        return secs
    if half == "on" and load == max(loads):
        cap = MAX_STEP_S
    elif half == "off" and load == min(loads):
        cap = MAX_REFERENCE_S
    else:
        return secs
    return max(secs, min(cap, math.ceil(P99_REQUESTS * 1.1 / rate)))  # 10 % over: Poisson arrivals fall short


def verdict(out: Spill) -> SpillVerdict:
    """The issue's must-show at the top load: on: p99 within 2x unloaded, 0 502/504, 0 lost, drained. The p99 part
    is judged only when both p99s rest on P99_REQUESTS requests; the rest always."""
    top = max(out.loads)
    ref, on, off = out.step("off", min(out.loads)), out.step("on", top), out.step("off", top)
    if not (ref and on and off):
        return SpillVerdict(ok=None, why="steps missing")
    ref_latency = ref.latency
    unloaded = ref_latency.p99_ms or 0.0
    on_p99, off_p99 = on.latency.p99_ms, off.latency.p99_ms
    on_steps = [s for s in out.steps if s.spill == "on"]
    lost = sum(s.tasks.lost for s in on_steps)
    unfinished = sum(s.tasks.spilled - s.tasks.ran_in_queue for s in on_steps)
    facts = SpillFacts(
        unloaded_p99_ms=unloaded, on_p99_ms=on_p99, off_p99_ms=off_p99,
        on_p99_ratio=round(on_p99 / unloaded, 2) if unloaded and on_p99 else None,
        off_p99_ratio=round(off_p99 / unloaded, 2) if unloaded and off_p99 else None,
        on_502_504=on.latency.status_502 + on.latency.status_504, on_lost=lost, spilled_not_run=unfinished,
        drained=on.drain_s is not None, drain_s=on.drain_s, spilled_at_top=on.tasks.spilled,
        unloaded_requests=ref_latency.requests, on_requests=on.latency.requests,
        p99_not_judged=None if min(ref_latency.requests, on.latency.requests) >= P99_REQUESTS else
        f"a p99 needs {P99_REQUESTS} requests in each (10 in its tail)")
    p99_ok = facts.on_p99_ratio is not None and facts.on_p99_ratio <= 2.0
    ok = ((p99_ok or not facts.judged) and facts.on_502_504 == 0 and lost == 0 and unfinished == 0
          and facts.drained)  # fmt: skip
    return SpillVerdict(ok=ok, facts=facts)


def advice(out: Spill) -> SpillAdvice | None:
    """When to turn spill on, and how many queue workers the measured spill rate needs."""
    top = max(out.loads)
    on, off = out.step("on", top), out.step("off", top)
    if not (on and off):
        return None
    rate = on.tasks.spilled / (on.seconds or out.step_s)  # tasks a second the queue had to take at the top load
    task_s = out.background_ms / 1000
    workers = max(1, math.ceil(rate * task_s / QUEUE_UTILISATION))
    on_p99, off_p99 = on.latency.p99_ms, off.latency.p99_ms
    needed = off_p99 and on_p99 and off_p99 > 2 * on_p99
    return SpillAdvice(
        turn_on=bool(needed),
        why=(f"at {top:g}x the pool's capacity the p99 was {off_p99:.0f} ms with every task in the pool "
             f"and {on_p99:.0f} ms with spill on" if off_p99 and on_p99 else "no latency"),
        spill_rate_per_s=round(rate, 1), task_s=task_s, queue_workers=workers,
        queue_workers_why=(f"{rate:.1f} tasks/s spilled x {task_s * 1000:.0f} ms each = {rate * task_s:.1f} queue "
                           f"workers busy; sized for {QUEUE_UTILISATION:.0%} busy: RQ_WORKERS={workers}"),
    )
