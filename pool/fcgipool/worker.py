"""``FastCGIWorker``: the gunicorn worker class (sync model, one request at a time per process).

A thin adapter, like uvicorn's gunicorn worker: gunicorn's ``Worker`` does signals, heartbeat and app loading;
this class builds the worker's parts after fork and runs :class:`fcgipool.serveloop.ServeLoop`, which serves
connections (:mod:`fcgipool.server`) under the keep-conn policy (:mod:`fcgipool.keepconn`). It is also the
``Host`` a connection serves for: the app, the log, the settings, the scoreboard recorder and the watchdog.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from gunicorn.arbiter import Arbiter
from gunicorn.http.wsgi import WSGIErrorsWrapper
from gunicorn.workers import base

from . import config, slowlog, spawn
from .background import Spill
from .keepconn import KeepConnPolicy
from .recorder import Recorder
from .requestlog import RequestLog
from .serveloop import ServeLoop
from .server import FastCGIConnection
from .settings import ServerSettings
from .upkeep import Upkeep, make_spiller
from .watchdog import Watchdog

#: seconds between heartbeat updates (gunicorn's timeout check needs one at least every --timeout seconds)
HEARTBEAT_EVERY = 1.0


class FastCGIWorker(base.Worker):
    """gunicorn worker speaking FastCGI (RESPONDER) to a web server such as nginx."""

    alive: bool
    recorder: Recorder
    watchdog: Watchdog
    settings: ServerSettings
    upkeep: Upkeep
    loop: ServeLoop
    keepconn: KeepConnPolicy  # the loop's
    errors: Any = None
    request_log: RequestLog | None = None
    spill: Spill | None = None  # fcgipool.spill.Spiller (--spill-to)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # runs in the arbiter just before fork: take what the arbiter hands this worker, build nothing yet
        super().__init__(*args, **kwargs)
        self.spawn = spawn.current()
        self.scoreboard, self.slot_index = self.spawn.scoreboard, self.spawn.slot
        self._last_notify = 0.0
        self._notify_every = min(HEARTBEAT_EVERY, self.timeout / 2) if self.timeout else HEARTBEAT_EVERY

    # --- gunicorn hooks ------------------------------------------------------------------------------
    def init_process(self) -> None:
        try:
            self._build()
        except Exception:
            self.log.exception("fcgipool worker failed to start")
            sys.exit(Arbiter.WORKER_BOOT_ERROR)  # the arbiter stops rather than respawn it in a loop
        super().init_process()

    def _build(self) -> None:
        cfg, ctx = self.cfg, self.spawn
        config.load_all()  # plain ``gunicorn -k``: declares the settings its config lacks, so config.get has defaults
        kept = None
        if ctx.keeper is not None and ctx.slot is not None:
            kept = ctx.keeper.in_worker(ctx.slot)  # first: close the arbiter's copies we inherited
        self.recorder = Recorder()
        if ctx.scoreboard is not None and ctx.slot is not None:
            self.recorder = Recorder(ctx.scoreboard.slot(ctx.slot))
            slowlog.start_for_worker(self)  # a thread, started after fork: no ptrace needed to read our stack
        self.watchdog = Watchdog()
        self.settings = ServerSettings.from_config(cfg)
        self.spill = make_spiller(self) if config.get(cfg, "spill_to") else None
        path = config.get(cfg, "request_log")
        keep_query = config.get(cfg, "request_log_query")
        self.request_log = RequestLog(path, keep_query=keep_query, log=self.log) if path else None
        self.upkeep = Upkeep(self.log, max_memory_mib=config.get(cfg, "max_worker_memory"),
                             idle_limit=self.settings.timeout, request_log=self.request_log)  # fmt: skip
        self.errors = WSGIErrorsWrapper(cfg)
        self.loop = ServeLoop(self, queue=ctx.handoff, kept=kept, handoff_after=config.get(cfg, "handoff_after"),
                              check_every=self._notify_every)  # fmt: skip
        self.keepconn = self.loop.policy
        if ctx.scoreboard is None and cfg.timeout and self.settings.background_timeout > cfg.timeout:
            self.log.warning(
                "running under gunicorn's own arbiter: after-response work is killed after --timeout (%ss), "
                "not --background-timeout; start the pool with the fcgipool command",
                cfg.timeout,
            )

    def init_signals(self) -> None:
        super().init_signals()
        self.watchdog.install()
        policy = self.loop.policy
        if policy.timed:
            self.watchdog.watch_rounds(policy.handoff_after, self.loop.on_reminder)

    def handle_usr1(self, sig: int, frame: Any) -> None:
        """Reopen the logs (logrotate moved them): gunicorn's, and the request log at its next write."""
        super().handle_usr1(sig, frame)
        if self.request_log is not None:
            self.request_log.reopen()

    def handle_exit(self, sig: int, frame: Any) -> None:
        """SIGTERM (graceful stop, reload): finish, but end after-response work before graceful_timeout."""
        super().handle_exit(sig, frame)
        grace = float(self.cfg.graceful_timeout)
        margin = min(self.settings.kill_grace, grace / 2)
        self.watchdog.cap(time.monotonic() + max(grace - margin, 0.0))

    def notify(self, now: float = 0.0) -> None:
        """gunicorn's heartbeat (a utime syscall), at most every HEARTBEAT_EVERY seconds.

        The heartbeat only matters while idle: during a request PoolArbiter judges the worker by the
        deadline in its scoreboard slot. So per-request calls are cheap no-ops most of the time.
        """
        now = now or time.monotonic()
        if now - self._last_notify >= self._notify_every:
            self._last_notify = now
            super().notify()

    def is_parent_alive(self) -> bool:
        if self.ppid != os.getppid():
            self.log.info("Parent changed, shutting down: %s", self)
            return False
        return True

    def run(self) -> None:
        self.loop.run(idle_ms=int(1000 * (self.timeout or 0.5)))  # an idle worker's heartbeat

    # --- what a connection needs (fcgipool.server.Host) -----------------------------------------------
    def request_served(self) -> None:
        self.nr += 1
        if self.nr >= self.max_requests:
            if self.alive:
                self.log.info("Autorestarting worker after current request.")
            self.alive = False

    def task_lost_hook(self) -> Any:
        return config.get(self.cfg, "on_task_lost")

    def pass_on(self, conn: FastCGIConnection) -> bool:
        return self.loop.pass_on_served(conn)
