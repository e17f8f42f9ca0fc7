"""``FastCGIWorker``: the gunicorn worker class (sync model, one request at a time per process).

A thin adapter: gunicorn's ``Worker`` does signals, heartbeat and app loading; this class adds the accept
loop with the keep-conn policy and hands each connection to :mod:`fcgipool.server`.

Keep-conn policy (no request ever waits in the listen queue while a worker idles on a kept connection):
a worker holds at most one idle kept connection and waits on it together with the listeners. A request on
the kept connection is served. When a listener is readable the worker first peeks at its kept connection:
if a request is there it serves that (another idle worker takes the new connection); otherwise it accepts
and, only if the accept succeeded, gives up the kept connection and serves the new one.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from typing import Any

from gunicorn import util
from gunicorn.http.wsgi import WSGIErrorsWrapper
from gunicorn.workers import base

from . import config, slowlog
from .protocol import FCGI_MAX_CONNS, FCGI_MAX_REQS
from .recorder import Recorder
from .server import FastCGIConnection, ServerSettings
from .watchdog import Watchdog

#: keep-conn fairness (see FastCGIWorker.should_yield): requests served on a kept connection, or seconds,
#: while a new connection waits in the listen queue, before the kept connection is given up
YIELD_AFTER = 4
YIELD_WAIT = 0.02
#: seconds between heartbeat updates (gunicorn's timeout check needs one at least every --timeout seconds)
HEARTBEAT_EVERY = 1.0


def _has_data(sock: socket.socket) -> bool:
    """Non-blocking peek: a request (or EOF) is waiting on an idle kept connection."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)  # b"" (EOF) counts too: serving it closes it
        return True
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True  # reset or similar: serving it will notice and close it


