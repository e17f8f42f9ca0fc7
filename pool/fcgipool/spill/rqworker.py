"""The RQ worker to run spilled tasks with: ``rq worker -w fcgipool.spill.rqworker.Worker --worker-ttl 20 URL QUEUE``.

rq's worker with two changes:

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
  times out (``--worker-ttl 20``: at most 5 s).
"""

from __future__ import annotations

from rq.worker import SimpleWorker

__all__ = ["Worker"]


class Worker(SimpleWorker):
    def _shutdown(self) -> None:
        self._stop_requested = True
        self.set_shutdown_requested_date()
        self.log.info("Worker %s: stopping after the job in hand, if any (fcgipool.spill.rqworker)", self.name)
        if self.scheduler:
            self.stop_scheduler()
