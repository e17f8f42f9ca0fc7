"""Faults of the spill queue (docs/spill.md): Redis stopped under load, a queue worker killed mid-job, and
`make down` with 200 tasks pending."""

from __future__ import annotations

import time

from loadtest.faults import load as ld
from loadtest.faults.base import Ctx, Window, basic_checks, row, skipped
from loadtest.faults.rows_process import load_label, signup_load
from loadtest.faults.table import FaultRow

PENDING = 200  # the number: tasks waiting when the stack is stopped
PENDING_MS = 300
QUEUE_TASKS = 24  # enough tasks of a few seconds to saturate the pool and keep every queue worker busy


def _spill_on(ctx: Ctx) -> str:
    """Why the row cannot run ("" when spill is on)."""
    status = ctx.ctl.status()
    if "spill queue outages" not in status:
        return "the pool runs without spill (FCGIPOOL_SPILL_TO is empty): nothing to measure"
    return ""


def redis(ctx: Ctx) -> FaultRow:
    """Redis stopped for a while under signup load: the pool runs the tasks itself, logs the outage once."""
    tag, p = ctx.tag("redis"), ctx.profile
    secs = 1.0 + p.mail_down_s + 4.0
    expectation = (
        "0 failed, 0 replays, 0 lost unreported (tasks run in the pool while Redis is away); one "
        "outage logged and counted; spilling resumes"
    )
    why_not = _spill_on(ctx)
    if why_not:
        return skipped("spill queue (Redis) stopped", "-", expectation, why_not)
    w = Window(ctx, [tag])
    load = signup_load(ctx, tag, secs, connections=8)  # twice the usual: the pool saturates, mails spill
    time.sleep(1.0)
    ctx.ctl.service("redis", "stop")
    try:
        time.sleep(p.mail_down_s)
    finally:
        ctx.ctl.service("redis", "start")
    m = w.close(load.stop())
    status = ctx.ctl.status()
    before = w.status_before
    outages = int(status["spill queue outages"]) - int(before.get("spill queue outages", 0))
    fallbacks = int(status["spill fallbacks"]) - int(before.get("spill fallbacks", 0))
    spilled = int(status["background tasks spilled"]) - int(before.get("background tasks spilled", 0))
    log = ctx.ctl.log_since(w.log_mark)
    down, back = log.count("does not answer: after-response tasks run in the pool"), log.count("answers again")
    checks = [
        *basic_checks(m),
        (f"{outages} spill queue outages counted (expected 1)", outages == 1),
        (f"the outage logged {down} times and its end {back} times (expected once each)", down == back == 1),
        (f"{fallbacks} tasks ran in the pool while Redis was away (expected some)", fallbacks > 0),
        (f"{spilled} tasks spilled in the row (expected some, before and after the outage)", spilled > 0),
    ]
    return row(
        "spill queue (Redis) stopped",
        load_label(ctx, secs, "POST /signup (8 conns)") + f", Redis down {p.mail_down_s:g} s",
        m,
        expectation,
        checks,
        notes=f"{fallbacks} tasks ran in the pool meanwhile, {spilled} spilled; outages +{outages}",
        details={"fallbacks": fallbacks, "spilled": spilled, "outages": outages},
    )


