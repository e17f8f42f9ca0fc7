"""A spilled task whose queue worker dies mid-job is reported lost, once, within seconds (fcgipool.spill.abandoned),
against a real Redis and real ``rq worker`` processes; a live worker's long job is not."""

from __future__ import annotations

import json
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

from fcgipool.spill import abandoned  # noqa: E402 - needs rq
from fcgipool.spill.rqworker import HOOK_ENV, lost_hook  # noqa: E402

# the app's hook, as a user writes it: here it appends what it is given to a file
HOOK = """
import json, os

def on_task_lost(server, task):
    with open(os.environ["LOST_FILE"], "a") as f:
        f.write(json.dumps({"name": task.name, "reason": task.reason, "uri": task.request_uri, "pid": task.pid,
                            "started": task.started, "server": type(server).__name__}) + "\\n")
"""


def _queue(redis: RedisServer) -> rq.Queue:
    return rq.Queue("fcgipool", connection=redis_py.Redis.from_url(redis.url))


def _slow_job(queue: rq.Queue, seconds: float) -> rq.job.Job:
    return queue.enqueue_call("time.sleep", args=(seconds,), description="welcome_mail", timeout=300,
                              meta={"fcgipool_reason": "saturated", "request_uri": "/signup"})  # fmt: skip


def _reported(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_job_whose_worker_is_killed_is_reported_lost_once_by_another_worker(
    tmp_path: Path, redis: RedisServer
) -> None:
    (tmp_path / "lostlog.py").write_text(HOOK)
    lost_file = tmp_path / "lost.jsonl"
    env = {HOOK_ENV: "lostlog.on_task_lost", "LOST_FILE": str(lost_file)}
    queue = _queue(redis)
    job = _slow_job(queue, 120)
    with RQWorker(redis.url, tmp_path, env=env) as victim:
        assert victim.proc is not None
        victim_pid = victim.proc.pid
        wait_for(lambda: job.get_status(refresh=True) == "started", 30, "the job to start")
        with RQWorker(redis.url, tmp_path, env=env) as one, RQWorker(redis.url, tmp_path, env=env) as other:
            wait_for(lambda: "Listening on" in one.log_text() and "Listening on" in other.log_text(), 30,
                     "the other workers to listen")  # fmt: skip
            killed = time.monotonic()
            os.killpg(victim.proc.pid, signal.SIGKILL)  # what the OOM killer or `docker kill` does
            victim.proc.wait(10)
            # without fcgipool's watch: nothing until the job's timeout + 60 s, then rq's 10-minute maintenance
            wait_for(lambda: _reported(lost_file), abandoned.LEASE_S + abandoned.GRACE_S + 25,
                     "the lost task to be reported")  # fmt: skip
            took = time.monotonic() - killed
            time.sleep(3 * 2.0)  # both watchers look again: still once
            logs = one.log_text() + other.log_text()
    (report,) = _reported(lost_file)
    assert report == {"name": "welcome_mail", "reason": "killed", "uri": "/signup", "pid": victim_pid,
                      "started": True, "server": "Worker"}  # fmt: skip
    assert logs.count("after-response task lost: welcome_mail (reason: killed, was running, request: /signup") == 1
    assert f"job {job.id} was running in worker" in logs
    assert took < abandoned.LEASE_S + abandoned.GRACE_S + 10, f"reported {took:.1f} s after the kill"


def test_a_live_workers_lease_is_renewed_while_its_job_runs(tmp_path: Path, redis: RedisServer) -> None:
    """The lease is renewed by a thread, so a job longer than the lease does not pass for abandoned (the main
    thread is inside the job meanwhile). Fails without the renewal: the TTL only falls."""
    queue = _queue(redis)
    conn = queue.connection
    job = _slow_job(queue, abandoned.LEASE_S - 2)
    with RQWorker(redis.url, tmp_path):
        wait_for(lambda: job.get_status(refresh=True) == "started", 30, "the job to start")
        key = abandoned.alive_key(str(rq.job.Job.fetch(job.id, connection=conn).worker_name))
        ttls = []
        for _ in range(int((abandoned.LEASE_S - 3) / 0.5)):
            ttls.append(conn.pttl(key) / 1000)
            time.sleep(0.5)
        assert job.get_status(refresh=True) == "started", "the job ended while the TTL was sampled"
    assert min(ttls) > abandoned.LEASE_S - abandoned.RENEW_S - 1.5, f"the lease was not renewed: TTLs {ttls}"
    assert abandoned.AbandonedJobs("watcher", grace_s=0).claim(queue, time.time() + 60) == []


def test_a_job_that_ran_while_redis_went_away_is_not_reported(tmp_path: Path) -> None:
    """Redis stops under a running job and comes back from its append-only file (as the stack's does): the job ran,
    but its worker could not tell rq and exits, leaving it STARTED, its lease lapsing. It marks the job ended first,
    so no worker reports its task lost; without the mark, one did (the control below, and before the mark a real
    watcher did, ~20 s later)."""
    with RedisServer(persist=True) as redis:
        queue = _queue(redis)
        conn = queue.connection
        job = _slow_job(queue, 3)
        with RQWorker(redis.url, tmp_path) as runner:
            assert runner.proc is not None
            wait_for(lambda: job.get_status(refresh=True) == "started", 30, "the job to start")
            time.sleep(1.0)
            redis.stop()
            time.sleep(3.0)  # the job ends meanwhile
            redis.start()
            runner.proc.wait(abandoned.ENDED_WAIT_S + 10)  # rq exits: it could not record the job's end
            ran = runner.log_text()
        assert job.get_status(refresh=True) == "started", "rq did record the end: nothing left to test"
        worker = str(rq.job.Job.fetch(job.id, connection=conn).worker_name)
        conn.delete(abandoned.alive_key(worker))  # the lease lapses (its TTL, without waiting for it)
        conn.set(abandoned.leased_key(worker), 1)  # as when Redis is still away at the exit: the lease is not dropped
        watch = abandoned.AbandonedJobs("watcher", grace_s=0)
        assert watch.claim(queue, time.time()) == [] and watch.claim(queue, time.time() + 60) == []
        conn.delete(abandoned.ended_key(job.id))  # the control: without the mark it would be reported lost
        assert [a.job_id for a in watch.claim(queue, time.time() + 60)] == [job.id]
    assert f"job {job.id} ran, but rq could not record its end: marked ended, not lost" in ran, ran[-3000:]


def test_the_watch_claims_only_a_job_of_a_worker_that_held_a_lease_and_lost_it(
    tmp_path: Path, redis: RedisServer
) -> None:
    """The decisions one look makes, with a real job running in a real worker whose lease is faked: a plain
    ``rq worker`` (no lease ever) is left to rq; a lapsed lease is reported after the grace, once; a lease that
    comes back (Redis was away) clears the suspicion."""
    queue = _queue(redis)
    conn = queue.connection
    job = _slow_job(queue, 60)
    with RQWorker(redis.url, tmp_path, worker_class="rq.worker.SimpleWorker"):  # rq's own class: no lease
        wait_for(lambda: job.get_status(refresh=True) == "started", 30, "the job to start")
        name = rq.job.Job.fetch(job.id, connection=conn).worker_name
        assert name and not conn.exists(abandoned.alive_key(name))
        watch, now = abandoned.AbandonedJobs("watcher", grace_s=5.0), time.time()
        assert watch.claim(queue, now) == [] and watch.claim(queue, now + 60) == [], "no lease ever: rq's business"

        conn.set(abandoned.leased_key(name), 1)  # as if it had held a lease, and lost it
        assert watch.claim(queue, now) == [], "suspect only: the grace starts"
        conn.set(abandoned.alive_key(name), 1)  # renewed (Redis came back): the suspicion goes
        assert watch.claim(queue, now + 10) == [] and not conn.exists(f"fcgipool:rq:suspect:{job.id}")
        conn.delete(abandoned.alive_key(name))
        assert watch.claim(queue, now + 10) == [], "a new lapse: a new grace"
        (found,) = watch.claim(queue, now + 16)
        assert (found.job_id, found.name, found.request_uri, found.worker) == (job.id, "welcome_mail", "/signup", name)
        assert found.pid > 0
        assert watch.claim(queue, now + 20) == [] and abandoned.AbandonedJobs("another").claim(queue, now + 20) == []
        assert abandoned.AbandonedJobs(name).claim(queue, now + 20) == [], "a worker never claims its own job"


def test_the_hook_setting_is_checked_and_a_bad_one_stops_the_worker_saying_what_to_set(
    tmp_path: Path, redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert lost_hook({}) is None and lost_hook({HOOK_ENV: " "}) is None
    (tmp_path / "lostlog.py").write_text(HOOK)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert lost_hook({HOOK_ENV: "lostlog.on_task_lost"}).__name__ == "on_task_lost"  # type: ignore[union-attr]
    for bad, says in (("nosuchmodule.hook", "cannot load"), ("os.sep", "must be callable"),
                      ("os.getpid", "exactly 2 arguments")):  # fmt: skip
        with pytest.raises(ValueError, match=says) as info:
            lost_hook({HOOK_ENV: bad})
        assert HOOK_ENV in str(info.value) and "on_task_lost" in str(info.value)
    worker = RQWorker(redis.url, tmp_path, env={HOOK_ENV: "nosuchmodule.hook"}).start()
    try:
        assert worker.proc is not None and worker.proc.wait(30) != 0
        assert f"{HOOK_ENV}='nosuchmodule.hook'" in worker.log_text()
    finally:
        worker.stop()
