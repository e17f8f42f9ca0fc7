"""The keeper: the arbiter holds a copy of every kept connection, so a worker that dies loses only its own request.

A worker holds the idle kept connections it serves (fcgipool.keepconn), and nginx writes
its next request onto one of them at any time. Without another copy of the socket, a worker killed by
``kill -9``, the OOM killer or a hard timeout takes those connections with it, and every request nginx had
already written onto them fails (a POST is never resent: a 502 each). So:

- The first time a worker keeps a connection, it lists the socket's inode in its row of a shared table
  (:class:`ConnTable`, one row per scoreboard slot), then sends a duplicate of the descriptor to the
  keeper (``SCM_RIGHTS`` on a ``SOCK_SEQPACKET`` pair; one ``sendmsg`` per connection, not per request).
- A worker lists what it holds and marks the one it is serving as *current* (plain stores into the shared
  row, no syscall), always unlisting before it gives a connection away and listing after it took one.
- When the arbiter reaps a dead worker, the keeper reads its row: every listed idle connection goes to the
  hand-off queue (its requests are served by the other workers), the current one is shut down, so nginx
  sees that one request fail at once instead of waiting for its read timeout.
- A worker that closes a listed connection shuts it down first (``shutdown`` acts on the socket, not the
  descriptor), so the keeper's copy never keeps a connection open that nginx waits on; the keeper drops a
  copy when its socket reports hang-up (a thread polls the copies for ``POLLRDHUP``).
- A worker killed in the instant between unlisting and giving (or taking and listing) leaves a connection
  that nobody lists: after a death the keeper checks three times, a second apart, and passes on a copy
  that is still unlisted while the hand-off queue is empty.

The copies live in the arbiter, so a worker forked later inherits them: :meth:`Keeper.in_worker` closes
them in the child first thing (the fork happens under the keeper's lock, so none is half-received).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .handoff import HandoffQueue

#: entries in a worker's row: more than a worker ever holds (fcgipool.keepconn.MAX_HELD) plus the current one
ROW_ENTRIES = 80
_ROW_BYTES = (1 + ROW_ENTRIES) * 8  # current, then the held inodes (0 = free)
_CLOSE_ON_DEATH = 1 << 63  # flag on a held inode: not at a request boundary, close it rather than pass it on
_COPY = struct.Struct("IHHQ")  # the I/O timeout note, family, type, inode; plus one descriptor
_HANGUP = select.POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL
#: seconds between the checks for connections nobody lists after a worker died (three in a row pass one on)
ORPHAN_CHECK_EVERY = 1.0
ORPHAN_CHECKS = 3


def inode_of(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def _hung_up(fd: int) -> bool:
    """Ask again: the event may be for an earlier socket that had this descriptor number."""
    check = select.poll()
    check.register(fd, _HANGUP)
    return bool(check.poll(0))


class ConnTable:
    """One row per scoreboard slot in an anonymous ``MAP_SHARED`` mmap; row ``i`` is written by its worker
    only, and read by the arbiter only once that worker is dead (so no seqlock is needed)."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._mm = mmap.mmap(-1, slots * _ROW_BYTES, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self._words = memoryview(self._mm).cast("Q")

    def row(self, index: int) -> memoryview:
        start = index * (1 + ROW_ENTRIES)
        return self._words[start : start + 1 + ROW_ENTRIES]

    def read(self, index: int) -> tuple[int, list[int]]:
        """(current inode, held entries) of row ``index``."""
        row = self.row(index)
        return row[0], [v for v in row[1:] if v]

    def clear(self, index: int) -> None:
        row = self.row(index)
        for i in range(len(row)):
            row[i] = 0


