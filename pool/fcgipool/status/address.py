"""Addresses of the status listener: ``unix:/path``, ``HOST:PORT``, ``[v6]:PORT``, ``tcp://HOST:PORT``.

Shared by the ``status_listen`` setting's validator, the listener and ``fcgipool status``.
"""

from __future__ import annotations

import socket
from typing import Any

__all__ = ["parse_address"]


def parse_address(val: str) -> tuple[socket.AddressFamily, Any]:
    """``unix:/path``, ``HOST:PORT``, ``[v6]:PORT`` or ``tcp://HOST:PORT`` → (family, sockaddr)."""
    text = val.strip()
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ValueError(f"unix socket address needs a path: {val!r} (e.g. unix:/run/fcgipool-status.sock)")
        return socket.AF_UNIX, path
    if text.startswith("tcp://"):
        text = text[6:]
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"status listen address must be unix:/path or HOST:PORT, got {val!r}")
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, (host[1:-1], int(port))
    return socket.AF_INET, (host or "127.0.0.1", int(port))
