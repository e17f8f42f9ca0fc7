"""The application's side of a FastCGI connection: what it may send, checked against ``our_state``, sans-IO.

:class:`Sending` is the output half of :class:`fcgipool.protocol.Connection` (which reads the peer's records);
it also holds :meth:`Sending._move`, the transition-table lookup.
"""

from __future__ import annotations

from .constants import MAX_CONTENT, ProtocolStatus, RecordType
from .errors import LocalProtocolError
from .records import encode_end_request, encode_stdout_response, stream_chunks
from .states import IDLE, MUST_CLOSE, RESPONDING, TRANSITIONS, Move, State

__all__ = ["Sending"]

_STDOUT = RecordType.STDOUT.value
_STDERR = RecordType.STDERR.value
_END_KEEP, _END_CLOSE = Move.END_KEEP, Move.END_CLOSE  # bound once: an Enum attribute costs a lookup


class Sending:
    """Output half of a connection; the attributes are the connection's, set by ``Connection.__init__``."""

    their_state: State
    our_state: State
    keep_conn: bool
    _active: int
    _out: list[bytes]
    _params: list[bytes]
    _params_len: int
    _sent_stderr: bool

    def data_to_send(self) -> bytes:
        """Bytes of automatic replies (GET_VALUES_RESULT, UNKNOWN_TYPE, rejections); clears the queue."""
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out = []
        return out

    def _check_sending(self, request_id: int, what: str) -> None:
        if self.our_state is not RESPONDING or request_id != self._active:
            raise LocalProtocolError(
                f"cannot {what} for request {request_id}: our state is {self.our_state.value}, "
                f"active request is {self._active or 'none'}"
            )

    def send_stdout(self, request_id: int, data: bytes) -> bytes:
        """STDOUT records carrying ``data``; ``b""`` returns ``b""`` (the terminator comes from end_request)."""
        self._check_sending(request_id, "send STDOUT")
        return _stream(_STDOUT, request_id, data)

    def send_stderr(self, request_id: int, data: bytes) -> bytes:
        """STDERR records carrying ``data``; end_request() then also ends the STDERR stream."""
        self._check_sending(request_id, "send STDERR")
        if data:
            self._sent_stderr = True
        return _stream(_STDERR, request_id, data)

    def end_request(
        self,
        request_id: int,
        app_status: int = 0,
        protocol_status: int = ProtocolStatus.REQUEST_COMPLETE,
    ) -> bytes:
        """Empty STDOUT (and STDERR, if used) + END_REQUEST; then the next cycle starts (see table)."""
        self._check_sending(request_id, "end the request")
        out = encode_end_request(request_id, app_status, protocol_status, close_stderr=self._sent_stderr)
        self._finish()
        return out

    def send_response(self, request_id: int, stdout: bytes, app_status: int = 0) -> bytes:
        """Fast path: ``stdout`` + end of streams + END_REQUEST in one bytes object."""
        self._check_sending(request_id, "send a response")
        if not app_status and not self._sent_stderr and len(stdout) <= MAX_CONTENT:
            self._finish()
            return encode_stdout_response(request_id, stdout)
        tail = encode_end_request(
            request_id, app_status, ProtocolStatus.REQUEST_COMPLETE, close_stderr=self._sent_stderr
        )
        self._finish()
        if not stdout:
            return tail
        out: list[bytes | memoryview] = []
        stream_chunks(_STDOUT, request_id, stdout, out)
        out.append(tail)
        return b"".join(out)

    def _finish(self) -> None:
        self._active = 0
        self._params = []
        self._params_len = 0
        self._sent_stderr = False
        self._move(_END_KEEP if self.keep_conn else _END_CLOSE)

    def _move(self, move: Move) -> None:
        """The next pair of states from the transition table (fcgipool.protocol.states)."""
        try:
            self.their_state, self.our_state = TRANSITIONS[self.their_state, self.our_state, move]
        except KeyError:
            raise LocalProtocolError(
                f"no transition for {move.value} in states {self.their_state.value}/{self.our_state.value}"
            ) from None

    def start_next_cycle(self) -> None:
        """Kept for h11-style callers: end_request() on a keep-conn request already returns to IDLE.

        Raises :class:`LocalProtocolError` if the request has not ended or the connection must close.
        """
        if self.our_state is IDLE:
            return
        if self.our_state is MUST_CLOSE:
            raise LocalProtocolError("the last request did not set FCGI_KEEP_CONN: close the connection")
        raise LocalProtocolError(f"cannot start the next cycle in state {self.our_state.value}")


def _stream(rtype: int, request_id: int, data: bytes) -> bytes:
    if not data:
        return b""
    out: list[bytes | memoryview] = []
    stream_chunks(rtype, request_id, data, out)
    return b"".join(out)
