"""HUP applies changed pm settings (PHP-FPM's reload does too); invalid ones are refused and the old pm stays.

The real-arbiter tests run the pool with ``-c`` on a config file they rewrite before SIGHUP, and read the
status page through nginx. The rest drive ``pm.rebuild`` against the fake arbiter of ``test_pm``.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import requests
from fcgipool import pm as pm_mod
from fcgipool.scoreboard import WorkerState
from support import wait_for
from test_pm import cfg, make
from test_status_nginx import start_stack, status

QUIET = type("Log", (), {"info": staticmethod(lambda *a: None), "error": staticmethod(lambda *a: None)})()


@pytest.fixture
def conf_stack(tmp_path):
    """(pool, nginx, config file) with the pm settings only in the file: the command line would win over it."""
    made = []

    def make_stack(workers: int, text: str):
        conf = tmp_path / "pool_conf.py"
        conf.write_text(text)
        pool, nginx = start_stack(tmp_path, workers, "-c", str(conf))
        made.append((pool, nginx))
        return pool, nginx, conf

    yield make_stack
    for pool, nginx in made:
        nginx.stop()
        pool.stop()


def hup(pool, conf: Path, text: str) -> None:
    conf.write_text(text)
    pool.signal(signal.SIGHUP)


@pytest.mark.nginx
@pytest.mark.slow
def test_hup_switches_static_to_ondemand_and_the_workers_follow(conf_stack):
    pool, nginx, conf = conf_stack(2, 'pm = "static"\n')
    first = status(nginx)
    assert first["process manager"] == "static" and first["total processes"] == 2
    old_pids = set(pool.worker_pids())

    hup(pool, conf, 'pm = "ondemand"\npm_max_children = 2\npm_process_idle_timeout = 1.0\n')
    wait_for(lambda: status(nginx)["process manager"] == "ondemand", 15, "the status page to show ondemand")
    # gunicorn spawns the new generation; ondemand stops its idle workers after the idle timeout
    wait_for(lambda: status(nginx)["total processes"] == 0, 20, "ondemand to stop the idle workers")
    wait_for(lambda: pool.worker_pids() == [], 10, "the worker processes to exit")
    assert "reload: pm static -> ondemand" in pool.log_text()

    # and the pool is ondemand now: a request spawns a worker, which stops again when idle
    assert requests.get(nginx.url("/"), timeout=15).text == "hello\n"
    assert not old_pids & set(pool.worker_pids())
    wait_for(lambda: status(nginx)["total processes"] == 0, 15, "the on-demand worker to stop when idle")
    assert status(nginx)["process manager"] == "ondemand"


@pytest.mark.nginx
@pytest.mark.slow
def test_hup_with_invalid_pm_settings_keeps_the_old_pm_and_serves(conf_stack):
    valid = "\n".join(['pm = "dynamic"', "pm_max_children = 4", "pm_start_servers = 2", "pm_min_spare_servers = 1",
                       "pm_max_spare_servers = 2", ""])  # fmt: skip
    pool, nginx, conf = conf_stack(2, valid)
    assert status(nginx)["process manager"] == "dynamic"
    old_pids = set(pool.worker_pids())

    hup(pool, conf, 'pm = "ondemand"\npm_max_children = 4\npm_process_idle_timeout = 0\n')
    message = "reload: invalid process manager settings: pm_process_idle_timeout must be > 0 with pm ondemand"
    wait_for(lambda: message in pool.log_text(), 15, "the reload error in the log")
    assert "keeping pm dynamic as it was" in pool.log_text()
    # the reload itself went through (new generation) under the old pm, which keeps its spare bounds
    wait_for(lambda: pool.worker_pids() and not old_pids & set(pool.worker_pids()), 15, "the new generation")
    assert requests.get(nginx.url("/"), timeout=10).text == "hello\n"
    wait_for(lambda: status(nginx)["total processes"] == 2, 15, "dynamic to settle at max spare 2")
    assert status(nginx)["process manager"] == "dynamic"

    # the same mistake in dynamic's own bounds, then a fixed config: the next HUP applies it
    hup(pool, conf, valid.replace("pm_min_spare_servers = 1", "pm_min_spare_servers = 3"))
    wait_for(lambda: "pm_min_spare_servers (3) must not exceed pm_max_spare_servers (2)" in pool.log_text(), 15,
             "the second reload error")  # fmt: skip
    assert status(nginx)["process manager"] == "dynamic"
    hup(pool, conf, 'pm = "ondemand"\npm_max_children = 2\npm_process_idle_timeout = 1.0\n')
    wait_for(lambda: status(nginx)["process manager"] == "ondemand", 15, "the fixed config to be applied")
    wait_for(lambda: status(nginx)["total processes"] == 0, 20, "ondemand to stop the idle workers")
    assert requests.get(nginx.url("/"), timeout=15).text == "hello\n"


# --- pm.rebuild against the fake arbiter ---------------------------------------------------------------------


def reload_to(arb, old, **kw):
    """What a HUP does: floor on the old pm, rebuilt pm, gunicorn spawns ``workers`` (4 here), then manage."""
    old.before_reload(arb)
    new = pm_mod.rebuild(old, cfg(**kw), 4, QUIET, slots=16)
    new.ROUND = 0
    for _ in range(4):
        arb.spawn_worker()
    return new


def test_rebuild_lowers_dynamic_max_children_at_once_and_retires_the_old_generation():
    arb, old = make("dynamic", pm_max_children=6, pm_min_spare_servers=1, pm_max_spare_servers=4)
    for _ in range(4):
        arb.spawn_worker()
    old_gen = set(arb.WORKERS)
    new = reload_to(arb, old, pm="dynamic", pm_max_children=2, pm_min_spare_servers=1, pm_max_spare_servers=2)
    assert new.monitor is old.monitor and new.max_children(arb) == 2
    new.manage(arb)
    arb.reap()
    assert not old_gen & set(arb.WORKERS)  # the old generation is stopped, not counted
    assert len(arb.WORKERS) == 2 and arb.num_workers == 2  # 4 new idle workers trimmed to the new cap at once


def test_rebuild_raises_dynamic_max_children_and_the_pm_spawns_up_to_it():
    arb, old = make("dynamic", pm_max_children=2, pm_min_spare_servers=1, pm_max_spare_servers=2)
    new = reload_to(arb, old, pm="dynamic", pm_max_children=6, pm_min_spare_servers=1, pm_max_spare_servers=2,
                    pm_start_servers=2)  # fmt: skip
    new.manage(arb)
    arb.reap()
    for _ in range(6):  # every worker busy: spares short, spawn until the new cap
        for p in arb.WORKERS:
            arb.slots[p].begin_request("GET", "/", "", 0)
        new.manage(arb)
        arb.reap()
    assert len(arb.WORKERS) == 6 and new.monitor.max_children_reached == 1


def test_rebuild_to_ondemand_stops_the_new_generation_when_idle():
    arb, old = make("static")
    arb.num_workers = 2
    for _ in range(2):
        arb.spawn_worker()
    new = reload_to(arb, old, pm="ondemand", pm_max_children=3, pm_process_idle_timeout=0.01)
    new.manage(arb)  # old generation retired, 4 new over the cap of 3: one stopped at once
    arb.reap()
    assert len(arb.WORKERS) == 3
    for p in arb.WORKERS:
        arb.slots[p].set_state(WorkerState.IDLE)
    time.sleep(0.05)
    new.manage(arb)
    arb.reap()
    assert arb.WORKERS == {} and arb.num_workers == 0


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(pm="dynamic", pm_min_spare_servers=4, pm_max_spare_servers=2), "must not exceed pm_max_spare"),
        (dict(pm="ondemand", pm_max_children=17), r"pm_max_children \(17\) is larger than the scoreboard \(16"),
    ],
)
def test_rebuild_with_invalid_settings_raises_and_leaves_the_old_pm_alone(kw, message):
    _arb, old = make("dynamic", pm_max_children=4, pm_min_spare_servers=1, pm_max_spare_servers=2)
    before = old.settings  # frozen: unchanged means the same object
    with pytest.raises(ValueError, match=message):
        pm_mod.rebuild(old, cfg(**kw), 4, QUIET, slots=16)
    assert old.settings is before and old.monitor is not None


def test_a_pm_that_replaces_ondemand_gives_its_parked_connections_back_once_workers_run():
    class Parking:  # ondemand's arbiter-side parking, as fcgipool.handoff.Parking: held connections
        held = 2

        def __len__(self):
            return self.held

        def release(self):
            self.held = 0

    arb, old = make("ondemand", pm_max_children=2)
    arb.parking = Parking()
    new = pm_mod.rebuild(old, cfg(pm="dynamic", pm_max_children=4, pm_max_spare_servers=2), 4, QUIET, slots=16)
    new.on_sample(new.monitor.sample(), arb)
    assert len(arb.parking) == 2  # no worker yet: nobody could take them
    arb.spawn_worker()
    new.on_sample(new.monitor.sample(), arb)
    assert len(arb.parking) == 0
