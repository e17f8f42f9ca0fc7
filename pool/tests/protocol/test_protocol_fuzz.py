"""Hypothesis fuzzing of the parser and round-trip properties of the encoders."""

from __future__ import annotations

import itertools
import os
import struct

from fcgi_harness import Run, event_to_json, feed_chunks
from fcgipool.protocol import (
    MAX_CONTENT,
    Connection,
    FastCGIError,
    RecordType,
    RequestStarted,
    StdinData,
    StdinEnd,
    decode_pairs,
    encode_pairs,
    encode_request,
    encode_stream,
    parse_records,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# FCGI_FUZZ_EXAMPLES=20000 for a long local fuzzing run; the default keeps the suite fast.
FUZZ = settings(
    max_examples=int(os.environ.get("FCGI_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
_HEADER = struct.Struct("!BBHHBx")


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def outcome(run: Run) -> tuple[list[dict[str, object]], bytes, str | None]:
    return [event_to_json(e) for e in run.events], run.replies, run.error.reason if run.error else None


# Records that are "almost right": real types (and some unknown ones), small ids, odd lengths and paddings,
# bodies that are sometimes well-formed pairs or BEGIN_REQUEST bodies. Reaches far deeper than random bytes.
_small_pairs = st.builds(
    encode_pairs, st.dictionaries(st.text("AB", max_size=3), st.text("xy", max_size=200), max_size=2)
)
_bodies = st.one_of(
    st.binary(max_size=40),
    st.builds(lambda role, flags: struct.pack("!HB5x", role, flags), st.integers(0, 4), st.integers(0, 255)),
    st.builds(
        encode_pairs,
        st.lists(st.tuples(st.binary(max_size=140), st.binary(max_size=140)), max_size=3),
    ),
    st.builds(
        lambda b, n: b[: max(0, len(b) - n)],
        _small_pairs,
        st.integers(0, 6),
    ),
)


@st.composite
def record(draw: st.DrawFn) -> bytes:
    rtype = draw(st.sampled_from([1, 1, 2, 4, 4, 4, 5, 5, 5, 8, 9, 0, 3, 6, 10, 11, 12, 200]))
    rid = draw(st.sampled_from([0, 1, 1, 1, 2, 65535]))
    body = draw(_bodies)
    pad = draw(st.sampled_from([0, 0, -len(body) & 7, 1, 255]))
    version = draw(st.sampled_from([1] * 30 + [0, 2]))
    return _HEADER.pack(version, rtype, rid, len(body), pad) + body + b"\0" * pad


def _rec(draw: st.DrawFn, rtype: int, rid: int, body: bytes) -> bytes:
    pad = draw(st.sampled_from([-len(body) & 7, 0, 5]))
    return _HEADER.pack(1, rtype, rid, len(body), pad) + body + b"\0" * pad


@st.composite
def session(draw: st.DrawFn) -> bytes:
    """Mostly valid conversations (keep-conn runs, split params and bodies, aborts, management records),
    then a few random records spliced in and maybe one byte flipped: reaches every state."""
    parts: list[bytes] = []
    for _ in range(draw(st.integers(1, 3))):
        rid = draw(st.sampled_from([1, 1, 1, 2, 300]))
        role = draw(st.sampled_from([1, 1, 1, 1, 1, 2, 3]))
        parts.append(_rec(draw, 1, rid, struct.pack("!HB5x", role, draw(st.sampled_from([0, 1, 1])))))
        stream = encode_pairs(
            draw(st.dictionaries(st.text("ABC_", min_size=1, max_size=4), st.text("xyz\xff", max_size=140), max_size=4))
        )
        cuts = sorted(set(draw(st.lists(st.integers(0, len(stream)), max_size=3))))
        for a, b in itertools.pairwise([0, *cuts, len(stream)]):
            if b > a:
                parts.append(_rec(draw, 4, rid, stream[a:b]))
        parts.append(_rec(draw, 4, rid, b""))
        for chunk in draw(st.lists(st.binary(min_size=1, max_size=30), max_size=3)):
            parts.append(_rec(draw, 5, rid, chunk))
        if draw(st.integers(0, 5)) == 0:
            parts.append(_rec(draw, 2, rid, b""))
        parts.append(_rec(draw, 5, rid, b""))
    for _ in range(draw(st.integers(0, 3))):
        extra = draw(st.one_of(record(), st.sampled_from([_HEADER.pack(1, 9, 0, 0, 0), _HEADER.pack(1, 99, 0, 0, 0)])))
        parts.insert(draw(st.integers(0, len(parts))), extra)
    data = b"".join(parts)
    if data and draw(st.integers(0, 4)) == 0:
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1 :]
    return data


streams = st.one_of(st.lists(record(), max_size=14).map(b"".join), session(), session())
cuts = st.lists(st.integers(0, 10_000), max_size=8)


@FUZZ
@given(st.binary(max_size=600), cuts, st.booleans())
def test_random_bytes_only_raise_fastcgi_errors(data: bytes, cut: list[int], eof: bool) -> None:
    feed_chunks(split(data, cut), eof=eof)  # anything but FastCGIError escapes and fails the test


@FUZZ
@given(streams, cuts, st.booleans(), st.booleans(), st.integers(0, 300))
def test_structured_records_same_outcome_for_any_split(
    data: bytes, cut: list[int], eof: bool, respond: bool, max_params: int
) -> None:
    whole = feed_chunks([data], eof=eof, respond=respond, max_params_size=max_params)
    pieces = feed_chunks(split(data, cut), eof=eof, respond=respond, max_params_size=max_params)
    assert outcome(pieces) == outcome(whole)
    if whole.error is not None:
        assert isinstance(whole.error, FastCGIError)


@FUZZ
@given(streams)
def test_byte_by_byte_matches_whole(data: bytes) -> None:
    whole = feed_chunks([data], eof=True)
    single = feed_chunks([data[i : i + 1] for i in range(len(data))], eof=True)
    assert outcome(single) == outcome(whole)


_pairs = st.lists(
    st.tuples(
        st.one_of(st.binary(max_size=10), st.binary(min_size=120, max_size=400)),
        st.one_of(st.binary(max_size=10), st.binary(min_size=120, max_size=70_000)),
    ),
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(_pairs)
def test_pairs_round_trip(pairs: list[tuple[bytes, bytes]]) -> None:
    encoded = encode_pairs(pairs)
    assert decode_pairs(encoded) == pairs
    # Every proper prefix that cuts a pair is reported as truncated, never mis-decoded silently.
    if pairs:
        try:
            decoded = decode_pairs(encoded[:-1])
        except FastCGIError:
            pass
        else:
            raise AssertionError(f"truncated stream decoded as {decoded!r}")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=3 * MAX_CONTENT), st.sampled_from([RecordType.STDOUT, RecordType.STDIN, RecordType.PARAMS]))
def test_stream_round_trip_and_framing(data: bytes, rtype: RecordType) -> None:
    encoded = encode_stream(rtype, 77, data, terminate=True)
    records = parse_records(encoded)
    assert records[-1].content == b""
    assert all(0 < len(r.content) <= MAX_CONTENT for r in records[:-1])
    assert b"".join(r.content for r in records) == data
    assert len(encoded) % 8 == 0


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.text(st.characters(max_codepoint=255), min_size=1, max_size=150),
        st.text(st.characters(max_codepoint=255), max_size=300),
        max_size=8,
    ),
    st.lists(st.binary(min_size=1, max_size=3000), max_size=4),
    st.booleans(),
    cuts,
)
def test_valid_request_random_splits(params: dict[str, str], body: list[bytes], keep: bool, cut: list[int]) -> None:
    data = encode_request(4, params, b"".join(body), keep_conn=keep)
    run = feed_chunks(split(data, cut), eof=True)
    assert run.error is None
    assert run.events[0] == RequestStarted(4, keep, params)
    assert b"".join(e.data for e in run.events if isinstance(e, StdinData)) == b"".join(body)
    assert StdinEnd(4) in run.events


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=70_000)), max_size=5), st.integers(0, 2**32 - 1))
def test_response_streams(writes: list[tuple[bool, bytes]], status: int) -> None:
    conn = Connection()
    conn.receive_data(encode_request(2, {}))
    assert isinstance(conn.next_event(), RequestStarted)
    out = b"".join(conn.send_stderr(2, d) if err else conn.send_stdout(2, d) for err, d in writes)
    out += conn.end_request(2, app_status=status)
    records = parse_records(out)
    assert len(out) % 8 == 0
    assert b"".join(r.content for r in records if r.type == RecordType.STDOUT) == b"".join(
        d for err, d in writes if not err
    )
    assert b"".join(r.content for r in records if r.type == RecordType.STDERR) == b"".join(
        d for err, d in writes if err
    )
    assert records[-1].type == RecordType.END_REQUEST
    assert struct.unpack("!IB3x", records[-1].content) == (status, 0)
    assert records[-2] == (RecordType.STDOUT, 2, b"")
    used_stderr = any(err and d for err, d in writes)
    assert ((RecordType.STDERR, 2, b"") in records) == used_stderr


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["get_values", "unknown", "cant_mpx"]), max_size=6), cuts)
def test_management_interleaved_with_request(extra: list[str], cut: list[int]) -> None:
    """Management records and refused requests anywhere in a request never change its events."""
    base = encode_request(1, {"K": "v"}, b"abc", keep_conn=True)
    inserts = {
        "get_values": _HEADER.pack(1, 9, 0, 3, 5) + b"\x01\x00A" + bytes(5),
        "unknown": _HEADER.pack(1, 77, 0, 0, 0),
        "cant_mpx": _HEADER.pack(1, 1, 9, 8, 0) + struct.pack("!HB5x", 1, 0),
    }
    # Insert after the BEGIN_REQUEST record (16 bytes): inside the request on every split.
    data = base[:16] + b"".join(inserts[e] for e in extra) + base[16:]
    run = feed_chunks(split(data, cut), eof=True)
    assert run.error is None
    assert [event_to_json(e) for e in run.events] == [
        {"type": "RequestStarted", "request_id": 1, "keep_conn": True, "params": {"K": "v"}},
        {"type": "StdinData", "request_id": 1, "data": "abc"},
        {"type": "StdinEnd", "request_id": 1},
        {"type": "ConnectionClosed"},
    ]
    replies = parse_records(run.replies)
    assert [r.type for r in replies] == [
        {
            "get_values": RecordType.GET_VALUES_RESULT,
            "unknown": RecordType.UNKNOWN_TYPE,
            "cant_mpx": RecordType.END_REQUEST,
        }[e]
        for e in extra
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text("abcXYZ_", min_size=1, max_size=20),
        st.text(max_size=150).map(lambda t: t.encode().decode("latin-1")),
        max_size=5,
    ),
    st.binary(max_size=5000),
    st.data(),
)
def test_eof_inside_a_request_is_never_a_clean_close(params: dict[str, str], body: bytes, data: st.DataObject) -> None:
    """A request cut short by EOF must raise, so a worker never runs half a request."""
    stream = encode_request(1, params, body)
    cut = data.draw(st.integers(1, len(stream) - 1))
    run = feed_chunks([stream[:cut]], eof=True)
    assert run.error is not None
    assert run.error.reason.startswith(("connection closed mid-record", "connection closed mid-request"))
    assert not any(isinstance(e, StdinEnd) for e in run.events)
