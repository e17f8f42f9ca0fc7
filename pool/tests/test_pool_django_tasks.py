"""Django's task framework under fcgipool (fcgipool.contrib.django_tasks): the django-tasks backport, or Django 6's
django.tasks when it is importable (docs/django.md says which ran).

The example project in pool/examples/django_tasks runs in a real fcgipool arbiter behind a real nginx: a view that
enqueues a task answers before the task is done (also an async view with aenqueue; Django's ImmediateBackend as the
control, which makes the client wait), the task's side effect lands after, a task cut off by
--background-timeout is reported lost (hook, log, status counter), and a task not started when its worker stops
runs in the spill queue (a real Redis + rq worker, Django set up there from DJANGO_SETTINGS_MODULE).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from support import NginxServer, PoolProcess, fastcgi_site, wait_for
from support.redisq import RedisServer, RQWorker, require_redis

pytest.importorskip("django", reason="Django is not installed: `make install` (requirements-dev.txt pins it)")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "django_tasks"


def lines(data: Path, kind: str, **match: Any) -> list[dict[str, Any]]:
    path = data / f"{kind}.log"
    if not path.exists():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [e for e in entries if all(str(e.get(k, "")).startswith(str(v)) for k, v in match.items())]


def example_env(data: Path, **extra: str) -> dict[str, str]:
    return {"SHOP_DATA_DIR": str(data), "DJANGO_SETTINGS_MODULE": "shop.settings", **extra}


def shop_pool(data: Path, *args: str, workers: int = 2, **env: str) -> PoolProcess:
    return PoolProcess("shop.wsgi:application", workers=workers, app_dir=EXAMPLE, status=True,
                       args=["-c", str(EXAMPLE / "pool.conf.py"), *args], env=example_env(data, **env))  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shop")


@pytest.fixture(scope="module")
def stack(data: Path) -> Iterator[tuple[PoolProcess, NginxServer]]:
    with (
        shop_pool(data, "--background-timeout", "1", "--kill-grace", "2") as pool,
        NginxServer(fastcgi_site(pool.bind, keep_conn=True)) as nginx,
    ):
        yield pool, nginx


@pytest.mark.slow
@pytest.mark.nginx
def test_a_view_answers_before_its_task_runs_and_the_side_effect_lands_after(
    stack: tuple[PoolProcess, NginxServer], data: Path
) -> None:
    pool, nginx = stack
    before = pool.status()["background tasks run"]
    t0 = time.time()
    r = requests.post(nginx.url("/orders"), data={"email": "ada@example.com", "ms": "800"}, timeout=10)
    answered = time.time()
    assert r.status_code == 202, r.text
    body = r.json()
    # a view that waited for its task could not answer in less than the task's 800 ms sleep
    assert answered - t0 < 0.8, f"the view took {answered - t0:.2f} s: it waited for the 800 ms task"
    assert body["task_status"] == "READY"  # what enqueue() returned: the task had not started
    assert not lines(data, "receipt", order_id=body["order_id"]), "the side effect landed before the answer"
    receipt = wait_for(lambda: lines(data, "receipt", order_id=body["order_id"]), 10, "the receipt")[0]
    assert receipt["email"] == "ada@example.com" and receipt["where"] == "pool"
    assert receipt["t"] - answered > 0.6, "the side effect should land about 800 ms after the answer"
    done = wait_for(lambda: lines(data, "finished", id=body["task_result"]), 5, "task_finished")[0]
    assert done["status"] == "SUCCESSFUL" and done["task"] == "shop.tasks.send_receipt" and not done["errors"]
    wait_for(lambda: pool.status()["background tasks run"] == before + 1, 5, "the status page to count it")
    print(f"answered in {(answered - t0) * 1000:.0f} ms; the 800 ms task's side effect {receipt['t'] - answered:.2f} s "
          "after the answer")


@pytest.mark.slow
@pytest.mark.nginx
def test_an_async_view_awaiting_aenqueue_runs_its_task_after_the_response(
    stack: tuple[PoolProcess, NginxServer], data: Path
) -> None:
    _, nginx = stack
    r = requests.get(nginx.url("/reports/async?ms=300&key=async"), timeout=10)
    assert r.status_code == 202, r.text
    assert r.json()["task_status"] == "READY" and not lines(data, "report", key="async")
    report = wait_for(lambda: lines(data, "report", key="async"), 10, "the async view's report")[0]
    assert report["where"] == "pool"
    done = wait_for(lambda: lines(data, "finished", id=r.json()["task_result"]), 5, "task_finished")[0]
    assert done["status"] == "SUCCESSFUL"


@pytest.mark.slow
@pytest.mark.nginx
def test_the_same_view_on_djangos_immediate_backend_makes_the_client_wait(tmp_path: Path) -> None:
    """The control: what the checks above catch. Django's ImmediateBackend runs the task inside the view, so the
    answer comes after the side effect, SUCCESSFUL, and no sooner than the task's sleep."""
    framework = "django.tasks" if importlib.util.find_spec("django.tasks") else "django_tasks"
    immediate = f"{framework}.backends.immediate.ImmediateBackend"
    with (
        shop_pool(tmp_path, workers=1, SHOP_TASK_BACKEND=immediate) as pool,
        NginxServer(fastcgi_site(pool.bind, keep_conn=True)) as nginx,
    ):
        t0 = time.time()
        r = requests.post(nginx.url("/orders"), data={"email": "ada@example.com", "ms": "800"}, timeout=10)
        answered = time.time()
        assert r.status_code == 202, r.text
        assert r.json()["task_status"] == "SUCCESSFUL"
        assert lines(tmp_path, "receipt", order_id=r.json()["order_id"]), "the side effect should be there already"
        assert answered - t0 >= 0.8
        assert pool.status()["background tasks run"] == 0
    print(f"ImmediateBackend: answered in {(answered - t0) * 1000:.0f} ms")