class KeptConns:
    """A worker's side: its row of the table and the channel to the keeper. Plain stores, no syscalls, except
    :meth:`copy` (once per connection)."""

    def __init__(self, row: memoryview, channel: socket.socket) -> None:
        self._row = row
        self._channel = channel
        self._pos: dict[int, int] = {}  # inode -> its entry in the row
        self._free = list(range(len(row) - 1, 0, -1))
        self.copies_failed = 0

    def copy(self, sock: socket.socket, note: int) -> int:
        """List the connection, then give the keeper a copy; its inode, or 0 if the keeper could not take it."""
        inode = inode_of(sock)
        if not self.hold(inode, rescuable=True):
            return 0
        try:
            socket.send_fds(self._channel, [_COPY.pack(note, sock.family, sock.type, inode)], [sock.fileno()])
        except OSError:  # the channel is full (a stuck arbiter): this connection just has no copy
            self.unhold(inode)
            self.copies_failed += 1
            return 0
        return inode

    def hold(self, inode: int, *, rescuable: bool = True) -> bool:
        """``inode`` is idle in this worker: passed on if it dies (closed if not ``rescuable``)."""
        value = inode if rescuable else inode | _CLOSE_ON_DEATH
        pos = self._pos.get(inode)
        if pos is None:
            if not self._free:
                return False
            pos = self._pos[inode] = self._free.pop()
        self._row[pos] = value
        return True

    def unhold(self, inode: int) -> None:
        pos = self._pos.pop(inode, None)
        if pos is not None:
            self._row[pos] = 0
            self._free.append(pos)

    def serving(self, inode: int) -> None:
        """``inode`` carries the request in progress (0: none); if the worker dies it is shut down."""
        self._row[0] = inode

    def take_up(self, inode: int) -> None:
        """A held connection's request starts: it is current, and stays listed (the keeper shuts down a listed
        connection that is current when its worker dies, so it is never passed on mid-request). One store per
        request instead of unlisting and listing it again (docs/benchmarks.md)."""
        self._row[0] = inode

    def put_down(self, inode: int, *, rescuable: bool) -> None:
        """The request on ``inode`` ended and the worker keeps it: listed (as ``rescuable`` says), then no longer
        current."""
        self.hold(inode, rescuable=rescuable)
        self._row[0] = 0

    def leave(self, inode: int) -> None:
        """The connection just served leaves this worker (passed on, or closed): unlisted, and no longer current."""
        self.unhold(inode)
        self._row[0] = 0


