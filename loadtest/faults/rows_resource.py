"""Faults around the pool: the mail server down, a full disk under the ledger, idle FastCGI connections, a
worker that leaks memory."""

from __future__ import annotations

import os
import threading
import time
from urllib.parse import urlsplit

from loadtest.faults import accounting as acc
from loadtest.faults import load as ld
from loadtest.faults.base import Ctx, Window, basic_checks, fmt_ms, row, skipped
from loadtest.faults.disk import DiskError, SmallDisk, TeardownError
from loadtest.faults.rows_process import load_label, signup_load
from loadtest.faults.table import FaultRow
from loadtest.stack import StackError, http_get, proc_rss_mb, rss_to_mb

DISK_FULL = "database or disk is full"
WORK = "/work?tasks=1&background_ms=20"  # owes one "work" task, which writes the ledger
OVER_LIMIT_GRACE_S = 3.0


def _mail_health(ctx: Ctx) -> bool:
    url = urlsplit(ctx.ctl.stack.mail_url)
    try:
        http_get(f"{url.scheme}://{url.netloc}/health", timeout=2)
        return True
    except StackError:
        return False


def mail(ctx: Ctx) -> FaultRow:
    tag, p = ctx.tag("mail"), ctx.profile
    secs = 1.0 + p.mail_down_s + 3.0
    expectation = "signups still 202; welcome_mail tasks fail and are counted failed (ledger; the status page " \
                  "counts those the pool ran, the rest ran in the spill queue); 0 lost unreported; mail works again"
    w = Window(ctx, [tag])
    load = signup_load(ctx, tag, secs)
    start = time.monotonic()
    time.sleep(1.0)
    ctx.ctl.mail("stop")
    try:
        time.sleep(p.mail_down_s)
    finally:
        ctx.ctl.mail("start")
    deadline = time.monotonic() + 30
    while not _mail_health(ctx) and time.monotonic() < deadline:
        time.sleep(0.2)
    at_start = ctx.ctl.ledger_kinds()
    time.sleep(max(1.5, start + secs - time.monotonic()))
    m = w.close(load.stop())
    mail_delta = m.delta.get("welcome_mail", {})
    mail_failed = mail_delta.get("failed", 0)
    pool_failed = int(ctx.ctl.status().get("background tasks failed", 0)) - int(
        w.status_before.get("background tasks failed", 0))
    after_start = int(m.ledger_after.get("welcome_mail", {}).get("finished", 0)) - int(
        at_start.get("welcome_mail", {}).get("finished", 0))
    checks = [*basic_checks(m),
              (f"{mail_failed} welcome_mail tasks failed (expected some)", mail_failed > 0),
              # with spill on, mails that ran in the queue fail there: the ledger counts them, the pool does not
              # (all of them when the saturated flag stays up through the load: +0 is then right)
              (f"status page 'background tasks failed' +{pool_failed} (expected at most the ledger's "
               f"{mail_failed})", 0 <= pool_failed <= mail_failed),
              (f"{after_start} mails delivered after the mail server started again (expected some)", after_start > 0)]
    notes = (f"welcome_mail failed {mail_failed}, finished {mail_delta.get('finished', 0)}; status page failed "
             f"+{pool_failed}; {after_start} delivered after the restart")
    return row("mail server stopped", load_label(ctx, secs) + f", mail down {p.mail_down_s:g} s", m, expectation,
               checks, notes=notes, details={"pool_failed": pool_failed, "delivered_after": after_start})


def _ledger_probe(ctx: Ctx, tag: str, seq: int) -> tuple[int, str]:
    result, conn = ld.send_one(ctx.ctl.stack.base_url, ("GET", ld.marked("/ledger", tag, seq), None, {}), 10)
    if conn is not None:
        conn.close()
    return result.status, result.error


