"""Connection unit tests: the sending side, states, limits and the contracts the worker relies on."""

from __future__ import annotations

import pytest
from fcgipool.protocol import (
    MAX_ALIGNED_CONTENT,
    MAX_CONTENT,
    NEED_DATA,
    AbortRequested,
    Connection,
    ConnectionClosed,
    LocalProtocolError,
    ParamsTooLarge,
    ProtocolStatus,
    Record,
    RecordType,
    RemoteProtocolError,
    RequestStarted,
    Role,
    State,
    StdinData,
    StdinEnd,
    decode_pairs,
    encode_begin_request,
    encode_end_request,
    encode_pairs,
    encode_record,
    encode_request,
    encode_stream,
    parse_records,
)

END_OK = b"\x00\x00\x00\x00\x00\x00\x00\x00"


def start(keep_conn: bool = False, stdin: bytes = b"", rid: int = 1, **options: object) -> Connection:
    conn = Connection(**options)  # type: ignore[arg-type]
    conn.receive_data(encode_request(rid, {"REQUEST_METHOD": "GET"}, stdin, keep_conn=keep_conn))
    ev = conn.next_event()
    assert isinstance(ev, RequestStarted)
    return conn


def drain(conn: Connection) -> list[object]:
    events = []
    while (ev := conn.next_event()) is not NEED_DATA:
        events.append(ev)
        if isinstance(ev, ConnectionClosed):
            break
    return events


def check_padding(data: bytes) -> None:
    """Every record the application sends is padded to a multiple of 8 and fits in one record."""
    pos = 0
    while pos < len(data):
        clen = int.from_bytes(data[pos + 4 : pos + 6], "big")
        plen = data[pos + 6]
        assert clen <= MAX_CONTENT
        assert (clen + plen) % 8 == 0
        assert data[pos + 8 + clen : pos + 8 + clen + plen] == bytes(plen)
        pos += 8 + clen + plen
    assert pos == len(data)


def test_request_started_event_fields() -> None:
    conn = Connection()
    conn.receive_data(encode_request(3, [("A", "1"), ("A", "2"), ("B", b"\xff")], b"body", keep_conn=True))
    ev = conn.next_event()
    assert isinstance(ev, RequestStarted)
    assert (ev.request_id, ev.keep_conn) == (3, True)
    assert ev.params == {"A": "2", "B": "\xff"}
    assert ev.raw_params == [(b"A", b"1"), (b"A", b"2"), (b"B", b"\xff")]
    assert ev.params["B"].encode("latin-1") == b"\xff"
    assert conn.request_id == 3 and conn.keep_conn
    assert (conn.their_state, conn.our_state) == (State.STDIN, State.RESPONDING)
    assert conn.next_event() == StdinData(3, b"body")
    assert conn.next_event() == StdinEnd(3)
    assert conn.their_state is State.DONE
    assert conn.next_event() is NEED_DATA


def test_response_records_small() -> None:
    conn = start()
    out = conn.send_stdout(1, b"Status: 200 OK\r\n\r\nhello")
    out += conn.end_request(1, app_status=7)
    check_padding(out)
    assert parse_records(out) == [
        Record(RecordType.STDOUT, 1, b"Status: 200 OK\r\n\r\nhello"),
        Record(RecordType.STDOUT, 1, b""),
        Record(RecordType.END_REQUEST, 1, b"\x00\x00\x00\x07\x00\x00\x00\x00"),
    ]


def test_empty_stdout_is_not_the_terminator() -> None:
    conn = start()
    assert conn.send_stdout(1, b"") == b""
    assert conn.send_stderr(1, b"") == b""
    assert conn.our_state is State.RESPONDING


def test_response_larger_than_one_record() -> None:
    conn = start()
    body = bytes(range(256)) * 700  # 179200 bytes
    out = conn.send_stdout(1, body)
    check_padding(out)
    records = parse_records(out)
    assert all(r.type == RecordType.STDOUT and r.request_id == 1 for r in records)
    assert [len(r.content) for r in records] == [MAX_ALIGNED_CONTENT, MAX_ALIGNED_CONTENT, 179200 - 2 * 65528]
    assert b"".join(r.content for r in records) == body


