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

LOADS = (0.25, 1.0, 1.5, 2.0)  # x the pool-only capacity; 0.25 is the unloaded reference
SMOKE_LOADS = (0.25, 2.0)
STEP_S, SMOKE_STEP_S = 12.0, 4.0
DRAIN_TIMEOUT_S = 120.0
#: a queue worker's share of time busy that the advice sizes for (M/M/c: the wait stays short below ~0.7)
QUEUE_UTILISATION = 0.7
EVENTS = ("started", "finished", "failed", "lost", "spilled", "ran_in_queue")


def ledger_counts(ledger: dict, kind: str = "work") -> dict[str, int]:
    counts = (ledger or {}).get("kinds", {}).get(kind, {})
    return {e: int(counts.get(e, 0)) for e in EVENTS}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {e: after[e] - before[e] for e in EVENTS}


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


def run_spill(run, capacity: float, base_ms: float) -> dict:
    """Both halves; ``capacity`` is the pool-only capacity in req/s (measured by exhaustion, or estimated)."""
    cfg = run.cfg
    st = run.stack.status()
    if "spill queue depth" not in st:
        return {"skipped": "the pool has no spill queue (start the stack with FCGIPOOL_SPILL_TO, docs/spill.md)"}
    loads = SMOKE_LOADS if cfg.smoke else LOADS
    secs = SMOKE_STEP_S if cfg.smoke else (cfg.duration or STEP_S)
    work = {"respond_ms": cfg.respond_ms, "background_ms": cfg.background_ms}
    out: dict = {"capacity": round(capacity, 2), "loads": list(loads), "step_s": secs, "steps": [],
                 "background_ms": cfg.background_ms}
    for spill in (0, 1):
        half = "on" if spill else "off"
        for load in loads:
            rate = round(capacity * load, 2)
            label = f"spill-{half}@{load:g}x"
            before = ledger_counts(run.stack.ledger())
            rows, view = run.drive("spill", label, {"rate": rate, "spill": spill, **work}, secs)
            # the pool is idle again (drive waits); what it spilled may still be queued: drain before counting
            drained_s, depth = wait_drained(run) if spill else (0.0, 0)
            after = ledger_counts(run.stack.ledger())
            samples = analysis.rows_in(run.sampler.rows, label)
            depths = [int(r["spill_depth"]) for r in samples if r.get("spill_depth") not in ("", None)]
            out["steps"].append({
                "spill": half, "load": load, "offered_rate": rate, "label": label,
                **analysis.latency_summary(rows),
                "throughput": round(analysis.step_throughput(rows, view["start"] + secs * 0.2,
                                                             view["start"] + secs), 2),
                "tasks": delta(before, after), "queue_depth_max": max(depths, default=depth or 0),
                "drain_s": drained_s, "depth_at_end": depth,
            })  # fmt: skip
    out["verdict"] = verdict(out)
    out["advice"] = advice(out)
    return out


def _step(out: dict, half: str, load: float) -> dict | None:
    return next((s for s in out["steps"] if s["spill"] == half and s["load"] == load), None)


def verdict(out: dict) -> dict:
    """The issue's must-show at the top load: on: p99 within 2x unloaded, 0 502/504, 0 lost, drained."""
    top = max(out["loads"])
    ref, on, off = _step(out, "off", min(out["loads"])), _step(out, "on", top), _step(out, "off", top)
    if not (ref and on and off):
        return {"ok": None, "why": "steps missing"}
    unloaded = ref["p99_ms"] or 0.0
    lost = sum(s["tasks"]["lost"] for s in out["steps"] if s["spill"] == "on")
    unfinished = sum(s["tasks"]["spilled"] - s["tasks"]["ran_in_queue"] for s in out["steps"] if s["spill"] == "on")
    facts = {
        "unloaded_p99_ms": unloaded, "on_p99_ms": on["p99_ms"], "off_p99_ms": off["p99_ms"],
        "on_p99_ratio": round(on["p99_ms"] / unloaded, 2) if unloaded and on["p99_ms"] else None,
        "off_p99_ratio": round(off["p99_ms"] / unloaded, 2) if unloaded and off["p99_ms"] else None,
        "on_502_504": on["status_502"] + on["status_504"], "on_lost": lost, "spilled_not_run": unfinished,
        "drained": on["drain_s"] is not None, "drain_s": on["drain_s"], "spilled_at_top": on["tasks"]["spilled"],
    }
    ok = (facts["on_p99_ratio"] is not None and facts["on_p99_ratio"] <= 2.0 and facts["on_502_504"] == 0
          and lost == 0 and unfinished == 0 and facts["drained"])  # fmt: skip
    return {"ok": ok, **facts}


def advice(out: dict) -> dict:
    """When to turn spill on, and how many queue workers the measured spill rate needs."""
    top = max(out["loads"])
    on, off = _step(out, "on", top), _step(out, "off", top)
    if not (on and off):
        return {}
    rate = on["tasks"]["spilled"] / out["step_s"]  # tasks a second the queue had to take at the top load
    task_s = out["background_ms"] / 1000
    workers = max(1, math.ceil(rate * task_s / QUEUE_UTILISATION))
    needed = off["p99_ms"] and on["p99_ms"] and off["p99_ms"] > 2 * on["p99_ms"]
    return {
        "turn_on": bool(needed),
        "why": (f"at {top:g}x the pool's capacity the p99 was {off['p99_ms']:.0f} ms with every task in the pool "
                f"and {on['p99_ms']:.0f} ms with spill on" if off["p99_ms"] and on["p99_ms"] else "no latency"),
        "spill_rate_per_s": round(rate, 1), "task_s": task_s, "queue_workers": workers,
        "queue_workers_why": (f"{rate:.1f} tasks/s spilled x {task_s * 1000:.0f} ms each = {rate * task_s:.1f} queue "
                              f"workers busy; sized for {QUEUE_UTILISATION:.0%} busy: RQ_WORKERS={workers}"),
    }


def summary_lines(out: dict) -> list[str]:
    """The scenario's lines for report.md."""
    if "skipped" in out:
        return [f"spill: skipped — {out['skipped']}"]
    lines = ["| spill | load | offered req/s | p50 ms | p99 ms | 502/504 | in pool | spilled | ran in queue | lost "
             "| queue depth max | drained in s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in out["steps"]:
        t = s["tasks"]
        in_pool = t["started"] - t["ran_in_queue"]
        lines.append(f"| {s['spill']} | {s['load']:g}x | {s['offered_rate']:g} | {s['p50_ms'] or 0:.0f} | "
                     f"{s['p99_ms'] or 0:.0f} | {s['status_502'] + s['status_504']} | {in_pool} | {t['spilled']} | "
                     f"{t['ran_in_queue']} | {t['lost']} | {s['queue_depth_max']} | "
                     f"{'-' if s['drain_s'] is None else s['drain_s']} |")
    v, a = out["verdict"], out["advice"]
    if v.get("ok") is not None:
        lines += ["", f"At {max(out['loads']):g}x capacity with spill on: p99 {v['on_p99_ms']:.0f} ms = "
                      f"{v['on_p99_ratio']}x the unloaded {v['unloaded_p99_ms']:.0f} ms (off: {v['off_p99_ratio']}x), "
                      f"{v['on_502_504']} 502/504, {v['on_lost']} lost, queue drained in {v['drain_s']} s — "
                      f"{'PASS' if v['ok'] else 'FAIL'}"]
    if a:
        lines += [f"Advice: {'turn spill on (--spill-when saturated)' if a['turn_on'] else 'spill is not needed'}"
                  f" — {a['why']}; {a['queue_workers_why']}"]
    return lines
