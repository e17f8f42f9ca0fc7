"""FastCGIConnection driven over a socketpair: environ (wsgiref.validate), body, batching, limits, errors."""

from __future__ import annotations

import json
import logging
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any
from wsgiref.validate import validator

import pytest
from fcgipool import background
from fcgipool.keepconn import KeepConnPolicy, Outcome
from fcgipool.protocol import (
    RecordType,
    encode_begin_request,
    encode_end_request,
    encode_params,
    encode_record,
    encode_request,
    parse_records,
)
from fcgipool.recorder import Recorder
from fcgipool.server import NO_REUSE, FastCGIConnection, ServerSettings
from fcgipool.watchdog import Watchdog
from support.fcgi_client import FastCGIResponse, read_response

PARAMS = {
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "/hello",
    "REQUEST_URI": "/hello?x=1",
    "DOCUMENT_URI": "/hello",
    "QUERY_STRING": "x=1",
    "SERVER_NAME": "example.org",
    "SERVER_PORT": "80",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "CONTENT_TYPE": "",
    "CONTENT_LENGTH": "",
    "HTTP_HOST": "example.org",
}


class FakeHost:
    def __init__(self, app: Callable[..., Any], **settings: Any) -> None:
        self.wsgi = app
        self.log = logging.getLogger("test.fcgipool")
        self.recorder = Recorder()
        self.watchdog = Watchdog()
        self.settings = ServerSettings(**settings)
        self.alive = True
        self.errors = sys.stderr
        self.served = 0
        self.lost: list[Any] = []
        self.request_log: Any = None
        self.spill: Any = None

    def notify(self) -> None:
        pass

    def request_served(self) -> None:
        self.served += 1

    def task_lost_hook(self) -> Any:
        return lambda owner, task: self.lost.append(task)

    # no hand-off queue: a connection with after-response work is closed with the marker
    keepconn = KeepConnPolicy(queue=False, handoff_after=0.0)

    def pass_on(self, conn: Any) -> bool:
        return False


class Exchange:
    """Server in this thread (signals work), client in another: sends ``data``, reads everything until EOF."""

    def __init__(self, app: Callable[..., Any], data: bytes, *, read_until_end: bool = True, **settings: Any):
        self.host = FakeHost(app, **settings)
        self.server_sock, self.client_sock = socket.socketpair()
        self.received = b""
        self.data = data
        self.read_until_end = read_until_end
        self.response: FastCGIResponse | None = None

    def _client(self) -> None:
        self.client_sock.settimeout(10)
        self.client_sock.sendall(self.data)
        if self.read_until_end:
            self.client_sock.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := self.client_sock.recv(65536):
                chunks.append(chunk)
            self.received = b"".join(chunks)
        else:
            self.response = read_response(self.client_sock)

    def run(self) -> bool:
        t = threading.Thread(target=self._client)
        t.start()
        self.connection = FastCGIConnection(self.server_sock, "", self.host)  # type: ignore[arg-type]
        previous = signal.getsignal(signal.SIGALRM)
        self.host.watchdog.install()
        try:
            # like the worker: a fresh connection is served once it is readable (serve() does not wait for it)
            select.select([self.server_sock], [], [], 10)
            kept = self.connection.serve(fresh=True) is Outcome.KEPT
        finally:
            self.host.watchdog.close()
            signal.signal(signal.SIGALRM, previous)
        if kept:
            t.join(10)
            self.connection.close()
        t.join(10)
        self.client_sock.close()
        return kept

    def records(self) -> list[Any]:
        return parse_records(self.received)

    def stdout(self) -> bytes:
        return b"".join(r.content for r in self.records() if r.type == RecordType.STDOUT)


def count_writes(monkeypatch: pytest.MonkeyPatch, writes: list[bytes]) -> None:
    """Record every write the server makes to its socket."""
    orig = FastCGIConnection._sendall

    def counting(self: FastCGIConnection, data: bytes) -> None:
        if data:
            writes.append(bytes(data))
        orig(self, data)

    monkeypatch.setattr(FastCGIConnection, "_sendall", counting)