@pytest.mark.parametrize("size", [1, 7, 8, 9, MAX_CONTENT - 1, MAX_CONTENT, MAX_CONTENT + 1, 3 * MAX_CONTENT])
def test_send_response_fast_path_sizes(size: int) -> None:
    conn = start()
    body = b"x" * size
    out = conn.send_response(1, body, app_status=3)
    check_padding(out)
    records = parse_records(out)
    assert b"".join(r.content for r in records if r.type == RecordType.STDOUT) == body
    assert records[-2:] == [
        Record(RecordType.STDOUT, 1, b""),
        Record(RecordType.END_REQUEST, 1, bytes([0, 0, 0, 3]) + bytes(4)),
    ]
    assert conn.our_state is State.MUST_CLOSE


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, MAX_CONTENT - 1, MAX_CONTENT, MAX_CONTENT + 1])
@pytest.mark.parametrize("rid", [1, 2, 0xFFFF])
def test_send_response_of_a_plain_response_is_what_the_stream_encoders_make(size: int, rid: int) -> None:
    """The one-record shortcut (app status 0, no STDERR, <= 65535 bytes) gives exactly the bytes of the general
    encoders, for any request id, twice in a row (its END_REQUEST tail is cached per id)."""
    for _ in range(2):
        conn = Connection()
        conn.receive_data(encode_request(rid, {"REQUEST_METHOD": "GET"}, keep_conn=True))
        assert isinstance(conn.next_event(), RequestStarted)
        body = bytes(range(256)) * (size // 256) + bytes(size % 256)
        out = conn.send_response(rid, body)
        assert out == encode_stream(RecordType.STDOUT, rid, body) + encode_end_request(rid)
        assert conn.our_state is State.IDLE


def test_stderr_stream_is_terminated_too() -> None:
    conn = start()
    out = conn.send_stderr(1, b"warning\n") + conn.send_stdout(1, b"ok") + conn.end_request(1)
    check_padding(out)
    types = [(r.type, r.content) for r in parse_records(out)]
    assert types == [
        (RecordType.STDERR, b"warning\n"),
        (RecordType.STDOUT, b"ok"),
        (RecordType.STDERR, b""),
        (RecordType.STDOUT, b""),
        (RecordType.END_REQUEST, END_OK),
    ]


def test_end_request_statuses() -> None:
    conn = start()
    out = conn.end_request(1, app_status=0xFFFFFFFF, protocol_status=ProtocolStatus.OVERLOADED)
    assert parse_records(out)[-1].content == b"\xff\xff\xff\xff\x02\x00\x00\x00"
    conn = start()
    # Negative exit statuses wrap like a C uint32.
    assert parse_records(conn.end_request(1, app_status=-1))[-1].content[:4] == b"\xff\xff\xff\xff"


def test_keep_conn_cycle_is_automatic() -> None:
    conn = start(keep_conn=True)
    assert drain(conn) == [StdinEnd(1)]
    conn.end_request(1)
    assert (conn.our_state, conn.their_state, conn.request_id) == (State.IDLE, State.IDLE, None)
    conn.start_next_cycle()  # harmless no-op
    conn.receive_data(encode_request(1, {"N": "2"}, keep_conn=True))
    assert drain(conn) == [RequestStarted(1, True, {"N": "2"}), StdinEnd(1)]


def test_without_keep_conn_the_connection_must_close() -> None:
    conn = start()
    conn.end_request(1)
    assert conn.our_state is State.MUST_CLOSE
    with pytest.raises(LocalProtocolError, match="close the connection"):
        conn.start_next_cycle()
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed()
    assert conn.next_event() == ConnectionClosed()  # idempotent, like h11


def test_start_next_cycle_before_end_is_an_error() -> None:
    conn = start(keep_conn=True)
    with pytest.raises(LocalProtocolError, match="RESPONDING"):
        conn.start_next_cycle()


@pytest.mark.parametrize("method", ["send_stdout", "send_stderr"])
def test_send_in_wrong_state(method: str) -> None:
    conn = Connection()
    with pytest.raises(LocalProtocolError, match="our state is IDLE"):
        getattr(conn, method)(1, b"x")
    conn = start()
    with pytest.raises(LocalProtocolError, match="active request is 1"):
        getattr(conn, method)(2, b"x")
    conn.end_request(1)
    with pytest.raises(LocalProtocolError, match="MUST_CLOSE"):
        getattr(conn, method)(1, b"x")


def test_end_request_twice_and_before_start() -> None:
    conn = Connection()
    with pytest.raises(LocalProtocolError):
        conn.end_request(1)
    conn.receive_data(encode_begin_request(1))  # PARAMS not complete: the worker knows nothing yet
    assert conn.next_event() is NEED_DATA
    with pytest.raises(LocalProtocolError):
        conn.end_request(1)
    conn = start(keep_conn=True)
    conn.end_request(1)
    with pytest.raises(LocalProtocolError):
        conn.end_request(1)
    with pytest.raises(LocalProtocolError):
        conn.send_response(1, b"")


def test_local_error_leaves_state_alone() -> None:
    conn = start()
    with pytest.raises(LocalProtocolError):
        conn.send_stdout(9, b"x")
    assert conn.our_state is State.RESPONDING
    assert parse_records(conn.send_stdout(1, b"x"))[0].content == b"x"


def test_unread_body_is_skipped_after_early_end_request() -> None:
    """413-style: the worker answers before reading STDIN; the rest of the body is ignored on keep-conn."""
    conn = Connection()
    conn.receive_data(
        encode_begin_request(1, keep_conn=True) + encode_stream(RecordType.PARAMS, 1, b"", terminate=True)
    )
    assert isinstance(conn.next_event(), RequestStarted)
    conn.end_request(1, app_status=0)
    assert conn.their_state is State.IDLE
    conn.receive_data(encode_stream(RecordType.STDIN, 1, b"z" * 200000, terminate=True))
    conn.receive_data(encode_request(1, {"NEXT": "1"}, keep_conn=True))
    assert drain(conn) == [RequestStarted(1, True, {"NEXT": "1"}), StdinEnd(1)]


def test_eof_after_request_before_response_is_clean() -> None:
    conn = start(keep_conn=True)
    assert conn.next_event() == StdinEnd(1)
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed()
    assert conn.their_state is State.CLOSED
    assert conn.our_state is State.RESPONDING  # the worker may still finish (the write will tell)
    assert parse_records(conn.end_request(1))[-1].type == RecordType.END_REQUEST


def test_eof_mid_request() -> None:
    conn = Connection()
    conn.receive_data(encode_begin_request(1) + encode_stream(RecordType.PARAMS, 1, b"", terminate=True))
    assert isinstance(conn.next_event(), RequestStarted)
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="connection closed mid-request") as exc:
        conn.next_event()
    assert exc.value.reason.startswith("connection closed mid-request")


