"""fcgipool's RQ worker class (fcgipool.spill.rqworker), against a real Redis: jobs run in the worker's own
process (no fork and no re-import per job: 64 ms -> under 3 ms of CPU per job; the first test fails with rq's
default, forking class), and a stop request -- which now arrives in the process running the job -- lets the job
finish instead of interrupting it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from support import wait_for
from support.redisq import RedisServer, RQWorker

pytestmark = pytest.mark.slow
rq = pytest.importorskip("rq")
redis_py = pytest.importorskip("redis")


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


def test_an_idle_worker_stops_on_request_within_its_wait_for_a_job(tmp_path: Path, redis: RedisServer) -> None:
    """rq's wait for a job ends only with a job: an idle worker that merely noted the stop request waited for the
    next job, or for supervisord's SIGKILL 40 s later (`make down`)."""
    with RQWorker(redis.url, tmp_path, worker_ttl=20) as worker:  # waits for a job 5 s at a time
        assert worker.proc is not None
        wait_for(lambda: "Listening on" in worker.log_text(), 30, "the worker to listen")
        time.sleep(1.0)  # in its wait for a job
        stopped = time.monotonic()
        os.kill(worker.proc.pid, signal.SIGINT)
        assert worker.proc.wait(20) == 0, worker.log_text()[-2000:]
        assert time.monotonic() - stopped < 10, "the idle worker took longer than its 5-s wait to stop"


def _strand(queue: rq.Queue) -> str:
    """What a worker that loses Redis right after its BLMOVE leaves: the job moved to the intermediate list,
    never claimed."""
    raw = queue.connection.lmove(queue.key, queue.intermediate_queue_key)
    assert raw is not None
    return raw.decode()


def test_a_job_stranded_between_dequeue_and_start_is_put_back_and_runs(tmp_path: Path, redis: RedisServer) -> None:
    queue = _queue(redis)
    job = queue.enqueue("os.getpid")
    assert _strand(queue) == job.id
    with RQWorker(redis.url, tmp_path) as worker:  # an idle worker looks every 2 s (waits 1 s for a job)
        # rq's own cleanup would file it as failed after a minute or more; here it is put back after STRANDED_AFTER_S
        wait_for(lambda: job.get_status(refresh=True) == "finished", 60, "the stranded job to run")
        assert "was stranded between a dequeue and its start" in worker.log_text()
    assert queue.connection.llen(queue.intermediate_queue_key) == 0


def test_only_unclaimed_jobs_are_put_back_after_the_grace_in_order(redis: RedisServer) -> None:
    from fcgipool.spill.stranded import StrandedJobs

    queue = _queue(redis)
    conn = queue.connection
    old, registered, new, taken, late = (queue.enqueue("os.getpid").id for _ in range(5))
    waiting = queue.enqueue("os.getpid").id
    for _ in range(4):
        _strand(queue)
    # its execution registered, its claim failed: rq registers before it claims, and runs only after the claim
    conn.zadd(queue.started_job_registry.key, {f"{registered}:exec1": 1e10})
    watch = StrandedJobs(after_s=5.0)
    assert watch.put_back(queue, now=100.0) == []  # first seen: a live worker may be about to claim them
    conn.lrem(queue.intermediate_queue_key, 1, taken)  # claimed meanwhile, as prepare_job_execution does
    assert _strand(queue) == late  # dequeued later: its own count
    assert watch.put_back(queue, now=104.0) == []  # not yet 5 s
    assert watch.put_back(queue, now=105.0) == [old, registered, new]
    assert [j.decode() for j in conn.lrange(queue.key, 0, -1)] == [old, registered, new, waiting]  # head, in order
    assert [j.decode() for j in conn.lrange(queue.intermediate_queue_key, 0, -1)] == [late]
    assert watch.put_back(queue, now=109.0) == [late]


def test_a_job_put_back_and_dequeued_again_is_not_put_back_by_another_worker(redis: RedisServer) -> None:
    """Every worker had seen the job in the list at each of its looks; one put it back, a live worker dequeued it
    again at once, and the two others put it back too, each: it ran three times (a `make faults` Redis run). The
    count is a mark in Redis that the put-back clears."""
    from fcgipool.spill.stranded import StrandedJobs

    queue = _queue(redis)
    conn = queue.connection
    job = queue.enqueue("os.getpid").id
    _strand(queue)
    a, b, c = StrandedJobs(after_s=5.0), StrandedJobs(after_s=5.0), StrandedJobs(after_s=5.0)
    for watch in (a, b, c):
        assert watch.put_back(queue, now=100.0) == []
    assert a.put_back(queue, now=105.0) == [job]
    assert _strand(queue) == job  # dequeued again by a live worker, which is about to claim it
    assert b.put_back(queue, now=105.5) == [] and c.put_back(queue, now=106.0) == []
    assert conn.llen(queue.key) == 0 and [j.decode() for j in conn.lrange(queue.intermediate_queue_key, 0, -1)] == [job]
    conn.lrem(queue.intermediate_queue_key, 1, job)  # claimed: the first worker to see it gone clears its mark
    assert b.put_back(queue, now=107.0) == []
    assert conn.keys("*fcgipool_seen*") == []


def test_at_its_first_look_a_worker_puts_back_a_job_rq_saw_stranded_long_ago(redis: RedisServer) -> None:
    """After a Redis outage every worker restarts, and rq's startup maintenance would file a job it first saw in
    the intermediate list over a minute ago as failed: the new worker's first look puts it back before that."""
    from fcgipool.spill.stranded import StrandedJobs

    queue = _queue(redis)
    conn, inter = queue.connection, queue.intermediate_queue
    job = queue.enqueue("os.getpid").id
    fresh = queue.enqueue("os.getpid").id
    _strand(queue)
    _strand(queue)
    conn.set(inter.get_first_seen_key(job), time.time() - 70)  # what rq's maintenance wrote before the outage
    assert inter.set_first_seen(fresh)  # rq saw this one just now
    assert StrandedJobs().put_back(queue, time.time()) == [job]
    assert conn.get(inter.get_first_seen_key(job)) is None  # its next dequeue starts a new count
    assert [j.decode() for j in conn.lrange(inter.key, 0, -1)] == [fresh]


def test_the_pools_queue_depth_counts_a_stranded_job(redis: RedisServer) -> None:
    from fcgipool.spill.target import RQTarget

    queue = _queue(redis)
    queue.enqueue("os.getpid")
    queue.enqueue("os.getpid")
    _strand(queue)
    assert RQTarget(redis.url).depth() == 2  # one waiting, one stranded: the pool is not idle
