"""The RQ worker to run spilled tasks with: ``rq worker -w fcgipool.spill.rqworker.Worker --worker-ttl 20 URL QUEUE``.

rq's own worker, with one change: a stop request (SIGINT/SIGTERM, what supervisord and docker send) while the
worker waits for a job no longer raises from the signal handler. rq 3.0 raised there, and when the signal came
just after Redis had handed the worker a job (moved into the queue's intermediate list) and before the worker
marked it started, the job stayed there: `make down` with 200 tasks pending left 1 of them undone; rq's
maintenance later files such a job as failed, it never runs. Here the request only sets the stop flag, checked
before the next dequeue: a job already handed over runs to its end first, and an idle worker stops when its
wait for a job times out (``--worker-ttl 20``: at most 5 s).
"""

from __future__ import annotations

from rq.worker import Worker as RQWorker

__all__ = ["Worker"]


class Worker(RQWorker):
    def _shutdown(self) -> None:
        self._stop_requested = True
        self.set_shutdown_requested_date()
        self.log.info("Worker %s: stopping after the job in hand, if any (fcgipool.spill.rqworker)", self.name)
        if self.scheduler:
            self.stop_scheduler()
