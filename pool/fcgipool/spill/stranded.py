"""Jobs stranded between rq's dequeue and its start: put back at the front of their queue, not filed as failed.

rq 3.0 dequeues with ``BLMOVE queue -> queue:intermediate`` and takes the id out of that list in the same
transaction that marks the job started. A worker that loses Redis in between never starts the job: when Redis
stops under load, the reply to a ``BLMOVE`` it already executed can die with the connection, or the worker gets
the job and its claim fails (the ``make faults`` Redis row, 2026-11-27: 5 jobs in 38 runs, each left ``queued``
in the intermediate list, no worker holding it).
rq's own cleanup runs with its maintenance, every 10 minutes, and files such a job as failed ("stuck in
intermediate queue", rq/rq#2061): the task never runs, and nothing tells the pool. Here every worker looks at
the list every CHECK_EVERY_S and puts back a job seen there for STRANDED_AFTER_S, once, atomically
(one Lua call: whichever worker gets there first).

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

# Removed from the intermediate list and pushed back at the head of the queue only if it is still there: a worker
# that claims it meanwhile has removed it (its LREM and ours cannot both succeed), and of several workers putting
# it back, one does. rq's first-seen mark goes too: its next dequeue starts a new count.
_PUT_BACK = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
    redis.call('LPUSH', KEYS[2], ARGV[1])
    redis.call('DEL', KEYS[3])
    return 1
end
return 0
"""


class StrandedJobs:
    """One worker's watch on its queues' intermediate lists: ``put_back(queue, now)`` every CHECK_EVERY_S.

    A job is stranded once this worker has seen it in the list in every look for STRANDED_AFTER_S. At this worker's
    first look, also one rq itself first saw there that long ago: after a Redis outage every worker restarts, and
    rq's startup maintenance (which runs just after this) files a job it saw there over a minute ago as failed.
    """

    def __init__(self, after_s: float = STRANDED_AFTER_S) -> None:
        self.after_s = after_s
        self._seen: dict[str, dict[str, float]] = {}  # queue key -> job id -> since when in the list (time.time)

    def put_back(self, queue: Any, now: float) -> list[str]:
        """Ids of the jobs this call put back on ``queue`` (an ``rq.Queue``), oldest first; ``now``: ``time.time()``."""
        conn = queue.connection
        inter = queue.intermediate_queue
        first_look = queue.key not in self._seen
        before = self._seen.get(queue.key, {})
        seen = self._seen[queue.key] = {}
        # a job in rq's started registry may be here too: rq registers the execution, then claims the job; until
        # the claim, which takes the job out of this list, it does not run
        for job_id in (_text(raw) for raw in conn.lrange(inter.key, 0, -1)):
            since = before.get(job_id, now)
            rq_saw = inter.get_first_seen(job_id) if first_look else None
            seen[job_id] = min(since, rq_saw.timestamp()) if rq_saw else since
        stranded = [job_id for job_id, since in seen.items() if now - since >= self.after_s]
        done = []
        # oldest first in the list (BLMOVE appends): pushed newest first, the oldest ends at the queue's head
        for job_id in reversed(stranded):
            if conn.eval(_PUT_BACK, 3, inter.key, queue.key, inter.get_first_seen_key(job_id), job_id):
                done.append(job_id)
            seen.pop(job_id, None)
        return done[::-1]


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw
