"""Spill: after-response tasks handed to a real Redis + RQ queue -- when the pool is saturated, when a worker
stops, for slow task names -- and what happens when Redis is away. Each test fails with its mechanism off."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from support import NginxServer, PoolProcess, fastcgi_site, fcgi_request, wait_for
from support.redisq import RedisServer, RQWorker

APPS = Path(__file__).parent / "apps"
pytestmark = pytest.mark.slow


def marks(directory: Path, name: str, prefix: str) -> list[dict[str, Any]]:
    path = directory / "marks.log"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [m for m in lines if m["mark"] == name and str(m.get("key", "")).startswith(prefix)]


def where(directory: Path, prefix: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in marks(directory, "task_done", prefix):
        out[m["where"]] = out.get(m["where"], 0) + 1
    return out


def spill_pool(tmp_path: Path, redis: RedisServer, *extra: str, workers: int = 2) -> PoolProcess:
    args = ["--spill-to", redis.url, "--background-timeout", "20", *extra]
    return PoolProcess("bgapp:app", workers=workers, app_dir=APPS, env={"BGAPP_DIR": str(tmp_path)}, args=args,
                       status=True)  # fmt: skip


def rq_queue(redis: RedisServer) -> Any:
    import redis as redis_py
    import rq

    return rq.Queue("fcgipool", connection=redis_py.Redis.from_url(redis.url))


def get(pool: PoolProcess, path: str) -> Any:
    doc, _, query = path.partition("?")
    return fcgi_request(pool.socket_path, {"PATH_INFO": doc, "QUERY_STRING": query, "REQUEST_URI": path})


def test_a_saturated_pool_sends_new_tasks_to_the_queue_through_nginx(tmp_path: Path, redis: RedisServer) -> None:
    """2 workers, threshold 0.5: while one worker finishes a 1.5 s task, the pool counts as saturated, so the next
    requests' tasks go to RQ -- the pool stays free to answer. With --spill-when shutdown (no saturated) every task
    runs in the pool."""
    with (
        spill_pool(tmp_path, redis, "--spill-when", "saturated", "--spill-threshold", "0.5") as pool,
        RQWorker(redis.url, APPS, {"BGAPP_DIR": str(tmp_path)}) as rq,
        NginxServer(fastcgi_site(pool.bind, keep_conn=True), workers=1) as nginx,
        requests.Session() as web,
    ):
        assert web.get(nginx.url("/task?ms=1500&key=sat-first"), timeout=5).status_code == 200
        wait_for(lambda: pool.status()["pool saturated"], 5, "the pool to count as saturated")
        t0 = time.monotonic()
        for i in range(6):
            assert web.get(nginx.url(f"/task?ms=300&key=sat-{i}"), timeout=5).status_code == 200
        answered = time.monotonic() - t0
        wait_for(lambda: len(marks(tmp_path, "task_done", "sat-")) >= 7, 30, "every task", interval=0.2)
        status = pool.status()
        ran = where(tmp_path, "sat-")
        print(f"6 requests answered in {answered:.2f} s; tasks ran: {ran}; status: spilled saturated "
              f"{status['spilled saturated']}")  # fmt: skip
        assert ran.get("queue", 0) >= 4, (ran, rq.log_text()[-2000:])
        assert status["spilled saturated"] == ran["queue"] and status["background tasks lost"] == 0
        assert answered < 3, "requests waited for after-response work although it spilled"


def test_tasks_not_started_when_a_worker_stops_go_to_the_queue(tmp_path: Path, redis: RedisServer) -> None:
    """A worker stopped (TERM to the pool) while the first of six tasks runs: the first finishes in the pool,
    the five not started run in RQ -- none is lost. Without spill (or without 'shutdown') they would be lost
    with reason shutdown once graceful_timeout ran out; here the stop does not even wait for them."""
    pool = spill_pool(tmp_path, redis, "--spill-when", "shutdown", "--graceful-timeout", "20", workers=1).start()
    with RQWorker(redis.url, APPS, {"BGAPP_DIR": str(tmp_path)}) as rq:
        try:
            assert get(pool, "/tasks?plan=sleep800,sleep10,sleep10,sleep10,sleep10,sleep10&key=stop").status == 200
            time.sleep(0.3)
            t0 = time.monotonic()
            pool.signal(signal.SIGTERM)
            pool.wait(15)
            stopped = time.monotonic() - t0
        finally:
            pool.stop()
        wait_for(lambda: len(marks(tmp_path, "task_done", "stop:")) >= 6, 20, "all six tasks", interval=0.2)
        ran = where(tmp_path, "stop:")
        assert ran == {"pool": 1, "queue": 5}, (ran, rq.log_text()[-2000:])
        assert stopped < 5, f"the stop took {stopped:.1f} s: it waited for tasks that could spill"
        assert "after-response task lost" not in pool.log_text()


def test_a_spilled_task_whose_queue_worker_is_killed_is_reported_lost_through_the_hook(
    tmp_path: Path, redis: RedisServer
) -> None:
    """A task spilled by a request through nginx runs in an RQ worker that is then SIGKILLed (the OOM killer, a
    killed container): another queue worker reports it lost through the app's hook (FCGIPOOL_ON_TASK_LOST,
    fcgipool.spill.abandoned). Without that, rq files it as failed at its maintenance, minutes later, and nothing
    tells the app."""
    env = {"BGAPP_DIR": str(tmp_path), "FCGIPOOL_ON_TASK_LOST": "bgapp.on_task_lost"}
    queue = rq_queue(redis)
    with RQWorker(redis.url, APPS, env) as victim:
        assert victim.proc is not None
        pool = spill_pool(tmp_path, redis, "--spill-when", "shutdown", "--graceful-timeout", "20", workers=1).start()
        try:
            with NginxServer(fastcgi_site(pool.bind, keep_conn=True), workers=1) as nginx:
                assert requests.get(nginx.url("/tasks?plan=sleep800,sleep20000&key=kq"), timeout=5).status_code == 200
            time.sleep(0.3)
            pool.signal(signal.SIGTERM)  # the task not started goes to the queue
            pool.wait(15)
        finally:
            pool.stop()
        wait_for(lambda: queue.started_job_registry.get_job_ids(cleanup=False), 20, "the spilled task to start")
        with RQWorker(redis.url, APPS, env) as watcher:
            wait_for(lambda: "Listening on" in watcher.log_text(), 30, "the other worker to listen")
            os.killpg(victim.proc.pid, signal.SIGKILL)
            wait_for(lambda: marks(tmp_path, "task_lost", "sleep20000"), 45, "the lost task to be reported")
            log = watcher.log_text()
    (lost,) = marks(tmp_path, "task_lost", "sleep20000")
    assert lost["reason"] == "killed" and lost["started"] is True and lost["by"] == "Worker", lost
    assert lost["uri"].startswith("/tasks"), lost
    assert not marks(tmp_path, "task_done", "kq:1") and len(marks(tmp_path, "task_done", "kq:0")) == 1
    assert "after-response task lost: sleep20000#1 (reason: killed, was running" in log


def test_a_slow_task_name_spills_from_then_on(tmp_path: Path, redis: RedisServer) -> None:
    """--spill-slower-than 100: a task name whose p95 over 10 runs is 150 ms goes to the queue after that."""
    with (
        spill_pool(tmp_path, redis, "--spill-when", "slow", "--spill-slower-than", "100", workers=1) as pool,
        RQWorker(redis.url, APPS, {"BGAPP_DIR": str(tmp_path)}),
    ):
        for i in range(14):
            assert get(pool, f"/tasks?plan=sleep150&key=slow{i:02d}").status == 200
            wait_for(lambda i=i: marks(tmp_path, "task_done", f"slow{i:02d}:"), 10, f"task {i}")  # type: ignore[misc]
        ran = [m["where"] for m in sorted(marks(tmp_path, "task_done", "slow"), key=lambda m: m["key"])]
        assert ran[:10] == ["pool"] * 10 and set(ran[10:]) == {"queue"}, ran
        assert pool.status()["spilled slow"] == 4
        assert re.search(r"sleep150#0: p95 15\d ms over its last 10 runs is past spill_slower_than \(100 ms\)",
                         pool.log_text())  # fmt: skip


def test_a_task_the_queue_cannot_run_is_refused_at_add_time(tmp_path: Path, redis: RedisServer) -> None:
    with spill_pool(tmp_path, redis, workers=1) as pool:
        r = get(pool, "/lambda?key=lam")
        assert r.status == 500
        log = pool.log_text()
        assert "SpillRefused" in log and "not a lambda" in log and "spill=False" in log
        assert get(pool, "/hello").status == 200


def test_redis_away_tasks_run_in_the_pool_the_episode_is_logged_once(tmp_path: Path, redis: RedisServer) -> None:
    """Spill everything (threshold: 1 worker of 2 finishing); stop Redis: requests still answered, every task runs
    in the pool, one outage logged and counted; Redis back: spilling resumes."""
    with (
        spill_pool(
            tmp_path, redis, "--spill-when", "saturated", "--spill-threshold", "0.5", "--background-timeout", "90"
        ) as pool,  # the held task must outlast the test on a slow machine
        RQWorker(redis.url, APPS, {"BGAPP_DIR": str(tmp_path)}) as rq,
    ):
        assert get(pool, "/tasks?plan=hold&key=hold").status == 200  # one worker finishing: saturated from here
        wait_for(lambda: pool.status()["pool saturated"], 5, "saturation")
        redis.stop()
        for i in range(5):
            assert get(pool, f"/task?ms=10&key=away{i}").status == 200
        wait_for(lambda: len(marks(tmp_path, "task_done", "away")) >= 5, 20, "the tasks", interval=0.2)
        assert where(tmp_path, "away") == {"pool": 5}
        status = wait_for(lambda: (s := pool.status())["spill queue outages"] == 1 and s, 5, "the outage")
        assert status["spill fallbacks"] >= 5 and status["background tasks lost"] == 0
        redis.start()
        rq.stop()  # `rq worker` exits when Redis goes away; its supervisor (supervisord, docker) starts it again
        rq.start()
        wait_for(lambda: "answers again" in pool.log_text(), 10, "the end of the outage")
        assert pool.status()["pool saturated"]
        time.sleep(1.1)  # a worker tries the queue again a second after its last failure (spill.policy.AWAY_BACKOFF)
        spilled = pool.status()["spilled saturated"]
        for i in range(3):
            assert get(pool, f"/task?ms=10&key=back{i}").status == 200
        wait_for(lambda: pool.status()["spilled saturated"] - spilled == 3, 5, "spilling to resume")
        wait_for(lambda: len(marks(tmp_path, "task_done", "back")) >= 3, 20, "the tasks after", interval=0.2)
        assert where(tmp_path, "back") == {"queue": 3}, rq.log_text()[-2000:]
        log = pool.log_text()
        assert log.count("does not answer") == 1 and log.count("answers again") == 1
        (tmp_path / "release-hold").touch()
        wait_for(lambda: marks(tmp_path, "task_done", "hold"), 10, "the held task to end")