class Keeper:
    """The arbiter's side. Create before forking any worker; :meth:`start` the thread in the arbiter."""

    def __init__(self, slots: int, queue: HandoffQueue, log: Any) -> None:
        self.table = ConnTable(slots)
        self.queue = queue
        self.log = log
        self._rd, self._wr = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for end in (self._rd, self._wr):
            os.set_inheritable(end.fileno(), False)  # close-on-exec; fork still shares it
        self._rd.setblocking(False)
        self._wr.setblocking(False)
        self._copies: dict[int, tuple[socket.socket, int]] = {}  # inode -> (our copy, its I/O timeout note)
        self._lock = threading.RLock()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(self._rd.fileno(), select.POLLIN)
        self._poll.register(self._wake_r, select.POLLIN)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._suspects: dict[int, int] = {}  # inode -> checks it has been unlisted in a row
        self._next_check = 0.0
        self.live_slots: Callable[[], list[int]] = list  # slot indexes of live workers (set by the arbiter)
        self.parked: Callable[[], set[int]] = set  # inodes the arbiter itself holds (ondemand parking)
        self.rescued = 0

    def __len__(self) -> int:
        return len(self._copies)

    # --- arbiter ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fcgipool-keeper", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def forking(self) -> Iterator[None]:
        """Hold this around fork: no copy is half-received, so the child knows every descriptor to close."""
        with self._lock:
            yield

    def stop(self) -> None:
        """Final shutdown: nothing is passed on any more; the copies close with the arbiter. Waits for the thread
        (woken at once), so nothing it does can run on a hand-off queue the caller closes next."""
        self._stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def worker_gone(self, index: int, pid: int) -> int:
        """A worker died: pass on its idle connections, shut down the one it was serving. Returns how many
        were passed on."""
        with self._lock:
            self._receive()  # copies it sent before dying are in the channel
            current, held = self.table.read(index)
            self.table.clear(index)
            if self._stopping:
                return 0
            rescued = 0
            for value in held:
                inode = value & ~_CLOSE_ON_DEATH
                if value & _CLOSE_ON_DEATH or inode == current:
                    self._drop(inode, shutdown=True)
                elif self._pass_on(inode):
                    rescued += 1
            if current:
                self._drop(current, shutdown=True)
            if self._copies:
                self._next_check = time.monotonic() + ORPHAN_CHECK_EVERY
                self._suspects = {}
        if rescued or current:
            self.log.warning(
                "worker (pid:%s) died holding %d idle kept connection(s): passed them to the other workers%s",
                pid, rescued, "; the request it was serving is lost" if current else "",
            )  # fmt: skip
        self.rescued += rescued
        return rescued

    def in_worker(self, index: int) -> KeptConns:
        """In a newly forked worker: close the arbiter's copies this process inherited; the worker's side."""
        for sock, _note in self._copies.values():
            sock.close()
        self._copies = {}
        self._rd.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self.table.clear(index)
        return KeptConns(self.table.row(index), self._wr)

    # --- internals -------------------------------------------------------------------------------------
    def _pass_on(self, inode: int) -> bool:
        entry = self._copies.get(inode)
        if entry is None:
            return False  # never copied (the dead worker's send failed): the kernel closed it with the worker
        sock, note = entry
        if self.queue.give(sock, note, inode):
            return True
        self.log.warning("could not pass on a kept connection of a dead worker (hand-off queue full): closing it")
        self._drop(inode, shutdown=True)
        return False

    def _drop(self, inode: int, *, shutdown: bool) -> None:
        entry = self._copies.pop(inode, None)
        if entry is None:
            return
        sock = entry[0]
        with contextlib.suppress(OSError, ValueError):
            self._poll.unregister(sock.fileno())
        if shutdown:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def _receive(self) -> None:
        while True:
            try:
                msg, fds, _flags, _addr = socket.recv_fds(
                    self._rd, _COPY.size, 4, socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC
                )
            except (BlockingIOError, InterruptedError):
                return
            if not fds:
                return
            for extra in fds[1:]:
                os.close(extra)
            if len(msg) != _COPY.size:
                os.close(fds[0])
                continue
            note, family, kind, inode = _COPY.unpack(msg)
            old = self._copies.pop(inode, None)
            if old is not None:
                old[0].close()
            sock = socket.socket(family, kind, 0, fileno=fds[0])
            self._copies[inode] = (sock, note)
            self._poll.register(sock.fileno(), _HANGUP)

    def _run(self) -> None:
        by_fd: dict[int, int] = {}
        while not self._stopping:
            try:
                events = self._poll.poll(1000 * ORPHAN_CHECK_EVERY)
            except InterruptedError:
                continue
            with self._lock:
                by_fd = {sock.fileno(): inode for inode, (sock, _n) in self._copies.items()}
                for fd, ev in events:
                    if fd == self._rd.fileno():
                        self._receive()
                    elif fd == self._wake_r:
                        with contextlib.suppress(OSError):
                            os.read(self._wake_r, 64)
                    elif ev & _HANGUP and fd in by_fd and _hung_up(fd):  # (not a reused fd number)
                        self._drop(by_fd[fd], shutdown=False)  # nginx closed it, or a worker shut it down
                if self._next_check and time.monotonic() >= self._next_check:
                    self._check_orphans()

    def _check_orphans(self) -> None:
        listed: set[int] = set(self.parked())
        for index in self.live_slots():
            current, held = self.table.read(index)
            listed.add(current)
            listed.update(v & ~_CLOSE_ON_DEATH for v in held)
        queued = self.queue.pending() > 0
        suspects = {}
        for inode in self._copies:
            if inode not in listed and not queued:
                suspects[inode] = self._suspects.get(inode, 0) + 1
        self._suspects = {}
        for inode, seen in suspects.items():
            if seen >= ORPHAN_CHECKS:
                self.log.warning("a kept connection left by a dead worker was listed by nobody: passing it on")
                if self._pass_on(inode):
                    self.rescued += 1
            else:
                self._suspects[inode] = seen
        self._next_check = time.monotonic() + ORPHAN_CHECK_EVERY if self._suspects else 0.0
