"""``FastCGIWorker``: the gunicorn worker class (sync model, one request at a time per process).

A thin adapter: gunicorn's ``Worker`` does signals, heartbeat and app loading; this class adds the accept
loop with the keep-conn policy and hands each connection to :mod:`fcgipool.server`.

Keep-conn policy (docs/server-behaviour.md): no request waits on a connection held by a busy worker for
longer than ``handoff_after`` while another worker idles, and no connection the web server may reuse is ever
closed by us while the pool runs. A worker waits on the listeners, the pool's hand-off queue
(:mod:`fcgipool.handoff`) and the idle kept connections it holds (at most MAX_HELD), and serves everything
one ``poll`` reports ready, in turn. While it serves one request its other connections stay with it -- the
fast path under load, where every connection gets its next request before a worker could pick it up -- but
once that request has run for ``handoff_after`` (a timer), or as soon as after-response work starts, it
gives them to the queue, where any idle worker takes them; so does a worker that exits. Under plain
gunicorn (no queue) a worker holds one kept connection and closes it when it takes a new one, after serving
a request that is already waiting on it.
"""

from __future__ import annotations

import os
import select
import socket
import time
from typing import Any

from gunicorn.http.wsgi import WSGIErrorsWrapper
from gunicorn.workers import base

from . import config, slowlog
from .background import Spill
from .handoff import HandoffQueue, readable_bytes
from .keeper import KeptConns
from .recorder import Recorder
from .requestlog import RequestLog
from .server import FastCGIConnection
from .settings import ServerSettings
from .upkeep import Upkeep, make_spiller
from .watchdog import Watchdog

#: keep-conn fairness without a hand-off queue (see FastCGIWorker.should_yield): requests served on a kept
#: connection, or seconds, while a new connection waits in the listen queue, before it is given up
YIELD_AFTER = 4
YIELD_WAIT = 0.02
#: idle kept connections one worker holds at most; past it the one idle longest is closed (the only close of
#: a reusable connection while the pool runs: keep nginx's keepalive x worker_processes below workers x this)
MAX_HELD = 64
#: seconds between heartbeat updates (gunicorn's timeout check needs one at least every --timeout seconds)
HEARTBEAT_EVERY = 1.0


def _has_data(sock: socket.socket) -> bool:
    """A request is waiting on an idle connection. EOF or a reset reads as "no": poll() reports those at once;
    an error as "yes": serving it will notice what is wrong and close it."""
    return readable_bytes(sock) != 0