class FastCGIWorker(base.Worker):
    """gunicorn worker speaking FastCGI (RESPONDER) to a web server such as nginx."""

    alive: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # runs in the arbiter before fork: remember our scoreboard slot, nothing process-wide
        super().__init__(*args, **kwargs)
        from .arbiter import spawn_context

        self.scoreboard, self.slot_index = spawn_context()
        self.kept: FastCGIConnection | None = None
        self.recorder = Recorder()
        self.watchdog = Watchdog()
        self.settings = ServerSettings()
        self.errors: Any = None
        self._last_notify = 0.0
        self._notify_every = min(HEARTBEAT_EVERY, self.timeout / 2) if self.timeout else HEARTBEAT_EVERY
        self._listen_poll = select.poll()
        self._queue_seen = 0.0
        self._queue_streak = 0

    # --- gunicorn hooks ------------------------------------------------------------------------------
    def init_process(self) -> None:
        cfg = self.cfg
        if self.scoreboard is not None and self.slot_index is not None:
            self.recorder = Recorder(self.scoreboard.slot(self.slot_index))
            slowlog.start_for_worker(self)  # a thread, started after fork: no ptrace needed to read our stack
        # FCGI_MAX_CONNS/MAX_REQS: the most workers this pool may run (dynamic/ondemand: pm_max_children)
        most = cfg.workers if config.get(cfg, "pm") == "static" else config.get(cfg, "pm_max_children") or cfg.workers
        workers = str(max(1, most))
        self.settings = ServerSettings(
            timeout=float(cfg.timeout),
            background_timeout=config.get(cfg, "background_timeout"),
            kill_grace=config.get(cfg, "kill_grace"),
            max_params_size=config.get(cfg, "max_params_size"),
            max_body_size=config.get(cfg, "max_body_size"),
            keep_conn=config.get(cfg, "keep_conn") == "allow",
            buffer_size=config.get(cfg, "output_buffer_size"),
            stop_on_error=config.get(cfg, "background_stop_on_error"),
            only_on_success=config.get(cfg, "background_only_on_success"),
            values={FCGI_MAX_CONNS: workers, FCGI_MAX_REQS: workers},
        )
        self.errors = WSGIErrorsWrapper(cfg)
        if self.scoreboard is None and cfg.timeout and self.settings.background_timeout > cfg.timeout:
            self.log.warning(
                "running under gunicorn's own arbiter: after-response work is killed after --timeout (%ss), "
                "not --background-timeout; start the pool with the fcgipool command",
                cfg.timeout,
            )
        super().init_process()

    def init_signals(self) -> None:
        super().init_signals()
        self.watchdog.install()

    def handle_exit(self, sig: int, frame: Any) -> None:
        """SIGTERM (graceful stop, reload): finish, but end after-response work before graceful_timeout."""
        super().handle_exit(sig, frame)
        grace = float(self.cfg.graceful_timeout)
        margin = min(self.settings.kill_grace, grace / 2)
        self.watchdog.cap(time.monotonic() + max(grace - margin, 0.0))

    def notify(self) -> None:
        """gunicorn's heartbeat (a utime syscall), at most every HEARTBEAT_EVERY seconds.

        The heartbeat only matters while idle: during a request PoolArbiter judges the worker by the
        deadline in its scoreboard slot. So per-request calls are cheap no-ops most of the time.
        """
        now = time.monotonic()
        if now - self._last_notify >= self._notify_every:
            self._last_notify = now
            super().notify()

    # --- what the server needs -----------------------------------------------------------------------
    def request_served(self) -> None:
        self.nr += 1
        if self.nr >= self.max_requests:
            if self.alive:
                self.log.info("Autorestarting worker after current request.")
            self.alive = False

    def task_lost_hook(self) -> Any:
        return config.get(self.cfg, "on_task_lost")

    def should_yield(self) -> bool:
        """Fairness for keep-conn: called when a request on a kept connection ends.

        While the web server keeps this worker busy through its kept connection, connections in the listen
        queue would wait for as long as that lasts. Once one has been waiting for YIELD_AFTER requests or
        YIELD_WAIT seconds, the worker ends the kept connection cleanly (the web server is told not to
        cache it, see fcgipool.server.NO_REUSE) and takes the waiting one next.
        """
        if not self._listen_poll.poll(0):
            self._queue_seen = 0.0
            self._queue_streak = 0
            return False
        now = time.monotonic()
        if not self._queue_seen:
            self._queue_seen = now
        self._queue_streak += 1
        if self._queue_streak >= YIELD_AFTER or now - self._queue_seen >= YIELD_WAIT:
            self._queue_seen = 0.0
            self._queue_streak = 0
            return True
        return False

    # --- main loop ------------------------------------------------------------------------------------
    def is_parent_alive(self) -> bool:
        if self.ppid != os.getppid():
            self.log.info("Parent changed, shutting down: %s", self)
            return False
        return True

    def run(self) -> None:
        timeout = self.timeout or 0.5
        for s in self.sockets:
            s.setblocking(False)
            self._listen_poll.register(s, select.POLLIN)
        try:
            while self.alive:
                self.notify()
                kept = self.kept
                if kept is not None and kept.has_buffered_request:
                    self._serve(kept, fresh=False)
                    continue
                if not self.is_parent_alive():
                    break
                fds: list[Any] = [*self.sockets, self.PIPE[0]]
                if kept is not None:
                    fds.append(kept)
                try:
                    ready = select.select(fds, [], [], timeout)[0]
                except OSError as exc:
                    if exc.errno in (errno.EINTR, errno.EBADF) and not self.alive:
                        break
                    if exc.errno == errno.EINTR:
                        continue
                    raise
                if not ready:
                    continue
                if self.PIPE[0] in ready:
                    self._drain_pipe()
                if kept is not None and kept in ready:
                    self._serve(kept, fresh=False)
                    continue
                for listener in self.sockets:
                    if listener in ready and self._accept(listener):
                        break
        finally:
            self.recorder.ending()
            if self.kept is not None:
                self.kept.close()
                self.kept = None

    def _drain_pipe(self) -> None:
        try:
            while os.read(self.PIPE[0], 64):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _accept(self, listener: Any) -> bool:
        kept = self.kept
        if kept is not None and _has_data(kept.sock):
            self._serve(kept, fresh=False)  # the web server reused our connection: serve that first
            return True
        try:
            client, addr = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return False  # another worker was faster
        util.close_on_exec(client)
        self.recorder.accepted()
        if kept is not None:
            if _has_data(kept.sock):  # a request arrived between the peek and the accept: serve it, then
                kept.give_up = True  # end that connection with the no-reuse marker instead of a racy close
                self._serve(kept, fresh=False)
            if self.kept is not None:
                self.kept.close()
                self.kept = None
        self._serve(FastCGIConnection(client, addr, self), fresh=True)
        return True

    def _serve(self, connection: FastCGIConnection, *, fresh: bool) -> None:
        keep = connection.serve(fresh=fresh)
        self.notify()
        self.recorder.deadline(0.0)  # idle: back to gunicorn's heartbeat
        self.recorder.idle()
        if keep and self.alive:
            if self.kept is not None and self.kept is not connection:
                self.kept.close()
            self.kept = connection
        else:
            connection.close()
            if self.kept is connection:
                self.kept = None
