"""Serves one FastCGI connection: drives the sans-IO protocol with socket I/O and calls the WSGI app.

One request at a time (the socket side is :mod:`fcgipool.wire`, after-response work :mod:`fcgipool.afterwork`).
``serve`` returns an outcome: the connection is idle and kept (FCGI_KEEP_CONN, nothing left to do), for
the worker's keep-conn policy (:mod:`fcgipool.keepconn`) to decide on, or it has left this worker: a request
with after-response work passes it to another worker through the pool's hand-off queue (or closes it, without
one: the policy's :meth:`~fcgipool.keepconn.KeepConnPolicy.work_ahead`) *before* that work starts, so the web
server can never send a request to a worker that is still busy (php-src #10335). Passing it on rather than
closing it is what Apache's and HAProxy's connection reuse need: they do not look at bytes after END_REQUEST
(Apache reads the no-reuse marker below as the next request's answer).

nginx caches an upstream FastCGI connection when END_REQUEST ends exactly at the end of what it read
(ngx_http_fastcgi_input_filter sets ``u->keepalive = 1`` only then; it ignores a ``Connection: close``
header). So a response that must not be reused carries :data:`NO_REUSE` right behind END_REQUEST in the
same write: nginx sees bytes after the end of the request, does not cache the connection, and closes it.
Only where the connection is closed while the web server may want it (no hand-off queue, a stopping worker).
"""

from __future__ import annotations

import io
import socket
import time
from typing import Any, Protocol

from gunicorn.http.wsgi import FileWrapper

from . import afterwork, background
from .background import Spill, TaskList
from .environ import BadRequestParams, build_environ, request_uri
from .keepconn import Action, KeepConnPolicy, Outcome
from .lost import LostTask
from .protocol import (
    Connection,
    LocalProtocolError,
    RecordType,
    RemoteProtocolError,
    RequestStarted,
    encode_record,
)
from .recorder import Recorder
from .requestlog import RequestLog
from .response import ResponseError, ResponseWriter, error_body, iter_file_wrapper
from .settings import ServerSettings
from .streams import InputStream
from .watchdog import BackgroundTimeout, RequestTimeout, Watchdog, calls_user_code
from .wire import BodyRefused, PeerGone, ReadTimeout, Wire, set_io_timeout

#: An empty FCGI_GET_VALUES_RESULT management record: harmless to any FastCGI client, and bytes after
#: END_REQUEST make nginx drop the connection instead of caching it (see module docstring).
NO_REUSE = encode_record(RecordType.GET_VALUES_RESULT, 0, b"")
#: environ key an app may set to name the route a request matched (``/cart/<user>``): the request log groups by it
ROUTE_KEY = "fcgipool.route"
_KEPT, _CLOSED = Outcome.KEPT, Outcome.CLOSED  # globals: an enum member read from its class costs ~50 ns
_PASS_ON = Action.PASS_ON


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
    keepconn: KeepConnPolicy  # decides what becomes of a kept connection whose request has after-response work

    def notify(self) -> None: ...

    def request_served(self) -> None: ...

    def task_lost_hook(self) -> Any: ...

    def pass_on(self, conn: FastCGIConnection) -> bool:
        """``conn``, just past END_REQUEST, to another worker; False if that cannot be done (queue full)."""
        ...


