"""The faults, each against a fresh nginx + php-fpm under POST load; one FaultRow per fault and nginx variant.

The load is the fcgipool rows' shape: 4 keep-alive clients, 20 ms between a client's requests; each POST answers
after 5 ms and then works 250 ms after the response (fastcgi_finish_request), like a signup's welcome mail
against the sample app's mail sink (which answers after 250 ms).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from loadtest.faults.phpfpm import accounting
from loadtest.faults.phpfpm.load import Load, Result, one
from loadtest.faults.phpfpm.rows import LoadShape, build
from loadtest.faults.phpfpm.stack import Settings, Stack, StackError
from loadtest.faults.table import FaultRow

RESPOND_MS, BG_MS, PAUSE_MS = 5, 250, 20
NO_LOSS = "0 failed, 0 replays, 0 after-response work lost"
STOP_BAR = "requests in flight answered; work in flight finishes or is reported"
# process_control_timeout of the "graceful" rows: php-fpm's documented way to let children finish on reload/stop
GRACEFUL_PCT = 10


@dataclass(frozen=True)
class Timing:
    clients: int = 4  # = the pool's children and the fcgipool rows' connections
    warmup: float = 2.0  # load before the first fault (the stop rows signal mid-work instead)
    between: float = 3.0  # load between repeated faults
    after: float = 2.0  # load after the last fault
    hold: float = 10.0  # silent connections held
    recycle: float = 10.0  # load with pm.max_requests = 50
    stop_work_ms: int = 2000  # after-response work in flight when the master is stopped
    terminate_timeout: int = 3  # request_terminate_timeout; the slow requests take slow_ms
    slow_ms: int = 5000


FULL = Timing()
SHORT = Timing(warmup=1.0, between=1.5, after=1.0, hold=5.0, recycle=5.0, stop_work_ms=1500)


@dataclass
class Ctx:
    server: str  # "php-fpm (keep-conn)" or "php-fpm (no keep-conn)"
    keep_conn: bool
    timing: Timing
    work_dir: Path  # run dirs are made here
    logs_dir: Path | None = None  # each run's logs and configs are copied here when set

    def stack(self, slug: str, **settings: object) -> Stack:
        run_dir = self.work_dir / f"{'keepconn' if self.keep_conn else 'nokeepconn'}-{slug}"
        run_dir.mkdir(parents=True)
        return Stack(Settings(keep_conn=self.keep_conn, **settings), run_dir)

    def load(self, stack: Stack, shape: LoadShape) -> Load:
        return Load(stack.port, tag="r", respond_ms=shape.respond_ms, bg_ms=shape.bg_ms, clients=shape.clients,
                    pause=shape.pause_ms / 1000)

    def row(self, stack: Stack, fault: str, shape: LoadShape, results: list[Result], expectation: str,
            **kw) -> FaultRow:
        return build(stack, server=self.server, fault=fault, shape=shape, results=results, expectation=expectation,
                     logs_dir=self.logs_dir, **kw)

    @property
    def shape(self) -> LoadShape:
        return LoadShape(self.timing.clients, PAUSE_MS, RESPOND_MS, BG_MS)


def _settle(shape: LoadShape) -> None:
    """Let the last requests' after-response work end before the stack stops."""
    time.sleep(shape.bg_ms / 1000 + 0.5)


def _pct_text(pct: int) -> str:
    return f", process_control_timeout={pct}s" if pct else ""


def _busy_child(stack: Stack) -> tuple[int, bool]:
    """A child that is running the app (sleeping in it), else any child."""
    kids = stack.children()
    for pid in kids:
        try:
            if "nanosleep" in Path(f"/proc/{pid}/wchan").read_text():
                return pid, True
        except OSError:
            continue
    if not kids:
        raise StackError("php-fpm has no children")
    return kids[0], False