def test_receive_after_eof_is_a_local_error() -> None:
    conn = Connection()
    conn.receive_data(b"")
    with pytest.raises(LocalProtocolError, match="after EOF"):
        conn.receive_data(b"x")


def test_abort_answered_then_next_request() -> None:
    conn = start(keep_conn=True)
    conn.receive_data(encode_record(RecordType.ABORT_REQUEST, 1))
    assert drain(conn) == [StdinEnd(1), AbortRequested(1)]
    assert conn.their_state is State.ABORTED
    conn.receive_data(encode_record(RecordType.ABORT_REQUEST, 1))  # repeated abort: ignored
    assert conn.next_event() is NEED_DATA
    out = conn.end_request(1)
    assert parse_records(out)[-1] == Record(RecordType.END_REQUEST, 1, END_OK)
    assert conn.our_state is State.IDLE


def test_params_too_large_is_a_remote_error() -> None:
    conn = Connection(max_params_size=100)
    conn.receive_data(encode_request(1, {"X": "y" * 200}))
    with pytest.raises(ParamsTooLarge, match="max_params_size") as exc:
        conn.next_event()
    assert isinstance(exc.value, RemoteProtocolError)


def test_params_exactly_at_limit() -> None:
    conn = Connection(max_params_size=10)
    conn.receive_data(encode_request(1, {"ABCD": "1234"}))  # 2 + 8 = 10 bytes
    assert conn.next_event() == RequestStarted(1, False, {"ABCD": "1234"})


