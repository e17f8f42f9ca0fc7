"""Naming the web server at the other end of a FastCGI connection, for log messages."""

from __future__ import annotations

import socket
import struct
from typing import Any

__all__ = ["describe_peer"]


def describe_peer(sock: socket.socket, addr: Any) -> str:
    """``unix:/run/app.sock (pid 123)`` or ``127.0.0.1:40123``.

    A unix socket's peer has no address, so its pid (SO_PEERCRED) is what tells which nginx worker it was.
    """
    if sock.family == socket.AF_UNIX:
        try:
            pid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
        except OSError:
            pid = 0
        name = sock.getsockname() or "unix"
        return f"unix:{name} (pid {pid})" if pid else f"unix:{name}"
    if addr is None:  # a connection taken from the hand-off queue (fcgipool.handoff) comes without one
        try:
            addr = sock.getpeername()
        except OSError:
            addr = "unknown peer"
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)
