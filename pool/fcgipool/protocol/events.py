"""Events returned by :meth:`Connection.next_event`."""

from __future__ import annotations

from dataclasses import dataclass, field


class _NeedData:
    """Sentinel type: more bytes are needed before another event can be produced."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"

    def __reduce__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


class Event:
    """Base class of all protocol events."""

    __slots__ = ()


@dataclass(slots=True, eq=True, repr=True)
class RequestStarted(Event):
    """BEGIN_REQUEST and the complete PARAMS stream of a RESPONDER request.

    ``params`` maps names to values decoded as latin-1 (bytes round-trip, as PEP 3333 wants); later
    duplicates win. ``raw_params`` keeps every pair, in order, as bytes.
    """

    request_id: int
    keep_conn: bool
    params: dict[str, str]
    raw_params: list[tuple[bytes, bytes]] = field(default_factory=list, compare=False, repr=False)


@dataclass(slots=True, eq=True, repr=True)
class StdinData(Event):
    """Content of one non-empty STDIN record."""

    request_id: int
    data: bytes


@dataclass(slots=True, eq=True, repr=True)
class StdinEnd(Event):
    """The empty STDIN record: the request body is complete."""

    request_id: int


@dataclass(slots=True, eq=True, repr=True)
class AbortRequested(Event):
    """FCGI_ABORT_REQUEST for the active request. Answer it with :meth:`Connection.end_request`."""

    request_id: int


@dataclass(slots=True, eq=True, repr=True)
class ConnectionClosed(Event):
    """The peer closed the connection at a point where nothing was cut short."""
