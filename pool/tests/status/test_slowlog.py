"""Slowlog watcher in-process (the nginx test covers a real worker)."""

from __future__ import annotations

import time

import pytest
from fcgipool.scoreboard import Scoreboard, State
from fcgipool.slowlog import SlowlogWatcher


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
        slot.set_state(State.IDLE)
        slot.begin_request("GET", "/fast", "", 0)  # a fast request is not logged
        slot.end_response()
        slot.set_state(State.IDLE)
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
    slot.set_state(State.FINISHING)
    assert watcher.check(time.time() + 2)
    text = log.read_text()
    assert "(after-response running for" in text and "pending after-response tasks: send_welcome_mail" in text
    assert sb.read(i).slow_requests == 1


def test_bad_timeout_is_rejected():
    sb = Scoreboard(1)
    with pytest.raises(ValueError, match="must be > 0"):
        SlowlogWatcher(sb, sb.acquire(), 0)