def queuekill(ctx: Ctx) -> FaultRow:
    """A queue worker SIGKILLed while it runs a spilled task: that task is reported lost, the others run."""
    fault = "queue worker killed mid-job (SIGKILL)"
    expectation = (
        "0 failed, 0 replays, 0 lost unreported: the task the killed worker ran is reported lost "
        "(killed) by another queue worker within ~15 s (fcgipool.spill.abandoned); the others run"
    )
    why_not = _spill_on(ctx)
    if why_not:
        return skipped(fault, "-", expectation, why_not)
    tag = ctx.tag("queuekill")
    # long enough to be caught running, short enough for the tasks the pool keeps to fit its budget (CI: 2 s)
    task_ms = max(200, min(4000, int(ctx.budget * 1000 * 0.4)))
    path = f"/work?background_ms={task_ms}&tasks=1"
    w = Window(ctx, [tag])
    results = ld.burst(ctx.ctl.stack.base_url, ld.get(path, tag), QUEUE_TASKS, timeout=60)
    time.sleep(1.0)  # the spilled tasks are running in the queue by now, and more wait
    key = "background tasks spilled"
    spilled = int(ctx.ctl.status()[key]) - int(w.status_before.get(key, 0))
    killed = ctx.ctl.kill_queue_worker()
    # the ledger can look settled while 4-s jobs run in the queue: wait until every task has an end (or the budget)
    waited = _wait_for_ends(ctx, w, "work", QUEUE_TASKS, timeout=QUEUE_TASKS * task_ms / 1000 + 30)
    m = w.close(results)
    work = m.delta.get("work", {})
    lost = work.get("lost", 0)
    checks = [
        *basic_checks(m),
        (f"{spilled} tasks spilled before the kill (expected some)", spilled > 0),
        (f"{lost} work tasks reported lost (expected 1: the one the killed worker ran)", lost == 1),
        (f"lost reasons {m.lost_reasons} (expected work:killed)", m.lost_reasons == {"work:killed": 1}),
    ]
    return row(fault, f"{QUEUE_TASKS} x GET {path}, then SIGKILL to one queue worker ({killed})", m, expectation,
               checks, notes=f"{spilled} spilled; {work.get('finished', 0)} finished, {lost} lost, "
               f"{work.get('ran_in_queue', 0)} ran in the queue; all ended {waited:.0f} s after the kill",
               details={"killed": killed, "work": work, "ended_after_s": round(waited, 1)})  # fmt: skip


def _wait_for_ends(ctx: Ctx, w: Window, kind: str, count: int, timeout: float) -> float:
    """Seconds until ``count`` more tasks of ``kind`` have ended in the ledger (finished, failed or lost)."""

    def ends(kinds: dict) -> int:
        return sum(int(kinds.get(kind, {}).get(event, 0)) for event in ("finished", "failed", "lost"))

    t0 = time.monotonic()
    before = ends(w.ledger_before)
    while time.monotonic() - t0 < timeout and ends(ctx.ctl.ledger_kinds()) - before < count:
        time.sleep(0.5)
    return time.monotonic() - t0


def downspill(ctx: Ctx) -> FaultRow:
    """`make down` with 200 tasks pending, then `make up`: every one runs, in the pool or in the queue."""
    tag = ctx.tag("downspill")
    expectation = f"all {PENDING} pending tasks run (pool or queue), 0 lost: those not started spill at shutdown"
    why_not = _spill_on(ctx)
    if why_not:
        return skipped(f"make down with {PENDING} tasks pending", "-", expectation, why_not)
    w = Window(ctx, [tag])
    path = f"/work?background_ms={PENDING_MS}&tasks=1"
    results = ld.burst(ctx.ctl.stack.base_url, ld.get(path, tag), PENDING, timeout=60)
    t0 = time.monotonic()
    down = ctx.ctl.stackctl("down")
    t_down = time.monotonic() - t0
    up = ctx.ctl.stackctl("up")
    if up.returncode != 0:
        tail = (up.stderr or up.stdout).strip().splitlines()[-5:]
        return row(f"make down with {PENDING} tasks pending", f"{PENDING} x GET {path}, then down, up", None,
                   expectation, [(f"`make up` failed (rc {up.returncode}): {' | '.join(tail)}", False)],
                   requests=len(results))  # fmt: skip
    ctx.ctl.reload()
    m = w.close(results)
    work = m.delta.get("work", {})
    checks = [
        *basic_checks(m),
        (f"`make down` exited {down.returncode}", down.returncode == 0),
        (f"{work.get('lost', 0)} work tasks lost (expected 0)", work.get("lost", 0) == 0),
    ]
    ran_in_queue = work.get("ran_in_queue", 0)
    return row(
        f"make down with {PENDING} tasks pending",
        f"{PENDING} x GET {path}, then down, up",
        m,
        expectation,
        checks,
        notes=f"down {t_down:.1f} s; {work.get('finished', 0)} finished, {ran_in_queue} of them in the "
        f"queue, {work.get('spilled', 0)} spilled",
        details={"down_s": round(t_down, 1), "work": work},
    )
