"""Process managers against a fake arbiter (no fork); the nginx tests run them on the real arbiter."""

from __future__ import annotations

import socket
import time
from types import SimpleNamespace

import pytest
from fcgipool import pm as pm_mod
from fcgipool.scoreboard import Scoreboard, WorkerState
from fcgipool.status.monitor import PoolMonitor


def cfg(**kw):
    base = dict(
        pm="static",
        pm_max_children=0,
        pm_start_servers=0,
        pm_min_spare_servers=1,
        pm_max_spare_servers=3,
        pm_max_spawn_rate=32,
        pm_process_idle_timeout=10.0,
    )
    base.update(kw)
    return SimpleNamespace(**base)


class FakeArbiter:
    def __init__(self, board, listeners=()):
        self.board = board
        self.WORKERS = {}
        self.LISTENERS = list(listeners)
        self.num_workers = 0
        self.worker_age = 0
        self.slots = {}
        self.killed = []
        self.wakeups = 0
        self._next_pid = 1000

    def spawn_worker(self):
        self.worker_age += 1
        self._next_pid += 1
        pid = self._next_pid
        i = self.board.acquire(pid)
        self.WORKERS[pid] = SimpleNamespace(age=self.worker_age, pid=pid)
        self.slots[pid] = self.board.slot(i)
        self.slots[pid]._write(pid=pid)
        return pid

    def kill_worker(self, pid, sig):
        self.killed.append(pid)

    def reap(self):
        for pid in self.killed:
            if pid in self.WORKERS:
                del self.WORKERS[pid]
                self.board.release(self.board.index_of(pid))

    def wakeup(self):
        self.wakeups += 1


def make(mode, listeners=(), **kw):
    board = Scoreboard(16)
    arb = FakeArbiter(board, listeners)
    pm = pm_mod.create(
        cfg(pm=mode, **kw), 4, SimpleNamespace(info=lambda *a: None, error=lambda *a: None, warning=lambda *a: None)
    )
    pm.monitor = PoolMonitor(
        board,
        lambda: arb.LISTENERS,
        pool="www",
        process_manager=lambda: pm.name,
        max_children=lambda: pm.max_children(arb),
    )
    arb.num_workers = pm.initial_workers(arb)
    return arb, pm


def test_static_leaves_gunicorn_in_charge():
    arb, pm = make("static")
    arb.num_workers = 4
    assert pm.manage(arb) is False and pm.max_children(arb) == 4


def test_dynamic_keeps_spares_within_bounds_under_a_step_load():
    arb, pm = make("dynamic", pm_max_children=8, pm_min_spare_servers=2, pm_max_spare_servers=3, pm_start_servers=2)
    pm.ROUND = 0  # one maintenance round per call
    for _ in range(2):
        arb.spawn_worker()
    pm.manage(arb)
    assert len(arb.WORKERS) == 2

    # step: 5 requests in flight → spare count below min → spawn (rate doubles), never above max children
    def busy():
        return [p for p in arb.WORKERS if arb.slots[p]._get("state") != WorkerState.IDLE]

    history = []
    for _ in range(8):
        for p in list(arb.WORKERS):
            if len(busy()) < 5 and arb.slots[p]._get("state") == WorkerState.IDLE:
                arb.slots[p].begin_request("GET", "/", "", 0)
        pm.manage(arb)
        arb.reap()
        history.append(len(arb.WORKERS))
    busy = sum(1 for p in arb.WORKERS if arb.slots[p]._get("state") != WorkerState.IDLE)
    idle = len(arb.WORKERS) - busy
    assert busy == 5 and 2 <= idle <= 3 and max(history) <= 8
    # load drops: all idle → one idle worker stopped per round until max spare
    for p in arb.WORKERS:
        arb.slots[p].set_state(WorkerState.IDLE)
    for _ in range(10):
        pm.manage(arb)
        arb.reap()
    assert len(arb.WORKERS) == 3


def test_dynamic_counts_max_children_once_per_episode():
    arb, pm = make("dynamic", pm_max_children=2, pm_min_spare_servers=1, pm_max_spare_servers=2, pm_start_servers=1)
    pm.ROUND = 0
    arb.spawn_worker()
    arb.spawn_worker()
    for s in arb.slots.values():
        s.begin_request("GET", "/", "", 0)
    for _ in range(3):
        pm.manage(arb)
    assert len(arb.WORKERS) == 2 and pm.monitor.max_children_reached == 1


def test_ondemand_spawns_on_waiting_connection_and_reaps_idle(tmp_path):
    lsock = socket.socket(socket.AF_UNIX)
    lsock.bind(str(tmp_path / "p.sock"))
    lsock.listen(8)
    arb, pm = make("ondemand", [lsock], pm_max_children=3, pm_process_idle_timeout=0.2)
    assert arb.num_workers == 0
    pm.manage(arb)
    assert arb.WORKERS == {}  # no traffic, no workers
    c = socket.socket(socket.AF_UNIX)
    c.connect(lsock.getsockname())
    status = pm.monitor.sample()
    pm.on_sample(status, arb)
    assert arb.wakeups == 1
    pm.manage(arb)
    assert len(arb.WORKERS) == 1
    pm.manage(arb)  # the new worker is idle (booting): no second spawn for the same connection
    assert len(arb.WORKERS) == 1
    conn, _ = lsock.accept()
    time.sleep(0.3)
    pm.on_sample(pm.monitor.sample(), arb)
    pm.manage(arb)
    arb.reap()
    assert arb.WORKERS == {} and arb.num_workers == 0
    for s in (c, conn, lsock):
        s.close()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(pm="dynamic", pm_min_spare_servers=4, pm_max_spare_servers=2), "must not exceed pm_max_spare"),
        (dict(pm="dynamic", pm_max_children=2, pm_max_spare_servers=3), "must not exceed pm_max_children"),
        (dict(pm="dynamic", pm_start_servers=9, pm_max_children=10), "pm_start_servers \\(9\\) must be between"),
        (dict(pm="ondemand", pm_process_idle_timeout=0), "idle workers would never stop"),
    ],
)
def test_contradicting_settings_are_clear_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        pm_mod.create(cfg(**kw), 4, None)


def test_flag_values_are_validated_with_clear_messages():
    from fcgipool.config import load_all

    settings = {s.name: s for s in load_all()}
    with pytest.raises(ValueError, match="pm must be one of static, dynamic, ondemand"):
        settings["pm"].validator("fast")
    with pytest.raises(ValueError, match="pm_max_spare_servers must be at least 1"):
        settings["pm_max_spare_servers"].validator("0")
    with pytest.raises(ValueError, match="status listen address must be unix:/path or HOST:PORT"):
        settings["status_listen"].validator("/run/x.sock")
    with pytest.raises(ValueError, match="must be a URI path starting with '/'"):
        settings["status_path"].validator("status")
    with pytest.raises(ValueError, match="slowlog_timeout must be a finite number of seconds"):
        settings["slowlog_timeout"].validator("-1")
    assert settings["status_listen"].validator("unix:/run/s.sock") == "unix:/run/s.sock"
    assert settings["pm"].validator("OnDemand") == "ondemand"


def test_settings_reference_lists_the_status_section():
    from fcgipool.config import markdown

    text = markdown()
    assert "## FastCGI pool: status, slowlog, process manager" in text
    for name in ("status_listen", "slowlog_timeout", "pm", "pm_max_children", "pm_process_idle_timeout"):
        assert f"### `{name}`" in text
