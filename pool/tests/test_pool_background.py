"""The background API on its own: task list, runner, errors, timeouts, and the portable middleware."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
import requests
from fcgipool import background
from fcgipool.background import NoRequestError, TaskList, run_tasks
from fcgipool.watchdog import BackgroundTimeout, Watchdog
from support import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]


def test_add_outside_a_request_raises_a_clear_error() -> None:
    with pytest.raises(NoRequestError, match=r"no request is being handled.*background\.wsgi"):
        background.add(print)
    with pytest.raises(NoRequestError):
        background.finish_request()


def test_tasks_run_in_order_and_may_add_more() -> None:
    order: list[str] = []

    def first() -> None:
        order.append("first")
        background.add(order.append, "added by first")

    tasks = TaskList("/x")
    token = background.activate(tasks)
    try:
        background.add(first)
        background.add(order.append, "second", name="second")
    finally:
        background.deactivate(token)
    assert [t.name for t in tasks.tasks] == [first.__qualname__, "second"]
    result = run_tasks(tasks)
    assert order == ["first", "second", "added by first"]
    assert (result.ran, result.failed, result.lost) == (3, 0, [])


def test_a_failing_task_is_logged_with_traceback_and_the_next_runs(caplog: pytest.LogCaptureFixture) -> None:
    ran: list[str] = []

    def broken() -> None:
        raise ValueError("broken on purpose")

    tasks = TaskList("/y")
    tasks.add(broken)
    tasks.add(ran.append, "next")
    with caplog.at_level(logging.ERROR):
        result = run_tasks(tasks)
    assert ran == ["next"] and result.failed == 1
    record = next(r for r in caplog.records if "failed" in r.getMessage())
    assert "broken" in record.getMessage() and "/y" in record.getMessage()
    assert record.exc_info and "broken on purpose" in str(record.exc_info[1])


def test_stop_on_error_reports_the_rest_not_started() -> None:
    tasks = TaskList("/z")
    tasks.add(lambda: 1 / 0, name="bad")
    tasks.add(print, name="skipped")
    lost: list[Any] = []
    run_tasks(tasks, stop_on_error=True, on_lost=lost.extend)
    assert [(t.name, t.reason, t.started) for t in lost] == [("skipped", "not_started", False)]


def test_done_callback_sees_each_task() -> None:
    seen: list[tuple[str, bool]] = []
    tasks = TaskList()
    tasks.add(print, name="a")
    tasks.add(lambda: 1 / 0, name="b")
    run_tasks(tasks, on_done=lambda task, ok, secs: seen.append((task.name, ok)))
    assert seen == [("a", True), ("b", False)]


@pytest.mark.timeout(30, method="thread")  # the watchdog owns SIGALRM in this test
def test_watchdog_interrupt_is_not_swallowed_by_except_exception() -> None:
    dog = Watchdog()
    previous = signal.getsignal(signal.SIGALRM)
    dog.install()

    def careless() -> None:
        try:
            time.sleep(3)
        except Exception:
            pytest.fail("BackgroundTimeout must not be an Exception")

    tasks = TaskList()
    tasks.add(careless)
    tasks.add(print, name="later")
    lost: list[Any] = []
    try:
        dog.arm(time.monotonic() + 0.2)
        t0 = time.monotonic()
        run_tasks(tasks, watchdog=dog, on_lost=lost.extend)
        assert time.monotonic() - t0 < 1
    finally:
        dog.disarm()
        dog.close()
        signal.signal(signal.SIGALRM, previous)
    assert issubclass(BackgroundTimeout, BaseException) and not issubclass(BackgroundTimeout, Exception)
    assert [(t.name, t.reason, t.started) for t in lost] == [
        (careless.__qualname__, "timeout", True),
        ("later", "timeout", False),
    ]


@pytest.mark.timeout(30, method="thread")
def test_shutdown_cap_shortens_the_budget_and_names_the_reason() -> None:
    dog = Watchdog()
    previous = signal.getsignal(signal.SIGALRM)
    dog.install()
    tasks = TaskList()
    tasks.add(time.sleep, 3, name="sleepy")
    lost: list[Any] = []
    try:
        dog.arm(time.monotonic() + 10)
        dog.cap(time.monotonic() + 0.2)  # what SIGTERM does
        run_tasks(tasks, watchdog=dog, on_lost=lost.extend)
    finally:
        dog.disarm()
        dog.close()
        signal.signal(signal.SIGALRM, previous)
    assert [(t.name, t.reason) for t in lost] == [("sleepy", "shutdown")]


# --- the middleware under other WSGI servers ------------------------------------------------------------------


def make_app(events: list[str]) -> Callable[..., Any]:
    def work(name: str) -> None:
        time.sleep(0.2)
        events.append(f"task {name}")

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        background.add(work, environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        events.append("response")
        yield b"body"
        background.add(events.append, "added while iterating")

    return background.wsgi(app)


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_middleware_runs_tasks_on_close_under_wsgiref(caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []
    server = make_server("127.0.0.1", 0, make_app(events), handler_class=QuietHandler)
    thread = threading.Thread(target=server.handle_request)
    thread.start()
    with caplog.at_level(logging.WARNING, logger="fcgipool.background"):
        r = requests.get(f"http://127.0.0.1:{server.server_port}/hello", timeout=10)
    thread.join(10)
    server.server_close()
    assert r.text == "body"
    assert events == ["response", "task /hello", "added while iterating"]


def test_middleware_warns_once_that_the_client_waits(caplog: pytest.LogCaptureFixture) -> None:
    background._warned.discard("inline")
    events: list[str] = []
    app = make_app(events)
    with caplog.at_level(logging.WARNING, logger="fcgipool.background"):
        for _ in range(3):
            result = app({"PATH_INFO": "/p"}, lambda status, headers: None)
            list(result)
            result.close()
    warnings = [r for r in caplog.records if "close() under this WSGI server" in r.getMessage()]
    assert len(warnings) == 1
    assert events.count("task /p") == 3


def test_middleware_passes_through_under_fcgipool() -> None:
    inner_calls: list[Any] = []

    def inner(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        inner_calls.append(environ[background.ENVIRON_KEY])
        return [b"x"]

    tasks = TaskList()
    result = background.wsgi(inner)({background.ENVIRON_KEY: tasks}, lambda s, h: None)
    assert result == [b"x"]  # not wrapped: fcgipool runs the tasks itself
    assert inner_calls == [tasks]


def test_middleware_under_gunicorn_http(tmp_path: Path) -> None:
    """The sample-style app, unchanged, under gunicorn's own sync worker over HTTP."""
    app_file = tmp_path / "portable.py"
    app_file.write_text(
        "import os, time\n"
        "from fcgipool import background\n"
        "def work(path):\n"
        "    time.sleep(0.1)\n"
        "    open(os.environ['OUT'], 'a').write('task ' + path + '\\n')\n"
        "def inner(environ, start_response):\n"
        "    background.add(work, environ['PATH_INFO'])\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'ok']\n"
        "app = background.wsgi(inner)\n"
    )
    out = tmp_path / "out.txt"
    port = free_port()
    env = dict(os.environ, OUT=str(out), PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO / "pool")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
         "--control-socket", str(tmp_path / "ctl.sock"), "portable:app"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        r = wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/g", timeout=2), 20, "gunicorn")
        assert r.text == "ok"
        # the file appears (open 'a') a moment before the task's line is in it
        wait_for(lambda: out.exists() and out.read_text().endswith("\n"), 10, "the task")
        assert out.read_text() == "task /g\n"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert b"after-response tasks run inside the response's close()" in err