class FastCGIWorker(base.Worker):
    """gunicorn worker speaking FastCGI (RESPONDER) to a web server such as nginx."""

    alive: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # runs in the arbiter before fork: remember our scoreboard slot and the pool's queue, nothing else
        super().__init__(*args, **kwargs)
        from .arbiter import handoff_queue, keeper, spawn_context

        self.scoreboard, self.slot_index = spawn_context()
        self.handoff: HandoffQueue | None = handoff_queue()
        self._keeper = keeper()
        self.kept: KeptConns | None = None  # our row of the keeper's table (set after fork)
        self.held: dict[int, FastCGIConnection] = {}  # fd -> idle kept connection, oldest first
        self.evicted = 0  # idle connections closed because MAX_HELD was reached
        self.recorder = Recorder()
        self.request_log: RequestLog | None = None
        self.spill: Spill | None = None  # fcgipool.spill.Spiller (--spill-to), made after fork
        self.watchdog = Watchdog()
        self.settings = ServerSettings()
        self.errors: Any = None
        self._last_notify = 0.0
        self._next_parent_check = 0.0
        self._notify_every = min(HEARTBEAT_EVERY, self.timeout / 2) if self.timeout else HEARTBEAT_EVERY
        self._poll = select.poll()  # listeners, queue, PIPE and the held connections: registered once each
        self._waiting_poll = select.poll()  # listeners and queue: is anyone waiting for a worker?
        self._queue_seen = 0.0
        self._queue_streak = 0
        self._handoff_after = 0.0
        self.upkeep = Upkeep(None)  # memory limit, silent connections, request log (set in init_process)
        self._in_request = False  # inside FastCGIConnection.serve: the held connections are not being touched
        self._handoff_due = False  # handoff_after passed between two requests of a round: pass on before the next
        self._in_round = False  # serving what one poll reported ready
        self._round_wanted = False  # this round asked the clock thread for its reminder

    # --- gunicorn hooks ------------------------------------------------------------------------------
    def init_process(self) -> None:
        cfg = self.cfg
        if self._keeper is not None and self.slot_index is not None:
            self.kept = self._keeper.in_worker(self.slot_index)  # first: close the arbiter's copies we inherited
        if self.scoreboard is not None and self.slot_index is not None:
            self.recorder = Recorder(self.scoreboard.slot(self.slot_index))
            slowlog.start_for_worker(self)  # a thread, started after fork: no ptrace needed to read our stack
        self.settings = ServerSettings.from_config(cfg)
        self.spill = make_spiller(self) if config.get(cfg, "spill_to") else None
        path = config.get(cfg, "request_log")
        keep_query = config.get(cfg, "request_log_query")
        self.request_log = RequestLog(path, keep_query=keep_query, log=self.log) if path else None
        self.upkeep = Upkeep(self.log, max_memory_mib=config.get(cfg, "max_worker_memory"),
                             idle_limit=self.settings.timeout, request_log=self.request_log)  # fmt: skip
        self._handoff_after = config.get(cfg, "handoff_after")
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
        if self.handoff is not None and self._handoff_after:
            self.watchdog.watch_rounds(self._handoff_after, self._on_handoff_timer)

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

    # --- what the server needs -----------------------------------------------------------------------
    def request_served(self) -> None:
        self.nr += 1
        if self.nr >= self.max_requests:
            if self.alive:
                self.log.info("Autorestarting worker after current request.")
            self.alive = False

    def task_lost_hook(self) -> Any:
        return config.get(self.cfg, "on_task_lost")

    def long_work_ahead(self) -> None:
        """After-response work starts: nobody may wait on an idle connection we hold meanwhile."""
        if self._in_request and self.handoff is not None:
            self._let_go_others(None)

    @property
    def passes_on(self) -> bool:
        return self.handoff is not None

    def pass_on(self, conn: FastCGIConnection) -> bool:
        """The connection of a request whose after-response work starts now, to the hand-off queue: the web
        server may send its next request on it at once (Apache, HAProxy and nginx reuse it), and another worker
        serves that. Closing it instead would race with that reuse (docs/server-behaviour.md)."""
        queue = self.handoff
        if queue is None or not conn.reusable:
            return False
        kept, inode = self.kept, conn.inode
        if kept is not None and inode:
            kept.serving(0)  # unlisted before it is passed on (as in _serve)
        if not queue.give(conn.sock, conn.io_timeout_ms, inode):
            return False
        conn.release()  # our descriptor only: the socket stays open in the queue
        return True

    def should_yield(self) -> bool:
        """Fairness for keep-conn without a hand-off queue: called when a request on a kept connection ends.

        (With the queue the main loop serves everything one poll reports ready in turn: a new connection
        waits for one round at most.) While the web server keeps this worker busy through its kept
        connection, connections in the listen queue would wait for as long as that lasts. Once one has been
        waiting for YIELD_AFTER requests or YIELD_WAIT seconds, the kept connection is ended with the
        no-reuse marker (see fcgipool.server.NO_REUSE) and the waiting one taken next.
        """
        if self.handoff is not None or not self._waiting_poll.poll(0):
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
        timeout_ms = int(1000 * (self.timeout or 0.5))  # an idle worker's heartbeat (or its upkeep, below)
        queue = self.handoff
        for s in self.sockets:
            s.setblocking(False)
            self._poll.register(s, select.POLLIN)
            self._waiting_poll.register(s, select.POLLIN)
        self._poll.register(self.PIPE[0], select.POLLIN)
        queue_fd = -1
        if queue is not None:
            queue_fd = queue.fileno()
            self._poll.register(queue_fd, select.POLLIN)
            self._waiting_poll.register(queue_fd, select.POLLIN)
        listeners = {s.fileno(): s for s in self.sockets}
        try:
            recorder = self.recorder
            while self.alive:
                # no clock read of its own under load: the last request's END_REQUEST read is "now" (it was
                # microseconds ago); after a wait the clock is read once, and the next request starts from it
                now = recorder.now
                self.notify(now)
                if now >= self._next_parent_check:  # getppid once a second, not once a request
                    self._next_parent_check = now + self._notify_every
                    if not self.is_parent_alive():
                        break
                    silent, recycle = self.upkeep.every_second(now, self.held.values())
                    for conn in silent:
                        self._unhold(conn)
                        conn.close()
                    if recycle:
                        self.alive = False
                events = self._poll.poll(0)  # under load something is ready: no wait, so no clock read
                if not events:
                    try:
                        events = self._poll.poll(self.upkeep.poll_ms(timeout_ms))
                    finally:
                        recorder.now = time.monotonic()
                    if not events:
                        continue
                pipe = self.PIPE[0]
                if any(fd == pipe for fd, _ in events):
                    self._drain_pipe()
                # everything ready, in turn: a held connection is served (if another worker has not been given
                # it meanwhile), a listener or the queue yields one connection per round
                self._in_round = True
                self._round_wanted = False
                self.watchdog.round_begins()
                self._time_round()  # one reminder per round, not per request: see _on_handoff_timer
                # which connection each ready fd was at poll time: serving one request can close a connection or
                # pass it on, and a connection accepted or taken later in the round may get the same fd number
                held = self.held
                ready = [(fd, ev, held.get(fd)) for fd, ev in events]
                try:
                    for fd, ev, conn in ready:
                        if not self.alive:
                            break
                        if conn is not None:
                            if held.get(fd) is not conn:
                                continue  # passed on or closed since the poll
                            if ev & select.POLLHUP and not _has_data(conn.sock):
                                self._unhold(conn)  # the web server closed it (unix sockets say so): no serve
                                conn.close()
                            else:
                                self._serve(conn, fresh=False)
                        elif fd == queue_fd:
                            self._take()
                        elif fd in listeners:
                            self._accept(listeners[fd])
                finally:
                    self._in_round = False
                    self.watchdog.round_ends()
                    self._handoff_due = False  # idle again: we watch what we hold ourselves
        finally:
            self.recorder.ending()
            self.upkeep.close()
            for conn in list(self.held.values()):
                self._let_go(conn, serve_waiting=False)
            if queue is not None:
                self.log.debug(
                    "hand-off queue: %d idle connections passed on, %d taken, %d could not be passed on, "
                    "%d closed past MAX_HELD",
                    queue.given,
                    queue.taken,
                    queue.failed,
                    self.evicted,
                )

    def _drain_pipe(self) -> None:
        try:
            while os.read(self.PIPE[0], 64):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    # --- holding and passing on idle connections ---------------------------------------------------------
    def _hold(self, conn: FastCGIConnection) -> None:
        if len(self.held) >= MAX_HELD:
            oldest = next(iter(self.held.values()))
            self._unhold(oldest)
            oldest.close()  # idle longest: the one nginx is least likely to pick (its cache is LIFO)
            self.evicted += 1
            self.log.debug("holding %d idle connections: closed the oldest", MAX_HELD)
        self._list(conn)
        fd = conn.fileno()
        self.held[fd] = conn
        self._poll.register(fd, select.POLLIN)
        self._time_round()

    def _list(self, conn: FastCGIConnection) -> None:
        """Idle in our hands: in our keeper row (a first-time kept connection gets its keeper copy now)."""
        kept = self.kept
        if kept is None or conn.idle_since:
            return  # no keeper, or a connection that never sent a request: nginx does not wait on it
        if not conn.inode:
            conn.inode = kept.copy(conn.sock, conn.io_timeout_ms)
        else:
            kept.hold(conn.inode, rescuable=conn.reusable)

    def _time_round(self) -> None:
        """Within a round, whenever we hold a connection: the clock thread must remind us after handoff_after."""
        if self._in_round and self.held and self.handoff is not None and self._handoff_after:
            self._round_wanted = True
            self.watchdog.want_reminder()

    def _unhold(self, conn: FastCGIConnection) -> None:
        fd = conn.fileno()
        if self.held.get(fd) is not conn:  # not held, or closed already (fileno -1): look for it
            fd = next((held_fd for held_fd, held in self.held.items() if held is conn), -1)
            if fd < 0:
                return
        del self.held[fd]
        self._poll.unregister(fd)
        if conn.inode and self.kept is not None:
            self.kept.unhold(conn.inode)

    def _let_go(self, conn: FastCGIConnection, *, serve_waiting: bool = True) -> None:
        """Pass an idle connection to another worker; close it only when that cannot be done."""
        self._unhold(conn)
        queue = self.handoff
        if queue is not None and conn.reusable and queue.give(conn.sock, conn.io_timeout_ms, conn.inode,
                                                              conn.idle_since):  # fmt: skip
            conn.release()  # our descriptor only: the socket stays open in the queue
            return
        if queue is not None:
            self.log.debug("could not pass on an idle connection (queue full or not at a request boundary)")
        elif serve_waiting and not conn.closed and _has_data(conn.sock):
            # plain gunicorn: a request already sent on it is served first and ends it with the no-reuse marker
            conn.give_up = True
            conn.serve(fresh=False)
            self._after_serve()
        conn.close()  # the close race (docs/server-behaviour.md): only without a queue, or when it is full

    def _let_go_others(self, keep: FastCGIConnection | None) -> None:
        """We are about to be busy: nobody may wait on an idle connection we hold meanwhile."""
        for conn in list(self.held.values()):
            if conn is not keep:
                self._let_go(conn)

    def _on_handoff_timer(self) -> None:
        """This round of requests has kept the worker busy for ``handoff_after``: pass on what we hold.

        Runs from the SIGALRM handler, between two bytecodes. Inside a request the main loop does not touch the
        held connections, so they are passed on at once; between two requests it is left to the next
        :meth:`_serve`. One reminder per request for it (a long request does not get a signal every
        ``handoff_after``): :meth:`_time_round` asks again when the round holds a connection again.
        """
        self._round_wanted = False
        if self._in_request:
            self._let_go_others(None)
        else:
            self._handoff_due = True

    def _take(self) -> bool:
        """A connection from the hand-off queue: served if a request waits on it, else held."""
        assert self.handoff is not None
        taken = self.handoff.take()
        if taken is None:
            return False  # another worker was faster
        sock, timeout_ms, inode, idle_since = taken
        conn = FastCGIConnection(sock, None, self, configured=timeout_ms == int(self.settings.timeout * 1000))
        conn.inode, conn.idle_since = inode, idle_since
        if _has_data(sock):
            self._serve(conn, fresh=False)
        else:
            self._hold(conn)
        return True

    def _accept(self, listener: Any) -> bool:
        try:
            client, addr = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return False  # another worker was faster
        # no close_on_exec(): Python's accept() uses accept4(SOCK_CLOEXEC), the socket is non-inheritable already
        self.recorder.accepted()
        self._serve(FastCGIConnection(client, addr, self), fresh=True)
        return True

    def _serve(self, connection: FastCGIConnection, *, fresh: bool) -> None:
        fd = connection.fileno()
        kept, inode = self.kept, connection.inode
        registered = self.held.get(fd) is connection  # stays registered with poll while it is served
        if kept is not None and inode:
            kept.take_up(inode)  # current before it leaves the held list: if we die it is never passed on
        if registered:
            del self.held[fd]
        if self.held and (self._handoff_due or self.handoff is None or not self._handoff_after):
            self._handoff_due = False
            self._let_go_others(connection)
        self._in_request = True
        try:
            keep = connection.serve(fresh=fresh)
        finally:
            self._in_request = False
        self._after_serve()
        if keep and self.alive:
            if registered:
                if kept is not None and inode and not connection.idle_since:
                    kept.put_down(inode, rescuable=connection.reusable)  # held, then no longer current
                else:
                    self._list(connection)
                    if kept is not None and inode:
                        kept.serving(0)
                self.held[fd] = connection  # back in, as the newest
                if self._in_round and not self._round_wanted:
                    self._time_round()
                return
            self._hold(connection)
            if kept is not None and inode:
                kept.serving(0)
            return
        if registered:
            self._poll.unregister(fd)
        if kept is not None and inode:
            kept.serving(0)  # unlisted before it is passed on (or closed: shut down, so nginx sees the end)
        if keep:
            self._let_go(connection, serve_waiting=False)
        else:
            connection.close()

    def _after_serve(self) -> None:
        # idle, and no deadline: back to gunicorn's heartbeat (sent once per poll round, by the main loop); a
        # request without after-response work already said so in its last scoreboard write
        self.recorder.idle()
        if self.upkeep.after_request(self.recorder.rss) and self.alive:
            self.alive = False
