"""fcgipool's RQ worker class (fcgipool.spill.rqworker), against a real Redis: jobs run in the worker's own
process (no fork and no re-import per job: 64 ms -> under 3 ms of CPU per job; the first test fails with rq's
default, forking class), and a stop request -- which now arrives in the process running the job -- lets the job
finish instead of interrupting it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import wait_for
from support.redisq import RedisServer, RQWorker, require_redis

pytestmark = pytest.mark.slow
rq = pytest.importorskip("rq")
redis_py = pytest.importorskip("redis")


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    require_redis()
    with RedisServer() as server:
        yield server


def _queue(redis: RedisServer) -> rq.Queue:
    return rq.Queue("fcgipool", connection=redis_py.Redis.from_url(redis.url))


def test_jobs_run_in_the_workers_own_process(tmp_path: Path, redis: RedisServer) -> None:
    queue = _queue(redis)
    jobs = [queue.enqueue("os.getpid") for _ in range(3)]
    with RQWorker(redis.url, tmp_path) as worker:
        assert worker.proc is not None
        wait_for(lambda: all(job.get_status(refresh=True) == "finished" for job in jobs), 30,
                 "the jobs to finish")  # fmt: skip
        pids = {job.return_value() for job in jobs}
        assert pids == {worker.proc.pid}, f"jobs ran in {pids}, not in the rq worker {worker.proc.pid} (forked?)"


def test_a_stop_request_during_a_job_lets_it_finish(tmp_path: Path, redis: RedisServer) -> None:
    queue = _queue(redis)
    job = queue.enqueue("time.sleep", 2)
    with RQWorker(redis.url, tmp_path) as worker:
        assert worker.proc is not None
        wait_for(lambda: job.get_status(refresh=True) == "started", 30, "the job to start")
        stopped = time.monotonic()
        os.kill(worker.proc.pid, signal.SIGINT)  # what supervisord and docker send (warm shutdown)
        assert worker.proc.wait(30) == 0
        assert job.get_status(refresh=True) == "finished", worker.log_text()[-2000:]
        assert time.monotonic() - stopped < 20, "the worker waited for more than the job"