@pytest.mark.timeout(30, method="thread")
def test_watchdog_never_interrupts_code_outside_interruptible_regions() -> None:
    """An alarm between tasks or after the last one must not hit the server's own code."""
    dog = Watchdog()
    previous = signal.getsignal(signal.SIGALRM)
    dog.install()
    try:
        dog.arm(time.monotonic() + 0.05)
        time.sleep(0.2)  # the alarm fires here, outside any region: deferred
        assert dog.expired
        with pytest.raises(BackgroundTimeout), dog.interruptible():
            pass  # raised on entering the next region
        dog.arm(time.monotonic() + 0.05)
        time.sleep(0.2)
        dog.disarm()  # the request's work ended in time: the late alarm is dropped
        with dog.interruptible():
            pass
    finally:
        dog.disarm()
        dog.close()
        signal.signal(signal.SIGALRM, previous)


def test_a_failing_task_logs_its_traceback_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    """A task failing for every request (its mail server is down) gets one traceback per TRACEBACK_EVERY and a
    line for each other failure, so the log stays readable; every failure is still counted."""
    from fcgipool import background as bg

    bg._tracebacks.clear()
    logger = logging.getLogger("test.tracebacks")
    results = []
    with caplog.at_level(logging.ERROR, logger="test.tracebacks"):
        for _ in range(5):
            tasks = TaskList("/signup")
            tasks.add(lambda: 1 / 0, name="welcome_mail")
            results.append(run_tasks(tasks, logger=logger))
    assert [r.failed for r in results] == [1] * 5
    with_traceback = [r for r in caplog.records if r.exc_info]
    assert len(with_traceback) == 1 and "welcome_mail failed" in with_traceback[0].getMessage()
    lines = [r.getMessage() for r in caplog.records if not r.exc_info]
    assert len(lines) == 4 and all("ZeroDivisionError" in m for m in lines), lines
