"""The RQ worker to run spilled tasks with: ``rq worker -w fcgipool.spill.rqworker.Worker --worker-ttl 20 URL QUEUE``.

rq's worker with four changes:

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
- **A job whose worker died mid-job is reported lost** within ~15 s (fcgipool.spill.abandoned), through the pool's
  path for it: the error log and the ``on_task_lost`` hook named by ``FCGIPOOL_ON_TASK_LOST``
  (``package.module.function``, the pool's own hook). rq noticed it 240 s after its start at the earliest, at its
  10-minute maintenance, and filed it as failed without telling anyone.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from rq.exceptions import StopRequested
from rq.worker import SimpleWorker

from .. import validators
from ..lost import LostTask, report_lost
from . import abandoned
from .stranded import CHECK_EVERY_S, StrandedJobs

__all__ = ["HOOK_ENV", "Worker", "lost_hook"]

#: the environment variable naming the ``on_task_lost`` hook for tasks lost in the queue
HOOK_ENV = "FCGIPOOL_ON_TASK_LOST"


def lost_hook(env: Mapping[str, str] = os.environ) -> Callable[[Any, LostTask], Any] | None:
    """The hook ``HOOK_ENV`` names (None when unset); a ValueError that says what to set when it cannot be used."""
    path = env.get(HOOK_ENV, "").strip()
    if not path:
        return None
    try:
        return validators.hook("on_task_lost", 2)(path)
    except ValueError as exc:
        raise ValueError(f"{HOOK_ENV}={path!r}: {exc} -- name the pool's on_task_lost hook, or unset it") from exc


class Worker(SimpleWorker):
    _stranded: StrandedJobs | None = None
    _stranded_next = 0.0
    _abandoned: abandoned.AbandonedJobs | None = None
    _lease: threading.Event | None = None  # set: stop renewing
    _on_task_lost: Callable[[Any, LostTask], Any] | None = None
    _ran: str | None = None  # the job whose code runs or has run in this worker, until rq has recorded its end

    def prepare_job_execution(self, job: Any, remove_from_intermediate_queue: bool = False) -> None:
        super().prepare_job_execution(job, remove_from_intermediate_queue)
        self._ran = job.id  # rq runs the job's code next, whatever happens after

    def execute_job(self, job: Any, queue: Any) -> None:
        try:
            super().execute_job(job, queue)
        except Exception:
            if self._ran == job.id:  # it ran; rq could not record its end (Redis went away): not lost
                self._mark_ended(job.id)
            raise
        finally:
            self._ran = None

    def _mark_ended(self, job_id: str) -> None:
        give_up = time.monotonic() + abandoned.ENDED_WAIT_S
        while True:
            try:
                abandoned.mark_ended(self.connection, job_id)
            except Exception as exc:
                if time.monotonic() < give_up:
                    time.sleep(0.5)
                    continue
                self.log.warning("Worker %s: job %s ran, but Redis stayed away for %.0f s (%s): the other workers "
                                 "will report its task lost, although it ran (fcgipool.spill.abandoned)", self.name,
                                 job_id, abandoned.ENDED_WAIT_S, exc)  # fmt: skip
                return
            self.log.info("Worker %s: job %s ran, but rq could not record its end: marked ended, not lost "
                          "(fcgipool.spill.abandoned)", self.name, job_id)  # fmt: skip
            return

    def register_birth(self) -> None:
        self._on_task_lost = lost_hook()  # a bad value stops the worker here, with what to set
        super().register_birth()
        abandoned.renew(self.connection, self.name)
        self._lease = threading.Event()
        threading.Thread(target=self._renew_lease, args=(self._lease,), name="fcgipool-lease", daemon=True).start()

    def register_death(self) -> None:
        if self._lease is not None:
            self._lease.set()
        try:
            abandoned.drop(self.connection, self.name)
        finally:
            super().register_death()

    def _renew_lease(self, stop: threading.Event) -> None:
        while not stop.wait(abandoned.RENEW_S):
            try:
                abandoned.renew(self.connection, self.name)
            except Exception:  # Redis away: the lease lapses, and the others' grace covers that (spill.abandoned)
                continue

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
            self._report_abandoned()
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

    def _report_abandoned(self) -> None:
        if self._abandoned is None:
            self._abandoned = abandoned.AbandonedJobs(self.name)
        for queue in self.queues:
            for job in self._abandoned.claim(queue, time.time()):
                self.log.warning(
                    "Worker %s: job %s was running in worker %s (pid %s), which is gone: its task is "
                    "lost (fcgipool.spill.abandoned)",
                    self.name,
                    job.job_id,
                    job.worker,
                    job.pid or "?",
                )
                lost = LostTask(job.name, "killed", job.request_uri, pid=job.pid, started=True)
                report_lost(self, [lost], self.log, self._on_task_lost)

    def _shutdown(self) -> None:
        self._stop_requested = True
        self.set_shutdown_requested_date()
        self.log.info("Worker %s: stopping after the job in hand, if any (fcgipool.spill.rqworker)", self.name)
        if self.scheduler:
            self.stop_scheduler()
