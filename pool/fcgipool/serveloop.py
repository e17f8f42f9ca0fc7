"""The worker's main loop: waits for connections, serves them, and carries out the keep-conn policy.

A worker waits (one ``poll``) on the listeners, the pool's hand-off queue (:mod:`fcgipool.handoff`) and the
idle kept connections it holds, and serves everything one ``poll`` reports ready, in turn (a round): a held
connection with a request on it, one new connection per ready listener, one connection from the queue
(served if a request waits on it, else held). What happens to the connections it holds is decided by
:class:`fcgipool.keepconn.KeepConnPolicy`; this module does the I/O: poll registration, the keeper's row
(:mod:`fcgipool.keeper`), giving connections to the queue, closing them.
"""

from __future__ import annotations

import os
import select
from typing import Any, Protocol

from .handoff import HandoffQueue, readable_bytes
from .keepconn import MAX_HELD, Action, KeepConnPolicy
from .keeper import KeptConns
from .server import FastCGIConnection, Host
from .upkeep import Upkeep

_HOLD, _PASS_ON, _SERVE_LAST = Action.HOLD, Action.PASS_ON, Action.SERVE_LAST  # globals: see fcgipool.keepconn


class Worker(Host, Protocol):
    """What the loop needs from its gunicorn worker besides what a connection needs (fcgipool.server.Host)."""

    sockets: list[Any]
    PIPE: Any  # gunicorn's self-pipe: (read fd, write fd)
    upkeep: Upkeep

    def notify(self, now: float = 0.0) -> None: ...

    def is_parent_alive(self) -> bool: ...


def _has_data(sock: Any) -> bool:
    """A request is waiting on an idle connection. EOF or a reset reads as "no": poll() reports those at once;
    an error as "yes": serving it will notice what is wrong and close it."""
    return readable_bytes(sock) != 0


