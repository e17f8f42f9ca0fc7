"""Serves one FastCGI connection: drives the sans-IO protocol with socket I/O and calls the WSGI app.

One request at a time. After END_REQUEST the connection is either handed back to the worker as an idle
kept connection (FCGI_KEEP_CONN, nothing left to do) or leaves this worker: a request with after-response
work passes it to another worker through the pool's hand-off queue (or closes it, without one) *before*
that work starts, so the web server can never send a request to a worker that is still busy (php-src #10335).
Passing it on rather than closing it is what Apache's and HAProxy's connection reuse need: they do not
look at bytes after END_REQUEST (Apache reads the no-reuse marker below as the next request's answer).

nginx caches an upstream FastCGI connection when END_REQUEST ends exactly at the end of what it read
(ngx_http_fastcgi_input_filter sets ``u->keepalive = 1`` only then; it ignores a ``Connection: close``
header). So a response that must not be reused carries :data:`NO_REUSE` right behind END_REQUEST in the
same write: nginx sees bytes after the end of the request, does not cache the connection, and closes it.
Only where the connection is closed while the web server may want it (no hand-off queue, a stopping worker).
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

from gunicorn.http.wsgi import FileWrapper

from . import background
from .background import RunResult, Spill, TaskList, run_tasks
from .environ import BadRequestParams, body_length, build_environ, request_uri
from .lost import LostTask, report_lost
from .peer import describe_peer
from .protocol import (
    NEED_DATA,
    AbortRequested,
    Connection,
    ConnectionClosed,
    LocalProtocolError,
    RecordType,
    RemoteProtocolError,
    RequestStarted,
    State,
    StdinData,
    StdinEnd,
    encode_record,
)
from .recorder import Recorder
from .requestlog import RequestLog
from .response import ResponseError, ResponseWriter, error_body, iter_file_wrapper
from .settings import ServerSettings
from .streams import InputStream
from .watchdog import BackgroundTimeout, RequestTimeout, Watchdog, calls_user_code

#: An empty FCGI_GET_VALUES_RESULT management record: harmless to any FastCGI client, and bytes after
#: END_REQUEST make nginx drop the connection instead of caching it (see module docstring).
NO_REUSE = encode_record(RecordType.GET_VALUES_RESULT, 0, b"")
RECV_SIZE = 64 * 1024
# One receive buffer per process (the request thread is the only reader): recv() would malloc 64 KiB and
# shrink it for every read, and that churn between the request's own objects grew a worker's RSS by ~3 MiB
# per million requests (glibc heap fragmentation; `make bench` with BENCH_DURATION=120)
_RECV_BUF = bytearray(RECV_SIZE)
_RECV_VIEW = memoryview(_RECV_BUF)
#: environ key an app may set to name the route a request matched (``/cart/<user>``): the request log groups by it
ROUTE_KEY = "fcgipool.route"
NO_LIMIT = 10 * 365 * 86400.0  # "no deadline" as a deadline: the arbiter never kills for it
SPOOL_MEMORY = 1024 * 1024


class Host(Protocol):
    """What the server needs from its worker."""

    wsgi: Any
    log: Any
    recorder: Recorder
    watchdog: Watchdog
    settings: ServerSettings
    alive: bool
    errors: Any
    request_log: RequestLog | None
    spill: Spill | None  # fcgipool.spill.Spiller when --spill-to is set

    def notify(self) -> None: ...

    def request_served(self) -> None: ...

    def task_lost_hook(self) -> Any: ...

    def should_yield(self) -> bool:
        """Give this kept connection up now (new connections have been waiting in the listen queue)."""
        ...

    def long_work_ahead(self) -> None:
        """After-response work starts (the connection is passed on or closed): the worker will be busy a while."""
        ...

    @property
    def passes_on(self) -> bool:
        """Connections can go to another worker (the pool's hand-off queue): :meth:`pass_on` may succeed."""
        ...

    def pass_on(self, conn: FastCGIConnection) -> bool:
        """``conn``, just past END_REQUEST, to another worker; False if that cannot be done (queue full)."""
        ...


def set_io_timeout(sock: socket.socket, seconds: float) -> None:
    """Kernel-side send/receive timeouts: a blocking socket whose calls fail with EAGAIN after ``seconds``.

    One setsockopt per connection, where Python's settimeout() would add a poll() to every call.
    """
    tv = struct.pack("ll", int(seconds), int((seconds % 1) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


class PeerGone(ConnectionError):
    """The web server went away (or timed out) in the middle of a request; raised into ``wsgi.input``."""


class FastCGIConnection:
    """One accepted connection. :meth:`serve` handles requests until the connection is idle or closed."""

    def __init__(self, sock: socket.socket, addr: Any, host: Host, *, configured: bool = False) -> None:
        """``configured``: the socket already has this worker's blocking mode and I/O timeouts (a connection
        passed on by another worker with the same ``timeout``, see :attr:`io_timeout_ms`)."""
        self.sock = sock
        self.host = host
        self._addr = addr
        s = host.settings
        self.conn = Connection(max_params_size=s.max_params_size, values=s.values)
        self.closed = False
        self.inode = 0  # the keeper holds a copy of this socket (fcgipool.keeper): shut it down on close
        self.idle_since = 0.0  # accepted, no request yet: since when (time.monotonic()); 0 once one came
        self.give_up = False  # end the connection cleanly (no-reuse marker) after the current request
        self.broken = False  # a send failed: the web server is gone; the request still completes locally
        self._stashed: Any = None  # an event parsed ahead (a request already waiting in our buffer)
        self._deadline = 0.0
        self._t0 = 0.0  # monotonic: when the current request started
        self._deadline_published = False
        self._stdin_done = True
        self._after_started = False
        self._input: Any = None
        self._params: dict[str, str] = {}
        self._writer: Any = None
        self._environ: dict[str, Any] | None = None
        self._lost_early: list[tuple[str, str]] | None = None
        self._late_warned = False
        if not configured:
            # a socket from accept()/recvmsg is blocking unless socket.setdefaulttimeout() was called: skip the
            # syscall then (gettimeout() reads Python's own flag)
            if sock.gettimeout() is not None:
                sock.setblocking(True)
            if s.timeout:
                set_io_timeout(sock, s.timeout)

    @functools.cached_property
    def peer(self) -> str:
        """Who sent the request, for log messages; looked up only when something is logged (SO_PEERCRED
        per accepted connection was 3 % of a worker's time in the no-keep-conn profile)."""
        try:
            return describe_peer(self.sock, self._addr)
        except OSError:
            return f"{self._addr or 'unknown peer'} (connection already closed)"

    # --- entry point -------------------------------------------------------------------------------------
    @property
    def has_buffered_request(self) -> bool:
        return self._stashed is not None

    def fileno(self) -> int:
        return self.sock.fileno()

    def serve(self, *, fresh: bool) -> bool:
        """Serve requests; True when the connection stays open and idle (a kept connection).

        ``fresh``: just accepted; if its first request has not arrived yet it is idle (True, with
        :attr:`idle_since` set) rather than waited on: a client that connects and sends nothing must not
        occupy a worker. Otherwise the socket was reported readable, or a request is already buffered.
        """
        log = self.host.log
        if fresh and not self._try_recv():
            self.idle_since = time.monotonic()
            return True
        self.idle_since = 0.0
        try:
            while not self.closed:
                event = self._read_request()
                if event is None:
                    return not self.closed
                if not self._serve_request(event):
                    break
                # a stopping worker still serves a request already in its buffer (its END_REQUEST then ends
                # the connection cleanly); an idle connection goes back to the worker, which passes it on
                self._stash_ahead()
                if self._stashed is None:
                    return True
        except RemoteProtocolError as exc:
            log.warning("closing FastCGI connection from %s: %s", self.peer, exc.reason)
        except _ReadTimeout as exc:
            log.warning("closing FastCGI connection from %s: %s", self.peer, exc)
        except LocalProtocolError:
            log.exception("internal FastCGI error on the connection from %s", self.peer)
        self.host.watchdog.disarm()
        self.close()
        return False

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

    def _recv(self) -> None:
        try:
            data = _RECV_VIEW[: self.sock.recv_into(_RECV_BUF)].tobytes()
        except (BlockingIOError, TimeoutError):
            raise _ReadTimeout(f"no data for {self.host.settings.timeout:g} s") from None
        except ConnectionResetError:
            data = b""
        self.conn.receive_data(data)

    def _try_recv(self) -> bool:
        """Read what has arrived without waiting; False if nothing has."""
        try:
            data = _RECV_VIEW[: self.sock.recv_into(_RECV_BUF, 0, socket.MSG_DONTWAIT)].tobytes()
        except BlockingIOError:
            return False
        except ConnectionResetError:
            data = b""
        self.conn.receive_data(data)
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
        """Parse what the last read brought beyond the request just served (may raise), for the next round."""
        if self.conn.has_pending_input:  # the common case is nothing read ahead, nothing to parse
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
        if self._stashed is None and not self.conn.has_pending_input:
            self._recv()  # nothing buffered: read first, parse once (a readable socket cannot block)
            recvs = 1
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
        except _ReadTimeout as exc:
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

    def _drain_stdin(self) -> None:
        """Read and discard the rest of the body, so closing never resets a connection with unread data."""
        try:
            while not self._stdin_done and not self.broken:
                self._pull_stdin()
        except PeerGone:
            pass

    # --- one request ---------------------------------------------------------------------------------------
    def _serve_request(self, event: RequestStarted) -> bool:
        """Handle one request to the end (response and after-response work). True if the connection may stay."""
        host = self.host
        s = host.settings
        params = self._params = event.params
        self._stdin_done = False
        self._after_started = False
        self._input = None
        self._late_warned = False
        self._lost_early = None  # tasks that never got to run (for the request log)
        uri = params.get("REQUEST_URI") or request_uri(params)
        method = params.get("REQUEST_METHOD", "GET")
        length_text = params.get("CONTENT_LENGTH", "").strip()
        host.recorder.begin(
            method, uri, params.get("QUERY_STRING", ""), int(length_text) if length_text.isdecimal() else 0,
            params.get("SCRIPT_FILENAME", ""),
            # the request was already buffered (no read phase): its deadline goes with this write
            None if self._deadline_published else self._hard_deadline(), self._t0,
        )  # fmt: skip
        self._deadline_published = True
        host.watchdog.arm_response(self._deadline)  # soft stop: the app gets RequestTimeout (504); 0 = none
        writer = self._writer = ResponseWriter(
            self.conn, event.request_id, self._sendall, buffer_size=s.buffer_size, on_late_write=self._late_write
        )
        tasks = TaskList(uri, on_change=host.recorder.pending, on_finish_request=self._finish_current,
                         spill=host.spill)  # fmt: skip
        try:
            self._input = self._make_input(params, writer)
            if self._input is not None:
                self._run_app(params, self._input, tasks, writer)
        except BackgroundTimeout as exc:
            # the app's own code after finish_request() used up the after-response budget
            host.log.error("%s %s: code after finish_request() interrupted (%s)", method, uri, exc.reason)
            if exc.reason == "timeout":
                host.recorder.background_timeout()
            self._report_lost([LostTask(f"{method} {uri} (after finish_request)", exc.reason, uri, started=True)])
        host.request_served()
        keep = self._end_response(writer, tasks)
        after, outcomes = 0.0, self._lost_early
        if tasks.done < len(tasks.tasks) or self._after_started:
            result = self._run_after_response(tasks, writer.status_code)
            after, outcomes = result.seconds, (outcomes or []) + result.outcomes
        log = host.request_log
        if log is not None:  # one tuple; formatted and written in bulk by the worker (fcgipool.requestlog)
            env = self._environ
            log.rows.append((method, uri, env.get(ROUTE_KEY) if env is not None else None, writer.status, after,
                             outcomes, *host.recorder.facts()))  # fmt: skip
        return keep

    def _late_write(self) -> None:
        if not self._late_warned:
            self._late_warned = True
            params = self._params
            self.host.log.warning("%s %s: output after finish_request() is dropped",
                                  params.get("REQUEST_METHOD", "GET"), request_uri(params))  # fmt: skip

    def _finish_current(self) -> None:
        self._finish_early(self._writer)

    def _make_input(self, params: dict[str, str], writer: ResponseWriter) -> Any:
        """``wsgi.input`` for the request, or None after answering 400/413 without calling the app."""
        s = self.host.settings
        try:
            length = body_length(params)  # None: to the end of STDIN (missing, empty or negative: Caddy's -1)
        except BadRequestParams as exc:
            self._reject(writer, "400 Bad Request", str(exc))
            return None
        limit = s.max_body_size
        if length is not None:
            if limit and length > limit:
                self._reject(writer, "413 Content Too Large", f"CONTENT_LENGTH {length} > max_body_size {limit}")
                return None
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
                self._reject(writer, "413 Content Too Large", f"request body over max_body_size {limit}")
                return None
            spool.write(chunk)
            chunk = self._pull_stdin()
        spool.seek(0)
        if size:
            params["CONTENT_LENGTH"] = str(size)
        return spool

    def _reject(self, writer: ResponseWriter, status: str, reason: str) -> None:
        self.host.log.warning("refusing request from %s: %s (%s)", self.peer, status, reason)
        self._drain_stdin()
        writer.replace_with_error(status, error_body(status, reason))

    def _run_app(self, params: dict[str, str], wsgi_input: Any, tasks: TaskList, writer: ResponseWriter) -> None:
        host, log = self.host, self.host.log
        try:
            environ = build_environ(params, wsgi_input=wsgi_input, errors=host.errors, root=host.settings.root)
        except BadRequestParams as exc:
            self._reject(writer, "400 Bad Request", str(exc))
            return
        environ[background.ENVIRON_KEY] = tasks
        self._environ = environ
        token = background.activate(tasks)
        try:
            with host.watchdog.interruptible():  # by the response deadline, or the budget after finish_request()
                self._call_app(environ, writer)
        except RequestTimeout:
            self._timed_out(writer, tasks)
        except Exception:
            log.exception("Error handling request %s %s", environ.get("REQUEST_METHOD"), request_uri(params))
            if writer.can_replace and not self.broken:
                status = "500 Internal Server Error"
                writer.replace_with_error(status, error_body(status, "the application raised an exception"))
            elif not writer.finished:
                # part of the response is out: never let a truncated body pass as complete
                self.broken = True
        finally:
            background.deactivate(token)

    def _timed_out(self, writer: ResponseWriter, tasks: TaskList) -> None:
        """The app outlived ``timeout`` and was interrupted (its finally blocks ran): answer 504 on this
        connection, so the web server has an answer and never resends the request; its tasks do not run."""
        host, params = self.host, self._params
        method, uri = params.get("REQUEST_METHOD", "GET"), request_uri(params)
        host.recorder.request_timeout()
        self.give_up = True  # the app was cut off mid-way: start the next request on a fresh connection
        limit = f"{host.settings.timeout:g} s"
        if writer.can_replace and not self.broken:
            status = "504 Gateway Timeout"
            body = error_body(status, f"the request ran longer than the pool's timeout ({limit})")
            writer.replace_with_error(status, body)
            outcome = "answered 504"
        else:
            self.broken = True  # part of the response is out: end without END_REQUEST, nginx reports it
            outcome = "part of the response was already sent, so the connection is closed without END_REQUEST"
        pending = tasks.tasks[tasks.done :]
        host.log.error("%s %s: still running after timeout (%s): interrupted, %s%s", method, uri, limit, outcome,
                       f"; {len(pending)} after-response task(s) not run" if pending else "")  # fmt: skip
        if pending:
            tasks.done = len(tasks.tasks)
            self._report_lost([LostTask(t.name, "timeout", uri) for t in pending])
            self._lost_early = [(t.name, "lost:timeout") for t in pending]

    @calls_user_code
    def _call_app(self, environ: dict[str, Any], writer: ResponseWriter) -> None:
        result = self.host.wsgi(environ, writer.start_response)
        try:
            body = result
            if isinstance(result, FileWrapper) and hasattr(result.filelike, "read"):
                body = iter_file_wrapper(result, self.host.settings.buffer_size)
            for chunk in body:
                writer.write(chunk)
            if writer.status is None:
                raise ResponseError("the application returned without calling start_response()")
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    def _end_response(self, writer: ResponseWriter, tasks: TaskList) -> bool:
        """END_REQUEST (unless finish_request() already sent it); close unless the connection can be kept."""
        if self._after_started:
            return False  # finish_request() ended the response and closed the connection
        host = self.host
        host.watchdog.disarm()  # the app has returned: the response-phase deadline is done with
        pending = tasks.done < len(tasks.tasks)
        wanted = self._keepable()
        keep = wanted and not pending and not host.should_yield()
        if self.broken:
            keep = False  # no END_REQUEST: nginx reports a truncated response as an upstream error
        else:
            # read the unread body while the request is active (later the protocol would drop it unseen): closing
            # never resets a connection with unread data, and a kept one is at a clean boundary to pass on
            self._drain_stdin()
            if pending:
                self._hand_over(writer, wanted)
            else:
                writer.finish(NO_REUSE if (self.conn.keep_conn and not keep) else b"")
        host.recorder.end_response(rest=not pending)
        if not keep:
            self.close()  # (a connection passed on is only this process's descriptor, released already)
        return keep

    def _keepable(self) -> bool:
        """The web server wants the connection kept, and nothing on our side ends it."""
        host = self.host
        return bool(self.conn.keep_conn and host.settings.keep_conn and host.alive and not self.broken
                    and not self.give_up)  # fmt: skip

    def _hand_over(self, writer: ResponseWriter, wanted: bool) -> None:
        """END_REQUEST of a request whose after-response work follows in this worker; then a connection the web
        server keeps goes to another worker, its next request is served there at once. Without a hand-off queue
        (or when it is full) the caller closes it; the no-reuse marker then keeps nginx from reusing it."""
        host = self.host
        if wanted and host.passes_on:
            writer.finish(b"")
            if not host.pass_on(self):
                host.log.debug("could not pass on a kept connection before after-response work: closing it")
            return
        writer.finish(NO_REUSE if self.conn.keep_conn else b"")

    def _finish_early(self, writer: ResponseWriter) -> None:
        """background.finish_request(): send the response now; the rest of the app is after-response work."""
        if writer.finished or self._after_started:
            return
        if writer.status is None:
            writer.start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        if isinstance(self._input, InputStream):
            self._input.buffer_rest()  # the app may still read its body after the connection is gone
        self._drain_stdin()
        self._hand_over(writer, self._keepable())
        self.host.recorder.end_response()
        self.close()
        self._start_after_response()

    # --- after-response work -------------------------------------------------------------------------------
    def _start_after_response(self) -> None:
        if self._after_started:
            return
        self._after_started = True
        self.host.long_work_ahead()
        s, rec = self.host.settings, self.host.recorder
        rec.finishing()
        soft = self.host.watchdog.arm(time.monotonic() + s.background_timeout if s.background_timeout else 0.0)
        # no budget: a deadline far away, so the arbiter does not fall back to the (silent) heartbeat
        rec.deadline(soft + s.kill_grace if soft else time.monotonic() + NO_LIMIT)

    def _run_after_response(self, tasks: TaskList, status: int) -> RunResult:
        host, s = self.host, self.host.settings
        self._start_after_response()
        skip = "not_started" if (s.only_on_success and status >= 400) else None
        if skip:
            host.log.info("%s: response status %s, after-response tasks skipped", tasks.request_uri, status)
        try:
            result = run_tasks(
                tasks,
                logger=host.log,
                stop_on_error=s.stop_on_error,
                watchdog=host.watchdog,
                on_done=host.recorder.task_done,
                on_lost=self._report_lost,
                skip_reason=skip,
                spill=host.spill,
                on_spilled=host.recorder.task_spilled,
            )
        finally:
            host.watchdog.disarm()
        if any(t.reason == "timeout" for t in result.lost):
            host.recorder.background_timeout()
        host.notify()
        host.recorder.idle()  # and no deadline
        return result

    def _report_lost(self, lost: list[LostTask]) -> None:
        host = self.host
        hook = host.task_lost_hook()
        for task in lost:
            # hook first, then off the slot's pending list: a worker killed in between (a slow hook past the
            # arbiter's deadline) leaves the task pending, and the arbiter reports it (at least once, never none)
            report_lost(host, [task], host.log, hook)
            host.recorder.lost([task.name])


class _ReadTimeout(Exception):
    pass


__all__ = ["NO_REUSE", "FastCGIConnection", "PeerGone", "ServerSettings", "set_io_timeout"]
