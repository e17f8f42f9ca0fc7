"""wsgi.input: reads across STDIN chunk boundaries, never past CONTENT_LENGTH, every PEP 3333 method."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fcgipool.streams import InputStream


def puller(*chunks: bytes) -> tuple[Callable[[], bytes], list[int]]:
    queue = list(chunks)
    calls = [0]

    def pull() -> bytes:
        calls[0] += 1
        return queue.pop(0) if queue else b""

    return pull, calls


def test_read_all_and_sized_reads_across_chunks() -> None:
    pull, _ = puller(b"ab", b"cde", b"f")
    s = InputStream(pull, 6)
    assert s.read(1) == b"a"
    assert s.read(3) == b"bcd"
    assert s.read() == b"ef"
    assert s.read() == b""
    assert s.read(10) == b""


def test_never_reads_past_content_length() -> None:
    pull, _ = puller(b"abc", b"defgh", b"SHOULD NOT BE READ")
    s = InputStream(pull, 5)
    assert s.read() == b"abcde"
    assert s.read(1) == b""
    assert s.exhausted


def test_does_not_pull_more_than_needed() -> None:
    pull, calls = puller(b"line1\nline2\n", b"rest")
    s = InputStream(pull, 16)
    assert s.readline() == b"line1\n"
    assert calls[0] == 1  # the second chunk is only pulled when asked for


def test_readline_with_limit_and_across_chunks() -> None:
    pull, _ = puller(b"hel", b"lo\nwor", b"ld")
    s = InputStream(pull, 11)
    assert s.readline(2) == b"he"
    assert s.readline() == b"llo\n"
    assert s.readline() == b"world"
    assert s.readline() == b""


def test_readlines_hint_and_iteration() -> None:
    pull, _ = puller(b"a\nbb\nccc\n", b"dddd\n")
    s = InputStream(pull, None)
    assert s.readlines(3) == [b"a\n", b"bb\n"]
    assert list(s) == [b"ccc\n", b"dddd\n"]


@pytest.mark.parametrize("size", [1, 2, 7, 4096])
def test_chunked_reading_reassembles_the_body(size: int) -> None:
    body = bytes(range(256)) * 10
    pull, _ = puller(*(body[i : i + 100] for i in range(0, len(body), 100)))
    s = InputStream(pull, len(body))
    parts = []
    while part := s.read(size):
        parts.append(part)
    assert b"".join(parts) == body


def test_buffer_rest_keeps_the_body_readable() -> None:
    pull, calls = puller(b"12", b"34")
    s = InputStream(pull, 4)
    s.buffer_rest()
    assert calls[0] == 2
    assert s.read() == b"1234"