class ServeLoop:
    def __init__(self, worker: Worker, *, queue: HandoffQueue | None, kept: KeptConns | None, handoff_after: float,
                 check_every: float) -> None:  # fmt: skip
        self.worker = worker
        self.queue = queue
        self.kept = kept  # our row of the keeper's table
        self.policy = KeepConnPolicy(queue=queue is not None, handoff_after=handoff_after)
        self.held: dict[int, FastCGIConnection] = {}  # fd -> idle kept connection, oldest first
        self.evicted = 0  # idle connections closed because MAX_HELD was reached
        self.check_every = check_every  # seconds between the parent check and the upkeep's chores
        self._next_check = 0.0
        self._poll = select.poll()  # listeners, queue, PIPE and the held connections: registered once each
        self._waiting = select.poll()  # no queue: listeners only, is a new connection waiting for a worker?
        self._pipe = -1
        self._chores = worker.upkeep.after_each  # something to check after each request (a memory limit)

    def on_reminder(self) -> None:
        """The clock thread's reminder (from the SIGALRM handler, between two bytecodes; or at once when
        after-response work starts, fcgipool.watchdog): inside a request nothing else touches what we hold."""
        if self.policy.reminder():
            self._let_go_all(stopping=False)

    # --- the loop ----------------------------------------------------------------------------------------
    def run(self, idle_ms: int) -> None:
        """Serve until the worker stops; ``idle_ms``: the longest wait (an idle worker's heartbeat)."""
        worker, queue = self.worker, self.queue
        for s in worker.sockets:
            s.setblocking(False)
            self._poll.register(s, select.POLLIN)
            self._waiting.register(s, select.POLLIN)
        self._pipe = worker.PIPE[0]
        self._poll.register(self._pipe, select.POLLIN)
        queue_fd = -1
        if queue is not None:
            queue_fd = queue.fileno()
            self._poll.register(queue_fd, select.POLLIN)
        listeners = {s.fileno(): s for s in worker.sockets}
        recorder, upkeep = worker.recorder, worker.upkeep
        try:
            while worker.alive:
                # no clock read of its own under load: the last request's END_REQUEST read is "now" (it was
                # microseconds ago); after a wait the clock is read once, and the next request starts from it
                now = recorder.now
                worker.notify(now)
                if now >= self._next_check:  # getppid once a second, not once a request
                    self._next_check = now + self.check_every
                    if not worker.is_parent_alive():
                        break
                    self._every_second(now)
                events = self._poll.poll(0)  # under load something is ready: no wait, so no clock read
                if not events:
                    try:
                        events = self._poll.poll(upkeep.poll_ms(idle_ms))
                    finally:
                        recorder.woke()
                    if not events:
                        continue
                self._round(events, queue_fd, listeners)
        finally:
            recorder.ending()
            upkeep.close()
            for conn in list(self.held.values()):
                self._let_go(conn, stopping=True)
            if queue is not None:
                worker.log.debug(
                    "hand-off queue: %d idle connections passed on, %d taken, %d could not be passed on, "
                    "%d closed past MAX_HELD", queue.given, queue.taken, queue.failed, self.evicted,
                )  # fmt: skip

    def _round(self, events: list[tuple[int, int]], queue_fd: int, listeners: dict[int, Any]) -> None:
        """Everything one poll reported ready, in turn: a held connection is served (unless it was passed on or
        closed meanwhile), a listener or the queue yields one connection."""
        worker, watchdog, held = self.worker, self.worker.watchdog, self.held
        watchdog.round_begins()
        if self.policy.round_begins(len(held)):  # one reminder per round, not per request
            watchdog.want_reminder()
        # which connection each ready fd was at poll time: serving one request can close a connection or pass it
        # on, and a connection accepted or taken later in the round may get the same fd number
        ready = [(fd, ev, held.get(fd)) for fd, ev in events]
        try:
            for fd, ev, conn in ready:
                if not worker.alive:
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
                elif fd == self._pipe:
                    _drain(fd)  # gunicorn's self-pipe: a signal woke us (the handler has done its part)
        finally:
            self.policy.round_ends()
            watchdog.round_ends()

    def _every_second(self, now: float) -> None:
        silent, recycle = self.worker.upkeep.every_second(now, self.held.values())
        for conn in silent:
            self._unhold(conn)
            conn.close()
        if recycle:
            self.worker.alive = False

    # --- new connections ---------------------------------------------------------------------------------
    def _take(self) -> None:
        """A connection from the hand-off queue: served if a request waits on it, else held."""
        assert self.queue is not None
        taken = self.queue.take()
        if taken is None:
            return  # another worker was faster
        sock, timeout_ms, inode, idle_since = taken
        worker = self.worker
        conn = FastCGIConnection(sock, None, worker, configured=timeout_ms == int(worker.settings.timeout * 1000))
        conn.inode, conn.idle_since = inode, idle_since
        if _has_data(sock):
            self._serve(conn, fresh=False)
        else:
            self._hold(conn)

    def _accept(self, listener: Any) -> None:
        try:
            client, addr = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another worker was faster
        # no close_on_exec(): Python's accept() uses accept4(SOCK_CLOEXEC), the socket is non-inheritable already
        self.worker.recorder.accepted()
        self._serve(FastCGIConnection(client, addr, self.worker), fresh=True)

    # --- serving -----------------------------------------------------------------------------------------
    def _serve(self, connection: FastCGIConnection, *, fresh: bool, last: bool = False) -> None:
        """Serve ``connection``, then carry out the policy's word on it. ``last``: it is being let go of (no
        queue): the request already on it is its last."""
        worker, policy, held = self.worker, self.policy, self.held
        fd = connection.fileno()
        kept, inode = self.kept, connection.inode
        registered = held.get(fd) is connection  # stays registered with poll while it is served
        if kept is not None and inode:
            kept.take_up(inode)  # current (and still listed): if we die it is shut down, never passed on
        if registered:
            del held[fd]
        if last:
            connection.give_up = True
            policy.serving(0)
        else:
            if policy.serving(len(held)):
                self._let_go_all(stopping=False)
                policy.serving(len(held))
            # no queue: a kept connection served again may have to make way for one in the listen queue
            if not fresh and not policy.queue and policy.give_up(bool(self._waiting.poll(0)), worker.recorder.now):
                connection.give_up = True
        outcome = connection.serve(fresh=fresh)
        # idle, and no deadline: back to gunicorn's heartbeat (sent once per poll round, by the loop); a request
        # without after-response work already said so in its last scoreboard write
        recorder = worker.recorder
        recorder.idle()
        if self._chores and worker.upkeep.after_request(recorder.rss) and worker.alive:
            worker.alive = False
        action = policy.served(outcome, worker.alive)
        if last:
            connection.close()
        elif action is _HOLD:
            if not registered:
                self._hold(connection)
                if kept is not None and inode:
                    kept.serving(0)
                return
            if kept is not None and inode and not connection.idle_since:
                kept.put_down(inode, rescuable=connection.reusable)  # held, then no longer current
            else:
                self._list(connection)
                if kept is not None and inode:
                    kept.serving(0)
            held[fd] = connection  # back in, as the newest
            if policy.holding():
                worker.watchdog.want_reminder()
        else:
            if registered:
                self._poll.unregister(fd)
            if kept is not None and inode:
                kept.leave(inode)  # unlisted before it is passed on (or closed: shut down, so nginx sees the end)
            if action is _PASS_ON:
                self._pass_on(connection)
            else:
                connection.close()

    # --- holding and letting go ----------------------------------------------------------------------------
    def _hold(self, conn: FastCGIConnection) -> None:
        held = self.held
        if self.policy.must_evict(len(held)):
            oldest = next(iter(held.values()))
            self._unhold(oldest)
            oldest.close()  # idle longest: the one nginx is least likely to pick (its cache is LIFO)
            self.evicted += 1
            self.worker.log.debug("holding %d idle connections: closed the oldest", MAX_HELD)
        self._list(conn)
        fd = conn.fileno()
        held[fd] = conn
        self._poll.register(fd, select.POLLIN)
        if self.policy.holding(len(held)):
            self.worker.watchdog.want_reminder()

    def _list(self, conn: FastCGIConnection) -> None:
        """Idle in our hands: in our keeper row (a first-time kept connection gets its keeper copy now)."""
        kept = self.kept
        if kept is None or conn.idle_since:
            return  # no keeper, or a connection that never sent a request: nginx does not wait on it
        if not conn.inode:
            conn.inode = kept.copy(conn.sock, conn.io_timeout_ms)
        else:
            kept.hold(conn.inode, rescuable=conn.reusable)

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

    def _let_go_all(self, *, stopping: bool) -> None:
        """We are about to be busy (or to stop): nobody may wait on an idle connection we hold meanwhile."""
        for conn in list(self.held.values()):
            self._let_go(conn, stopping=stopping)

    def _let_go(self, conn: FastCGIConnection, *, stopping: bool) -> None:
        self._unhold(conn)
        if self.policy.letting_go(stopping=stopping) is _SERVE_LAST:
            if not conn.closed and _has_data(conn.sock):
                self._serve(conn, fresh=False, last=True)
            conn.close()  # the close race (docs/server-behaviour.md): only without a queue
        else:
            self._pass_on(conn)

    def _pass_on(self, conn: FastCGIConnection) -> None:
        """Give an idle connection to another worker; close it only when that cannot be done."""
        if self._give(conn):
            return
        if self.queue is not None:
            self.worker.log.debug("could not pass on an idle connection (queue full or not at a request boundary)")
        conn.close()  # the close race: only without a queue, or when it is full

    def pass_on_served(self, conn: FastCGIConnection) -> bool:
        """The connection being served, just past END_REQUEST of a request whose after-response work starts now
        (the policy's :meth:`~fcgipool.keepconn.KeepConnPolicy.work_ahead`), to the hand-off queue: the web server
        may send its next request on it at once (Apache, HAProxy and nginx reuse it), and another worker serves
        that. False: it could not be passed on; the server closes it."""
        kept, inode = self.kept, conn.inode
        if kept is not None and inode and self.queue is not None:
            kept.leave(inode)  # unlisted before it is passed on (as in _serve)
        return self._give(conn)

    def _give(self, conn: FastCGIConnection) -> bool:
        queue = self.queue
        if queue is None or not conn.reusable or not queue.give(conn.sock, conn.io_timeout_ms, conn.inode,
                                                                 conn.idle_since):  # fmt: skip
            return False
        conn.release()  # our descriptor only: the socket stays open in the queue
        return True


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 64):
            pass
    except (BlockingIOError, InterruptedError):
        pass


__all__ = ["ServeLoop", "Worker"]
