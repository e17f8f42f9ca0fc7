"""Faults to the pool's processes: HUP, kill -9 of a worker, a request past --timeout, TERM, make down/up."""

from __future__ import annotations

import random
import signal
import threading
import time

from loadtest.faults import accounting as acc
from loadtest.faults import load as ld
from loadtest.faults.base import Ctx, Window, basic_checks, row, skipped
from loadtest.faults.table import FaultRow

BUSY = ("Reading", "Running", "Finishing")
MAX_TIMEOUT_S = 55.0  # respond_ms is bounded to 60 s by the app, nginx's fastcgi_read_timeout is 60 s


#: seconds between a connection's signups. A signup owes a 250 ms mail; with spill on the pool answers at once and
#: hands the mails it cannot send itself to the queue (4 RQ workers: 16 mails/s), so the load is paced at about
#: 25 signups/s: the queue stays short enough to drain while a row settles
SIGNUP_PAUSE = 0.15


def signup_load(ctx: Ctx, tag: str, duration: float, connections: int | None = None) -> ld.Load:
    p = ctx.profile
    return ld.Load(ctx.ctl.stack.base_url, ld.signup(tag), connections=connections or p.connections,
                   duration=duration, pause=SIGNUP_PAUSE, max_requests=int(duration * 200)).start()  # fmt: skip


def load_label(ctx: Ctx, seconds: float, what: str = "POST /signup") -> str:
    return f"{ctx.profile.connections} conns {what}, {seconds:.0f} s"


def _during(load: ld.Load, duration: float, times: list[float], act) -> list[float]:
    """Run ``act(i)`` at each offset in ``times`` (s after the load started); return when each happened."""
    start = time.monotonic()
    done = []
    for i, at in enumerate(times):
        time.sleep(max(0.0, start + at - time.monotonic()))
        act(i)
        done.append(round(time.monotonic() - start, 2))
    time.sleep(max(0.0, start + duration - time.monotonic()))
    return done


def fault_times(duration: float, n: int = 3) -> list[float]:
    return [round(duration * (i + 1) / (n + 1), 2) for i in range(n)]


def hup(ctx: Ctx) -> FaultRow:
    tag, secs = ctx.tag("hup"), ctx.profile.load_s
    expectation = "0 failed, 0 replays, 0 lost unreported"
    w = Window(ctx, [tag])
    load = signup_load(ctx, tag, secs)
    at = _during(load, secs, fault_times(secs), lambda i: ctx.ctl.signal_arbiter(signal.SIGHUP))
    m = w.close(load.stop())
    return row("HUP to the arbiter x3", load_label(ctx, secs), m, expectation, basic_checks(m),
               notes=f"HUP at {', '.join(f'{t:g}' for t in at)} s", details={"hup_at_s": at})


def pick_victim(procs: list[dict], prefer: str, rng: random.Random) -> dict | None:
    """A busy worker, in the preferred state if any is in it (Finishing: its pending tasks must be reported
    lost as killed; Running: the request it serves may fail); else any busy one, else any. Never a slot without a
    pid yet (a worker just forked to replace a killed one): kill(0) would kill the caller's own process group."""
    procs = [p for p in procs if int(p.get("pid") or 0) > 1]
    for pool in ([p for p in procs if p.get("state") == prefer], [p for p in procs if p.get("state") in BUSY], procs):
        if pool:
            return rng.choice(pool)
    return None


def kill9(ctx: Ctx) -> FaultRow:
    tag, secs = ctx.tag("kill9"), ctx.profile.load_s
    expectation = ("at most 1 failed per kill (3), 0 replays, 0 lost unreported (the dead worker's tasks "
                   "reported killed)")
    rng = random.Random(9)
    victims: list[dict] = []
    w = Window(ctx, [tag])
    load = signup_load(ctx, tag, secs)

    def kill(i: int) -> None:
        victim = pick_victim(ctx.ctl.processes(), ("Finishing", "Running", "Finishing")[i], rng)
        if victim is None:
            return
        ctx.ctl.kill_worker(int(victim["pid"]))
        victims.append({"pid": victim["pid"], "state": victim.get("state"), "uri": victim.get("request uri")})

    _during(load, secs, fault_times(secs), kill)
    m = w.close(load.stop())
    alive = {int(p["pid"]) for p in ctx.ctl.processes()}
    still = [v["pid"] for v in victims if int(v["pid"]) in alive]
    killed_reports = sum(n for k, n in m.lost_reasons.items() if k.endswith(":killed"))
    checks = [*basic_checks(m, max_failed=len(victims)),
              (f"{len(victims)} workers killed (expected 3)", len(victims) == 3),
              (f"killed pids still on the status page: {still}", not still)]
    states = ", ".join(str(v["state"]) for v in victims)
    return row("kill -9 of a worker x3", load_label(ctx, secs), m, expectation, checks,
               notes=f"victims were {states}; {killed_reports} tasks reported lost (killed)",
               details={"victims": victims})


