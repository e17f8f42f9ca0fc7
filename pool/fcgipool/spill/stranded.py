"""Jobs stranded between rq's dequeue and its start: put back at the front of their queue, not filed as failed.

rq 3.0 dequeues with ``BLMOVE queue -> queue:intermediate`` and takes the id out of that list in the same
transaction that marks the job started. A worker that loses Redis in between never starts the job: when Redis
stops under load, the reply to a ``BLMOVE`` it already executed can die with the connection, or the worker gets
the job and its claim fails (the ``make faults`` Redis row, 2026-11-27: 5 jobs in 38 runs, each left ``queued``
in the intermediate list, no worker holding it).
rq's own cleanup runs with its maintenance, every 10 minutes, and files such a job as failed ("stuck in
intermediate queue", rq/rq#2061): the task never runs, and nothing tells the pool. Here every worker looks at
the list every CHECK_EVERY_S and puts back a job that has been there for STRANDED_AFTER_S since a worker first saw
it (a mark shared in Redis), once, atomically (one Lua call: whichever worker gets there first).

At least once, not exactly once: a live worker claims the job it dequeued within milliseconds; only one stalled
for STRANDED_AFTER_S between its ``BLMOVE`` and the claim would run the job as well as the worker it was put
back for.
"""

from __future__ import annotations

from typing import Any

#: a job this long in the intermediate list has no worker (a live one claims it within milliseconds)
STRANDED_AFTER_S = 10.0
#: how often each worker looks (it costs one LRANGE of a list that is nearly always empty)
CHECK_EVERY_S = 2.0

# Put back only if the job is still there under the same sighting: a worker that claims it meanwhile has removed
# it from the list (its LREM and ours cannot both succeed); a worker that put it back deleted the mark, so a job put
# back and dequeued again between two looks is not put back a second time (three workers did that to one job, which
# then ran three times, before the mark was shared). rq's own first-seen mark goes too.
_PUT_BACK = """
if redis.call('GET', KEYS[3]) == ARGV[2] and redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
    redis.call('LPUSH', KEYS[2], ARGV[1])
    redis.call('DEL', KEYS[3], KEYS[4])
    return 1
end
return 0
"""
#: seconds a sighting mark lives if no worker clears it (each worker clears the marks of jobs that left the list)
MARK_TTL_S = 3600


class StrandedJobs:
    """One worker's watch on its queues' intermediate lists: ``put_back(queue, now)`` every CHECK_EVERY_S.

    A job is stranded once it has been in the list for STRANDED_AFTER_S since a worker first saw it there -- a
    mark in Redis that every worker shares, cleared by the first to see the job gone. At this worker's first
    look, also one rq itself first saw there that long ago: after a Redis outage every worker restarts, and rq's
    startup maintenance (which runs just after this) files a job it saw there over a minute ago as failed.
    """

    def __init__(self, after_s: float = STRANDED_AFTER_S) -> None:
        self.after_s = after_s
        self._last: dict[str, set[str]] = {}  # queue key -> the ids this worker saw in the list at its last look

    def put_back(self, queue: Any, now: float) -> list[str]:
        """Ids of the jobs this call put back on ``queue`` (an ``rq.Queue``), oldest first; ``now``: ``time.time()``."""
        conn = queue.connection
        inter = queue.intermediate_queue
        first_look = queue.key not in self._last
        # a job in rq's started registry may be here too: rq registers the execution, then claims the job; until
        # the claim, which takes the job out of this list, it does not run
        waiting = [_text(raw) for raw in conn.lrange(inter.key, 0, -1)]
        gone = self._last.get(queue.key, set()) - set(waiting)
        if gone:
            conn.delete(*(_mark(inter.key, job_id) for job_id in gone))
        self._last[queue.key] = set(waiting)
        stranded = []
        for job_id in waiting:
            mark = _mark(inter.key, job_id)
            stamp = repr(now)
            if conn.set(mark, stamp, nx=True, ex=MARK_TTL_S):
                rq_saw = inter.get_first_seen(job_id) if first_look else None
                if rq_saw is None or now - rq_saw.timestamp() < self.after_s:
                    continue
                stamp = repr(rq_saw.timestamp())
                conn.set(mark, stamp, ex=MARK_TTL_S)
            else:
                stamp = _text(conn.get(mark) or b"")
            try:
                if now - float(stamp) >= self.after_s:
                    stranded.append((job_id, stamp))
            except ValueError:
                continue
        done = []
        # oldest first in the list (BLMOVE appends): pushed newest first, the oldest ends at the queue's head
        for job_id, stamp in reversed(stranded):
            keys = (inter.key, queue.key, _mark(inter.key, job_id), inter.get_first_seen_key(job_id))
            if conn.eval(_PUT_BACK, 4, *keys, job_id, stamp):
                done.append(job_id)
        return done[::-1]


def _mark(intermediate_key: str, job_id: str) -> str:
    return f"{intermediate_key}:fcgipool_seen:{job_id}"


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw
