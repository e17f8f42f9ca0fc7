"""The hand-off queue: idle kept connections passed between a pool's workers instead of being closed.

FastCGI cannot tell a web server that an idle connection is going away, so closing one that nginx keeps in
its cache races with nginx writing the next request onto it (docs/server-behaviour.md, "The close race").
A worker that must let go of an idle kept connection -- it takes a new one, starts a request, or exits --
therefore sends the connection's descriptor (SCM_RIGHTS) into this queue and closes only its own copy: the
socket stays open inside the queue, whatever nginx writes waits in its receive buffer, and an idle worker
takes it out and serves or holds it.

One ``AF_UNIX``/``SOCK_SEQPACKET`` socket pair, created by the arbiter before it forks any worker and
inherited by all of them (close-on-exec: a re-executed master makes its own). Every message is 24 bytes --
a note from the giver (the worker passes the I/O timeout it set on the socket, so a taker with the same
setting need not set it again), the socket's family and type, its inode if the keeper holds a copy of it
(fcgipool.keeper), and since when it has been idle without ever sending a request (0 for a connection that
has served one) -- plus one descriptor, so the read end's ``SIOCINQ`` / 24 is the number of connections
waiting. Both ends are
non-blocking: ``give`` fails instead of blocking when the queue is full, ``take`` returns None when another
worker was faster.
"""

from __future__ import annotations

import array
import fcntl
import os
import select
import socket
import struct
import termios
from typing import NamedTuple

# the giver's note, then the socket's family and type (socket.socket(fileno=...) would ask the kernel:
# getsockname + 3 getsockopt per connection), its keeper inode and its fresh-idle time
_MSG = struct.Struct("IHHQd")


class Taken(NamedTuple):
    sock: socket.socket
    note: int
    inode: int  # 0: the keeper has no copy of it
    idle_since: float  # time.monotonic() since it waits without having sent a request; 0: it has served one


class HandoffQueue:
    def __init__(self) -> None:
        self._rd, self._wr = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for end in (self._rd, self._wr):
            end.setblocking(False)
            os.set_inheritable(end.fileno(), False)  # close-on-exec; fork still shares it with the workers
        self.given = 0  # counters of this process (worker): connections given and taken, gives that failed
        self.taken = 0
        self.failed = 0

    def fileno(self) -> int:
        """The read end: readable while a connection waits."""
        return self._rd.fileno()

    def give(self, sock: socket.socket, note: int = 0, inode: int = 0, idle_since: float = 0.0) -> bool:
        """Queue ``sock``'s descriptor and ``note`` (0 <= note < 2**32); the caller then closes its own copy.

        False if the queue is full (or the descriptor cannot be passed): the caller must deal with it itself.
        """
        try:
            msg = _MSG.pack(note, sock.family, sock.type, inode, idle_since)
            socket.send_fds(self._wr, [msg], [sock.fileno()])
        except (BlockingIOError, InterruptedError, OSError):
            self.failed += 1
            return False
        self.given += 1
        return True

    def take(self) -> Taken | None:
        """A waiting connection and what its giver noted, or None if there is none (another worker was faster)."""
        try:
            msg, fds, _flags, _addr = socket.recv_fds(
                self._rd, _MSG.size, 1, socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC
            )
        except (BlockingIOError, InterruptedError):
            return None
        if not fds:
            return None
        self.taken += 1
        if len(msg) != _MSG.size:  # cannot happen with our own givers; let the kernel tell
            return Taken(socket.socket(fileno=fds[0]), 0, 0, 0.0)
        note, family, kind, inode, idle_since = _MSG.unpack(msg)
        return Taken(socket.socket(family, kind, 0, fileno=fds[0]), note, inode, idle_since)

    def pending(self) -> int:
        """Connections waiting in the queue (bytes queued at the read end / the size of one note)."""
        buf = array.array("i", [0])
        try:
            fcntl.ioctl(self._rd.fileno(), termios.FIONREAD, buf)
        except OSError:
            return 0
        return int(buf[0]) // _MSG.size

    def close(self) -> None:
        """Close both ends in this process (connections still queued close with the last process holding it)."""
        self._rd.close()
        self._wr.close()


class Parking:
    """The arbiter's side of the queue while no worker runs (``ondemand`` scaled to zero).

    Connections left in the queue by the last worker are taken out and watched here: one that nginx sends a
    request on is put back into the queue (:meth:`check` returns True: spawn a worker), one that nginx
    closed is closed (no race: nginx is done with it). Once a worker runs, :meth:`release` puts the rest back.
    """

    def __init__(self, queue: HandoffQueue) -> None:
        self.queue = queue
        self._held: dict[int, Taken] = {}
        self._poll = select.poll()

    def __len__(self) -> int:
        return len(self._held)

    def check(self) -> bool:
        """Collect what waits in the queue; True if a request arrived on a parked connection."""
        while (taken := self.queue.take()) is not None:
            self._held[taken.sock.fileno()] = taken
            self._poll.register(taken.sock.fileno(), select.POLLIN)
        demand = False
        for fd, _events in self._poll.poll(0):
            taken = self._held.pop(fd)
            self._poll.unregister(fd)
            if readable_bytes(taken.sock) > 0:
                demand = True
                if self.queue.give(*taken):
                    taken.sock.close()  # our copy; the socket waits in the queue for the worker we spawn
                    continue
            taken.sock.close()  # EOF or an error: nginx closed it (or the queue is full: see docs, close race)
        return demand

    def inodes(self) -> set[int]:
        """The keeper inodes of the parked connections (the keeper must not count them as left by nobody)."""
        return {t.inode for t in self._held.values() if t.inode}

    def release(self) -> None:
        """Workers run again: the queue is theirs."""
        for fd, taken in list(self._held.items()):
            self._poll.unregister(fd)
            del self._held[fd]
            self.queue.give(*taken)  # if the queue is full it closes with our copy (docs: the close race)
            taken.sock.close()


def readable_bytes(sock: socket.socket) -> int:
    """Bytes waiting to be read (FIONREAD: no exception on the common "nothing" answer); -1 on an error."""
    buf = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf)
    except OSError:
        return -1
    return int(buf[0])