def simple_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hi ", environ["PATH_INFO"].encode()]


def test_environ_passes_wsgiref_validator() -> None:
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        seen.update(environ)
        body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))  # the validator wants a size
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    params = dict(PARAMS, REQUEST_METHOD="POST", CONTENT_LENGTH="5", CONTENT_TYPE="text/plain")
    ex = Exchange(validator(app), encode_request(1, params, b"hello"))
    assert ex.run() is False
    assert ex.stdout().endswith(b"\r\n\r\nhello")
    assert seen["PATH_INFO"] == "/hello"
    assert seen["SCRIPT_NAME"] == ""
    assert seen["wsgi.multiprocess"] is True and seen["wsgi.multithread"] is False
    assert seen[background.ENVIRON_KEY] is not None


def test_small_response_leaves_in_one_write_with_end_request(monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[bytes] = []
    ex = Exchange(simple_app, encode_request(1, PARAMS))
    count_writes(monkeypatch, writes)
    ex.run()
    assert len(writes) == 1
    types = [r.type for r in parse_records(writes[0])]
    assert types == [RecordType.STDOUT, RecordType.STDOUT, RecordType.END_REQUEST]
    assert ex.stdout() == b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nhi /hello"


def test_keep_conn_serves_several_requests_on_one_connection() -> None:
    data = b"".join(encode_request(i, dict(PARAMS, DOCUMENT_URI=f"/r{i}"), keep_conn=True) for i in (1, 2, 3))
    ex = Exchange(simple_app, data, read_until_end=False)
    assert ex.run() is True
    assert ex.host.served == 3


def test_request_with_tasks_closes_connection_and_marks_no_reuse() -> None:
    ran: list[str] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        background.add(ran.append, "task")
        start_response("200 OK", [])
        return [b"x"]

    ex = Exchange(app, encode_request(1, PARAMS, keep_conn=True))
    assert ex.run() is False
    assert ran == ["task"]
    assert ex.received.endswith(NO_REUSE)
    assert [r.type for r in ex.records()][-2:] == [RecordType.END_REQUEST, RecordType.GET_VALUES_RESULT]


def test_request_with_tasks_passes_a_kept_connection_on_before_the_work() -> None:
    """With the pool's hand-off queue the connection goes to another worker before the task runs: no close,
    no marker behind END_REQUEST (Apache would read it as the next request's answer)."""
    order: list[str] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        background.add(order.append, "task")
        start_response("200 OK", [])
        return [b"x"]

    def pass_on(conn: FastCGIConnection) -> bool:
        assert conn.reusable  # END_REQUEST is out, the body read: at a clean request boundary
        order.append("passed on")
        conn.release()
        return True

    ex = Exchange(app, encode_request(1, PARAMS, keep_conn=True))
    ex.host.keepconn = KeepConnPolicy(queue=True, handoff_after=0.0)
    ex.host.pass_on = pass_on
    assert ex.run() is False
    assert order == ["passed on", "task"]
    assert [r.type for r in ex.records()][-1] == RecordType.END_REQUEST
    assert not ex.received.endswith(NO_REUSE)


def test_app_exception_before_output_is_500() -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        raise RuntimeError("boom")

    ex = Exchange(app, encode_request(1, PARAMS))
    ex.run()
    assert ex.stdout().startswith(b"Status: 500 Internal Server Error\r\n")


def test_missing_start_response_is_500() -> None:
    ex = Exchange(lambda environ, start_response: [], encode_request(1, PARAMS))
    ex.run()
    assert ex.stdout().startswith(b"Status: 500")


def test_error_after_output_was_flushed_ends_without_end_request() -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        start_response("200 OK", [("X-Accel-Buffering", "no")])
        yield b"first part"
        raise RuntimeError("midway")

    ex = Exchange(app, encode_request(1, PARAMS))
    ex.run()
    types = [r.type for r in ex.records()]
    assert RecordType.STDOUT in types
    assert RecordType.END_REQUEST not in types  # a truncated body must not look complete


def test_content_length_over_limit_is_413_without_calling_app() -> None:
    called: list[bool] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        called.append(True)
        start_response("200 OK", [])
        return []

    params = dict(PARAMS, REQUEST_METHOD="POST", CONTENT_LENGTH="2000")
    ex = Exchange(app, encode_request(1, params, b"x" * 2000), max_body_size=1000)
    ex.run()
    assert ex.stdout().startswith(b"Status: 413")
    assert not called


def test_body_without_content_length_over_limit_is_413() -> None:
    called: list[bool] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        called.append(True)
        start_response("200 OK", [])
        return []

    params = dict(PARAMS, REQUEST_METHOD="POST")
    ex = Exchange(app, encode_request(1, params, b"y" * 5000), max_body_size=1000)
    ex.run()
    assert ex.stdout().startswith(b"Status: 413")
    assert not called


def test_body_without_content_length_is_spooled_and_given_a_length() -> None:
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        seen["len"] = environ.get("CONTENT_LENGTH")
        seen["body"] = environ["wsgi.input"].read()
        start_response("200 OK", [])
        return []

    ex = Exchange(app, encode_request(1, dict(PARAMS, REQUEST_METHOD="POST"), b"chunked body"))
    ex.run()
    assert seen == {"len": "12", "body": b"chunked body"}


def test_params_too_large_closes_with_warning_naming_peer(caplog: pytest.LogCaptureFixture) -> None:
    params = dict(PARAMS, HTTP_COOKIE="c" * 5000)
    ex = Exchange(simple_app, encode_request(1, params), max_params_size=2048)
    with caplog.at_level(logging.WARNING):
        assert ex.run() is False
    assert ex.received == b""
    assert any("unix:" in r.getMessage() and "max_params_size" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"\x02\x01\x00\x01\x00\x08\x00\x00" + bytes(8), "version"),
        (encode_begin_request(1) + encode_params(1, PARAMS)[:20], "closed mid"),
        (encode_begin_request(1) + b"\x01\x05\x00\x01\x00\x01\x00\x00x", "before the end of its PARAMS"),
    ],
    ids=["bad-version", "truncated", "out-of-order"],
)
def test_malformed_records_close_connection_with_reason(
    data: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    ex = Exchange(simple_app, data)
    with caplog.at_level(logging.WARNING):
        assert ex.run() is False
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("closing FastCGI connection from unix:" in m and reason in m for m in messages), messages


def test_finish_request_ends_response_and_drops_later_output(caplog: pytest.LogCaptureFixture) -> None:
    order: list[str] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        background.add(order.append, "task")
        background.finish_request()
        order.append("after finish")
        return [b"late output", b"more late output"]

    ex = Exchange(app, encode_request(1, PARAMS, keep_conn=True))
    with caplog.at_level(logging.WARNING):
        assert ex.run() is False
    assert order == ["after finish", "task"]
    assert ex.stdout() == b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n"
    assert ex.received.endswith(NO_REUSE)
    assert sum("dropped" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.timeout(60, method="thread")  # the watchdog owns SIGALRM here
def test_background_timeout_interrupts_task_and_reports_it_and_the_rest() -> None:
    import time

    def stubborn_but_catches_exception() -> None:
        try:
            time.sleep(5)
        except Exception:  # what careless task code does; it must not swallow the interruption
            print("swallowed")

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        background.add(stubborn_but_catches_exception, name="slow")
        background.add(print, name="never")
        start_response("200 OK", [])
        return []

    ex = Exchange(app, encode_request(1, PARAMS), background_timeout=0.3)
    t0 = time.monotonic()
    ex.run()
    assert time.monotonic() - t0 < 3
    assert [(t.name, t.reason, t.started) for t in ex.host.lost] == [
        ("slow", "timeout", True),
        ("never", "timeout", False),
    ]


def test_only_on_success_skips_tasks_of_failed_requests() -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        background.add(print, name="t")
        start_response("404 Not Found", [])
        return []

    ex = Exchange(app, encode_request(1, PARAMS), only_on_success=True)
    ex.run()
    assert [(t.name, t.reason) for t in ex.host.lost] == [("t", "not_started")]


def test_streaming_response_is_written_block_by_block(monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[bytes] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        start_response("200 OK", [("X-Accel-Buffering", "no")])
        yield b"a"
        yield b"b"

    ex = Exchange(app, encode_request(1, PARAMS))
    count_writes(monkeypatch, writes)
    ex.run()
    assert len(writes) == 3  # block a (with headers), block b, end of request
    assert ex.stdout().endswith(b"\r\n\r\nab")


def test_file_wrapper(tmp_path: Any) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"z" * 300_000)
    files: list[Any] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        start_response("200 OK", [])
        files.append(open(path, "rb"))  # noqa: SIM115 - closed by the server through the wrapper
        return environ["wsgi.file_wrapper"](files[0], 1024)

    ex = Exchange(app, encode_request(1, PARAMS))
    ex.run()
    assert ex.stdout().endswith(b"\r\n\r\n" + b"z" * 300_000)
    assert files[0].closed


def test_abort_mid_body_ends_the_body_and_is_answered_with_end_request() -> None:
    seen: list[bytes] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        seen.append(environ["wsgi.input"].read())
        start_response("200 OK", [])
        return [b"answered"]

    params = dict(PARAMS, REQUEST_METHOD="POST", CONTENT_LENGTH="10")
    data = (
        encode_begin_request(1)
        + encode_params(1, params)
        + encode_record(RecordType.STDIN, 1, b"abc")
        + encode_record(RecordType.ABORT_REQUEST, 1)
    )
    ex = Exchange(app, data)
    assert ex.run() is False
    assert seen == [b"abc"]  # the app sees the body end early
    records = ex.records()
    assert records[-1].type == RecordType.END_REQUEST and records[-1].request_id == 1
    assert ex.stdout().endswith(b"answered")


def test_abort_before_the_params_end_is_answered_without_calling_the_app() -> None:
    called: list[bool] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        called.append(True)
        start_response("200 OK", [])
        return []

    data = encode_begin_request(1) + encode_record(RecordType.ABORT_REQUEST, 1)
    ex = Exchange(app, data)
    assert ex.run() is False
    records = ex.records()
    assert [(r.type, r.request_id) for r in records] == [(RecordType.STDOUT, 1), (RecordType.END_REQUEST, 1)]
    assert records[0].content == b""  # only the end of the (empty) STDOUT stream
    assert not called


# --- the response-phase soft stop (--timeout) ----------------------------------------------------------------


def test_an_app_past_the_timeout_is_stopped_and_answered_504() -> None:
    """The soft stop: the app gets RequestTimeout at --timeout, its finally block runs, the request is answered
    504 with END_REQUEST, and the tasks it added are reported lost (reason timeout) without running."""
    ran: list[str] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        background.add(ran.append, "task", name="never")
        try:
            time.sleep(5)
        except Exception:
            ran.append("swallowed by except Exception")
        finally:
            ran.append("finally")
        start_response("200 OK", [])
        return [b"too late"]

    ex = Exchange(app, encode_request(1, PARAMS), read_until_end=False, timeout=0.3)
    t0 = time.monotonic()
    ex.run()
    assert time.monotonic() - t0 < 2
    assert ex.response is not None and ex.response.status == 504, ex.response
    assert json.loads(ex.response.body)["status"] == 504
    assert ran == ["finally"]
    assert [(t.name, t.reason, t.started) for t in ex.host.lost] == [("never", "timeout", False)]


def test_a_timeout_after_part_of_the_response_is_out_ends_the_connection_without_end_request() -> None:
    """A streamed response that already sent its head cannot become a 504: the connection is closed without
    END_REQUEST, so the web server reports a truncated response instead of passing it on as complete."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        start_response("200 OK", [("X-Accel-Buffering", "no")])
        yield b"first block"
        time.sleep(5)
        yield b"never"

    ex = Exchange(app, encode_request(1, PARAMS), timeout=0.3)
    assert ex.run() is False
    assert b"first block" in ex.received
    assert encode_end_request(1) not in ex.received
