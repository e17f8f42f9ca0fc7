"""Process managers on gunicorn's arbiter, as PHP-FPM's ``pm``: static, dynamic, ondemand.

``static`` leaves gunicorn alone: ``workers`` processes, TTIN/TTOU resize. ``dynamic`` and ``ondemand``
replace the body of ``Arbiter.manage_workers`` (called from the arbiter's main loop at least once a second,
and at once when the status thread wakes it): they read idle/busy from the scoreboard, spawn with
``arbiter.spawn_worker()`` and stop chosen idle workers with SIGTERM (graceful: an idle worker exits at
once). "Max children reached" is counted by the pool monitor, once per episode, in every mode.

On HUP the pool builds a new process manager from the reloaded settings (:func:`rebuild`): it takes over the
old one's reload floor, its stopping workers and the monitor, then trims the new generation gunicorn spawned
to the new pm's rules (``pm_max_children`` at once, spares and idle timeout as usual).
"""

from __future__ import annotations

import signal
import time
from typing import Any

from .handoff import Parking
from .scoreboard import SlotSnapshot, WorkerState
from .settings import PmSettings
from .status.monitor import PoolMonitor, PoolStatus

__all__ = ["DynamicPM", "OndemandPM", "ProcessManager", "StaticPM", "create", "rebuild"]

_WAKE_EVERY = 0.05  # seconds between wake-ups of the arbiter from the status thread


class ProcessManager:
    name = "static"

    def __init__(self, settings: PmSettings, log: Any) -> None:
        self.settings = settings
        self.log = log
        self.monitor: PoolMonitor | None = None
        self._stopping: set[int] = set()
        self._reload_floor = 0  # workers with age <= this are from before a reload
        self._last_wake = 0.0

    # --- called by the arbiter -----------------------------------------------------------------------------
    def initial_workers(self, arbiter: Any) -> int:
        return int(arbiter.num_workers)

    def max_children(self, arbiter: Any) -> int:
        return int(arbiter.num_workers)

    def manage(self, arbiter: Any) -> bool:
        """Adjust the workers; False means "let gunicorn's manage_workers do it" (static)."""
        return False

    def before_reload(self, arbiter: Any) -> None:
        self._reload_floor = arbiter.worker_age

    def on_sample(self, status: PoolStatus, arbiter: Any) -> None:
        """Status thread, every sample: wake the arbiter when this pm has work to do now."""
        # after a reload away from ondemand, connections it parked go back to the queue once workers run
        parking = getattr(arbiter, "parking", None)
        if parking is not None and status.total and len(parking):
            parking.release()

    def adopt(self, old: ProcessManager) -> None:
        """Take over from the pm this one replaces on reload (before it is visible to the status thread)."""
        self.monitor = old.monitor
        self._reload_floor = old._reload_floor  # the old generation is not ours to count, only to stop
        self._stopping = set(old._stopping)
        self._last_wake = old._last_wake

    # --- helpers -------------------------------------------------------------------------------------------
    def _wake(self, arbiter: Any) -> None:
        now = time.monotonic()
        if now - self._last_wake >= _WAKE_EVERY:
            self._last_wake = now
            arbiter.wakeup()

    def _live(self, arbiter: Any) -> dict[int, Any]:
        self._stopping &= set(arbiter.WORKERS)
        return {pid: w for pid, w in arbiter.WORKERS.items() if pid not in self._stopping}

    def _stop(self, arbiter: Any, pid: int, why: str) -> None:
        self.log.info("pm %s: stopping worker %s (%s)", self.name, pid, why)
        self._stopping.add(pid)
        arbiter.kill_worker(pid, signal.SIGTERM)

    def _retire_old_generation(self, arbiter: Any, live: dict[int, Any]) -> dict[int, Any]:
        # after HUP gunicorn spawns a new generation and expects manage_workers to stop the old one
        if self._reload_floor:
            old = [pid for pid, w in live.items() if w.age <= self._reload_floor]
            for pid in old:
                self._stop(arbiter, pid, "reload")
                live.pop(pid)
            if not old:
                self._reload_floor = 0
        return live

    def _trim_to_cap(self, arbiter: Any, live: dict[int, Any], idle: list[int], slots: dict[int, SlotSnapshot]) -> int:
        """Stop idle workers above pm_max_children (a reload spawns ``workers``, or lowered the cap); the count left."""
        total, cap = len(live), self.settings.max_children
        for pid in sorted(idle, key=lambda pid: _idle_since(slots.get(pid)))[: max(0, total - cap)]:
            self._stop(arbiter, pid, f"{total} workers > max children {cap}")
            idle.remove(pid)
            live.pop(pid)
            total -= 1
        return total

    def _spawn(self, arbiter: Any, n: int) -> int:
        done = 0
        for _ in range(n):
            try:
                pid = arbiter.spawn_worker()
            except RuntimeError as exc:
                self.log.error("pm %s: cannot spawn a worker: %s", self.name, exc)
                break
            if pid is None:  # PoolArbiter returns None when the scoreboard is full (it logs why)
                break
            done += 1
        return done

    def _slots(self, status: PoolStatus) -> dict[int, SlotSnapshot]:
        return {s.pid: s for s in status.snapshot.slots}

    def _sample(self) -> PoolStatus:
        assert self.monitor is not None, "pm.monitor must be set before manage()"
        return self.monitor.sample()


