"""Protocol test vectors (vectors/*.hex + .json): fed whole, byte by byte and with trailing data."""

from __future__ import annotations

import random
from typing import Any

import pytest
from fcgi_harness import Run, Vector, Worker, event_to_json, feed_chunks, load_vectors
from fcgipool.protocol import HEADER_LEN, FastCGIError, pairs

VECTORS = load_vectors()
VALID = [v for v in VECTORS if v.error is None]
INVALID = [v for v in VECTORS if v.error is not None]
# Trailing data: garbage (version 0xff) and the start of a further request's header.
TRAILERS = {"garbage": b"\xff\x01\x00\x01junk", "partial_header": b"\x01\x01\x00"}


def _ids(vectors: list[Vector]) -> list[str]:
    return [v.name for v in vectors]


def _worker(vector: Vector) -> Worker:
    return Worker(vector.spec.get("respond", True), **vector.spec.get("options", {}))


def _run(vector: Vector, mode: str, data: bytes | None = None, eof: bool | None = None) -> tuple[Worker, Run]:
    data = vector.data if data is None else data
    chunks = [data] if mode == "whole" else [data[i : i + 1] for i in range(len(data))]
    worker = _worker(vector)
    return worker, worker.feed(chunks, vector.spec.get("eof", False) if eof is None else eof)


def _replies(vector: Vector) -> bytes:
    return bytes.fromhex("".join(vector.spec.get("replies_hex", "").split()))


def _check_error(run: Run, expected: dict[str, Any]) -> None:
    assert run.error is not None, "expected an error, got none"
    assert type(run.error).__name__ == expected["type"]
    assert expected["reason"] in run.error.reason
    assert str(run.error) == run.error.reason


def test_vectors_present() -> None:
    assert len(VALID) >= 15
    assert len(INVALID) >= 25


@pytest.mark.parametrize("vector", VECTORS, ids=_ids(VECTORS))
@pytest.mark.parametrize("mode", ["whole", "bytes"])
@pytest.mark.parametrize("decoder", ["c", "python"])
def test_vector(vector: Vector, mode: str, decoder: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if decoder == "python":  # the C decoder, when built, is the default: the pure one must pass the same vectors
        monkeypatch.setattr(pairs, "_c_decode_params", None)
    worker, run = _run(vector, mode)
    assert [event_to_json(e) for e in run.events] == vector.spec["events"]
    assert run.replies == _replies(vector)
    if vector.error is None:
        assert run.error is None, run.error
    else:
        _check_error(run, vector.error)
    if "our_state" in vector.spec:
        assert worker.conn.our_state.name == vector.spec["our_state"]


@pytest.mark.parametrize("vector", INVALID, ids=_ids(INVALID))
def test_vector_error_is_sticky(vector: Vector) -> None:
    worker, run = _run(vector, "whole")
    assert run.error is not None
    assert worker.conn.their_state.name == "ERROR"
    assert worker.conn.our_state.name == "ERROR"
    with pytest.raises(type(run.error)) as again:
        worker.conn.next_event()
    assert run.error.reason in again.value.reason


@pytest.mark.parametrize("vector", VECTORS, ids=_ids(VECTORS))
@pytest.mark.parametrize("trailer", list(TRAILERS), ids=list(TRAILERS))
@pytest.mark.parametrize("mode", ["whole", "bytes"])
def test_vector_with_trailing_data(vector: Vector, trailer: str, mode: str) -> None:
    if vector.spec.get("eof") and vector.error is not None:
        pytest.skip("error depends on EOF at the end of the vector; more data would complete the record")
    # Without EOF: events up to (not including) ConnectionClosed must be unchanged.
    expected = [e for e in vector.spec["events"] if e["type"] != "ConnectionClosed"]
    _, run = _run(vector, mode, vector.data + TRAILERS[trailer], eof=False)
    got = [event_to_json(e) for e in run.events]
    if vector.error is not None:
        assert got == expected
        _check_error(run, vector.error)
        return
    assert got == expected
    if trailer == "garbage":
        # The garbage after the request is then reported, not silently swallowed.
        assert run.error is not None and "version 255" in run.error.reason
    else:
        assert run.error is None


@pytest.mark.parametrize("vector", VALID, ids=_ids(VALID))
def test_valid_vectors_frame_cleanly(vector: Vector) -> None:
    """Independent framing walk: every valid vector is whole records (guards the hand-written hex)."""
    data, pos = vector.data, 0
    while pos < len(data):
        assert len(data) - pos >= HEADER_LEN
        assert data[pos] == 1
        clen = int.from_bytes(data[pos + 4 : pos + 6], "big")
        pos += HEADER_LEN + clen + data[pos + 6]
    assert pos == len(data)


@pytest.mark.parametrize("vector", VALID, ids=_ids(VALID))
def test_valid_vector_in_random_chunks(vector: Vector) -> None:
    rng = random.Random(vector.name)
    data = vector.data
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 6)))) if data else []
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        run = feed_chunks(
            chunks, eof=vector.spec.get("eof", False), respond=vector.spec.get("respond", True),
            **vector.spec.get("options", {}),
        )  # fmt: skip
        assert [event_to_json(e) for e in run.events] == vector.spec["events"]
        assert not isinstance(run.error, FastCGIError)


def test_captured_nginx_vectors_match_what_was_sent() -> None:
    """Checks against what curl sent through nginx, not against the parser's own earlier output."""
    vectors = {v.name: v for v in VECTORS}
    get = feed_chunks([vectors["nginx_get_plain"].data], eof=True)
    started = get.events[0]
    assert started.params["HTTP_X_LONG"] == "L" * 300  # > 127 bytes: nginx used a 4-byte length
    assert started.params["REQUEST_URI"] == "/plain/hello?x=1&y=%FF"
    assert started.params["HTTP_COOKIE"] == "a=b"
    post = feed_chunks([vectors["nginx_keep_conn_post_then_get"].data], eof=True)
    body = b"".join(e.data for e in post.events if hasattr(e, "data"))
    assert body == bytes(range(256)) * 400
    assert [e.params["REQUEST_METHOD"] for e in post.events if hasattr(e, "params")] == ["POST", "GET"]
    cgi = feed_chunks([vectors["cgi_fcgi_post"].data], eof=True)
    assert cgi.events[1].data == b"hello=world"
