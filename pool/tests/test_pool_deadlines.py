"""Soft time limits without a syscall per request: the watchdog's clock thread, where an interruption may land,
and a strace count of a worker's timer calls."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import pytest
from fcgipool import lost
from fcgipool.watchdog import BackgroundTimeout, RequestTimeout
from support import PoolProcess, fcgi_request
from support.strace import traced
from test_pool_handoff_after import installed_watchdog as installed

APPS = Path(__file__).parent / "apps"


def pool_frame() -> FrameType:
    """A frame of the pool's own code (fcgipool.lost.report_lost, caught while it calls its hook)."""
    frames: list[FrameType] = []

    def hook(owner: object, task: object) -> None:
        frames.append(sys._getframe(1))

    lost.report_lost(None, [lost.LostTask("t", "timeout")], _Quiet(), hook)
    return frames[0]


class _Quiet:
    def error(self, *args: object) -> None:
        pass


@pytest.mark.timeout(30, method="thread")
def test_the_clock_thread_interrupts_a_sleeping_app_near_its_deadline() -> None:
    with installed() as dog:
        t0 = time.monotonic()
        dog.arm_response(t0 + 0.3)
        with pytest.raises(RequestTimeout), dog.interruptible():
            time.sleep(5)
        assert 0.28 <= time.monotonic() - t0 < 0.3 + 2 * dog.tick + 0.2
        assert dog.fired


@pytest.mark.timeout(30, method="thread")
def test_an_interruption_is_held_back_in_pool_code_and_raised_in_app_code() -> None:
    """The signal handler never raises inside the pool's own frames (a record half-parsed, a response
    half-written): it marks the interruption pending; a frame of app code takes it."""
    with installed() as dog:
        dog.arm(time.monotonic() - 1)  # already over
        with dog.interruptible():
            dog._on_alarm(signal.SIGALRM, pool_frame())  # no exception: held back
            assert not dog.fired
            with pytest.raises(BackgroundTimeout):
                dog._on_alarm(signal.SIGALRM, sys._getframe())  # this test's frame is app code
        dog.disarm()


@pytest.mark.timeout(30, method="thread")
def test_nothing_is_raised_once_the_deadline_is_disarmed() -> None:
    with installed() as dog:
        dog.arm_response(time.monotonic() + 0.1)
        dog.disarm()
        with dog.interruptible():
            time.sleep(0.4)  # the clock sees no deadline: no signal, no exception
        assert not dog.fired


def test_a_request_and_its_after_response_work_take_no_timer_syscall(tmp_path: Path) -> None:
    """Arming the response deadline and the after-response budget are attribute stores: 30 requests with a task
    each make no setitimer call (the timer-based watchdog made two per request with tasks)."""
    with PoolProcess("bgapp:app", workers=1, app_dir=APPS, env={"BGAPP_DIR": str(tmp_path)}) as pool:
        (worker,) = pool.worker_pids()
        with traced(worker, tmp_path / "strace.txt", "-e", "trace=setitimer,timer_settime,sendto,write") as lines:
            for i in range(30):
                r = fcgi_request(pool.socket_path, {"PATH_INFO": "/task", "QUERY_STRING": f"ms=1&key=st{i}"})
                assert r.status == 200
            time.sleep(0.3)
        calls = [line for line in lines if "setitimer(" in line or "timer_settime(" in line]
        sends = [line for line in lines if "sendto(" in line or "write(" in line]
        assert len(sends) >= 30, f"strace saw {len(sends)} writes for 30 responses: is it tracing the worker?"
        assert calls == [], f"{len(calls)} timer syscalls for 30 requests with tasks: {calls[:4]}"


@pytest.mark.timeout(30, method="thread")
def test_a_held_back_interruption_is_signalled_a_bounded_number_of_times() -> None:
    """Outside any region (or in pool code blocked for long) the clock signals a few times, then waits for a
    safe point instead of interrupting the process forever."""
    from fcgipool import watchdog

    with installed() as dog:
        calls: list[float] = []
        handler = signal.getsignal(signal.SIGALRM)

        def counting(signum: int, frame: FrameType | None) -> None:
            calls.append(time.monotonic())
            handler(signum, frame)  # type: ignore[operator]

        signal.signal(signal.SIGALRM, counting)
        dog.arm(time.monotonic() + 0.05)
        t0 = time.process_time()
        time.sleep(1.5)  # outside any interruptible region: held back
        cpu = time.process_time() - t0
        assert 1 <= len(calls) <= 1 + len(watchdog.RESIGNAL_AFTER), calls
        assert cpu < 0.2, f"the clock thread spun: {cpu:.3f} s of CPU while waiting"
        with pytest.raises(BackgroundTimeout), dog.interruptible():
            pass  # the next safe point raises it


def test_a_request_after_a_long_idle_wait_starts_its_clock_when_it_arrives(tmp_path: Path) -> None:
    """A request's start is the worker's last clock reading (no read of its own): after a wait that reading is
    taken when poll returns. Were it the one from before the wait, a request after 2.5 s of idling would be
    past its 1 s timeout at once (504) and the status page would show a 2.8 s duration."""
    from fcgipool.status import cli as status_cli

    tests = Path(__file__).parent
    with PoolProcess("support.pidapp:app", workers=1, args=["--timeout", "1"], app_dir=tests, status=True) as pool:
        for _ in range(3):
            time.sleep(2.5)
            r = fcgi_request(pool.socket_path, {"PATH_INFO": "/slow", "QUERY_STRING": "s=0.3"})
            assert r.status == 200, f"a 0.3 s request after an idle wait was answered {r.status}"
            code, _, body = status_cli.fetch(f"unix:{pool.status_socket}", query="json&full")
            assert code == 200, body
            (proc,) = json.loads(body)["processes"]
            seconds = proc["request duration"] / 1e6  # microseconds, as PHP-FPM
            assert 0.25 <= seconds < 1.0, f"status says the 0.3 s request took {seconds:.3f} s"
