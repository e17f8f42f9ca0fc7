"""Slowlog watcher in-process (the nginx test covers a real worker)."""

from __future__ import annotations

import time

import pytest
from fcgipool.scoreboard import Scoreboard, WorkerState
from fcgipool.slowlog import SlowlogWatcher
from support.unprivileged import passes_unprivileged


def sluggish_view_function_for_test(seconds: float) -> None:
    time.sleep(seconds)


def test_slow_request_traceback_names_the_running_function(tmp_path):
    sb = Scoreboard(1)
    i = sb.acquire()
    slot = sb.slot(i)
    log = tmp_path / "slow.log"
    watcher = SlowlogWatcher(sb, i, 0.2, path=str(log), pool="www")
    watcher.start()
    try:
        slot.begin_request("GET", "/slow", "n=1", 0)
        sluggish_view_function_for_test(0.6)
        slot.end_response()
        slot.set_state(WorkerState.IDLE)
        slot.begin_request("GET", "/fast", "", 0)  # a fast request is not logged
        slot.end_response()
        slot.set_state(WorkerState.IDLE)
        time.sleep(0.3)
    finally:
        watcher.stop()
    text = log.read_text()
    assert text.count("[pool www] pid") == 1
    assert "request: GET /slow?n=1 (response running for" in text
    assert "in sluggish_view_function_for_test" in text and "time.sleep(seconds)" in text
    assert sb.read(i).slow_requests == 1


def test_after_response_phase_is_logged_separately_but_counted_once(tmp_path):
    sb = Scoreboard(1)
    i = sb.acquire()
    slot = sb.slot(i)
    log = tmp_path / "slow.log"
    watcher = SlowlogWatcher(sb, i, 1.0, path=str(log))
    slot.begin_request("POST", "/signup", "", 3)
    now = time.time()
    assert not watcher.check(now)
    assert watcher.check(now + 2)
    assert not watcher.check(now + 3)  # once per phase
    slot.end_response()
    slot.set_pending(["send_welcome_mail"])
    slot.set_state(WorkerState.FINISHING)
    assert watcher.check(time.time() + 2)
    text = log.read_text()
    assert "(after-response running for" in text and "pending after-response tasks: send_welcome_mail" in text
    assert sb.read(i).slow_requests == 1


def test_bad_timeout_is_rejected():
    sb = Scoreboard(1)
    with pytest.raises(ValueError, match="must be > 0"):
        SlowlogWatcher(sb, sb.acquire(), 0)


def test_works_unprivileged_and_undumpable():
    """No ptrace: the traceback comes from inside the process. Child drops root and makes itself
    non-dumpable (PR_SET_DUMPABLE 0: nothing may ptrace it, like a hardened container) and still logs."""
    import ctypes
    import shutil
    import tempfile
    from pathlib import Path

    where = Path(tempfile.mkdtemp(prefix="fcgipool-slowlog-"))  # pytest's tmp_path is not reachable for nobody
    where.chmod(0o777)
    log = where / "slow.log"
    sb = Scoreboard(1)
    i = sb.acquire()

    def slow_request_locked_down() -> bool:
        pr_set_dumpable = 4
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0)
        watcher = SlowlogWatcher(sb, i, 0.2, path=str(log), pool="www")
        watcher.start()
        sb.slot(i).begin_request("GET", "/locked-down", "", 0)
        sluggish_view_function_for_test(0.6)
        watcher.stop()
        return True

    assert passes_unprivileged(slow_request_locked_down)
    text = log.read_text()
    shutil.rmtree(where)
    assert "request: GET /locked-down" in text and "in sluggish_view_function_for_test" in text


def test_unwritable_slowlog_path_sends_the_entry_to_the_error_log(tmp_path, caplog):
    sb = Scoreboard(1)
    i = sb.acquire()
    watcher = SlowlogWatcher(sb, i, 1.0, path=str(tmp_path / "missing-dir" / "slow.log"))
    sb.slot(i).begin_request("GET", "/nowhere", "", 0)
    with caplog.at_level("ERROR"):
        assert watcher.check(time.time() + 2)
    (message,) = [r.getMessage() for r in caplog.records]
    assert "cannot write the slowlog" in message and "No such file or directory" in message
    assert "request: GET /nowhere" in message
