"""The WSGI response writer on its own: the checks of start_response and write (their caches must never let a bad
value through), and the one-write shortcuts, which must send the bytes the general path sends."""

from __future__ import annotations

import pytest
from fcgipool.protocol import Connection, RecordType, encode_end_request, encode_request, encode_stream
from fcgipool.response import ResponseError, ResponseWriter

HEAD = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n"


def writer(sent: list[bytes], rid: int = 1, **options: int) -> ResponseWriter:
    conn = Connection()
    conn.receive_data(encode_request(rid, {"REQUEST_METHOD": "GET"}, keep_conn=True))
    conn.next_event()
    return ResponseWriter(conn, rid, sent.append, **options)


@pytest.mark.parametrize("status", ["20 OK", "200OK", "2000 OK", "200 OK\r\nX: y", b"200 OK", None, 200])
def test_a_bad_status_is_refused_after_good_ones_were_seen(status: object) -> None:
    for _ in range(3):  # good statuses are remembered: that must not open the door to bad ones
        writer([]).start_response("200 OK", [])
    with pytest.raises(ResponseError, match="invalid WSGI status"):
        writer([]).start_response(status, [])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "header",
    [("Bad Name", "x"), ("X-Ok", "line\nbreak"), ("X-Ok", b"bytes"), ("X-Ok",), ["X-Ok", "list"], (b"X", "y")],
    ids=repr,
)
def test_a_bad_header_is_refused_after_good_ones_were_seen(header: object) -> None:
    for _ in range(3):
        writer([]).start_response("200 OK", [("X-Ok", "fine")])
    with pytest.raises(ResponseError):
        writer([]).start_response("200 OK", [("X-Ok", "fine"), header])  # type: ignore[list-item]


@pytest.mark.parametrize("chunk", [b"body", bytearray(b"body"), memoryview(b"body")], ids=type)
def test_bytes_like_chunks_are_sent_as_bytes(chunk: bytes) -> None:
    sent: list[bytes] = []
    w = writer(sent)
    w.start_response("200 OK", [("Content-Type", "text/plain")])
    w.write(chunk)
    w.finish()
    assert sent == [encode_stream(RecordType.STDOUT, 1, HEAD + b"body") + encode_end_request(1)]


@pytest.mark.parametrize("chunk", ["text", 42, None], ids=repr)
def test_a_chunk_that_is_not_bytes_is_refused(chunk: object) -> None:
    w = writer([])
    w.start_response("200 OK", [])
    with pytest.raises(ResponseError, match="not bytes"):
        w.write(chunk)  # type: ignore[arg-type]


@pytest.mark.parametrize("chunks", [[b"one"], [b"one", b"", b"two", b"three"], [], [b""]], ids=repr)
@pytest.mark.parametrize("trailer", [b"", b"\x01\x0a\x00\x00\x00\x00\x00\x00"])
def test_one_write_holds_the_head_the_body_end_request_and_the_trailer(chunks: list[bytes], trailer: bytes) -> None:
    sent: list[bytes] = []
    w = writer(sent, rid=7)
    w.start_response("200 OK", [("Content-Type", "text/plain")])
    for chunk in chunks:
        w.write(chunk)
    w.finish(trailer)
    body = b"".join(chunks)
    assert sent == [encode_stream(RecordType.STDOUT, 7, HEAD + body) + encode_end_request(7) + trailer]
    assert w.body_bytes == len(body) and w.finished


def test_a_response_over_the_buffer_goes_in_blocks_then_ends() -> None:
    sent: list[bytes] = []
    w = writer(sent, buffer_size=16)
    w.start_response("200 OK", [("Content-Type", "text/plain")])
    w.write(b"a" * 10)
    assert sent == [encode_stream(RecordType.STDOUT, 1, HEAD + b"a" * 10)]  # head + body passed the buffer
    w.write(b"b" * 20)
    w.finish()
    assert sent[1:] == [encode_stream(RecordType.STDOUT, 1, b"b" * 20), encode_end_request(1)]