def kill9_kept(ctx: Ctx) -> FaultRow:
    """kill -9 of a Running worker under POST / load on nginx's kept connections (16, no pause): the worker
    holds idle kept connections that nginx writes requests onto; the keeper passes them on when it dies."""
    tag, secs = ctx.tag("kill9kept"), ctx.profile.load_s
    expectation = "at most 1 failed per kill (3), 0 replays (POST / has no after-response work)"
    rng = random.Random(99)
    victims: list[dict] = []
    w = Window(ctx, [tag])
    load = ld.Load(ctx.ctl.stack.base_url, ld.post("/", tag), connections=16, duration=secs, pause=0.0,
                   max_requests=int(secs * 10_000)).start()
    rescued0 = int(ctx.ctl.status().get("connections rescued") or 0)

    def kill(i: int) -> None:
        victim = pick_victim(ctx.ctl.processes(), "Running", rng)
        if victim is not None:
            ctx.ctl.kill_worker(int(victim["pid"]))
            victims.append({"pid": victim["pid"], "state": victim.get("state")})

    _during(load, secs, fault_times(secs), kill)
    m = w.close(load.stop())
    rescued = int(ctx.ctl.status().get("connections rescued") or 0) - rescued0
    checks = [*basic_checks(m, max_failed=len(victims)),
              (f"{len(victims)} workers killed (expected 3)", len(victims) == 3)]
    states = ", ".join(str(v["state"]) for v in victims)
    return row("kill -9 of a worker x3, kept connections", f"16 conns POST /, no pause, {secs:.0f} s", m,
               expectation, checks, notes=f"victims were {states}; {rescued} idle kept connections passed on",
               details={"victims": victims, "connections_rescued": rescued})


def timeout(ctx: Ctx) -> FaultRow:
    tag, slow_tag = ctx.tag("timeout"), ctx.tag("timeout-slow")
    expectation = "the slow request answered 504 once (upstream_status \"504\"), nothing else fails, 0 replays"
    pool_timeout = ctx.ctl.timeout
    note = ""
    if pool_timeout is None:
        pool_timeout, note = 30.0, "stack.json has no 'timeout': assumed fcgipool's default 30 s"
    if pool_timeout > MAX_TIMEOUT_S:
        return skipped("request past --timeout", "-", expectation,
                       f"the pool's --timeout is {pool_timeout:g} s; this row needs at most {MAX_TIMEOUT_S:g} s "
                       "(respond_ms is bounded to 60 s and nginx's fastcgi_read_timeout is 60 s): start the stack "
                       "with FCGIPOOL_TIMEOUT=30 or less")
    respond_ms = int((pool_timeout + 2) * 1000)
    secs = pool_timeout + 4
    w = Window(ctx, [tag, slow_tag])
    load = signup_load(ctx, tag, secs)
    slow: list[ld.Result] = []
    t = threading.Thread(target=lambda: slow.extend(ld.burst(
        ctx.ctl.stack.base_url, ld.get(f"/work?respond_ms={respond_ms}&tasks=0", slow_tag), 1,
        timeout=pool_timeout + 70)))
    time.sleep(0.5)
    t.start()
    t.join(pool_timeout + 80)
    results = load.stop()
    m = w.close([*results, *slow], ok=(200, 202))
    slow_lines = acc.own_lines(m.lines, slow_tag)
    others = [r for r in m.failed if acc.marker_seq(r.path, tag) is not None]
    slow_status = slow[0].status if slow else 0
    slow_s = round(slow[0].latency_ms / 1000, 1) if slow else None
    attempts = [acc.upstream_attempts(x.get("upstream_status")) for x in slow_lines]
    checks = [
        (f"the slow request was answered {slow_status or slow[0].error if slow else 'not at all'} after "
         f"{slow_s} s (expected 504)", slow_status == 504),
        (f"its access-log lines: {[x.get('upstream_status') for x in slow_lines]} (expected one, upstream_status "
         "\"504\")", len(slow_lines) == 1 and attempts == [["504"]]),
        (f"{len(others)} other requests failed (expected 0)", not others),
        (f"{m.replays} replays (expected 0)", m.replays == 0),
        (f"{m.lost_unreported} after-response tasks unreported (expected 0)", m.lost_unreported == 0),
    ]
    return row("request past --timeout", f"{load_label(ctx, secs)} + 1 GET /work?respond_ms={respond_ms}", m,
               expectation, checks, failed=len(others), expected_errors=1 if slow_status == 504 else 0,
               notes="; ".join(filter(None, [f"--timeout {pool_timeout:g} s; slow request: {slow_status} after "
                                             f"{slow_s} s", note])),
               details={"slow_upstream_status": [x.get("upstream_status") for x in slow_lines], "slow_s": slow_s})


