"""Spilled tasks whose queue worker died mid-job (SIGKILL, the OOM killer, a killed container): reported lost within
~15 s, through the pool's one path for it (fcgipool.lost: the error log and the ``on_task_lost`` hook).

rq notices such a job only when its started-registry entry expires -- the job's timeout + 60 s after its start (a
SimpleWorker renews nothing while a job runs: 240 s with the default timeout) -- and only at its maintenance, every
10 minutes; it then files the job as failed ("AbandonedJobError"). Nothing told the pool or the app that a task
handed to the queue never finished: the sample app's ledger showed it ``ran_in_queue`` and nothing after.

Here every worker holds a lease in Redis (LEASE_S, renewed every RENEW_S by a thread, also while a job runs) and
looks at its queues' started jobs at every maintenance step (CHECK_EVERY_S, and at its start). A job whose worker
held a lease and holds none is suspect; still so GRACE_S after a worker first saw it (a mark in Redis that every
worker shares) it is claimed by whichever worker gets there first and reported lost, once. The grace covers a Redis
outage, during which every lease lapses: a live worker renews its own within RENEW_S of Redis coming back. A worker
that stops cleanly finishes its job first and drops its lease. rq still files the job as failed later, as before.

A worker whose job ran while Redis went away cannot tell rq the job ended, and exits (rq's way): the job stays
STARTED and its lease lapses. So before it exits it marks the job ended (``mark_ended``, retried while Redis is away,
up to ENDED_WAIT_S), and the watch passes over such a job: its task ran, it is not lost (found with a Redis stopped
for 3 s under a running job, restarted from its append-only file, as the stack's is).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: a live worker's lease lives this long; a dead worker's lapses within it
LEASE_S = 10
#: how often a worker renews its lease (a thread: a running job does not hold it up)
RENEW_S = 2.0
#: a job without a live worker is reported this long after a worker first saw it so (longer than RENEW_S: a Redis
#: outage lapses every lease, and a live worker renews its own within RENEW_S of Redis coming back)
GRACE_S = 5.0
#: how long a worker's "I hold leases" mark lives (renewed with the lease): a job of a worker that never held one
#: -- a plain ``rq worker`` on the same queue -- is left to rq
LEASED_TTL_S = 86_400
#: how long a worker whose job ran tries to mark it ended while Redis is away, before it exits anyway
ENDED_WAIT_S = 30.0
_PREFIX = "fcgipool:rq"


def alive_key(worker: str) -> str:
    return f"{_PREFIX}:alive:{worker}"


def leased_key(worker: str) -> str:
    return f"{_PREFIX}:leased:{worker}"


def renew(conn: Any, worker: str) -> None:
    """The worker ``worker`` is alive: its lease for LEASE_S more."""
    with conn.pipeline(transaction=False) as pipe:
        pipe.set(alive_key(worker), 1, ex=LEASE_S)
        pipe.set(leased_key(worker), 1, ex=LEASED_TTL_S)
        pipe.execute()


def ended_key(job_id: str) -> str:
    return f"{_PREFIX}:ended:{job_id}"


def mark_ended(conn: Any, job_id: str) -> None:
    """The job's code has run, but rq could not record its end (Redis went away meanwhile, and the worker exits):
    not lost, whatever its status says."""
    conn.set(ended_key(job_id), 1, ex=LEASED_TTL_S)


def drop(conn: Any, worker: str) -> None:
    """The worker stops cleanly (its job, if any, has finished): no lease, and nothing to suspect."""
    conn.delete(alive_key(worker), leased_key(worker))


@dataclass(frozen=True)
class Abandoned:
    """A started job whose worker is gone: the task's name, the request that spilled it, the dead worker."""

    job_id: str
    name: str
    request_uri: str
    worker: str
    pid: int


class AbandonedJobs:
    """One worker's watch on its queues' started jobs: ``claim(queue, now)`` every CHECK_EVERY_S."""

    def __init__(self, me: str, grace_s: float = GRACE_S) -> None:
        self.me = me
        self.grace_s = grace_s

    def claim(self, queue: Any, now: float) -> list[Abandoned]:
        """The started jobs of ``queue`` (an ``rq.Queue``) that this call found abandoned and claimed: this worker
        reports them, no other one will. ``now``: ``time.time()``."""
        from rq.job import Job, JobStatus
        from rq.worker import Worker

        conn = queue.connection
        ids = [job_id for job_id, _ in queue.started_job_registry.get_job_and_execution_ids(cleanup=False)]
        if not ids:
            return []
        jobs = [j for j in Job.fetch_many(ids, connection=conn, serializer=queue.serializer) if j is not None]
        jobs = [j for j in jobs if j.worker_name and j.worker_name != self.me
                and j.get_status(refresh=False) == JobStatus.STARTED]  # fmt: skip
        if not jobs:
            return []
        with conn.pipeline(transaction=False) as pipe:
            for job in jobs:
                pipe.exists(alive_key(str(job.worker_name)))
                pipe.exists(leased_key(str(job.worker_name)))
                pipe.exists(ended_key(job.id))
            seen = pipe.execute()
        claimed = []
        for job, alive, leased, ended in zip(jobs, seen[::3], seen[1::3], seen[2::3], strict=True):
            mark = f"{_PREFIX}:suspect:{job.id}"
            if alive or not leased or ended:
                if alive:
                    conn.delete(mark)  # a lapse that ended (Redis came back): the next one starts its grace anew
                continue
            conn.set(mark, now, nx=True, ex=3600)
            first = float(conn.get(mark) or now)
            if now - first < self.grace_s:
                continue
            if conn.set(f"{_PREFIX}:lost:{job.id}", self.me, nx=True, ex=LEASED_TTL_S):
                worker = str(job.worker_name)
                pid = conn.hget(f"{Worker.redis_worker_namespace_prefix}{worker}", "pid")
                name = job.description or job.func_name or job.id
                uri = str((job.meta or {}).get("request_uri", ""))
                claimed.append(Abandoned(job.id, name, uri, worker, int(pid) if pid else 0))
        return claimed