class StaticPM(ProcessManager):
    name = "static"


class DynamicPM(ProcessManager):
    """PHP-FPM's dynamic: one maintenance round per second; spawn rate doubles while spares stay short."""

    name = "dynamic"
    ROUND = 1.0

    def __init__(self, settings: PmSettings, log: Any) -> None:
        super().__init__(settings, log)
        self._rate = 1
        self._next_round = 0.0
        self._started = False

    def initial_workers(self, arbiter: Any) -> int:
        return self.settings.start_servers

    def max_children(self, arbiter: Any) -> int:
        return self.settings.max_children

    def manage(self, arbiter: Any) -> bool:
        live = self._retire_old_generation(arbiter, self._live(arbiter))
        if not self._started:  # PHP-FPM: pm.start_servers at startup, then spare-driven
            self._started = True
            self._spawn(arbiter, max(0, self.settings.start_servers - len(live)))
            live = self._live(arbiter)
        now = time.monotonic()
        if now < self._next_round and len(live) >= self.settings.min_spare:
            arbiter.num_workers = len(live)
            return True
        self._next_round = now + self.ROUND
        status = self._sample()
        slots = self._slots(status)
        idle = [pid for pid in live if (s := slots.get(pid)) is None or s.state == WorkerState.IDLE]
        total, max_children = self._trim_to_cap(arbiter, live, idle, slots), self.settings.max_children
        if len(idle) > self.settings.max_spare:
            victim = min(idle, key=lambda pid: _idle_since(slots.get(pid)))
            self._stop(arbiter, victim, f"{len(idle)} idle > max spare {self.settings.max_spare}")
            total -= 1
            self._rate = 1
        elif len(idle) < self.settings.min_spare:
            if total >= max_children:
                if not idle and self.monitor is not None:
                    self.monitor.note_max_children()
            else:
                n = min(self._rate, self.settings.min_spare - len(idle), max_children - total)
                total += self._spawn(arbiter, n)
                self._rate = min(self._rate * 2, self.settings.max_spawn_rate)
        else:
            self._rate = 1
        arbiter.num_workers = total
        return True