def reload_x3(ctx: Ctx, pct: int = 0) -> FaultRow:
    """php-fpm's graceful reload (SIGUSR2 to the master) three times during POST load; ``pct`` is
    process_control_timeout, how long the master lets old children finish (0: Debian's default)."""
    t, shape = ctx.timing, ctx.shape
    # log_level = debug: php-fpm logs what it does to the old children on reload only at debug level
    stack = ctx.stack(f"reload-pct{pct}", log_level="debug", process_control_timeout=f"{pct}s")
    reloads = []
    with stack:
        load = ctx.load(stack, shape).start()
        time.sleep(t.warmup)
        for _ in range(3):
            old = stack.children()
            started = time.monotonic()
            stack.signal_master(signal.SIGUSR2)
            stack.wait_generation(old, timeout=pct + 10)
            reloads.append(round(time.monotonic() - started, 3))
            time.sleep(t.between)
        time.sleep(t.after)
        results = load.join()
        _settle(shape)
    return ctx.row(stack, f"reload x3 (SIGUSR2 to the master){_pct_text(pct)}", shape, results, NO_LOSS,
                   notes=[f"new children up after {', '.join(f'{s:.2f}' for s in reloads)} s"],
                   details={"reload_seconds": reloads})


def kill9_x3(ctx: Ctx) -> FaultRow:
    """kill -9 of a child (one running the app when there is one) three times during POST load."""
    t, shape = ctx.timing, ctx.shape
    stack = ctx.stack("kill9")
    killed = []
    with stack:
        load = ctx.load(stack, shape).start()
        time.sleep(t.warmup)
        for _ in range(3):
            pid, busy = _busy_child(stack)
            os.kill(pid, signal.SIGKILL)
            killed.append({"pid": pid, "busy": busy})
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                kids = stack.children()
                if pid not in kids and len(kids) >= stack.settings.pool_size:
                    break
                time.sleep(0.02)
            time.sleep(t.between)
        time.sleep(t.after)
        results = load.join()
        _settle(shape)
    busy = sum(k["busy"] for k in killed)
    return ctx.row(stack, "kill -9 of a child x3", shape, results, NO_LOSS,
                   notes=[f"{busy} of 3 killed children were running the app"], details={"killed": killed})


