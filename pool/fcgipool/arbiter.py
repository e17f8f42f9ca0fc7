"""``PoolArbiter``: gunicorn's arbiter plus the scoreboard, deadline kills and lost-task reports on reap.

- Before forking a worker it claims a scoreboard slot for it and hands the slot, with the pool's shared
  objects, to the worker object built just before the fork (a :class:`fcgipool.spawn.SpawnContext`).
- Before forking the first worker it creates the hand-off queue (:mod:`fcgipool.handoff`), through which
  workers pass idle kept connections to each other instead of closing them, and the keeper.
- ``murder_workers``: a worker whose slot carries a deadline (response phase, after-response work) is
  judged by that deadline instead of gunicorn's heartbeat: SIGABRT when it passes, SIGKILL ``kill_grace``
  seconds later. Idle workers keep the heartbeat check.
- On reap, the after-response tasks still pending in the dead worker's slot are reported lost by name
  (reason ``killed``, or ``shutdown`` while stopping), through the ``on_task_lost`` hook and the error log,
  and the keeper (:mod:`fcgipool.keeper`) passes the dead worker's idle kept connections to the others.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from gunicorn.arbiter import Arbiter

from . import config, heap
from .handoff import HandoffQueue, Parking
from .keeper import Keeper
from .lost import LostTask, report_lost
from .scoreboard import Scoreboard, SlotSnapshot, WorkerState
from .services import PoolServices
from .spawn import SpawnContext, spawning
from .spill.flags import PoolFlags


def scoreboard_size(cfg: Any) -> int:
    slots = config.get(cfg, "scoreboard_slots")
    # dynamic/ondemand may grow past --workers; reloads briefly hold old and new generations
    return slots or max(64, 4 * max(cfg.workers, config.get(cfg, "pm_max_children")))


class PoolArbiter(Arbiter):
    def __init__(self, app: Any) -> None:
        self.scoreboard: Scoreboard | None = None
        self.slot_of: dict[int, int] = {}  # worker pid -> scoreboard slot
        self._aborted_at: dict[int, float] = {}  # pid -> monotonic time of our SIGABRT
        self._told_to_stop: set[int] = set()
        self._stop_by: dict[int, float] = {}  # pid -> monotonic time its graceful_timeout runs out
        self._stopping = False
        self._full_logged = False
        self.services: PoolServices | None = None
        self.parking: Parking | None = None  # ondemand with no worker: the arbiter watches kept connections
        self.handoff: HandoffQueue | None = None
        self.keeper: Keeper | None = None
        self.flags: PoolFlags | None = None
        super().__init__(app)

    def start(self) -> None:
        if self.flags is None:
            self.flags = PoolFlags()
        if self.scoreboard is None:
            self.scoreboard = Scoreboard(scoreboard_size(self.cfg))
        if self.handoff is None:  # before any fork: every worker, of every generation, inherits it
            self.handoff = HandoffQueue()
            self.parking = Parking(self.handoff)
        if self.keeper is None:
            keeper = self.keeper = Keeper(self.scoreboard.size, self.handoff, self.log)
            keeper.live_slots = lambda: list(self.slot_of.values())
            parking = self.parking
            keeper.parked = parking.inodes if parking is not None else set
            keeper.start()
        # raises RuntimeError on contradicting pm settings, or spill_to without RQ installed
        self.services = PoolServices(self, self.scoreboard, self.flags)
        super().start()
        self.services.start()  # after gunicorn's start: the listeners exist, the pm sets the first worker count

    def kept_waiting(self) -> int | None:
        """Idle kept connections waiting for a worker: in the hand-off queue or parked (status page)."""
        if self.handoff is None:
            return None
        return self.handoff.pending() + (len(self.parking) if self.parking is not None else 0)

    # dynamic/ondemand decide the worker count themselves (fcgipool.pm); static is gunicorn's
    def manage_workers(self) -> None:
        if self.services is not None and self.services.manage_workers():
            return
        super().manage_workers()

    def reload(self) -> None:
        if self.services is not None:
            self.services.before_reload()  # the pm must not count the old generation as its own workers
        super().reload()

    # pm-reload (owned by fcgipool.services): gunicorn's reload() calls setup() right after app.reload()
    # re-read the config, before it spawns the new generation; the pm is rebuilt from the new settings there
    def setup(self, app: Any) -> None:
        super().setup(app)
        if self.services is not None:
            self.services.reload_pm()

    # --- spawning --------------------------------------------------------------------------------------
    def spawn_worker(self) -> Any:
        assert self.scoreboard is not None
        try:
            index = self.scoreboard.acquire(0)
        except RuntimeError as exc:
            if not self._full_logged:
                self.log.error("cannot start another worker: %s (raise scoreboard_slots)", exc)
                self._full_logged = True
            return None
        self._full_logged = False
        arbiter_pid = os.getpid()
        heap.trim()  # the worker inherits every resident page: none that are free (fcgipool.heap)
        context = SpawnContext(self.scoreboard, index, self.handoff, self.keeper, self.flags)
        try:
            with spawning(context):
                if self.keeper is not None:
                    with self.keeper.forking():  # the child closes every copy it inherits: none may be half-received
                        pid = super().spawn_worker()
                else:
                    pid = super().spawn_worker()
        except BaseException:
            if os.getpid() == arbiter_pid:  # fork failed; in the child this is the worker exiting
                self.scoreboard.release(index)
            raise
        self.scoreboard.assign(index, pid)
        self.slot_of[pid] = index
        return pid

    # --- killing ---------------------------------------------------------------------------------------
    def kill_worker(self, pid: int, sig: int) -> None:
        if sig in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
            self._told_to_stop.add(pid)
        if sig == signal.SIGTERM:
            # gunicorn enforces graceful_timeout only in stop(): a worker TERMed by a reload, TTOU or a pm
            # would otherwise live on until its own deadline (a task looping in C ignores the TERM)
            self._stop_by.setdefault(pid, time.monotonic() + float(self.cfg.graceful_timeout))
        super().kill_worker(pid, sig)
        self._release_gone()

    def stop(self, graceful: bool = True) -> None:
        self._stopping = True
        if self.keeper is not None:
            self.keeper.stop()  # nobody is left to take a dead worker's connections
        super().stop(graceful)
        # gunicorn's last reap does not wait for the workers it just SIGKILLed: wait briefly, so their
        # pending tasks are reported from the final slot contents
        deadline = time.monotonic() + 2.0
        while self.WORKERS and time.monotonic() < deadline:
            time.sleep(0.05)
            self.reap_workers()
        self._release_gone(everything=True)
        if self.services is not None:
            self.services.stop()

    def murder_workers(self) -> None:
        now = time.monotonic()
        grace = config.get(self.cfg, "kill_grace")
        for pid, worker in list(self.WORKERS.items()):
            stop_by = self._stop_by.get(pid)
            if stop_by is not None and now > stop_by:
                self.log.warning("worker (pid:%s) still running %.0f s after TERM (graceful_timeout): killing it",
                                 pid, float(self.cfg.graceful_timeout))  # fmt: skip
                self.kill_worker(pid, signal.SIGKILL)
                self._stop_by[pid] = float("inf")  # once; the reap reports its pending tasks
                continue
            snap = self._read_slot(pid)
            kill_counter = ""
            if snap is not None and snap.deadline:
                if now <= snap.deadline:
                    continue
                why = f"{snap.state.label} {snap.method} {snap.uri} past its hard deadline".replace("  ", " ")
                why += " (hard stop: the soft stop did not end it within kill_grace)"
                if snap.pending_names:
                    why += f"; pending tasks: {', '.join(snap.pending_names)}"
                kill_counter = "background_kills" if snap.state == WorkerState.FINISHING else "request_kills"
            else:
                if not self.timeout:
                    continue
                try:
                    if now - worker.tmp.last_update() <= self.timeout:
                        continue
                except (OSError, ValueError):
                    continue
                why = "no heartbeat"
            if not worker.aborted:
                self.log.critical("WORKER TIMEOUT (pid:%s) %s", pid, why)
                if kill_counter and self.scoreboard is not None:
                    self.scoreboard.count(kill_counter)
                worker.aborted = True
                self._aborted_at[pid] = now
                self.kill_worker(pid, signal.SIGABRT)
            elif now - self._aborted_at.get(pid, 0.0) >= grace:
                self.kill_worker(pid, signal.SIGKILL)

    # --- reaping ---------------------------------------------------------------------------------------
    def reap_workers(self) -> None:
        try:
            super().reap_workers()
        finally:
            self._release_gone()

    def _read_slot(self, pid: int) -> SlotSnapshot | None:
        index = self.slot_of.get(pid)
        if index is None or self.scoreboard is None:
            return None
        return self.scoreboard.read(index)

    def _release_gone(self, everything: bool = False) -> None:
        if self.scoreboard is None:
            return
        for pid, index in list(self.slot_of.items()):
            if pid in self.WORKERS and not everything:
                continue
            del self.slot_of[pid]
            if self.keeper is not None:
                rescued = self.keeper.worker_gone(index, pid)
                if rescued:
                    self.scoreboard.count("connections_rescued", rescued)
            snap = self.scoreboard.release(index)
            reason = self._lost_reason(pid)
            self._aborted_at.pop(pid, None)
            self._told_to_stop.discard(pid)
            self._stop_by.pop(pid, None)
            if snap.pending_count:
                self._report_pending(pid, snap, reason)

    def _lost_reason(self, pid: int) -> str:
        if pid in self._aborted_at:
            return "killed"
        if self._stopping or pid in self._told_to_stop:
            return "shutdown"
        return "killed"

    def _report_pending(self, pid: int, snap: SlotSnapshot, reason: str) -> None:
        names = list(snap.pending_names)
        if snap.pending_truncated:
            names.append(f"<{snap.pending_count - len(names)} more tasks whose names did not fit in the slot>")
        running = snap.state == WorkerState.FINISHING
        lost = [LostTask(name, reason, snap.uri, pid, started=running and i == 0) for i, name in enumerate(names)]
        report_lost(self, lost, self.log, config.get(self.cfg, "on_task_lost"))