def test_params_limit_resets_per_request() -> None:
    conn = Connection(max_params_size=20)
    for _ in range(3):
        conn.receive_data(encode_request(1, {"ABCDEFGH": "12345678"}, keep_conn=True))  # 18 bytes each
        assert drain(conn)[-1] == StdinEnd(1)
        conn.end_request(1)


def test_values_validation() -> None:
    with pytest.raises(ValueError, match="unknown FastCGI value"):
        Connection(values={"FCGI_FOO": "1"})
    with pytest.raises(ValueError, match="FCGI_MPXS_CONNS must be 0"):
        Connection(values={"FCGI_MPXS_CONNS": "1"})
    with pytest.raises(ValueError, match="max_params_size"):
        Connection(max_params_size=-1)
    assert Connection(values={"FCGI_MAX_CONNS": 4}).values["FCGI_MAX_CONNS"] == "4"


def test_unknown_role_without_keep_conn_must_close() -> None:
    conn = Connection()
    conn.receive_data(encode_begin_request(5, Role.FILTER))
    assert conn.next_event() is NEED_DATA
    assert parse_records(conn.data_to_send()) == [
        Record(RecordType.END_REQUEST, 5, b"\x00\x00\x00\x00\x03\x00\x00\x00")
    ]
    assert conn.data_to_send() == b""  # cleared
    assert conn.our_state is State.MUST_CLOSE


def test_management_record_while_idle_between_requests() -> None:
    conn = start(keep_conn=True)
    drain(conn)
    conn.end_request(1)
    conn.receive_data(encode_record(RecordType.GET_VALUES, 0, b"\x0f\x00FCGI_MPXS_CONNS"))
    assert conn.next_event() is NEED_DATA
    assert parse_records(conn.data_to_send()) == [Record(RecordType.GET_VALUES_RESULT, 0, b"\x0f\x01FCGI_MPXS_CONNS0")]


def test_input_buffer_accepts_bytearray_and_memoryview() -> None:
    data = encode_request(1, {"A": "b"}, b"xyz")
    conn = Connection()
    conn.receive_data(bytearray(data[:10]))
    conn.receive_data(memoryview(data)[10:])
    events = drain(conn)
    assert events[1] == StdinData(1, b"xyz")
    assert type(events[1].data) is bytes  # type: ignore[attr-defined]


def test_encoder_limits_are_local_errors() -> None:
    with pytest.raises(LocalProtocolError, match="exceeds 65535"):
        encode_record(RecordType.STDOUT, 1, b"x" * (MAX_CONTENT + 1))
    with pytest.raises(LocalProtocolError, match="out of range"):
        encode_record(RecordType.STDOUT, 70000, b"")
    with pytest.raises(LocalProtocolError, match="out of range"):
        encode_stream(RecordType.STDOUT, -1, b"x")
    with pytest.raises(LocalProtocolError, match="protocol status 256"):
        encode_end_request(1, 0, 256)
    with pytest.raises(LocalProtocolError, match="latin-1"):
        encode_pairs({"PATH": "\u20ac"})


def test_pair_truncation_reasons() -> None:
    assert decode_pairs(b"") == []
    with pytest.raises(RemoteProtocolError, match="value length missing"):
        decode_pairs(b"\x03")
    with pytest.raises(RemoteProtocolError, match="truncated name length"):
        decode_pairs(b"\x01\x01ab\x80\x00")
    with pytest.raises(RemoteProtocolError, match="truncated value length in name-value pair at offset 4"):
        decode_pairs(b"\x01\x01ab\x01\x80\x00")
    with pytest.raises(RemoteProtocolError, match=r"needs 3\+5 bytes, 2 left"):
        decode_pairs(b"\x03\x05ab")


def test_raw_params_without_stream() -> None:
    ev = RequestStarted(1, False, {"A": "\xff"})
    assert ev.raw_params == [(b"A", b"\xff")]