class FastCGIConnection(Wire):
    """One accepted connection. :meth:`serve` handles requests until the connection is idle or closed."""

    host: Host

    def __init__(self, sock: socket.socket, addr: Any, host: Host, *, configured: bool = False) -> None:
        """``configured``: the socket already has this worker's blocking mode and I/O timeouts (a connection
        passed on by another worker with the same ``timeout``, see :attr:`io_timeout_ms`)."""
        self.sock = sock
        self.host = host
        self._addr = addr
        s = host.settings
        self.conn = Connection(max_params_size=s.max_params_size, values=s.values)
        # the request log's add, found once per connection: its object is touched by nothing else in a request, and
        # finding it per request was a cache miss there (~40 ns of its ~0.27 us in the workers; docs/benchmarks.md)
        self._log_add = host.request_log.add if host.request_log is not None else None
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

    # --- entry point -------------------------------------------------------------------------------------
    def serve(self, *, fresh: bool) -> Outcome:
        """Serve requests until the connection is idle at a request boundary (:attr:`Outcome.KEPT`) or closed.

        ``fresh``: just accepted; if its first request has not arrived yet it is idle (KEPT, with
        :attr:`idle_since` set) rather than waited on: a client that connects and sends nothing must not
        occupy a worker. Otherwise the socket was reported readable, or a request is already buffered.
        What then becomes of a kept connection is the worker's business (fcgipool.keepconn); :attr:`give_up`,
        set before, ends it after its request with the no-reuse marker.
        """
        log = self.host.log
        if fresh and not self._recv(wait=False):
            self.idle_since = time.monotonic()
            return _KEPT
        self.idle_since = 0.0
        try:
            while not self.closed:
                event = self._read_request()
                if event is None:
                    return _CLOSED if self.closed else _KEPT
                if not self._serve_request(event):
                    break
                # a stopping worker still serves a request already in its buffer (its END_REQUEST then ends
                # the connection cleanly); an idle connection goes back to the worker, which passes it on
                if not self.conn.has_pending_input:
                    return _KEPT  # the common case: nothing read ahead
                self._stash_ahead()
                if self._stashed is None:
                    return _KEPT
        except RemoteProtocolError as exc:
            log.warning("closing FastCGI connection from %s: %s", self.peer, exc.reason)
        except ReadTimeout as exc:
            log.warning("closing FastCGI connection from %s: %s", self.peer, exc)
        except LocalProtocolError:
            log.exception("internal FastCGI error on the connection from %s", self.peer)
        self.host.watchdog.disarm()
        self.close()
        return _CLOSED

    # --- one request ---------------------------------------------------------------------------------------
    def _serve_request(self, event: RequestStarted) -> bool:
        """Handle one request to the end (response and after-response work). True if the connection may stay.

        The common request -- no body or one already buffered, the app returns, no after-response work -- runs
        straight through this function and :meth:`_call_app`; everything else turns off to a method of its own.
        One frame less per step was ~6 us of a 32 us request in ``make bench`` (docs/benchmarks.md)."""
        host = self.host
        s = host.settings
        recorder = host.recorder
        params = self._params = event.params
        self._stdin_done = self._after_started = self._late_warned = False
        self._input = self._environ = self._lost_early = None  # _lost_early: tasks that never got to run
        get = params.get
        uri = get("REQUEST_URI") or request_uri(params)
        method = get("REQUEST_METHOD", "GET")
        length_text = get("CONTENT_LENGTH", "")
        if length_text and not length_text.isdecimal():
            length_text = length_text.strip()
        recorder.begin(
            method, uri, get("QUERY_STRING", ""), int(length_text) if length_text.isdecimal() else 0,
            get("SCRIPT_FILENAME", ""),
            # the request was already buffered (no read phase): its deadline goes with this write
            None if self._deadline_published else self._hard_deadline(), self._t0,
        )  # fmt: skip
        self._deadline_published = True
        host.watchdog.arm_response(self._deadline)  # soft stop: the app gets RequestTimeout (504); 0 = none
        writer = self._writer = ResponseWriter(
            self.conn, event.request_id, self._sendall, buffer_size=s.buffer_size, on_late_write=self._late_write
        )
        tasks = TaskList(uri, on_change=recorder.pending, on_finish_request=self._finish_current, spill=host.spill)
        try:
            if not length_text and self.conn.next_is_stdin_end():  # a GET: its empty body is buffered already
                self._stdin_done = True
                wsgi_input: Any = io.BytesIO()
            else:
                try:
                    wsgi_input = self._make_input(params)
                except BodyRefused as refused:  # answered without calling the app
                    self._reject(writer, refused.status, refused.reason)
                    wsgi_input = None
            if wsgi_input is not None:
                self._input = wsgi_input
                self._call_app(params, wsgi_input, tasks, writer)
        except BackgroundTimeout as exc:
            # the app's own code after finish_request() used up the after-response budget
            host.log.error("%s %s: code after finish_request() interrupted (%s)", method, uri, exc.reason)
            if exc.reason == "timeout":
                recorder.background_timeout()
            self._report_lost([LostTask(f"{method} {uri} (after finish_request)", exc.reason, uri, started=True)])
        host.request_served()
        pending = tasks.done < len(tasks.tasks)
        if self._after_started:
            keep = False  # finish_request() ended the response and closed the connection
        elif pending or self.broken or self.give_up or not self.conn.keep_conn or not self._stdin_done:
            keep = self._end_response(writer, pending)
        else:  # the common end: END_REQUEST, and the connection stays if the worker does
            host.watchdog.disarm()  # the app has returned: the response-phase deadline is done with
            keep = host.alive and s.keep_conn
            writer.finish(b"" if keep else NO_REUSE)
            recorder.end_response(rest=True)
            if not keep:
                self.close()
        after, outcomes = 0.0, self._lost_early
        if pending or self._after_started:
            self._start_after_response()
            result = afterwork.run(host, tasks, writer.status_code, stop_on_error=s.stop_on_error,
                                   only_on_success=s.only_on_success)  # fmt: skip
            after, outcomes = result.seconds, (outcomes or []) + result.outcomes
        add = self._log_add
        if add is not None:  # one row; formatted and written in bulk by the worker (fcgipool.requestlog)
            env = self._environ
            if add(recorder.slot, method, uri, env.get(ROUTE_KEY) if env is not None else None, writer.status, after,
                   outcomes) and (log := host.request_log) is not None:  # fmt: skip
                log.flush()  # the batch is full; else the worker writes it once a second (fcgipool.upkeep)
        return keep

    def _late_write(self) -> None:
        if not self._late_warned:
            self._late_warned = True
            params = self._params
            self.host.log.warning("%s %s: output after finish_request() is dropped",
                                  params.get("REQUEST_METHOD", "GET"), request_uri(params))  # fmt: skip

    def _finish_current(self) -> None:
        self._finish_early(self._writer)

    def _reject(self, writer: ResponseWriter, status: str, reason: str) -> None:
        self.host.log.warning("refusing request from %s: %s (%s)", self.peer, status, reason)
        self._drain_stdin()
        writer.replace_with_error(status, error_body(status, reason))

    @calls_user_code
    def _call_app(self, params: dict[str, str], wsgi_input: Any, tasks: TaskList, writer: ResponseWriter) -> None:
        """The app's environ, the app called (interruptible by the response deadline, or by the budget after
        finish_request()), its body written; a timeout or an exception answered."""
        host = self.host
        try:
            environ = build_environ(params, wsgi_input=wsgi_input, errors=host.errors, root=host.settings.root)
        except BadRequestParams as exc:
            self._reject(writer, "400 Bad Request", str(exc))
            return
        environ[background.ENVIRON_KEY] = tasks
        self._environ = environ
        token = background.activate(tasks)
        try:
            with host.watchdog.interruptible():
                result = host.wsgi(environ, writer.start_response)
                try:
                    if type(result) is list and len(result) == 1 and writer.status is not None:
                        writer.write(result[0])  # the common body: one bytes object
                    else:
                        self._write_body(result, writer)
                finally:
                    close = getattr(result, "close", None)
                    if close is not None:
                        close()
        except RequestTimeout:
            self._timed_out(writer, tasks)
        except Exception:
            host.log.exception("Error handling request %s %s", environ.get("REQUEST_METHOD"), request_uri(params))
            if writer.can_replace and not self.broken:
                status = "500 Internal Server Error"
                writer.replace_with_error(status, error_body(status, "the application raised an exception"))
            elif not writer.finished:
                # part of the response is out: never let a truncated body pass as complete
                self.broken = True
        finally:
            background.deactivate(token)

    @calls_user_code
    def _write_body(self, result: Any, writer: ResponseWriter) -> None:
        body = result
        if isinstance(result, FileWrapper) and hasattr(result.filelike, "read"):
            body = iter_file_wrapper(result, self.host.settings.buffer_size)
        for chunk in body:
            writer.write(chunk)
        if writer.status is None:
            raise ResponseError("the application returned without calling start_response()")

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

    def _end_response(self, writer: ResponseWriter, pending: bool) -> bool:
        """END_REQUEST of a request that does not end the common way (``pending`` after-response work, a broken
        or given-up connection, an unread body); close unless the connection can be kept."""
        host = self.host
        host.watchdog.disarm()  # the app has returned: the response-phase deadline is done with
        wanted = self._keepable()
        keep = wanted and not pending
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
        """END_REQUEST of a request whose after-response work follows in this worker; then, if the policy says
        so, a connection the web server keeps goes to another worker, its next request is served there at once.
        Otherwise (no hand-off queue, or it is full) the caller closes it; the no-reuse marker then keeps nginx
        from reusing it."""
        host = self.host
        if host.keepconn.work_ahead(wanted) is _PASS_ON:
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
        if not self._after_started:
            self._after_started = True
            s = self.host.settings
            afterwork.begin(self.host, s.background_timeout, s.kill_grace)

    def _report_lost(self, lost: list[LostTask]) -> None:
        afterwork.report(self.host, lost)


__all__ = ["NO_REUSE", "FastCGIConnection", "PeerGone", "ServerSettings", "set_io_timeout"]
