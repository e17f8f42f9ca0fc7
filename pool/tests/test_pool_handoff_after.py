"""``handoff_after``: a busy worker keeps its other kept connections only that long, then passes them on.

A worker serving a request keeps the other idle connections it holds (no hand-over under load); once the
request has run for ``handoff_after`` seconds (the clock thread's reminder: ``Watchdog.watch_rounds``), or as soon as
after-response work starts, it gives them to the hand-off queue, where an idle worker takes them. The pool
tests make one worker hold three kept connections, add a second worker (TTIN), keep the first busy on one
connection and send a quick request on another: it is answered by the second worker long before the busy
one is free -- unless ``handoff_after`` is larger than the busy request, which shows the setting is what
moves the connection. Timing margins are generous: they show behaviour, not speed.

Regressions pin the round's reminder: it runs also when a connection is kept mid-round (the round began holding
nothing), a long request gets one signal, not one every ``handoff_after``, and keep-conn traffic makes no timer
syscall (strace counts them).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fcgipool.watchdog import BackgroundTimeout, Watchdog
from support import FastCGIResponse, PoolProcess, fcgi_request, wait_for
from support.pidapp import booted
from support.strace import traced

TESTS = Path(__file__).parent  # the app directory: the pool imports support.pidapp from here
SLOW = 0.6  # seconds the busy request takes
QUICK_LIMIT = 0.3  # a request passed on to the idle worker is answered well within this
#: how long after the busy request started the quick one is sent (the timer has fired long before)
SEND_AFTER = 0.05


# --- Watchdog rounds: the clock thread's reminder ----------------------------------------------------------------


@contextmanager
def installed_watchdog(after: float = 0.1, calls: list[float] | None = None) -> Iterator[Watchdog]:
    """A watchdog whose reminder appends the monotonic time to ``calls``."""
    previous = signal.getsignal(signal.SIGALRM)
    dog = Watchdog()
    record = calls if calls is not None else []
    dog.watch_rounds(after, lambda: record.append(time.monotonic()))
    dog.install()
    try:
        yield dog
    finally:
        dog.disarm()
        dog.close()
        signal.signal(signal.SIGALRM, previous)


def sleep_until(t: float) -> None:
    while (left := t - time.monotonic()) > 0:
        time.sleep(left)


def no_timer() -> bool:
    return signal.getitimer(signal.ITIMER_REAL)[0] == 0


@pytest.mark.timeout(30, method="thread")  # the watchdog owns SIGALRM in these tests
def test_a_round_that_wants_a_reminder_gets_one_after_the_delay_and_no_timer() -> None:
    calls: list[float] = []
    with installed_watchdog(0.2, calls) as dog:
        time.sleep(0.2)  # the clock thread idles: a full tick between looks
        t0 = time.monotonic()
        dog.round_begins()
        dog.want_reminder()
        assert no_timer(), "asking for a reminder set ITIMER_REAL"
        sleep_until(t0 + 0.15)
        assert calls == [], "the reminder ran early"
        sleep_until(t0 + 1.0)  # the handler runs in between, the sleep goes on (PEP 475)
        assert len(calls) == 1, calls
        assert 0.18 <= calls[0] - t0 < 0.6, calls[0] - t0  # at most twice the delay, with room for a slow VM
        sleep_until(t0 + 1.3)
        assert len(calls) == 1, "a long round got more than one reminder"
        dog.want_reminder()  # asking again after it ran: a new wait in the same round
        sleep_until(t0 + 2.0)
        assert len(calls) == 2, calls
        dog.round_ends()


@pytest.mark.timeout(30, method="thread")
def test_rounds_that_end_in_time_or_do_not_ask_get_no_reminder() -> None:
    calls: list[float] = []
    with installed_watchdog(0.1, calls) as dog:
        for _ in range(20):  # short rounds, each well under the delay
            dog.round_begins()
            dog.want_reminder()
            time.sleep(0.02)
            dog.round_ends()
        dog.round_begins()  # a long round that holds nothing
        time.sleep(0.4)
        dog.round_ends()
        time.sleep(0.3)
        assert calls == [], f"{len(calls)} reminders for rounds that ended in time or did not ask"
        dog.round_begins()  # still usable
        dog.want_reminder()
        time.sleep(0.5)
        dog.round_ends()
        assert len(calls) == 1, calls


@pytest.mark.timeout(30, method="thread")
def test_an_idle_clock_wakes_for_a_round_at_once() -> None:
    """A worker idle for a while: its clock thread sleeps a full tick (50 ms), so the first round that wants a
    reminder wakes it; with a 10 ms delay the reminder comes long before a tick."""
    calls: list[float] = []
    with installed_watchdog(0.01, calls) as dog:
        results = []
        for _ in range(5):
            time.sleep(0.3)  # idle: the thread goes cold
            t0 = time.monotonic()
            dog.round_begins()
            dog.want_reminder()
            time.sleep(0.2)
            dog.round_ends()
            results.append(calls[-1] - t0 if calls else None)
        assert len(calls) == 5, results
        assert max(results) < 0.045, f"reminders after {results}: the idle thread was not woken"  # type: ignore


@pytest.mark.timeout(30, method="thread")
def test_a_reminder_runs_while_a_deadline_is_armed_and_leaves_it_alone() -> None:
    calls: list[float] = []
    with installed_watchdog(0.1, calls) as dog:
        dog.arm_response(time.monotonic() + 10)
        t0 = time.monotonic()
        dog.round_begins()
        dog.want_reminder()
        time.sleep(0.5)
        assert len(calls) == 1 and 0.08 <= calls[0] - t0 < 0.45, [c - t0 for c in calls]
        assert dog.deadline and not dog.expired and not dog.fired, "the reminder disturbed the deadline"
        dog.round_ends()
        assert no_timer()


@pytest.mark.timeout(30, method="thread")
def test_a_round_ending_leaves_an_armed_deadline_alone() -> None:
    calls: list[float] = []
    with installed_watchdog(0.05, calls) as dog:
        dog.arm(time.monotonic() + 0.3)
        dog.round_begins()
        dog.want_reminder()
        dog.round_ends()
        time.sleep(0.2)
        assert calls == [], "the reminder of an ended round ran"
        with pytest.raises(BackgroundTimeout), dog.interruptible():
            time.sleep(2)  # the deadline still fires (clock thread), 0.1 s from here


@pytest.mark.timeout(30, method="thread")
def test_a_reminder_does_not_stop_the_deadline_from_interrupting() -> None:
    calls: list[float] = []
    with installed_watchdog(0.05, calls) as dog:
        dog.round_begins()
        dog.want_reminder()
        t0 = time.monotonic()
        dog.arm(t0 + 0.2)
        with pytest.raises(BackgroundTimeout), dog.interruptible():
            time.sleep(3)
        assert 0.15 <= time.monotonic() - t0 < 1.5
        assert len(calls) == 1, "the reminder did not run during the deadline"
        dog.round_ends()


# --- config --------------------------------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``fcgipool ARGS support.pidapp:app`` (the app must import: --check-config loads it)."""
    return subprocess.run(
        [sys.executable, "-m", "fcgipool.cli", *args, "support.pidapp:app"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=TESTS,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "args, env, code, message",
    [
        (["--handoff-after", "-1"], {}, 2, "--handoff-after: handoff_after must be a finite number of seconds >= 0"),
        (["--handoff-after", "abc"], {}, 2, "--handoff-after: handoff_after must be a number"),
        ([], {"FCGIPOOL_HANDOFF_AFTER": "-0.5"}, 1, "FCGIPOOL_HANDOFF_AFTER: handoff_after must be a finite number"),
        ([], {"FCGIPOOL_HANDOFF_AFTER": "soon"}, 1, "FCGIPOOL_HANDOFF_AFTER: handoff_after must be a number"),
    ],
    ids=["flag-negative", "flag-text", "env-negative", "env-text"],
)
def test_bad_handoff_after_is_refused_before_starting(
    args: list[str], env: dict[str, str], code: int, message: str
) -> None:
    proc = run_cli(*args, "--check-config", env=env)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr


@pytest.mark.parametrize(
    "args, env, value",
    [
        ([], {}, "0.005"),
        (["--handoff-after", "0"], {}, "0.0"),
        ([], {"FCGIPOOL_HANDOFF_AFTER": "0.25"}, "0.25"),
        (["--handoff-after", "2"], {"FCGIPOOL_HANDOFF_AFTER": "0.25"}, "2.0"),
    ],
    ids=["default", "flag", "env", "flag-over-env"],
)
def test_handoff_after_from_flag_and_env(args: list[str], env: dict[str, str], value: str) -> None:
    proc = run_cli(*args, "--print-config", env=env)
    assert proc.returncode == 0, proc.stderr
    assert re.search(rf"^handoff_after\s+= {re.escape(value)}$", proc.stdout, re.M), proc.stdout


# --- a real pool -----------------------------------------------------------------------------------------------


def connect(pool: PoolProcess) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(pool.socket_path)
    return sock


def get(pool: PoolProcess, sock: socket.socket, path: str, query: str = "") -> FastCGIResponse:
    """One keep-conn request on ``sock``."""
    uri = f"{path}?{query}" if query else path
    params = {"PATH_INFO": path, "QUERY_STRING": query, "REQUEST_URI": uri}
    return fcgi_request(pool.socket_path, params, keep_conn=True, sock=sock)


def timed(call: Callable[[], FastCGIResponse]) -> tuple[FastCGIResponse, float, float]:
    """(response, start, end) on the monotonic clock."""
    t0 = time.monotonic()
    r = call()
    return r, t0, time.monotonic()


@dataclass
class Setup:
    pool: PoolProcess
    conns: list[socket.socket]
    first: int  # the worker that holds every connection
    second: int  # the idle worker added with TTIN


@contextmanager
def one_worker_holds_three(tmp_path: Path, handoff_after: str | None) -> Iterator[Setup]:
    """Worker A holds three idle kept connections; then worker B starts and idles."""
    args = [] if handoff_after is None else ["--handoff-after", handoff_after]
    env = {"PIDAPP_DIR": str(tmp_path)}
    with PoolProcess("support.pidapp:app", workers=1, args=args, app_dir=TESTS, env=env, wait_path=None) as pool:
        conns = [connect(pool) for _ in range(3)]
        try:
            answers = [get(pool, c, "/pid") for c in conns]
            assert all(r.status == 200 and not r.trailing for r in answers), answers  # all three kept
            (first,) = {int(r.body) for r in answers}
            assert pool.worker_pids() == [first]
            pool.signal(signal.SIGTTIN)
            (second,) = wait_for(lambda: booted(tmp_path) - {first}, 20, "a second worker to load the app")
            # from loading the app to waiting in its main loop: a few ms; the queue keeps connections till then
            time.sleep(0.3)
            assert sorted(pool.worker_pids()) == sorted([first, second])
            yield Setup(pool, conns, first, second)
            for c in conns:  # nothing was closed on us: every connection still answers
                assert get(pool, c, "/pid").status == 200
            log = pool.log_text()
            assert "Traceback" not in log and "closing FastCGI connection" not in log, log[-3000:]
        finally:
            for c in conns:
                c.close()


def busy_then_quick(s: Setup) -> tuple[FastCGIResponse, float, FastCGIResponse, float]:
    """/slow on connection 0, a quick /pid on connection 1 while it runs: (slow, slow's end, quick, quick's
    time), times relative to the slow request's start."""
    with ThreadPoolExecutor(1) as ex:
        slow_future = ex.submit(timed, lambda: get(s.pool, s.conns[0], "/slow", f"s={SLOW}"))
        t0 = time.monotonic()
        time.sleep(SEND_AFTER)
        quick, q0, q1 = timed(lambda: get(s.pool, s.conns[1], "/pid"))
        slow, _, s1 = slow_future.result(timeout=10)
    assert slow.status == 200 and quick.status == 200, (slow, quick)
    assert int(slow.body) == s.first
    return slow, s1 - t0, quick, q1 - q0


@pytest.mark.parametrize("handoff_after", [None, "0"], ids=["default", "strict-0"])
def test_request_on_a_busy_workers_idle_connection_goes_to_the_idle_worker(
    tmp_path: Path, handoff_after: str | None
) -> None:
    with one_worker_holds_three(tmp_path, handoff_after) as s:
        _, slow_end, quick, quick_time = busy_then_quick(s)
        print(f"handoff_after={handoff_after}: quick answered in {quick_time:.3f} s, slow ended at {slow_end:.3f} s")
        assert int(quick.body) == s.second, "the busy worker kept the connection"
        assert quick_time < QUICK_LIMIT, f"quick request took {quick_time:.3f} s: it waited for the busy worker"
        assert slow_end >= SLOW - 0.05


def test_large_handoff_after_keeps_the_connections_with_the_busy_worker(tmp_path: Path) -> None:
    """The control: with handoff_after longer than the busy request nothing moves, the quick one waits."""
    with one_worker_holds_three(tmp_path, "5") as s:
        _, slow_end, quick, quick_time = busy_then_quick(s)
        print(f"handoff_after=5: quick answered in {quick_time:.3f} s, slow ended at {slow_end:.3f} s")
        assert int(quick.body) == s.first, "the connection moved although handoff_after was not reached"
        assert quick_time >= SLOW - SEND_AFTER - 0.1, f"answered after {quick_time:.3f} s, before the busy one ended"


def test_after_response_work_passes_the_connections_on_at_once(tmp_path: Path) -> None:
    """handoff_after 5 s, but a request whose task runs 0.6 s after the response: its own connection and the
    others go to the queue as the task starts (its own is not closed, and no no-reuse marker follows its
    END_REQUEST: Apache and HAProxy reuse it at once), and a request on either is answered by the idle worker."""
    with one_worker_holds_three(tmp_path, "5") as s:
        bg = get(s.pool, s.conns[0], "/bg", f"s={SLOW}")
        t0 = time.monotonic()
        assert bg.status == 200 and int(bg.body) == s.first
        assert not bg.trailing, "the connection of a request with after-response work was ended, not passed on"
        for name, conn in (("another held", s.conns[1]), ("its own", s.conns[0])):
            quick, q0, q1 = timed(lambda conn=conn: get(s.pool, conn, "/pid"))
            print(f"after-response work: quick request on {name} connection answered in {q1 - q0:.3f} s")
            assert int(quick.body) == s.second, f"{name} connection stayed with the worker running the task"
            assert q1 - q0 < QUICK_LIMIT and q1 - t0 < SLOW - 0.1, f"quick request took {q1 - q0:.3f} s"
        time.sleep(SLOW)  # let the task end before the pool stops


# --- regressions: the round's handoff timer (be6f28f) ------------------------------------------------------------

#: seconds the request served after the kept connection, in the same poll round, takes: room for TTIN to boot the
#: second worker while it runs
ROUND_SLOW = 3.0


def test_a_connection_kept_mid_round_is_passed_on_while_the_round_goes_on(tmp_path: Path) -> None:
    """The worker holds nothing when a poll round starts (so the round starts no timer), keeps a connection in
    the round and then serves a long request: the kept connection must still be passed on after handoff_after,
    not stay with the busy worker till the round ends. Two listeners make one round hold two new connections.
    Before be6f28f the quick request waited the whole 3 s request out."""
    env = {"PIDAPP_DIR": str(tmp_path)}
    pool = PoolProcess("support.pidapp:app", workers=1, app_dir=TESTS, env=env, wait_path=None)
    other = pool.dir / "other.sock"  # short path: a unix socket path must fit in 108 bytes
    pool.args += ["--bind", f"unix:{other}"]
    with pool, ThreadPoolExecutor(3) as ex:
        wait_for(other.exists, 10, "the second listener")
        kept = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        long_conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        for sock in (kept, long_conn):
            sock.settimeout(10)
        try:
            # not a keep-conn request: when it ends the worker holds nothing
            busy = ex.submit(fcgi_request, pool.socket_path, {"PATH_INFO": "/slow", "QUERY_STRING": "s=0.5"})
            time.sleep(0.1)
            # while the worker is busy (connected only now: the worker must not have accepted it earlier), a quick
            # keep-conn request waits on the first listener and a long one on the second: the next poll reports
            # both, and the round serves the quick one first
            kept.connect(pool.socket_path)
            first_answer = ex.submit(timed, lambda: get(pool, kept, "/pid"))
            time.sleep(0.05)
            long_conn.connect(str(other))
            params = {"PATH_INFO": "/slow", "QUERY_STRING": f"s={ROUND_SLOW}"}
            long_future = ex.submit(timed, lambda: fcgi_request(str(other), params, keep_conn=True, sock=long_conn))
            worker = int(busy.result(timeout=10).body)
            first = first_answer.result(timeout=ROUND_SLOW / 2)[0]  # served before the long request
            assert first.status == 200 and not first.trailing and int(first.body) == worker, first  # kept
            pool.signal(signal.SIGTTIN)
            (second,) = wait_for(lambda: booted(tmp_path) - {worker}, 20, "a second worker to load the app")
            time.sleep(0.3)
            assert not long_future.done(), "the long request ended before the second worker was up: nothing shown"
            quick, q0, q1 = timed(lambda: get(pool, kept, "/pid"))
            long_response, _, long_end = long_future.result(timeout=10)
            print(f"quick answered in {q1 - q0:.3f} s by {'the idle' if int(quick.body) == second else 'the busy'} "
                  f"worker; the long request ended {long_end - q1:.3f} s after it")  # fmt: skip
            assert long_response.status == 200 and int(long_response.body) == worker, long_response
            assert quick.status == 200 and int(quick.body) == second, (
                f"the connection kept earlier in the round stayed with the busy worker ({q1 - q0:.3f} s)"
            )
            assert q1 - q0 < QUICK_LIMIT and long_end - q1 > 0.5, f"quick took {q1 - q0:.3f} s"
            assert get(pool, kept, "/pid").status == 200  # and it is still a live kept connection
            log = pool.log_text()
            assert "Traceback" not in log and "closing FastCGI connection" not in log, log[-3000:]
        finally:
            kept.close()
            long_conn.close()


def test_a_long_request_gets_one_handoff_signal_and_no_timer_syscall(tmp_path: Path) -> None:
    """With other connections held, a 1 s request gets one handoff reminder (SIGALRM from the clock thread) and
    no setitimer. Before be6f28f the timer re-armed itself from its own handler: one SIGALRM and one setitimer
    every handoff_after (5 ms); until the clock thread took the reminders, every round made two setitimer calls.
    Then 200 quick keep-conn requests on the held connections: no timer syscall at all."""
    with one_worker_holds_three(tmp_path, None) as s:
        expr = ("-e", "trace=setitimer,timer_settime,sendto,write", "-e", "signal=SIGALRM")
        with traced(s.first, tmp_path / "strace.txt", *expr) as lines:
            slow, t0, t1 = timed(lambda: get(s.pool, s.conns[0], "/slow", "s=1"))
            assert slow.status == 200 and int(slow.body) == s.first and t1 - t0 >= 0.95, (slow, t1 - t0)
        setitimer = sum("setitimer(" in line or "timer_settime(" in line for line in lines)
        sigalrm = sum("--- SIGALRM" in line for line in lines)
        print(f"during a 1 s request with 2 other held connections: {setitimer} setitimer calls, {sigalrm} SIGALRM")
        assert sigalrm >= 1, f"the handoff reminder never fired: is strace seeing the worker?\n{lines[:20]}"
        assert setitimer == 0 and sigalrm <= 5, f"{setitimer} timer syscalls and {sigalrm} SIGALRMs in a 1 s request"
        # the slow round passed them on: either worker may serve them now, so both are traced
        with traced(s.first, tmp_path / "strace2.txt", *expr) as lines, \
                traced(s.second, tmp_path / "strace3.txt", *expr) as lines2:  # fmt: skip
            for i in range(200):
                assert get(s.pool, s.conns[i % 3], "/pid").status == 200
        lines = lines + lines2
        sends = [line for line in lines if "sendto(" in line or "write(" in line]
        timers = [line for line in lines if "setitimer(" in line or "timer_settime(" in line]
        assert len(sends) >= 200, f"strace saw {len(sends)} writes for 200 responses: is it tracing the workers?"
        assert timers == [], f"{len(timers)} timer syscalls for 200 keep-conn requests: {timers[:4]}"
