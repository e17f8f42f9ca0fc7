"""A failed enqueue that Redis executed all the same (its reply died with the connection as Redis stopped): the task
runs in the pool, and before the next enqueue the worker takes the job back out of the queue, so that it does not
run twice (5 of 38 runs of the `make faults` Redis row had one task run twice before). Real Redis."""

from __future__ import annotations

import logging

import pytest
from fcgipool.spill import QueueAway, RQTarget, Spiller
from support.redisq import RedisServer

rq = pytest.importorskip("rq")
redis_py = pytest.importorskip("redis")


def _lose_replies(target: RQTarget, times: int) -> None:
    """The next ``times`` enqueues reach Redis, and then their reply is lost."""
    real = target.queue.enqueue_call
    left = [times]

    def enqueue_call(*args, **kwargs):  # type: ignore[no-untyped-def]
        job = real(*args, **kwargs)
        if left[0] > 0:
            left[0] -= 1
            raise redis_py.exceptions.ConnectionError("Connection closed by server.")
        return job

    target.queue.enqueue_call = enqueue_call  # type: ignore[method-assign]


def _spill(spiller: Spiller, name: str) -> bool:
    spiller._away_until = 0.0  # past the backoff: as a second later
    return spiller.spill("os.getpid", (), {}, name=name, reason="saturated", request_uri="/x")


def _queued(target: RQTarget) -> list[str]:
    return [rq.job.Job.fetch(j.decode(), connection=target.queue.connection).description
            for j in target.queue.connection.lrange(target.queue.key, 0, -1)]  # fmt: skip


def test_the_job_of_a_failed_enqueue_is_taken_back_before_the_next(redis: RedisServer,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    target = RQTarget(redis.url)
    fallbacks: list[int] = []
    spiller = Spiller(target, {"saturated"}, log=logging.getLogger("t"), on_fallback=lambda: fallbacks.append(1))
    _lose_replies(target, 2)
    assert not _spill(spiller, "first")  # runs in the pool ...
    assert fallbacks == [1]
    assert _queued(target) == ["first"]  # ... and is in the queue all the same
    with caplog.at_level(logging.INFO):
        assert not _spill(spiller, "second")  # "first" is taken back; this one's reply is lost too
        assert _queued(target) == ["second"]
        assert _spill(spiller, "third")
    assert fallbacks == [1, 1]
    assert _queued(target) == ["third"]
    assert caplog.text.count("1 job(s) of enqueues that failed were in the spill queue all the same") == 2
    assert len(target.queue.connection.keys("rq:job:*")) == 1  # the two jobs' hashes went too


def test_a_job_a_queue_worker_already_took_is_reported_as_running_twice(redis: RedisServer,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    target = RQTarget(redis.url)
    spiller = Spiller(target, {"saturated"}, log=logging.getLogger("t"))
    _lose_replies(target, 1)
    assert not _spill(spiller, "first")
    conn = target.queue.connection
    taken = conn.lmove(target.queue.key, target.queue.intermediate_queue_key).decode()  # a queue worker has it
    with caplog.at_level(logging.INFO):
        assert _spill(spiller, "second")
    assert f"job(s) {taken} of enqueues that failed" in caplog.text and "run twice" in caplog.text
    assert _queued(target) == ["second"]


def test_while_redis_is_away_the_jobs_to_take_back_are_kept(redis: RedisServer) -> None:
    target = RQTarget(redis.url)
    spiller = Spiller(target, {"saturated"}, log=logging.getLogger("t"))
    _lose_replies(target, 1)
    assert not _spill(spiller, "first")
    redis.stop()
    assert not _spill(spiller, "second")  # the withdraw fails too: Redis is away
    redis.start()
    assert _spill(spiller, "third")
    assert _queued(target) == ["third"]  # "first" was taken back once Redis answered; "second" never got there
    with pytest.raises(QueueAway):
        RQTarget("redis://127.0.0.1:1/0").withdraw(["x"])