@pytest.mark.slow
@pytest.mark.nginx
def test_a_task_cut_off_by_the_background_timeout_is_reported_lost(
    stack: tuple[PoolProcess, NginxServer], data: Path
) -> None:
    """--background-timeout 1: the first of two 5 s reports is interrupted, the second never starts. Both are
    reported by their task's module path; Django's task_finished sees the first FAILED with BackgroundTimeout."""
    pool, nginx = stack
    lost_before = pool.status()["background tasks lost"]
    t0 = time.monotonic()
    r = requests.get(nginx.url("/reports?ms=5000&count=2&key=cut"), timeout=10)
    answered = time.time()
    assert r.status_code == 202 and time.monotonic() - t0 < 5, r.text  # not after the 5 s task
    first, second = r.json()["task_results"]
    lost = wait_for(lambda: len(lines(data, "lost", uri="/reports")) >= 2 and lines(data, "lost", uri="/reports"),
                    8, "two lost-task reports")  # fmt: skip
    assert [(e["name"], e["reason"], e["started"]) for e in lost] == [
        ("shop.tasks.build_report", "timeout", True),
        ("shop.tasks.build_report", "timeout", False),
    ]
    assert time.monotonic() - t0 < 4, "the budget is 1 s: the task should have been cut off long before 5 s"
    failed = wait_for(lambda: lines(data, "finished", id=first), 5, "task_finished for the cut-off task")[0]
    assert failed["status"] == "FAILED" and failed["errors"] == ["fcgipool.watchdog.BackgroundTimeout"]
    assert not lines(data, "finished", id=second), "the second task never started"
    assert not lines(data, "report", key="cut"), "a cut-off task must not have finished its work"
    wait_for(lambda: pool.status()["background tasks lost"] == lost_before + 2, 5, "the status page to count both")
    assert "after-response task lost: shop.tasks.build_report (reason: timeout, was running" in pool.log_text()
    print(f"the cut-off task reported lost {lost[0]['t'] - answered:.2f} s after the answer (budget 1 s, task 5 s)")


def test_enqueue_outside_a_request_raises_or_runs_at_once(tmp_path: Path) -> None:
    """No request (a script, manage.py shell): NoRequestError that says what to do; OUTSIDE_REQUEST=immediate runs
    the task in the caller."""
    code = ("import django; django.setup(); from shop.tasks import send_receipt; "
            "r = send_receipt.enqueue('o1', 'ada@example.com', 0); print(r.status, r.return_value)")  # fmt: skip

    def run(**extra: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **example_env(tmp_path, **extra), "PYTHONPATH": str(EXAMPLE)}
        return subprocess.run([sys.executable, "-c", code], cwd=EXAMPLE, env=env, capture_output=True, text=True,
                              timeout=60)  # fmt: skip

    refused = run()
    assert refused.returncode == 1 and "NoRequestError" in refused.stderr, refused.stderr
    assert "shop.tasks.send_receipt.enqueue(): no request is being handled" in refused.stderr
    assert "'OUTSIDE_REQUEST': 'immediate'" in refused.stderr
    assert not lines(tmp_path, "receipt")
    ran = run(SHOP_OUTSIDE_REQUEST="immediate")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split("\n")[0] == "SUCCESSFUL {'order_id': 'o1', 'sent_to': 'ada@example.com'}"
    assert len(lines(tmp_path, "receipt", order_id="o1")) == 1


@pytest.mark.slow
@pytest.mark.nginx
def test_tasks_not_started_when_the_worker_stops_run_in_the_spill_queue(tmp_path: Path) -> None:
    """One worker, four 800 ms reports, TERM during the first: it finishes in the pool, the three others run in an
    rq worker, where run_task sets Django up itself. Without --spill-to they would run (or be lost) in the pool."""
    require_redis()
    with RedisServer() as redis:
        pool = shop_pool(tmp_path, "--spill-to", redis.url, "--spill-when", "shutdown", "--graceful-timeout", "20",
                         "--background-timeout", "20", workers=1).start()  # fmt: skip
        with RQWorker(redis.url, EXAMPLE, example_env(tmp_path)) as rq:
            try:
                with NginxServer(fastcgi_site(pool.bind, keep_conn=True)) as nginx:
                    r = requests.get(nginx.url("/reports?ms=800&count=4&key=stop"), timeout=10)
                    assert r.status_code == 202, r.text
                time.sleep(0.3)
                pool.signal(signal.SIGTERM)
                pool.wait(20)
            finally:
                pool.stop()
            reports = wait_for(lambda: len(lines(tmp_path, "report")) >= 4 and lines(tmp_path, "report"), 30,
                               "all four reports", interval=0.2)  # fmt: skip
            where = {e["key"]: e["where"] for e in reports}
            assert where == {"stop:0": "pool", "stop:1": "queue", "stop:2": "queue", "stop:3": "queue"}, (
                where, rq.log_text()[-3000:])
            finished = [e for e in lines(tmp_path, "finished") if e["where"] == "queue"]
            assert sorted(e["args"][0] for e in finished) == ["stop:1", "stop:2", "stop:3"]
            assert {e["status"] for e in finished} == {"SUCCESSFUL"}
        assert "after-response task lost" not in pool.log_text()
        pool.cleanup()
