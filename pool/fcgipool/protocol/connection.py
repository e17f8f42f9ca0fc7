"""The application side of one FastCGI transport connection, sans-IO.

Feed bytes with :meth:`Connection.receive_data`, pull events with :meth:`Connection.next_event`, write
whatever :meth:`Connection.data_to_send`, :meth:`send_stdout`, :meth:`send_stderr` and :meth:`end_request`
return. No socket code here: the caller owns I/O.

One request at a time (``FCGI_MPXS_CONNS=0``), RESPONDER role only.

States and transitions: :mod:`fcgipool.protocol.states` (one table that every state change reads). The
output half (send_stdout, end_request, ...) is :mod:`fcgipool.protocol.sending`.

Answered automatically (queued for :meth:`data_to_send`, no event), at any time, even mid-request:

- ``FCGI_GET_VALUES`` → ``FCGI_GET_VALUES_RESULT`` with the known names that were asked (only
  FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS).
- unknown record type → ``FCGI_UNKNOWN_TYPE``.
- BEGIN_REQUEST with a role other than RESPONDER → ``END_REQUEST(UNKNOWN_ROLE)``; if it did not ask for
  FCGI_KEEP_CONN, ``our_state`` becomes MUST_CLOSE.
- BEGIN_REQUEST for a second id while a request is active → ``END_REQUEST(CANT_MPX_CONN)``.

Records for a request id that is no longer active (ended, rejected) are ignored (section 3.3), so a body
the application did not read is skipped. Records for an id that never had a BEGIN_REQUEST are an error.
"""

from __future__ import annotations

from collections.abc import Mapping

from .constants import (
    FCGI_KEEP_CONN,
    FCGI_MAX_CONNS,
    FCGI_MAX_REQS,
    FCGI_MPXS_CONNS,
    FCGI_VERSION_1,
    HEADER_LEN,
    KNOWN_VALUES,
    ProtocolStatus,
    RecordType,
    Role,
    type_name,
)
from .errors import LocalProtocolError, ParamsTooLarge, RemoteProtocolError
from .events import NEED_DATA, AbortRequested, ConnectionClosed, Event, RequestStarted, StdinData, StdinEnd, _NeedData
from .pairs import decode_pairs, decode_params, encode_pairs
from .records import BEGIN_REQUEST_BODY, HEADER, encode_end_request, encode_record, encode_unknown_type
from .sending import Sending
from .states import ABORTED, ERROR, IDLE, MUST_CLOSE, PARAMS, STDIN, Move, State, after

# moves that start from one pair of states only: their outcome, read from the transition table once
_AFTER_BEGIN, _AFTER_PARAMS_END = after(Move.BEGIN), after(Move.PARAMS_END)
_AFTER_STDIN_END, _AFTER_REJECT_CLOSE = after(Move.STDIN_END), after(Move.REJECT_CLOSE)

DEFAULT_VALUES = {FCGI_MAX_CONNS: "1", FCGI_MAX_REQS: "1", FCGI_MPXS_CONNS: "0"}

_BEGIN = RecordType.BEGIN_REQUEST.value
_ABORT = RecordType.ABORT_REQUEST.value
_PARAMS = RecordType.PARAMS.value
_STDIN = RecordType.STDIN.value
_STDOUT = RecordType.STDOUT.value
_STDERR = RecordType.STDERR.value
_DATA = RecordType.DATA.value
_GET_VALUES = RecordType.GET_VALUES.value
_GET_VALUES_RESULT = RecordType.GET_VALUES_RESULT.value
_REQUEST_TYPES = frozenset({_BEGIN, _ABORT, _PARAMS, _STDIN, _DATA})
_APP_ONLY_TYPES = frozenset({3, _STDOUT, _STDERR, _GET_VALUES_RESULT, RecordType.UNKNOWN_TYPE.value})
_RESPONDER = Role.RESPONDER.value
_unpack_header = HEADER.unpack_from
_BEGIN_RECORD_LEN = HEADER_LEN + BEGIN_REQUEST_BODY.size