class OndemandPM(ProcessManager):
    """PHP-FPM's ondemand: no workers until a connection waits; idle workers stop after the idle timeout."""

    name = "ondemand"

    _kept_demand = False  # a parked connection got a request (status thread sets it, manage spawns)

    def initial_workers(self, arbiter: Any) -> int:
        return 0

    def _parking(self, arbiter: Any) -> Parking | None:
        return getattr(arbiter, "parking", None)

    def max_children(self, arbiter: Any) -> int:
        return self.settings.max_children

    def adopt(self, old: ProcessManager) -> None:
        super().adopt(old)
        self._kept_demand = bool(getattr(old, "_kept_demand", False))  # a request on a parked connection

    def on_sample(self, status: PoolStatus, arbiter: Any) -> None:
        # a kept connection in the hand-off queue may carry a request too (nginx reuses it at will); with no
        # worker at all the connections are parked in the arbiter and only one with a request is demand
        parking = self._parking(arbiter)
        kept = bool(status.kept_waiting)
        if parking is not None:
            if status.total == 0:
                self._kept_demand = parking.check() or self._kept_demand
                kept = self._kept_demand
            elif len(parking):
                parking.release()
        waiting = bool(status.listen_queue) or kept
        if waiting and status.idle == 0 and status.total < self.settings.max_children:
            self._wake(arbiter)  # a connection waits and nobody can take it: spawn now, not in a second
        elif status.idle and status.snapshot.slots:
            oldest_idle = min((s.state_since for s in status.snapshot.slots if s.state == WorkerState.IDLE), default=0)
            if oldest_idle and time.time() - oldest_idle >= self.settings.idle_timeout:
                self._wake(arbiter)

    def manage(self, arbiter: Any) -> bool:
        live = self._retire_old_generation(arbiter, self._live(arbiter))
        status = self._sample()
        slots = self._slots(status)
        now = time.time()
        idle = [pid for pid in live if (s := slots.get(pid)) is None or s.state == WorkerState.IDLE]
        total = self._trim_to_cap(arbiter, live, idle, slots)
        kept = self._kept_demand if not live else (status.kept_waiting or 0)
        queue = (status.listen_queue or 0) + int(kept)
        if queue and not idle:
            self._kept_demand = False
            room = self.settings.max_children - total
            if room > 0:
                total += self._spawn(arbiter, min(queue, room, self.settings.max_spawn_rate))
            elif self.monitor is not None:
                # the same demand that would spawn a worker, and none may be added: a request on a kept
                # connection in the hand-off queue waits as surely as one in the listen queue
                self.monitor.note_max_children()
        timeout = self.settings.idle_timeout
        for pid in idle:
            s = slots.get(pid)
            if s is not None and now - _idle_since(s) >= timeout and not (queue and len(idle) == 1):
                self._stop(arbiter, pid, f"idle for {now - _idle_since(s):.1f} s")
                total -= 1
        arbiter.num_workers = total
        return True


def _idle_since(s: SlotSnapshot | None) -> float:
    if s is None:
        return time.time()
    return s.state_since or s.start_time


def create(cfg: Any, workers: int, log: Any, slots: int | None = None) -> ProcessManager:
    """The configured process manager; ValueError with what to change when the settings contradict.

    ``slots``: the scoreboard's size, which ``pm_max_children`` must fit (the scoreboard is made once, at start).
    """
    settings = PmSettings.from_config(cfg, workers)
    if slots is not None and settings.max_children > slots:
        what = "pm_max_children" if settings.pm != "static" else "workers"
        raise ValueError(
            f"{what} ({settings.max_children}) is larger than the scoreboard ({slots} slots); raise scoreboard_slots"
        )
    cls = {"static": StaticPM, "dynamic": DynamicPM, "ondemand": OndemandPM}[settings.pm]
    return cls(settings, log)


def rebuild(old: ProcessManager, cfg: Any, workers: int, log: Any, slots: int | None = None) -> ProcessManager:
    """The pm for reloaded settings, carrying over what ``old`` knows; ValueError (``old`` stays) when invalid."""
    new = create(cfg, workers, log, slots)
    new.adopt(old)
    return new