def terminate_timeout(ctx: Ctx) -> FaultRow:
    """A GET and a POST that take 5 s against request_terminate_timeout = 3 s, during POST load."""
    t = ctx.timing
    stack = ctx.stack("terminate", request_terminate_timeout=f"{t.terminate_timeout}s")
    # Two clients fewer than children, so each slow request can get a child: with keep-conn and as many
    # clients as children, every child sits on one of nginx's kept connections and the slow requests' new
    # connections wait in the listen queue until the client gives up (PHP-FPM's keep-conn trap).
    shape = LoadShape(max(1, stack.settings.pool_size - 2), PAUSE_MS, RESPOND_MS, BG_MS)
    slow: dict[str, Result] = {}
    with stack:
        load = ctx.load(stack, shape).start()
        time.sleep(t.warmup)

        def send(method: str) -> None:
            rid = f"slow{method.lower()}"
            path = f"/app.php?id={rid}&respond_ms={t.slow_ms}"
            body = {"email": "slow@example.com"} if method == "POST" else None
            slow[rid] = one(stack.port, rid, method, path, body, timeout=4 * t.slow_ms / 1000)

        threads = [threading.Thread(target=send, args=(m,)) for m in ("GET", "POST")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        time.sleep(t.after)
        results = load.join() + list(slow.values())
        _settle(shape)
    up = accounting.upstream(stack.access_entries())
    notes, per_request = [], {}
    for rid, r in sorted(slow.items()):
        status = up.upstream_status_by_id.get(rid, "?")
        tries = up.attempts_by_id.get(rid, 0)
        notes.append(f"slow {r.method}: {r.status or r.error} after {r.seconds:.1f} s, sent {tries}x "
                     f"(upstream_status {status})")
        per_request[rid] = {"status": r.status, "error": r.error, "seconds": round(r.seconds, 3),
                            "upstream_status": status, "sent": tries}
    expectation = (f"only the {t.slow_ms / 1000:.0f} s requests fail (expected_errors), each sent once; "
                   "no other request fails")
    return ctx.row(stack, f"request past request_terminate_timeout ({t.terminate_timeout} s)", shape, results,
                   expectation, expected=set(slow), notes=notes, details={"slow": per_request})


def _stop_master(ctx: Ctx, sig: signal.Signals, fault: str, pct: int = 0) -> FaultRow:
    """``sig`` to the master while after-response work is in flight; the load stops issuing at that moment."""
    t = ctx.timing
    shape = LoadShape(t.clients, PAUSE_MS, RESPOND_MS, t.stop_work_ms)
    stack = ctx.stack(f"{sig.name.lower()}-pct{pct}", log_level="debug", process_control_timeout=f"{pct}s")
    with stack:
        load = ctx.load(stack, shape).start()
        # Each child answers at once, then works stop_work_ms; the next requests wait for it (on the kept
        # connection or in the listen queue): at 1.5 x stop_work_ms the second round of work is half done.
        time.sleep(1.5 * t.stop_work_ms / 1000)
        ledger = accounting.parse_ledger(stack.text("ledger.txt"))
        in_flight = len(ledger.started) - len(ledger.finished)
        load.stop()
        signalled = time.time()
        stack.signal_master(sig)
        code = stack.wait_master_exit(timeout=t.stop_work_ms / 1000 + pct + 10)
        exited = time.time() - signalled
        results = load.join()
    late = {r.rid for r in results if r.start > signalled}  # sent after the signal: the server was stopping
    notes = [f"master exited {exited:.2f} s after {sig.name} (code {code}); {in_flight} works in flight"]
    return ctx.row(stack, fault, shape, results, STOP_BAR, expected=late, notes=notes,
                   details={"master_exit_s": round(exited, 3), "exit_code": code, "work_in_flight": in_flight,
                            "sent_after_signal": len(late)})


def term_in_flight(ctx: Ctx) -> FaultRow:
    return _stop_master(ctx, signal.SIGTERM, "TERM to the master, after-response work in flight")


def quit_in_flight(ctx: Ctx, pct: int = 0) -> FaultRow:
    fault = f"QUIT to the master (php-fpm's graceful stop), work in flight{_pct_text(pct)}"
    return _stop_master(ctx, signal.SIGQUIT, fault, pct)


def silent_connections(ctx: Ctx, count: int = 100) -> FaultRow:
    """``count`` local connections to the FPM socket that send nothing, held while nginx's load runs."""
    t, shape = ctx.timing, ctx.shape
    stack = ctx.stack("silent")
    with stack:
        load = ctx.load(stack, shape).start()
        time.sleep(t.warmup)
        held_from = time.time()
        conns = stack.open_silent(count)
        try:
            time.sleep(t.hold)
        finally:
            for conn in conns:
                conn.close()
        held_until = time.time()
        time.sleep(t.after)
        results = load.join()
        _settle(shape)

    def window(rs: list[Result]) -> dict:
        p99 = accounting.percentile([r.seconds for r in rs if r.ok], 0.99)
        return {"requests": len(rs), "failed": sum(not r.ok for r in rs), "p99_ms": p99 and round(p99 * 1000, 1)}

    before = window([r for r in results if r.start < held_from])
    during = window([r for r in results if held_from <= r.start < held_until])
    served = sum(1 for r in results if r.ok and held_from <= r.end < held_until)
    notes = [f"before: p99 {before['p99_ms']} ms; while held: {during['requests']} sent, {served} answered, "
             f"{during['failed']} failed, p99 {during['p99_ms']} ms"]
    return ctx.row(stack, f"{count} silent connections to the FPM socket held {t.hold:.0f} s", shape, results,
                   "nginx keeps being served: 0 failed, p99 near the baseline", notes=notes,
                   details={"before": before, "during": during, "answered_during": served})


def max_requests_recycling(ctx: Ctx, max_requests: int = 50) -> FaultRow:
    """pm.max_requests = 50 under POST load: children recycle every 50 requests. A lighter, faster load here
    (20 ms of after-response work, no pause) so that children recycle many times within the run."""
    t = ctx.timing
    shape = LoadShape(t.clients, 0, RESPOND_MS, 20)
    stack = ctx.stack("recycle", max_requests=max_requests)
    with stack:
        load = ctx.load(stack, shape).start()
        time.sleep(t.recycle)
        results = load.join()
        _settle(shape)
    recycles = sum(1 for ln in stack.text("php-fpm.log").splitlines() if "exited with code 0" in ln)
    return ctx.row(stack, f"pm.max_requests={max_requests} recycling", shape, results, NO_LOSS,
                   notes=[f"{recycles} children recycled"], details={"recycles": recycles})


FAULTS: list[tuple[str, Callable[[Ctx], FaultRow]]] = [
    ("reload", reload_x3),
    ("reload-pct", partial(reload_x3, pct=GRACEFUL_PCT)),
    ("kill9", kill9_x3),
    ("terminate", terminate_timeout),
    ("term", term_in_flight),
    ("quit", quit_in_flight),
    ("quit-pct", partial(quit_in_flight, pct=GRACEFUL_PCT)),
    ("silent", silent_connections),
    ("recycle", max_requests_recycling),
]
