"""CGI-style response writer (``Status:`` header, then headers, blank line, body) with batched output.

Headers and body are collected and written in large chunks: a response smaller than the buffer leaves in
one ``sendall`` together with the end of STDOUT and END_REQUEST. ``X-Accel-Buffering: no`` (nginx's own
convention for streamed responses) switches to writing each block as the application yields it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from types import TracebackType
from typing import Any

from .protocol import Connection

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS = re.compile(r"[1-9][0-9]{2}(?: [^\x00-\x1f\x7f]*)?\Z")
# (name, value) headers that passed every check (str only): an app sends the same few with every response
_GOOD_HEADERS: set[tuple[str, str]] = set()
_GOOD_HEADERS_MAX = 4096
_GOOD_STATUSES: set[str] = set()  # the same for status lines: the regex match cost ~0.3 us a request


class ResponseError(Exception):
    """The application broke the WSGI response contract (bad status or header, missing start_response)."""


class ResponseWriter:
    """One request's response. ``send(bytes)`` writes to the socket (blocking, whole buffer)."""

    __slots__ = (
        "_buffer_size",
        "_conn",
        "_head",
        "_on_late_write",
        "_pending",
        "_pending_len",
        "_rid",
        "_send",
        "body_bytes",
        "finished",
        "flushed",
        "headers",
        "status",
        "streaming",
    )  # fmt: skip

    def __init__(
        self,
        conn: Connection,
        request_id: int,
        send: Callable[[bytes], None],
        *,
        buffer_size: int = 256 * 1024,
        on_late_write: Callable[[], None] | None = None,
    ) -> None:
        self._conn = conn
        self._rid = request_id
        self._send = send
        self._buffer_size = buffer_size
        self._on_late_write = on_late_write
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self._head: bytes | None = None  # encoded CGI header block once emitted into the buffer
        self._pending: list[bytes] = []
        self._pending_len = 0
        self.flushed = False  # some bytes of this response reached the socket: it can no longer be replaced
        self.finished = False  # END_REQUEST sent
        self.streaming = False
        self.body_bytes = 0

    # --- WSGI --------------------------------------------------------------------------------------------
    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.flushed:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # break the traceback cycle (PEP 3333)
            self._reset()
        elif self.status is not None:
            raise ResponseError("start_response() called a second time without exc_info")
        if type(status) is not str or status not in _GOOD_STATUSES:
            if not isinstance(status, str) or not _STATUS.match(status):
                raise ResponseError(f"invalid WSGI status {status!r}: expected a str like '200 OK'")
            if len(_GOOD_STATUSES) < _GOOD_HEADERS_MAX:
                _GOOD_STATUSES.add(status)
        checked: list[tuple[str, str]] = []
        for item in headers:
            try:
                if item in _GOOD_HEADERS:
                    checked.append(item)
                    continue
            except TypeError:  # unhashable (a list, or a tuple holding one): the checks below say what is wrong
                pass
            if not (isinstance(item, tuple) and len(item) == 2):
                raise ResponseError(f"response header {item!r} is not a (name, value) tuple")
            name, value = item
            if not isinstance(name, str) or not _TOKEN.match(name):
                raise ResponseError(f"invalid response header name {name!r}")
            if not isinstance(value, str) or _BAD_VALUE.search(value):
                raise ResponseError(f"invalid value for response header {name}: {value!r}")
            if name.lower() == "x-accel-buffering":
                self.streaming = self.streaming or value.strip().lower() == "no"  # never cached: sets state
            elif type(name) is str and type(value) is str and len(_GOOD_HEADERS) < _GOOD_HEADERS_MAX:
                _GOOD_HEADERS.add(item)
            checked.append((name, value))
        self.status = status
        self.headers = checked
        return self.write

    def write(self, data: bytes) -> None:
        if self.finished:
            if data and self._on_late_write is not None:
                self._on_late_write()
            return
        if self.status is None:
            raise ResponseError("the application wrote body data before calling start_response()")
        if type(data) is not bytes:
            if not isinstance(data, bytes | bytearray | memoryview):
                raise ResponseError(f"the application yielded {type(data).__name__}, not bytes")
            data = bytes(data)
        if not data:
            return
        if self._head is None:
            self._emit_head()
        self._pending.append(data)
        size = len(data)
        self._pending_len += size
        self.body_bytes += size
        if self.streaming or self._pending_len >= self._buffer_size:
            self.flush()

    # --- output ------------------------------------------------------------------------------------------
    @property
    def status_code(self) -> int:
        try:
            return int((self.status or "500")[:3])
        except ValueError:
            return 500

    @property
    def can_replace(self) -> bool:
        """Nothing has reached the socket yet: an error page may still replace this response."""
        return not self.flushed and not self.finished

    def _emit_head(self) -> None:
        assert self.status is not None
        lines = [f"Status: {self.status}\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in self.headers]
        lines.append("\r\n")
        self._head = "".join(lines).encode("latin-1", "replace")
        self._pending.insert(0, self._head)
        self._pending_len += len(self._head)

    def flush(self) -> None:
        if not self._pending or self.finished:
            return
        data = b"".join(self._pending)
        self._pending = []
        self._pending_len = 0
        self.flushed = True
        self._send(self._conn.send_stdout(self._rid, data))

    def finish(self, trailer: bytes = b"", app_status: int = 0) -> None:
        """Rest of the response + end of STDOUT + END_REQUEST (+ ``trailer``) in one write."""
        if self.finished:
            return
        if self.status is None:
            raise ResponseError("the application returned without calling start_response()")
        if self._head is None:
            self._emit_head()
        pending = self._pending
        data = b"".join(pending) if len(pending) != 1 else pending[0]
        self._pending = []
        self._pending_len = 0
        self.finished = True
        self.flushed = True
        out = self._conn.send_response(self._rid, data, app_status)
        self._send(out + trailer if trailer else out)

    def replace_with_error(self, status: str, body: bytes, headers: list[tuple[str, str]] | None = None) -> None:
        """Drop everything buffered and answer ``status`` instead (only while :attr:`can_replace`)."""
        self._reset()
        hdrs = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        self.start_response(status, hdrs + list(headers or []))
        self.write(body)

    def _reset(self) -> None:
        self.status = None
        self.headers = []
        self._head = None
        self._pending = []
        self._pending_len = 0
        self.body_bytes = 0
        self.streaming = False


def error_body(status: str, message: str = "") -> bytes:
    """The pool's own error answers, in the JSON shape nginx's error pages and the sample app use."""
    code, _, phrase = status.partition(" ")
    body = {"error": message or phrase, "status": int(code) if code.isdigit() else code}
    return (json.dumps(body) + "\n").encode()


def iter_file_wrapper(wrapper: Any, chunk: int) -> Any:
    """Read a ``wsgi.file_wrapper`` object's file in large chunks instead of its small block size."""
    filelike = wrapper.filelike
    read = filelike.read
    while True:
        data = read(chunk)
        if not data:
            return
        yield data
