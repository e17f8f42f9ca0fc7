"""The socket side of a FastCGI connection: receive into the sans-IO protocol and send what it produces, read
the next request off the socket (publishing its deadline while that read may wait) and its body, close.
:class:`Wire` is the base of :class:`fcgipool.server.FastCGIConnection`, which serves the requests.
"""

from __future__ import annotations

import contextlib
import functools
import io
import socket
import struct
import tempfile
import time
from typing import Any, Protocol

from .afterwork import NO_LIMIT
from .environ import BadRequestParams, body_length
from .peer import describe_peer
from .protocol import (
    NEED_DATA,
    AbortRequested,
    Connection,
    ConnectionClosed,
    RemoteProtocolError,
    RequestStarted,
    State,
    StdinData,
    StdinEnd,
)
from .recorder import Recorder
from .streams import InputStream

RECV_SIZE = 64 * 1024
#: a request body of unknown length is kept in memory up to this size, then in a temporary file
SPOOL_MEMORY = 1024 * 1024
# One receive buffer per process (the request thread is the only reader): recv() would malloc 64 KiB and
# shrink it for every read, and that churn between the request's own objects grew a worker's RSS by ~3 MiB
# per million requests (glibc heap fragmentation; `make bench` with BENCH_DURATION=120)
_RECV_BUF = bytearray(RECV_SIZE)
_RECV_VIEW = memoryview(_RECV_BUF)


