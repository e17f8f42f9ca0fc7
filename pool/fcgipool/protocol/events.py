"""Events returned by :meth:`Connection.next_event`."""

from __future__ import annotations

from dataclasses import dataclass, field

from .pairs import decode_pairs


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
    duplicates win. ``raw_params`` gives every pair, in order, as bytes (decoded from ``params_stream``, the
    request's PARAMS stream, when asked for: the hot path never pays for it).
    """

    request_id: int
    keep_conn: bool
    params: dict[str, str]
    params_stream: bytes = field(default=b"", compare=False, repr=False)

    @property
    def raw_params(self) -> list[tuple[bytes, bytes]]:
        if self.params_stream or not self.params:
            return decode_pairs(self.params_stream)
        return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in self.params.items()]


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
