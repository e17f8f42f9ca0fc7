"""Test helpers: the annotated-hex vector format and a minimal "worker" that drives a Connection.

Vector format (``vectors/*.hex``): whitespace-separated hex bytes (any grouping), ``"ascii"`` literals,
``"x"*N`` repetitions and ``#`` comments to end of line. Deliberately independent of the encoders under test.
The sidecar ``.json`` holds: description, options (Connection kwargs), eof (feed EOF at the end), events,
replies_hex (everything data_to_send() returned, concatenated) and error ({"type", "reason"} substring).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fcgipool.protocol import (
    NEED_DATA,
    AbortRequested,
    Connection,
    ConnectionClosed,
    FastCGIError,
    RequestStarted,
    StdinData,
    StdinEnd,
)

VECTORS = Path(__file__).parent / "vectors"
_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"(?:\*(\d+))?|([0-9a-fA-F]+)|(\S)')


def parse_hex(text: str) -> bytes:
    out = bytearray()
    for line in text.splitlines():
        line = _strip_comment(line)
        for m in _TOKEN.finditer(line):
            literal, repeat, hexdigits, junk = m.groups()
            if junk is not None:
                raise ValueError(f"bad token {junk!r} in vector line {line!r}")
            if hexdigits is not None:
                if len(hexdigits) % 2:
                    raise ValueError(f"odd number of hex digits {hexdigits!r}")
                out += bytes.fromhex(hexdigits)
            else:
                raw = literal.encode("latin-1").decode("unicode_escape").encode("latin-1")
                out += raw * (int(repeat) if repeat else 1)
    return bytes(out)


def _strip_comment(line: str) -> str:
    in_str = False
    for i, ch in enumerate(line):
        if ch == '"':
            in_str = not in_str
        elif ch == "#" and not in_str:
            return line[:i]
    return line


@dataclass
class Vector:
    name: str
    data: bytes
    spec: dict[str, Any]

    @property
    def error(self) -> dict[str, str] | None:
        return self.spec.get("error")


def load_vectors() -> list[Vector]:
    vectors = []
    for hex_path in sorted(VECTORS.glob("*.hex")):
        spec = json.loads(hex_path.with_suffix(".json").read_text())
        vectors.append(Vector(hex_path.stem, parse_hex(hex_path.read_text()), spec))
    for bin_path in sorted(VECTORS.glob("*.bin")):
        spec = json.loads(bin_path.with_suffix(".json").read_text())
        vectors.append(Vector(bin_path.stem, bin_path.read_bytes(), spec))
    return vectors


def event_to_json(ev: object) -> dict[str, Any]:
    if isinstance(ev, RequestStarted):
        return {"type": "RequestStarted", "request_id": ev.request_id, "keep_conn": ev.keep_conn, "params": ev.params}
    if isinstance(ev, StdinData):
        if len(ev.data) > 256:  # keep sidecars readable: big chunks by length and digest
            digest = hashlib.sha256(ev.data).hexdigest()
            return {"type": "StdinData", "request_id": ev.request_id, "len": len(ev.data), "sha256": digest}
        return {"type": "StdinData", "request_id": ev.request_id, "data": ev.data.decode("latin-1")}
    if isinstance(ev, StdinEnd | AbortRequested):
        return {"type": type(ev).__name__, "request_id": ev.request_id}
    if isinstance(ev, ConnectionClosed):
        return {"type": "ConnectionClosed"}
    raise AssertionError(f"unexpected event {ev!r}")


@dataclass
class Run:
    events: list[Any] = field(default_factory=list)
    replies: bytes = b""
    responses: bytes = b""
    error: FastCGIError | None = None


class Worker:
    """Drives a Connection like the real worker: answers each request (and abort) with end_request()."""

    def __init__(self, respond: bool = True, **options: Any) -> None:
        self.conn = Connection(**options)
        self.respond = respond
        self.run = Run()

    def _drain(self) -> bool:
        """Pull events until NEED_DATA/closed/error. Returns False once it should stop."""
        conn, run = self.conn, self.run
        while True:
            try:
                ev = conn.next_event()
            except FastCGIError as exc:
                run.replies += conn.data_to_send()
                run.error = exc
                return False
            run.replies += conn.data_to_send()
            if ev is NEED_DATA:
                return True
            run.events.append(ev)
            if self.respond and isinstance(ev, StdinEnd | AbortRequested):
                run.responses += conn.end_request(ev.request_id)
            elif isinstance(ev, ConnectionClosed):
                return False

    def feed(self, chunks: Iterable[bytes], eof: bool) -> Run:
        for chunk in chunks:
            if not chunk:
                continue  # b"" would mean EOF
            self.conn.receive_data(chunk)
            if not self._drain():
                return self.run
        if eof:
            self.conn.receive_data(b"")
            self._drain()
        return self.run


def feed(data: bytes, *, mode: str = "whole", eof: bool = False, respond: bool = True, **options: Any) -> Run:
    if mode == "whole":
        chunks: Iterable[bytes] = [data]
    elif mode == "bytes":
        chunks = (data[i : i + 1] for i in range(len(data)))
    else:
        raise ValueError(mode)
    return Worker(respond, **options).feed(chunks, eof)


def feed_chunks(chunks: Iterable[bytes], *, eof: bool = False, respond: bool = True, **options: Any) -> Run:
    return Worker(respond, **options).feed(chunks, eof)
