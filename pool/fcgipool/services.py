"""What the arbiter calls: pool monitor + status listener + process manager, wired together.

The arbiter (``fcgipool.arbiter.PoolArbiter``) makes these calls, so the logic stays here:

* ``PoolServices(arbiter, scoreboard)`` in ``start()`` (raises ``RuntimeError`` saying what to change when
  the pm settings contradict each other; gunicorn prints it and exits 1),
* ``services.start()`` before the first ``manage_workers()`` (sets the initial worker count, starts the
  status thread),
* ``services.manage_workers()`` at the top of ``manage_workers()``: True means it was handled,
* ``services.before_reload()`` at the top of ``reload()``, ``services.reload_pm()`` once ``reload()`` has
  re-read the config (before the new generation is spawned), and ``services.stop()`` on halt.
"""

from __future__ import annotations

from typing import Any

from . import config, speedups
from . import pm as pm_mod
from .scoreboard import Scoreboard
from .spill.flags import PoolFlags
from .spill.target import RQTarget
from .spill.watch import SpillWatch
from .status.listener import StatusServer
from .status.monitor import PoolMonitor

__all__ = ["PoolServices"]


class PoolServices:
    def __init__(self, arbiter: Any, scoreboard: Scoreboard, flags: PoolFlags | None = None) -> None:
        cfg = arbiter.cfg
        self.arbiter = arbiter
        self.scoreboard = scoreboard
        self.spill = _spill_watch(cfg, flags, arbiter.log) if flags is not None else None
        try:
            self.pm = pm_mod.create(cfg, arbiter.num_workers, arbiter.log, scoreboard.size)
        except ValueError as exc:
            raise RuntimeError(f"invalid process manager settings: {exc}") from exc
        self.monitor = PoolMonitor(
            scoreboard,
            lambda: arbiter.LISTENERS,
            pool=config.get(cfg, "pool_name"),
            process_manager=lambda: self.pm.name,
            max_children=lambda: self.pm.max_children(arbiter),
            log=arbiter.log,
            kept_waiting=arbiter.kept_waiting,
            extra_fields=self.spill.fields if self.spill is not None else None,
        )
        self.pm.monitor = self.monitor
        self.server = StatusServer.from_config(cfg, self.monitor, on_sample=self._on_sample, log=arbiter.log)

    def _on_sample(self, status: Any) -> None:
        self.pm.on_sample(status, self.arbiter)
        if self.spill is not None:
            self.spill.on_sample(status)

    def start(self) -> None:
        # a pool without its C parts (no compiler where it was installed) spends more CPU per request: say so
        (self.arbiter.log.info if speedups.all_built() else self.arbiter.log.warning)(speedups.describe())
        self.arbiter.num_workers = self.pm.initial_workers(self.arbiter)
        self.server.start()

    def manage_workers(self) -> bool:
        return self.pm.manage(self.arbiter)

    def before_reload(self) -> None:
        self.pm.before_reload(self.arbiter)

    def reload_pm(self) -> bool:
        """HUP re-read the config: a new pm from its settings, or the old one kept (logged) when they are invalid.

        Same checks as at start. The status thread reads ``self.pm`` at any time, so the new pm is complete
        (settings, monitor, reload floor) before one assignment swaps it in. Status settings (listener,
        paths, pool name, scoreboard size) stay as read at start.
        """
        arbiter, old = self.arbiter, self.pm
        try:
            new = pm_mod.rebuild(old, arbiter.cfg, arbiter.cfg.workers, arbiter.log, self.scoreboard.size)
        except ValueError as exc:
            arbiter.log.error("reload: invalid process manager settings: %s; keeping pm %s as it was "
                              "(fix the config and send HUP again)", exc, old.name)  # fmt: skip
            return False
        self.pm = new
        if (old.name, old.settings) != (new.name, new.settings):
            changed = new.settings.changed(old.settings)
            arbiter.log.info("reload: pm %s -> %s (%s)", old.name, new.name,
                             ", ".join(f"{k}={v}" for k, v in changed.items()))  # fmt: skip
        return True

    def stop(self) -> None:
        self.server.stop()


def _spill_watch(cfg: Any, flags: PoolFlags, log: Any) -> SpillWatch | None:
    """The arbiter's spill watch when spill_to is set (RuntimeError, before any fork, when RQ is missing)."""
    url = config.get(cfg, "spill_to")
    if not url:
        return None
    target = RQTarget(url, config.get(cfg, "spill_queue"))
    log.info("Spill to %s when %s", target.describe(), ", ".join(config.get(cfg, "spill_when")) or "never")
    return SpillWatch(flags, config.get(cfg, "spill_threshold"), target, log)
