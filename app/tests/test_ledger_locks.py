"""The ledger is exact under concurrent writers, and the user lock really is inter-process."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sampleapp.ledger import Ledger
from sampleapp.locks import LockTimeout, UserLock


def _hammer(path: str, n: int) -> None:
    ledger = Ledger(path)
    for i in range(n):
        ledger.record("work", "started")
        ledger.record("work", "finished" if i % 5 else "failed")
        if i % 10 == 0:
            ledger.record_lost("mail", "killed", "/signup", 1)


def test_ledger_counts_are_exact_with_concurrent_processes(tmp_path):
    path = str(tmp_path / "ledger.sqlite3")
    Ledger(path).summary()  # create the schema once, as the first request would
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_hammer, args=(path, 100)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    summary = Ledger(path).summary()
    zero = {"spilled": 0, "ran_in_queue": 0}
    assert summary["kinds"]["work"] == {"started": 400, "finished": 320, "failed": 80, "lost": 0, **zero}
    assert summary["kinds"]["mail"]["lost"] == 40
    assert summary["totals"] == {"started": 400, "finished": 320, "failed": 80, "lost": 40, **zero}
    assert len(Ledger(path).lost_tasks(limit=1000)) == 40


def test_ledger_uses_wal(tmp_path):
    Ledger(tmp_path / "l.sqlite3").record("x", "started")
    import sqlite3

    assert sqlite3.connect(tmp_path / "l.sqlite3").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_ledger_rejects_unknown_events(tmp_path):
    with pytest.raises(ValueError, match="unknown ledger event"):
        Ledger(tmp_path / "l.sqlite3").record("x", "exploded")


HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _hold_in_other_process(path: Path, seconds: float) -> subprocess.Popen[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_user_lock_waits_for_another_process(tmp_path):
    lock = UserLock(tmp_path / "locks", "alice")
    t0 = time.monotonic()
    holder = _hold_in_other_process(lock.path, 0.4)
    waited = lock.acquire(timeout_s=10)
    holder.wait()
    assert 0.4 - (time.monotonic() - t0) <= waited / 1000 + 0.05
    assert waited >= 200
    lock.release()


def test_user_lock_released_when_holder_dies(tmp_path):
    lock = UserLock(tmp_path / "locks", "bob")
    holder = _hold_in_other_process(lock.path, 30)
    holder.kill()
    holder.wait()
    assert lock.acquire(timeout_s=5) < 1000


def test_user_lock_times_out(tmp_path):
    lock = UserLock(tmp_path / "locks", "carol")
    holder = _hold_in_other_process(lock.path, 5)
    try:
        with pytest.raises(LockTimeout, match="still held"):
            lock.acquire(timeout_s=0.2)
        assert not lock.held
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("user", ["", "a/b", "..", ".", "x" * 65, "a b", "ü"])
def test_user_lock_rejects_unsafe_names(tmp_path, user):
    with pytest.raises(ValueError):
        UserLock(tmp_path, user)