def set_io_timeout(sock: socket.socket, seconds: float) -> None:
    """Kernel-side send/receive timeouts: a blocking socket whose calls fail with EAGAIN after ``seconds``.

    One setsockopt per connection, where Python's settimeout() would add a poll() to every call.
    """
    tv = struct.pack("ll", int(seconds), int((seconds % 1) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


class PeerGone(ConnectionError):
    """The web server went away (or timed out) in the middle of a request; raised into ``wsgi.input``."""


class ReadTimeout(Exception):
    """Nothing arrived for ``timeout`` while a request was being read."""


class BodyRefused(Exception):
    """The request body cannot be taken (a bad CONTENT_LENGTH, or over ``max_body_size``): answer ``status``."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status, self.reason = status, reason


class _Limits(Protocol):
    @property
    def timeout(self) -> float: ...  # the response phase's, and the I/O timeout

    @property
    def kill_grace(self) -> float: ...

    @property
    def max_body_size(self) -> int: ...


class WireHost(Protocol):
    """What the wire needs from its worker (a part of fcgipool.server.Host)."""

    log: Any
    recorder: Recorder

    @property
    def settings(self) -> _Limits: ...


class Wire:
    """Socket I/O of one connection. The subclass sets every attribute annotated here in its ``__init__``."""

    sock: socket.socket
    host: WireHost
    conn: Connection  # the sans-IO protocol
    _addr: Any
    closed: bool
    inode: int  # the keeper holds a copy of this socket (fcgipool.keeper): shut it down on close
    broken: bool  # a send failed: the web server is gone; the request still completes locally
    _stashed: Any  # an event parsed ahead (a request already waiting in our buffer)
    _stdin_done: bool
    _t0: float  # monotonic: when the current request started
    _deadline: float  # its response-phase deadline (0 = none)
    _deadline_published: bool  # ... is in the scoreboard slot, with the hard deadline after it

    @functools.cached_property
    def peer(self) -> str:
        """Who sent the request, for log messages; looked up only when something is logged (SO_PEERCRED
        per accepted connection was 3 % of a worker's time in the no-keep-conn profile)."""
        try:
            return describe_peer(self.sock, self._addr)
        except OSError:
            return f"{self._addr or 'unknown peer'} (connection already closed)"

    @property
    def has_buffered_request(self) -> bool:
        return self._stashed is not None

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def io_timeout_ms(self) -> int:
        """The I/O timeout this connection's socket carries (SO_RCVTIMEO/SO_SNDTIMEO), in ms (0 = none)."""
        return int(self.host.settings.timeout * 1000)

    @property
    def reusable(self) -> bool:
        """Idle at a request boundary with nothing read ahead: another worker can take over the socket."""
        if self.closed or self.broken or self._stashed is not None or not self._stdin_done:
            return False
        return self.conn.at_rest

    def close(self) -> None:
        """Close the connection for good. One the keeper holds a copy of is shut down first, so the web
        server sees the end now, not when the keeper notices."""
        if self.closed:
            return
        self.closed = True
        if self.inode:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()

    def release(self) -> None:
        """Close this process's descriptor only: the connection lives on elsewhere (passed on)."""
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self.sock.close()

    # --- socket I/O ----------------------------------------------------------------------------------------
    def _sendall(self, data: bytes) -> None:
        if self.broken or self.closed or not data:
            return
        try:
            self.sock.sendall(data)
        except OSError as exc:
            self.broken = True
            self.host.log.info("FastCGI peer %s stopped reading the response: %s", self.peer, exc)

    def _recv(self, *, wait: bool = True) -> bool:
        """Feed what arrives to the protocol. ``wait=False``: only what has arrived; False if nothing has."""
        try:
            n = self.sock.recv_into(_RECV_BUF, 0, 0 if wait else socket.MSG_DONTWAIT)
        except (BlockingIOError, TimeoutError):
            if not wait:
                return False
            raise ReadTimeout(f"no data for {self.host.settings.timeout:g} s") from None
        except ConnectionResetError:
            n = 0
        self.conn.receive_data(_RECV_VIEW[:n].tobytes())
        return True

    def _next_event(self, *, block: bool = True) -> Any:
        """The stashed event, else the protocol's next one (its automatic replies sent); ``block``: read until
        there is one, else NEED_DATA when what is buffered holds none."""
        if self._stashed is not None:
            event, self._stashed = self._stashed, None
            return event
        while True:
            event = self.conn.next_event()
            out = self.conn.data_to_send()
            if out:
                self._sendall(out)
            if event is not NEED_DATA or not block:
                return event
            self._recv()

    def _stash_ahead(self) -> None:
        """Parse what is already buffered (a request sent before we answered the last one); may raise."""
        if self.conn.has_pending_input:  # rare: nothing read ahead is the common case
            event = self._next_event(block=False)
            if event is not NEED_DATA:
                self._stashed = event

    # --- reading a request -------------------------------------------------------------------------------
    def _read_request(self) -> RequestStarted | None:
        """The next request, or None when the connection is idle at a request boundary or closed.

        Reads only what the readable socket has (or what is buffered), unless a request has begun: then its
        PARAMS/STDIN are waited for (up to ``timeout`` of silence).
        """
        s = self.host.settings
        self._t0 = t0 = self.host.recorder.now  # END_REQUEST of the last request or the end of a wait: no clock read
        self._deadline = t0 + s.timeout if s.timeout else 0.0
        self._deadline_published = False
        recvs = 0
        conn = self.conn
        if self._stashed is None and not conn.has_pending_input:
            self._recv()  # nothing buffered: read first, parse once (a readable socket cannot block)
            recvs = 1
            event = conn.next_event()  # the common case: the whole request came in one read
            if conn.has_output:
                self._sendall(conn.data_to_send())
            if type(event) is RequestStarted:
                return event
            if event is not NEED_DATA:
                self._stashed = event  # anything else: the loop below takes it from here
        while True:
            event = self._next_event(block=False)
            if event is NEED_DATA:
                mid = self.conn.their_state in (State.PARAMS, State.STDIN)
                if not (mid or recvs == 0):
                    return None
                if not self._deadline_published:  # this read may wait: the arbiter must know the deadline
                    self.host.recorder.reading(self._hard_deadline(), self._t0)
                    self._deadline_published = True
                self._recv()
                recvs += 1
                continue
            if isinstance(event, RequestStarted):
                return event
            if isinstance(event, ConnectionClosed):
                self.close()
                return None
            if isinstance(event, AbortRequested):
                self._sendall(self.conn.end_request(event.request_id))
                if self.conn.our_state is State.MUST_CLOSE:
                    self.close()
                    return None
            # StdinData/StdinEnd of a request we already ended cannot reach here (the protocol drops them)

    def _hard_deadline(self) -> float:
        """The arbiter's hard limit for the response phase: kill_grace after our own timeouts."""
        return self._deadline + self.host.settings.kill_grace if self._deadline else time.monotonic() + NO_LIMIT

    # --- the request body ------------------------------------------------------------------------------------
    def _pull_stdin(self) -> bytes:
        """Next chunk of the request body for ``wsgi.input``; b"" at its end."""
        if self._stdin_done:
            return b""
        if self.conn.next_is_stdin_end():  # a GET's empty body, already buffered: no event machinery
            self._stdin_done = True
            return b""
        try:
            event = self._next_event()
        except RemoteProtocolError as exc:
            self.host.log.warning("closing FastCGI connection from %s: %s", self.peer, exc.reason)
            self._stdin_done = True
            self.broken = True
            raise PeerGone(f"request body incomplete: {exc.reason}") from exc
        except ReadTimeout as exc:
            self._stdin_done = True
            self.broken = True
            raise PeerGone(f"request body incomplete: {exc}") from exc
        if isinstance(event, StdinData):
            return event.data
        self._stdin_done = True
        # ABORT_REQUEST ends the body early; the app still runs and its END_REQUEST is the answer to the abort
        if not isinstance(event, StdinEnd | AbortRequested):
            self.broken = True
            raise PeerGone(f"request body incomplete: unexpected {type(event).__name__}")
        return b""

    def _make_input(self, params: dict[str, str]) -> Any:
        """``wsgi.input`` for the request; raises :class:`BodyRefused` (400, 413) before the app is called."""
        try:
            length = body_length(params)  # None: to the end of STDIN (missing, empty or negative: Caddy's -1)
        except BadRequestParams as exc:
            raise BodyRefused("400 Bad Request", str(exc)) from None
        limit = self.host.settings.max_body_size
        if length is not None:
            if limit and length > limit:
                raise BodyRefused("413 Content Too Large", f"CONTENT_LENGTH {length} > max_body_size {limit}")
            return InputStream(self._pull_stdin, length)
        # no length: read the body first, so an oversized one is refused before the app runs (and the app gets
        # its CONTENT_LENGTH)
        chunk = self._pull_stdin()
        if not chunk:  # no body (nginx sends an empty CONTENT_LENGTH with every GET): skip the spool file
            return io.BytesIO()
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115 (it is wsgi.input)
        size = 0
        while chunk:
            size += len(chunk)
            if limit and size > limit:
                spool.close()
                raise BodyRefused("413 Content Too Large", f"request body over max_body_size {limit}")
            spool.write(chunk)
            chunk = self._pull_stdin()
        spool.seek(0)
        if size:
            params["CONTENT_LENGTH"] = str(size)
        return spool

    def _drain_stdin(self) -> None:
        """Read and discard the rest of the body, so closing never resets a connection with unread data."""
        try:
            while not self._stdin_done and not self.broken:
                self._pull_stdin()
        except PeerGone:
            pass