class Connection(Sending):
    """Server (application) side of one FastCGI transport connection.

    ``max_params_size`` bounds the accumulated PARAMS stream of a request (:class:`ParamsTooLarge`).
    ``values`` are the answers to FCGI_GET_VALUES; only the three names of section 4.1 are allowed and
    FCGI_MPXS_CONNS must be "0" (this implementation does not multiplex).
    """

    def __init__(self, max_params_size: int = 65536, values: Mapping[str, str | int] | None = None) -> None:
        if max_params_size < 0:
            raise ValueError(f"max_params_size must be >= 0, got {max_params_size}")
        self.max_params_size = max_params_size
        merged = dict(DEFAULT_VALUES)
        for name, value in (values or {}).items():
            if name not in KNOWN_VALUES:
                raise ValueError(f"unknown FastCGI value {name!r}; known: {', '.join(sorted(KNOWN_VALUES))}")
            merged[name] = str(value)
        if merged[FCGI_MPXS_CONNS] != "0":
            raise ValueError("FCGI_MPXS_CONNS must be 0: one request at a time per connection")
        self.values: dict[str, str] = merged

        self.their_state: State = IDLE
        self.our_state: State = IDLE
        #: FCGI_KEEP_CONN of the current (or last) request.
        self.keep_conn = False
        # Input buffer: bytes + read offset; later receives wait in _chunks until a record needs them,
        # so byte-at-a-time input never re-copies the buffer.
        self._buf = b""
        self._pos = 0
        self._chunks: list[bytes] = []
        self._chunks_len = 0
        self._eof = False
        self._out: list[bytes] = []
        self._active = 0  # request id from BEGIN_REQUEST until end_request(); 0 = none
        self._seen: set[int] = set()  # ids that had a BEGIN_REQUEST on this connection
        self._params: list[bytes] = []
        self._params_len = 0
        self._sent_stderr = False
        self._error: RemoteProtocolError | None = None

    # --- input ---------------------------------------------------------------------------------------

    @property
    def request_id(self) -> int | None:
        """Id of the active request, or None."""
        return self._active or None

    @property
    def at_rest(self) -> bool:
        """Between requests with no input buffered and no output queued: the transport can be handed to a
        fresh Connection (another process) without losing anything."""
        return (
            self.their_state is IDLE
            and self.our_state is IDLE
            and not self._eof
            and not self._chunks
            and self._pos >= len(self._buf)
            and not self._out
        )

    @property
    def has_pending_input(self) -> bool:
        """Received bytes (or EOF) that next_event() has not turned into events yet."""
        return self._eof or self._pos < len(self._buf) or bool(self._chunks)

    @property
    def has_output(self) -> bool:
        """Automatic replies are waiting for :meth:`data_to_send`."""
        return bool(self._out)

    def next_is_stdin_end(self) -> bool:
        """Shortcut for the common GET: if the next record is the active request's empty STDIN record and is
        already buffered whole, consume it as next_event() would (returning StdinEnd) and return True;
        otherwise change nothing and return False (next_event() then handles whatever it is)."""
        if self.their_state is not STDIN or self._chunks or self._error is not None:
            return False
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < HEADER_LEN:
            return False
        version, rtype, rid, clen, plen = _unpack_header(buf, pos)
        if rtype != _STDIN or clen or rid != self._active or version != FCGI_VERSION_1:
            return False
        if len(buf) - pos < HEADER_LEN + plen:
            return False
        self._pos = pos + HEADER_LEN + plen
        self.their_state, self.our_state = _AFTER_STDIN_END
        return True

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the socket; ``b""`` means the peer closed its side (EOF)."""
        if self._eof:
            raise LocalProtocolError("receive_data() after EOF was already received")
        if not data:
            self._eof = True
            return
        if not self._chunks and self._pos >= len(self._buf):
            self._buf = bytes(data)
            self._pos = 0
        else:
            self._chunks.append(bytes(data))
            self._chunks_len += len(data)

    def next_event(self) -> Event | _NeedData:
        """The next event, or :data:`NEED_DATA`. Raises :class:`RemoteProtocolError` on bad input."""
        if self._error is not None:
            raise type(self._error)(f"connection already failed: {self._error.reason}")
        try:
            return self._next_event()
        except RemoteProtocolError as exc:
            self._error = exc
            self.their_state = ERROR
            self.our_state = ERROR
            raise

    def _next_event(self) -> Event | _NeedData:
        if self.their_state is IDLE and self.our_state is IDLE and not self._chunks:
            started = self._whole_request_start()
            if started is not None:
                return started
        while True:
            buf = self._buf
            pos = self._pos
            have = len(buf) - pos
            if have < HEADER_LEN:
                if have + self._chunks_len < HEADER_LEN:
                    return self._out_of_data(have + self._chunks_len)
                self._consolidate()
                continue
            version, rtype, rid, clen, plen = _unpack_header(buf, pos)
            if version != FCGI_VERSION_1:
                raise RemoteProtocolError(f"unsupported FastCGI version {version} (only 1 is supported)")
            if rid:
                if rtype == _GET_VALUES:
                    raise RemoteProtocolError(f"management record GET_VALUES with request id {rid} (must be 0)")
            elif rtype in _REQUEST_TYPES:
                raise RemoteProtocolError(f"{type_name(rtype)} record with request id 0 (reserved)")
            if rtype in _APP_ONLY_TYPES:
                raise RemoteProtocolError(f"{type_name(rtype)} record received; only applications send it")
            total = HEADER_LEN + clen + plen
            if have < total:
                if have + self._chunks_len < total:
                    return self._out_of_data(have + self._chunks_len)
                self._consolidate()
                continue
            self._pos = pos + total
            start = pos + HEADER_LEN
            if rtype == _STDIN:
                event = self._on_stdin(rid, buf, start, clen)
            elif rtype == _PARAMS:
                event = self._on_params(rid, buf, start, clen)
            elif rtype == _BEGIN:
                event = self._on_begin(rid, buf, start, clen)
            elif rtype == _ABORT:
                event = self._on_abort(rid)
            elif rtype == _GET_VALUES:
                event = self._on_get_values(buf[start : start + clen])
            elif rtype == _DATA:
                # FCGI_DATA belongs to the FILTER role; a responder has no use for it.
                event = None if rid == self._active else self._inactive(rtype, rid)
            else:  # rtype 0 or newer than this implementation knows
                self._out.append(encode_unknown_type(rtype))
                event = None
            if event is not None:
                return event

    def _whole_request_start(self) -> RequestStarted | None:
        """Fast path for the common case: BEGIN_REQUEST (RESPONDER) and the whole PARAMS stream of one request
        are in the buffer. One pass over the records, with exactly the state changes and the event of the
        record loop; None (nothing changed) for anything else, which the record loop then handles."""
        buf = self._buf
        pos = self._pos
        end = len(buf)
        if end - pos < _BEGIN_RECORD_LEN:
            return None
        version, rtype, rid, clen, plen = _unpack_header(buf, pos)
        if rtype != _BEGIN or version != FCGI_VERSION_1 or not rid or clen != BEGIN_REQUEST_BODY.size:
            return None
        role, flags = BEGIN_REQUEST_BODY.unpack_from(buf, pos + HEADER_LEN)
        if role != _RESPONDER:
            return None
        pos += _BEGIN_RECORD_LEN + plen
        chunks: list[bytes] = []
        size = 0
        limit = self.max_params_size
        while True:
            if end - pos < HEADER_LEN:
                return None
            version, rtype, prid, clen, plen = _unpack_header(buf, pos)
            if rtype != _PARAMS or prid != rid or version != FCGI_VERSION_1:
                return None
            start = pos + HEADER_LEN
            pos = start + clen + plen
            if pos > end:
                return None
            if not clen:
                break
            size += clen
            if size > limit:
                return None  # the record loop raises ParamsTooLarge at the same record
            chunks.append(buf[start : start + clen])
        self._pos = pos
        self._begin(rid, bool(flags & FCGI_KEEP_CONN))
        return self._start_request(rid, chunks)

    def _consolidate(self) -> None:
        self._buf = b"".join((self._buf[self._pos :], *self._chunks))
        self._pos = 0
        self._chunks = []
        self._chunks_len = 0

    def _out_of_data(self, pending: int) -> Event | _NeedData:
        if not self._eof:
            return NEED_DATA
        if pending:
            raise RemoteProtocolError(f"connection closed mid-record ({pending} bytes of an incomplete record)")
        if self.their_state is PARAMS or self.their_state is STDIN:
            raise RemoteProtocolError(
                f"connection closed mid-request (request {self._active} was sending {self.their_state.value})"
            )
        self._move(Move.EOF)
        return ConnectionClosed()

    def _inactive(self, rtype: int, rid: int) -> Event | None:
        if rid in self._seen:
            return None  # ended or rejected request: ignore its remaining records (section 3.3)
        raise RemoteProtocolError(f"{type_name(rtype)} record for request {rid} before its BEGIN_REQUEST")

    def _on_stdin(self, rid: int, buf: bytes, start: int, clen: int) -> Event | None:
        if rid != self._active:
            return self._inactive(_STDIN, rid)
        state = self.their_state
        if state is STDIN:
            if clen:
                return StdinData(rid, buf[start : start + clen])
            self.their_state, self.our_state = _AFTER_STDIN_END
            return StdinEnd(rid)
        if state is ABORTED:
            return None
        if state is PARAMS:
            raise RemoteProtocolError(f"STDIN record for request {rid} before the end of its PARAMS")
        raise RemoteProtocolError(f"STDIN record for request {rid} after the end of its STDIN")

    def _on_params(self, rid: int, buf: bytes, start: int, clen: int) -> Event | None:
        if rid != self._active:
            return self._inactive(_PARAMS, rid)
        state = self.their_state
        if state is PARAMS:
            if clen:
                self._params_len += clen
                if self._params_len > self.max_params_size:
                    raise ParamsTooLarge(
                        f"PARAMS of request {rid} exceed max_params_size ({self.max_params_size} bytes)"
                    )
                self._params.append(buf[start : start + clen])
                return None
            return self._start_request(rid, self._params)
        if state is ABORTED:
            return None
        raise RemoteProtocolError(f"PARAMS record for request {rid} after the end of its PARAMS")

    def _on_begin(self, rid: int, buf: bytes, start: int, clen: int) -> Event | None:
        if clen != BEGIN_REQUEST_BODY.size:
            raise RemoteProtocolError(f"BEGIN_REQUEST body of {clen} bytes (must be {BEGIN_REQUEST_BODY.size})")
        role, flags = BEGIN_REQUEST_BODY.unpack_from(buf, start)
        keep = bool(flags & FCGI_KEEP_CONN)
        if self._active:
            if rid == self._active:
                raise RemoteProtocolError(f"second BEGIN_REQUEST for active request {rid}")
            self._seen.add(rid)
            self._out.append(
                encode_end_request(rid, 0, ProtocolStatus.CANT_MPX_CONN, close_stdout=False, close_stderr=False)
            )
            return None
        if self.our_state is MUST_CLOSE:
            raise RemoteProtocolError(
                f"BEGIN_REQUEST for request {rid} on a connection whose last request did not set FCGI_KEEP_CONN"
            )
        if role != _RESPONDER:
            self._seen.add(rid)
            self.keep_conn = keep
            self._out.append(
                encode_end_request(rid, 0, ProtocolStatus.UNKNOWN_ROLE, close_stdout=False, close_stderr=False)
            )
            if not keep:
                self.their_state, self.our_state = _AFTER_REJECT_CLOSE
            return None
        self._begin(rid, keep)
        return None

    def _begin(self, rid: int, keep: bool) -> None:
        """A BEGIN_REQUEST for the RESPONDER role was accepted: request ``rid`` is active, its PARAMS follow."""
        self._seen.add(rid)
        self.keep_conn = keep
        self._active = rid
        self._params = []
        self._params_len = 0
        self._sent_stderr = False
        self.their_state, self.our_state = _AFTER_BEGIN

    def _start_request(self, rid: int, chunks: list[bytes]) -> RequestStarted:
        """The PARAMS stream of request ``rid`` ended (``chunks``): the application may respond. Used by the record
        loop and by the whole-request fast path alike. A stream that does not decode raises (their state is
        still PARAMS; next_event() then fails the connection)."""
        stream = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        params = decode_params(stream)
        self._params = []
        self._params_len = 0
        self.their_state, self.our_state = _AFTER_PARAMS_END
        return RequestStarted(rid, self.keep_conn, params, stream)

    def _on_abort(self, rid: int) -> Event | None:
        if rid != self._active:
            return self._inactive(_ABORT, rid)
        if self.their_state is ABORTED:
            return None
        self._move(Move.ABORT)
        self._params = []
        self._params_len = 0
        return AbortRequested(rid)

    def _on_get_values(self, content: bytes) -> Event | None:
        asked = decode_pairs(content)
        answer: dict[str, str] = {}
        for name, _ in asked:
            key = name.decode("latin-1")
            if key in self.values:
                answer[key] = self.values[key]
        self._out.append(encode_record(_GET_VALUES_RESULT, 0, encode_pairs(answer)))
        return None
