"""Cases of test_userfile.py, run in a fresh interpreter: locust patches the standard library for gevent at import,
which must happen before anything imports ssl (pytest already has)."""

import time
import types

import pytest

from loadtest import userfile
from loadtest.scenarios import OpenLoopUser, Recorder
from loadtest.tests.conftest import REPO

EXAMPLE = REPO / "loadtest" / "example_locustfile.py"


def case_the_example_follows_the_contract():
    classes = userfile.load(EXAMPLE)
    assert list(classes) == ["Shopper", "Importer"]
    shopper, importer = classes["Shopper"], classes["Importer"]
    assert len(userfile.tasks_of(shopper)) == 10  # weights 5 + 3 + 2, expanded as locust does
    assert userfile.is_normal(shopper) and not userfile.is_normal(importer)
    assert userfile.plan_for(shopper) == userfile.Plan((0.5, 0.65, 0.8), 1.3)
    assert userfile.plan_for(importer) == userfile.Plan((0.5,), None)
    assert list(userfile.select(classes, ["Importer"])) == ["Importer"]
    with pytest.raises(userfile.LocustfileError, match=r"unknown scenario.*Shopper, Importer"):
        userfile.select(classes, ["Nope"])
    wrapped = userfile.open_loop(shopper)
    assert issubclass(wrapped, OpenLoopUser) and wrapped.inner_class.concurrency == OpenLoopUser.concurrency


def case_contract_errors_say_what_to_change(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from locust import FastHttpUser, TaskSet, task\n"
                   "class Browse(TaskSet):\n    @task\n    def a(self): pass\n"
                   "class Nested(FastHttpUser):\n    tasks = [Browse]\n"
                   "class Loads(FastHttpUser):\n    fcgipool_loads = (0.5, 1.2)\n    @task\n    def a(self): pass\n"
                   "class Empty(FastHttpUser):\n    pass\n")
    classes = userfile.load(bad)
    with pytest.raises(userfile.LocustfileError, match="TaskSets"):
        userfile.tasks_of(classes["Nested"])
    with pytest.raises(userfile.LocustfileError, match="fractions of capacity"):
        userfile.plan_for(classes["Loads"])
    with pytest.raises(userfile.LocustfileError, match="no @task"):
        userfile.tasks_of(classes["Empty"])
    broken = tmp_path / "broken.py"
    broken.write_text("import does_not_exist\n")
    with pytest.raises(userfile.LocustfileError, match="ModuleNotFoundError"):
        userfile.load(broken)
    none = tmp_path / "none.py"
    none.write_text("x = 1\n")
    with pytest.raises(userfile.LocustfileError, match="defines no user class"):
        userfile.load(none)
    with pytest.raises(userfile.LocustfileError, match="not found"):
        userfile.load(tmp_path / "missing.py")


def case_requests_become_rows_with_latency_from_the_intended_start():
    env = types.SimpleNamespace(params={"scenario": "Shopper", "step": "Shopper@10/s", "rate": 10.0},
                                recorder=Recorder())
    me = userfile.gevent.getcurrent()
    env.open_loop_user = types.SimpleNamespace(first_of={me: time.time() - 0.5})  # started 0.5 s late
    on_request = userfile.ForeignOpenLoop.request_listener(env)
    resp = types.SimpleNamespace(status_code=202)
    sent = time.time() - 0.01
    on_request("POST", "/orders", 10.0, 2, start_time=sent, response=resp)
    on_request("GET", "/", 5.0, 2, start_time=time.time() - 0.005, response=types.SimpleNamespace(status_code=500))
    first, second = env.recorder.rows
    assert first["latency_ms"] == pytest.approx(510, abs=30) and first["service_ms"] == pytest.approx(10, abs=30)
    assert first["status"] == 202 and not first["error"] and first["scenario"] == "Shopper"
    assert second["latency_ms"] == pytest.approx(second["service_ms"])  # a task's later request: from its send
    assert second["error"] == "HTTP 500"
    assert env.recorder.sent == 2 and env.recorder.in_flight == 0
