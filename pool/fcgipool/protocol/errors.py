"""The protocol's error family (h11 style): who broke the protocol decides the class."""

from __future__ import annotations


class FastCGIError(Exception):
    """Base of every error this package raises. ``reason`` is a one-line, human-readable cause."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RemoteProtocolError(FastCGIError):
    """The peer (web server) sent something malformed, truncated or out of order.

    The connection is unusable afterwards: close it and log ``reason`` with the peer's name.
    """


class ParamsTooLarge(RemoteProtocolError):
    """The request's PARAMS stream exceeded ``max_params_size``."""


class LocalProtocolError(FastCGIError):
    """We (the application side) tried to do something the protocol does not allow in this state."""
