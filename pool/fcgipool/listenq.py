"""How many connections wait in a listening socket's accept queue, and how long that queue may get.

* TCP: ``getsockopt(TCP_INFO)``. On a listening socket the kernel reports the accept queue length in
  ``tcpi_unacked`` and the backlog limit in ``tcpi_sacked``.
* Unix sockets: netlink ``sock_diag`` (``SOCK_DIAG_BY_FAMILY``, AF_UNIX) asked for the listening socket's
  inode with ``UDIAG_SHOW_RQLEN``; the ``UNIX_DIAG_RQLEN`` attribute carries ``rqueue`` (connections waiting)
  and ``wqueue`` (the backlog) for a listener. No privileges needed. PHP-FPM reports 0 here.

Linux only; elsewhere (or when the kernel lacks unix_diag) the functions return ``None`` and the status page
says the value is unavailable instead of printing a made-up zero.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Protocol

__all__ = ["ListenQueue", "listen_queue", "readable", "tcp_listen_queue", "total", "unix_listen_queue"]

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLMSG_ERROR = 0x2
NLMSG_DONE = 0x3
UDIAG_SHOW_RQLEN = 0x10
UNIX_DIAG_RQLEN = 4
TCP_LISTEN_STATE = 10
_NOCOOKIE = 0xFFFFFFFF

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_UNIX_DIAG_REQ = struct.Struct("=BBHIIIII")  # family, protocol, pad, states, ino, show, cookie[2]
_UNIX_DIAG_MSG = struct.Struct("=BBBBIII")  # family, type, state, pad, ino, cookie[2]
_NLATTR = struct.Struct("=HH")
_RQLEN = struct.Struct("=II")
_TCP_INFO_QUEUE = struct.Struct("=8xIIIIII")  # rto, ato, snd_mss, rcv_mss, unacked, sacked


@dataclass(frozen=True)
class ListenQueue:
    queue: int  # connections accepted by the kernel, not yet by a worker
    backlog: int  # the queue's limit (listen() backlog, capped by somaxconn)


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


def tcp_listen_queue(sock: _HasFileno) -> ListenQueue | None:
    try:
        raw = socket.socket(fileno=os.dup(sock.fileno()))
    except OSError:
        return None
    try:
        info = raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 64)
    except OSError:
        return None
    finally:
        raw.close()
    if len(info) < _TCP_INFO_QUEUE.size or info[0] != TCP_LISTEN_STATE:
        return None
    _, _, _, _, unacked, sacked = _TCP_INFO_QUEUE.unpack_from(info)
    return ListenQueue(queue=unacked, backlog=sacked)


class _UnixDiag:
    """One netlink socket per thread; requests are tiny and answered synchronously."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._seq = 0

    def _sock(self) -> socket.socket:
        s = getattr(self._local, "sock", None)
        if s is None:
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
            s.settimeout(1.0)
            self._local.sock = s
        return s

    def query(self, inode: int) -> ListenQueue | None:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        body = _UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, 0, 0xFFFFFFFF, inode, UDIAG_SHOW_RQLEN, _NOCOOKIE, _NOCOOKIE)
        msg = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, self._seq, 0) + body
        s = self._sock()
        s.send(msg)
        while True:
            data = s.recv(65536)
            off = 0
            while off + _NLMSGHDR.size <= len(data):
                length, mtype, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, off)
                if length < _NLMSGHDR.size:
                    return None
                payload = data[off + _NLMSGHDR.size : off + length]
                off += (length + 3) & ~3
                if seq != self._seq:
                    continue  # a late answer to an earlier (timed out) request
                if mtype == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", payload)
                    if err == 0:
                        continue
                    if -err == errno.ENOENT:
                        return None  # no such socket (closed meanwhile)
                    raise OSError(-err, os.strerror(-err))
                if mtype == NLMSG_DONE:
                    return None
                if mtype == SOCK_DIAG_BY_FAMILY:
                    return _parse_rqlen(payload, inode)
            # nothing for our sequence number in this datagram: read the next one


def _parse_rqlen(payload: bytes, inode: int) -> ListenQueue | None:
    if len(payload) < _UNIX_DIAG_MSG.size:
        return None
    _fam, _type, _state, _pad, ino, _c0, _c1 = _UNIX_DIAG_MSG.unpack_from(payload)
    if ino != inode:
        return None
    off = _UNIX_DIAG_MSG.size
    while off + _NLATTR.size <= len(payload):
        alen, atype = _NLATTR.unpack_from(payload, off)
        if alen < _NLATTR.size:
            break
        if atype & 0x3FFF == UNIX_DIAG_RQLEN and alen >= _NLATTR.size + _RQLEN.size:
            rqueue, wqueue = _RQLEN.unpack_from(payload, off + _NLATTR.size)
            return ListenQueue(queue=rqueue, backlog=wqueue)
        off += (alen + 3) & ~3
    return None


_diag = _UnixDiag()


def unix_listen_queue(sock: _HasFileno) -> ListenQueue | None:
    try:
        inode = os.fstat(sock.fileno()).st_ino
        return _diag.query(inode)
    except OSError:
        return None


def listen_queue(sock: _HasFileno) -> ListenQueue | None:
    """Queue and backlog of a listening socket (gunicorn listener or plain socket); None if unknown."""
    s = getattr(sock, "sock", sock)  # gunicorn's BaseSocket wraps the real socket
    family = getattr(s, "family", None)
    if family is None:
        try:
            with socket.socket(fileno=os.dup(s.fileno())) as probe:
                family = probe.family
        except OSError:
            return None
    if family == socket.AF_UNIX:
        return unix_listen_queue(s)
    if family in (socket.AF_INET, socket.AF_INET6):
        return tcp_listen_queue(s)
    return None


def total(socks: list[_HasFileno]) -> ListenQueue | None:
    """Summed over all listeners; None when none of them could be measured."""
    parts = [q for q in (listen_queue(s) for s in socks) if q is not None]
    if not parts:
        return None
    return ListenQueue(queue=sum(q.queue for q in parts), backlog=sum(q.backlog for q in parts))


def readable(sock: _HasFileno) -> bool:
    """A listening socket is readable when at least one connection waits to be accepted."""
    s = getattr(sock, "sock", sock)
    p = select.poll()
    try:
        p.register(s.fileno(), select.POLLIN)
        return bool(p.poll(0))
    except (OSError, ValueError):
        return False