def disk(ctx: Ctx) -> FaultRow:
    tag, probe_tag, after_tag = ctx.tag("disk"), ctx.tag("disk-ledger"), ctx.tag("disk-after")
    expectation = (f"\"{DISK_FULL}\" in the pool log with what to do; GET / and /work 200 meanwhile; "
                   "GET /ledger 200 or 503 (never 500); after the unmount everything is counted again")
    secs = ctx.profile.disk_s
    if ctx.ctl.mode != "native":
        return skipped("ledger on a full disk", "-", expectation, "docker mode: the ledger is on a volume inside "
                       "the pool container; run it in native mode (MODE=native make up) as root")
    if os.geteuid() != 0:
        return skipped("ledger on a full disk", "-", expectation, "needs root to mount a small tmpfs over var/data "
                       "(run `sudo make faults`, or as root)")
    data_dir = ctx.ctl.var_dir / "data"
    w = Window(ctx, [tag, probe_tag, after_tag])
    probes: list[tuple[int, str]] = []
    results: list[ld.Result] = []
    teardown, size_mb, filled = "", 0, 0
    try:
        with SmallDisk(data_dir) as small:
            filled = small.fill()
            half = max(1, ctx.profile.connections // 2)
            # /work with a 20 ms task, paced: the pool never saturates, so no task spills to the queue, where its
            # failure on the full disk would be counted by nobody this row can ask
            loads = [ld.Load(ctx.ctl.stack.base_url, ld.get(WORK, tag), connections=half, duration=secs, pause=0.15,
                             max_requests=int(secs * 100)).start(),
                     ld.Load(ctx.ctl.stack.base_url, ld.get("/", tag), connections=half, duration=secs,
                             max_requests=int(secs * 200), first_seq=1_000_000).start()]
            for i in range(3):
                time.sleep(secs / 4)
                probes.append(_ledger_probe(ctx, probe_tag, i))
            for load in loads:
                results += load.wait()
            ctx.ctl.wait_idle(ctx.settle_timeout())
            size_mb = small.size_mb
    except TeardownError as exc:
        teardown = str(exc)
    except DiskError as exc:
        return skipped("ledger on a full disk", "-", expectation, f"could not set up the full disk: {exc}")
    # after the unmount: the ledger must count this phase's tasks again, every one
    ledger_mid = ctx.ctl.settled_ledger(ctx.settle_timeout())
    after_results = ld.Load(ctx.ctl.stack.base_url, ld.get(WORK, after_tag), connections=2, duration=2.0,
                            pause=0.15, max_requests=100).start().wait()
    m = w.close([*results, *after_results])
    log = ctx.ctl.log_since(w.log_mark)
    pool_failed = int(ctx.ctl.status().get("background tasks failed", 0)) - int(
        w.status_before.get("background tasks failed", 0))
    # On the full disk the ledger counts nothing: what the pool counted failed is what it could not record
    # (a task the ledger saw fail is counted failed by the pool too, so the ledger's failed are left out).
    seen = sum(m.delta.get(k, {}).get(ev, 0) for k in acc.OWED_KINDS for ev in ("finished", "lost"))
    unreported = max(0, sum(m.owed.values()) - seen - pool_failed)
    after_owed = sum(acc.owed_tasks(after_results).values())
    after_delta = acc.ledger_delta(ledger_mid, m.ledger_after)
    after_counted = sum(after_delta.get(k, {}).get(ev, 0) for k in acc.OWED_KINDS for ev in acc.EVENTS)
    bad_probes = [s for s, _ in probes if s not in (200, 503)]
    mentions = log.count(DISK_FULL)
    checks = [
        (f"{len(m.failed)} failed requests (expected 0)", not m.failed),
        (f"\"{DISK_FULL}\" not in the pool log", mentions > 0),
        (f"GET /ledger answered {bad_probes} on the full disk (expected 200 or 503)", not bad_probes),
        (f"{unreported} tasks neither in the ledger nor counted failed by the pool (expected 0)", unreported == 0),
        (f"after the unmount the ledger counted {after_counted} of {after_owed} tasks", after_counted == after_owed),
        (f"{m.replays} replays (expected 0)", m.replays == 0),
        (f"the full disk was not taken away cleanly: {teardown}", not teardown),
    ]
    half = max(1, ctx.profile.connections // 2)
    return row("ledger on a full disk", f"{half} conns GET {WORK} + {half} conns GET /, {secs:g} s on a full "
               f"{size_mb} MiB tmpfs; then 2 conns GET {WORK}, 2 s", m,
               expectation, checks, lost=unreported,
               notes=f"pool log: {mentions} x \"{DISK_FULL}\"; GET /ledger: {[s for s, _ in probes]}; "
               f"status page failed +{pool_failed}", details={"filled_bytes": filled, "probes": probes,
                                                              "pool_failed": pool_failed})


def idleconns(ctx: Ctx) -> FaultRow:
    tag, p = ctx.tag("idle"), ctx.profile
    expectation = "the pool keeps serving nginx: 0 failed, p99 at most max(500 ms, 10 x the baseline p99)"
    w = Window(ctx, [tag])
    base = ld.Load(ctx.ctl.stack.base_url, ld.get("/", tag), connections=p.connections, duration=p.baseline_s,
                   max_requests=int(p.baseline_s * 500))
    baseline = base.start().wait()
    idle = ctx.ctl.open_idle(p.idle_conns, p.idle_hold_s)
    load = ld.Load(ctx.ctl.stack.base_url, ld.get("/", tag), connections=p.connections, duration=p.idle_hold_s,
                   max_requests=int(p.idle_hold_s * 500), first_seq=1_000_000).start()
    time.sleep(p.idle_hold_s)
    idle.close()
    during = load.stop()
    m = w.close([*baseline, *during])
    p99_base = acc.percentile([r.latency_ms for r in baseline if r.status == 200], 0.99)
    p99 = acc.percentile([r.latency_ms for r in during if r.status == 200], 0.99)
    limit = max(500.0, 10 * (p99_base or 0))
    checks = [*basic_checks(m),
              (f"opened {idle.opened} of {p.idle_conns} idle connections {idle.error}".strip(),
               idle.opened == p.idle_conns),
              (f"p99 {fmt_ms(p99)} while they were open (limit {fmt_ms(limit)})", p99 is not None and p99 <= limit)]
    return row(f"{p.idle_conns} idle FastCGI connections", f"{p.connections} conns GET /, {p.idle_hold_s:g} s with "
               f"{p.idle_conns} silent connections to the pool socket", m, expectation, checks,
               notes=f"p99 {fmt_ms(p99)} (baseline {fmt_ms(p99_base)}), {len(during)} requests while held",
               details={"p99_ms": p99, "p99_baseline_ms": p99_base, "during": len(during)})


def memory_limit(ctx: Ctx) -> float | None:
    """max_worker_memory in MiB: the stack's FCGIPOOL_MAX_WORKER_MEMORY, else the status page, if it says."""
    raw = (ctx.ctl.up_env or {}).get("FCGIPOOL_MAX_WORKER_MEMORY") or ctx.ctl.status().get("max worker memory")
    try:
        return float(raw) if raw and float(raw) > 0 else None
    except (TypeError, ValueError):
        return None


def _rss_mb(ctx: Ctx, proc: dict) -> float:
    """The worker's RSS: /proc natively (the status page's figure is refreshed at most once a second)."""
    live = proc_rss_mb(int(proc["pid"])) if ctx.ctl.mode == "native" else None
    return live if live is not None else rss_to_mb(proc.get("memory rss") or 0)


def leak(ctx: Ctx) -> FaultRow:
    tag, leak_tag, p = ctx.tag("leak"), ctx.tag("leak-kb"), ctx.profile
    expectation = "workers past max_worker_memory are recycled (pids change), 0 failed, 0 lost unreported"
    limit = memory_limit(ctx)
    if limit is None:
        return skipped("worker leaking memory", "-", expectation, "the stack runs without a memory limit: start it "
                       "with FCGIPOOL_MAX_WORKER_MEMORY=<MiB> (e.g. FCGIPOOL_MAX_WORKER_MEMORY=120 make up)")
    w = Window(ctx, [tag, leak_tag])
    start_procs = ctx.ctl.processes()
    start_pids = {int(x["pid"]) for x in start_procs}
    want = min(len(start_pids), p.leak_recycles or len(start_pids))
    seen: dict[int, float] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                for proc in ctx.ctl.processes():
                    seen[int(proc["pid"])] = max(seen.get(int(proc["pid"]), 0.0), _rss_mb(ctx, proc))
            except StackError:
                pass
            stop.wait(0.3)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    floor = min((_rss_mb(ctx, x) for x in start_procs), default=30.0)
    cap = int(min(2000, (max(0.0, limit - floor) / 4 + 3) * len(start_pids) * 3))
    posts = signup_load(ctx, tag, p.leak_max_s)
    leaks = ld.Load(ctx.ctl.stack.base_url, ld.get("/work?leak_kb=4096&tasks=1&background_ms=20", leak_tag),
                    connections=2, duration=p.leak_max_s, max_requests=cap).start()
    deadline = time.monotonic() + p.leak_max_s
    while time.monotonic() < deadline and len(leaks.results) < cap:
        if len(start_pids - set(seen_alive(ctx))) >= want:
            break
        time.sleep(0.5)
    results = [*leaks.stop(), *posts.stop()]
    m = w.close(results)
    stop.set()
    sampler.join(5)
    # "after its current request": a worker still over the limit a few seconds after the pool went idle is not
    # being recycled (the grace covers a check once a second and the arbiter's spawn of its replacement)
    grace_end = time.monotonic() + OVER_LIMIT_GRACE_S
    while True:
        alive = {int(x["pid"]): _rss_mb(ctx, x) for x in ctx.ctl.processes()}
        over = {pid: round(rss) for pid, rss in alive.items() if rss > limit}
        if not over or time.monotonic() > grace_end:
            break
        time.sleep(0.5)
    recycled = sorted(pid for pid in seen if pid not in alive)
    peak = max(seen.values(), default=0.0)
    checks = [*basic_checks(m),
              (f"{len(recycled)} workers recycled (expected at least {want})", len(recycled) >= want),
              (f"workers idle above the {limit:g} MiB limit {OVER_LIMIT_GRACE_S:g} s after the load (pid: MiB): "
               f"{over}", not over)]
    leak_n = sum(1 for r in results if acc.marker_seq(r.path, leak_tag) is not None)
    return row("worker leaking memory", f"2 conns GET /work?leak_kb=4096 ({leak_n}) + {load_label(ctx, p.leak_max_s)}"
               f" at most", m, expectation, checks,
               notes=f"max_worker_memory {limit:g} MiB; {len(recycled)} recycled, RSS peak {peak:.0f} MiB",
               details={"recycled": recycled, "peak_rss_mb": round(peak, 1), "limit_mb": limit})


def seen_alive(ctx: Ctx) -> list[int]:
    try:
        return [int(x["pid"]) for x in ctx.ctl.processes()]
    except StackError:
        return []