def _work_in_flight(ctx: Ctx, tag: str) -> tuple[list[ld.Result], str]:
    """One GET /work with two after-response tasks per worker, all answered: the pool is busy finishing."""
    workers = max(1, min(40, int(ctx.ctl.status().get("total processes") or 4)))
    bg_ms = max(200, min(1500, int(ctx.budget * 1000 * 0.4)))  # both tasks fit in the budget: 0 timeouts
    path = f"/work?background_ms={bg_ms}&tasks=2"
    return ld.burst(ctx.ctl.stack.base_url, ld.get(path, tag), workers), f"{workers} x GET {path}"


def _lost_summary(reasons: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(reasons.items())) or "none"


def term(ctx: Ctx) -> FaultRow:
    tag = ctx.tag("term")
    supervisor = "docker (restart: unless-stopped)" if ctx.ctl.mode == "docker" else "supervisord (autorestart)"
    expectation = f"{supervisor} restarts the pool; 0 lost unreported (finished, or lost with reason shutdown)"
    w = Window(ctx, [tag])
    old_pid = ctx.ctl.arbiter_pid()
    results, label = _work_in_flight(ctx, tag)
    ctx.ctl.signal_arbiter(signal.SIGTERM)
    time.sleep(1.0)
    back = ctx.ctl.wait_healthy(ctx.budget + 90)
    new_pid = ctx.ctl.arbiter_pid()
    m = w.close(results)
    wrong = {k: n for k, n in m.lost_reasons.items() if not k.endswith(":shutdown")}
    checks = [*basic_checks(m),
              (f"the pool did not come back within {ctx.budget + 90:.0f} s", back is not None),
              (f"tasks lost for another reason than shutdown: {wrong}", not wrong)]
    if ctx.ctl.mode == "native":
        checks.append((f"arbiter pid unchanged ({old_pid})", new_pid != old_pid))
    return row("TERM to the arbiter, work in flight", label + ", then TERM", m, expectation, checks,
               notes=f"back after {back:.1f} s; tasks lost: {_lost_summary(m.lost_reasons)}" if back is not None
               else "", details={"back_after_s": back, "arbiter_pid": [old_pid, new_pid]})


def downup(ctx: Ctx) -> FaultRow:
    tag = ctx.tag("downup")
    expectation = "every task started before the down is accounted in the ledger (0 lost unreported)"
    w = Window(ctx, [tag])
    results, label = _work_in_flight(ctx, tag)
    t0 = time.monotonic()
    down = ctx.ctl.stackctl("down")
    t_down = time.monotonic() - t0
    up = ctx.ctl.stackctl("up")
    t_up = time.monotonic() - t0 - t_down
    if up.returncode != 0:
        tail = (up.stderr or up.stdout).strip().splitlines()[-5:]
        return row("make down + make up, work in flight", label + ", then down, up", None, expectation,
                   [(f"`make up` failed after `make down` (rc {up.returncode}): {' | '.join(tail)}", False)],
                   requests=len(results), failed=len(acc.failed_requests(results)))
    ctx.ctl.reload()
    m = w.close(results)
    checks = [*basic_checks(m), (f"`make down` exited {down.returncode}", down.returncode == 0)]
    notes = [f"down {t_down:.1f} s, up {t_up:.1f} s; tasks lost: {_lost_summary(m.lost_reasons)}", *ctx.ctl.notes]
    return row("make down + make up, work in flight", label + ", then down, up", m, expectation, checks,
               notes="; ".join(notes), details={"down_s": round(t_down, 1), "up_s": round(t_up, 1)})
