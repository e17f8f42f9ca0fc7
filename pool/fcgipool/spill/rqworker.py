"""The RQ worker to run spilled tasks with: ``rq worker -w fcgipool.spill.rqworker.Worker --worker-ttl 20 URL QUEUE``.

rq's worker with three changes:

- **No fork per job** (rq's ``SimpleWorker``). rq's default worker forks a work horse for every job, and the
  horse imports the job's module again: 64 ms of CPU per job for a module that imports Flask, smtplib and
  sqlite3 like the sample app's tasks, against under 3 ms here (300 jobs, ``rq worker --burst``, 2-core VM,
  19.3 s vs 0.8 s of CPU, startup included). At the load tests' 2x capacity (~50 spilled tasks a second) the
  forking worker needed more CPU than the machine had: the queue grew without bound and took the pool's CPU,
  which is what spilling is meant to protect. What is given up: a job that crashes the interpreter takes the
  worker with it (its supervisor starts it again, rq files the job as failed), and a job's leaked memory
  stays in the worker. rq's job timeout still applies (SIGALRM in the worker's main thread).
- **A stop request never raises from the signal handler.** (SIGINT/SIGTERM, what supervisord and docker send.)
  rq 3.0 raised there while the worker waited for a job, and when the signal came just after Redis had handed
  the worker a job (moved into the queue's intermediate list) and before the worker marked it started, the job
  stayed there: `make down` with 200 tasks pending left 1 of them undone; rq's maintenance later files such a
  job as failed, it never runs. Here the request only sets the stop flag, checked before the next dequeue: a job
  already handed over, or running, runs to its end first, and an idle worker stops when its wait for a job
  times out (``--worker-ttl 20``: at most 5 s). (Until 2026-11-27 an idle worker did not check the flag at all:
  rq's wait for a job ends only with a job, so it waited for supervisord's SIGKILL, 40 s later.)
- **A job stranded between dequeue and start is put back on the queue** within ~10-17 s (fcgipool.spill.stranded),
  where rq files it as failed after a minute or more: a worker that loses Redis just after its ``BLMOVE`` never
  starts the job it was handed (Redis stopped under load: 1 job in 6 runs of the ``make faults`` Redis row).
"""

from __future__ import annotations

import time

from rq.exceptions import StopRequested
from rq.worker import SimpleWorker

from .stranded import CHECK_EVERY_S, StrandedJobs

__all__ = ["Worker"]


class Worker(SimpleWorker):
    _stranded: StrandedJobs | None = None
    _stranded_next = 0.0

    @property
    def should_run_maintenance_tasks(self) -> bool:
        # asked before every dequeue, after every idle wait (at most 5 s with --worker-ttl 20) and after every job
        return self._stop_requested or time.monotonic() >= self._stranded_next or super().should_run_maintenance_tasks

    def run_maintenance_tasks(self) -> None:
        if self._stop_requested:
            # before a dequeue, with no job in hand: rq's idle wait only ends with a job, so a stop requested
            # while idle would otherwise wait for the next job, or for supervisord's SIGKILL after stopwaitsecs
            raise StopRequested
        now = time.monotonic()
        if now >= self._stranded_next:
            self._stranded_next = now + CHECK_EVERY_S
            self._put_back_stranded()
        if super().should_run_maintenance_tasks:
            super().run_maintenance_tasks()

    def _put_back_stranded(self) -> None:
        if self._stranded is None:
            self._stranded = StrandedJobs()
        for queue in self.queues:
            for job_id in self._stranded.put_back(queue, time.time()):
                self.log.warning("Worker %s: job %s was stranded between a dequeue and its start (a worker lost "
                                 "Redis): put back at the head of %s (fcgipool.spill.stranded)", self.name, job_id,
                                 queue.name)  # fmt: skip

    def _shutdown(self) -> None:
        self._stop_requested = True
        self.set_shutdown_requested_date()
        self.log.info("Worker %s: stopping after the job in hand, if any (fcgipool.spill.rqworker)", self.name)
        if self.scheduler:
            self.stop_scheduler()
