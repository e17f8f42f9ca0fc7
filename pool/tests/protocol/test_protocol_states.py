"""State invariants under random interleavings of peer records and application calls (Hypothesis)."""

from __future__ import annotations

import struct

from fcgipool.protocol import (
    NEED_DATA,
    AbortRequested,
    Connection,
    ConnectionClosed,
    LocalProtocolError,
    RemoteProtocolError,
    RequestStarted,
    State,
    StdinEnd,
    parse_records,
)
from hypothesis import given, settings
from hypothesis import strategies as st

_HEADER = struct.Struct("!BBHHBx")


def rec(rtype: int, rid: int, body: bytes = b"") -> bytes:
    return _HEADER.pack(1, rtype, rid, len(body), -len(body) & 7) + body + bytes(-len(body) & 7)


PEER = {
    "begin": lambda rid: rec(1, rid, struct.pack("!HB5x", 1, 0)),
    "begin_keep": lambda rid: rec(1, rid, struct.pack("!HB5x", 1, 1)),
    "begin_filter": lambda rid: rec(1, rid, struct.pack("!HB5x", 3, 1)),
    "params": lambda rid: rec(4, rid, b"\x01\x01ab"),
    "params_end": lambda rid: rec(4, rid),
    "stdin": lambda rid: rec(5, rid, b"body"),
    "stdin_end": lambda rid: rec(5, rid),
    "abort": lambda rid: rec(2, rid),
    "get_values": lambda rid: rec(9, 0, b"\x0d\x00FCGI_MAX_REQS"),
    "eof": lambda rid: b"",
}
APP = ["send_stdout", "send_stderr", "end_request", "send_response", "start_next_cycle"]
# What a well-behaved peer/application would do next; the test picks it most of the time so that every
# state is reached, and anything at all otherwise.
SENSIBLE = {
    State.IDLE: ["begin", "begin_keep", "begin_keep", "begin_filter", "get_values"],
    State.PARAMS: ["params", "params_end", "params_end", "abort"],
    State.STDIN: ["stdin", "stdin_end", "stdin_end", "abort", "get_values", "send_stdout", "send_stderr"],
    State.DONE: ["end_request", "send_response", "send_stdout", "send_stderr", "abort", "eof"],
    State.ABORTED: ["end_request", "stdin"],
    State.CLOSED: ["end_request", "send_stdout"],
}


def check_invariants(conn: Connection) -> None:
    ours, theirs, rid = conn.our_state, conn.their_state, conn.request_id
    if ours is State.ERROR:
        assert theirs is State.ERROR
        return
    assert ours in (State.IDLE, State.RESPONDING, State.MUST_CLOSE)
    if ours is State.RESPONDING:
        assert rid is not None
        assert theirs in (State.STDIN, State.DONE, State.ABORTED, State.CLOSED)
    else:
        assert theirs in (State.IDLE, State.PARAMS, State.CLOSED)
        if theirs is State.PARAMS:
            assert rid is not None and ours is State.IDLE
        else:
            assert rid is None


def check_output(out: bytes, rid: int) -> None:
    assert len(out) % 8 == 0
    assert all(r.request_id == rid for r in parse_records(out))


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_random_interleavings_keep_states_consistent(data: st.DataObject) -> None:
    conn = Connection()
    eof = False
    started: set[int] = set()  # ids the application has been told about (RequestStarted/AbortRequested)
    for _ in range(data.draw(st.integers(1, 60))):
        if data.draw(st.integers(0, 9)) < 8:
            what = data.draw(st.sampled_from(SENSIBLE[conn.their_state]))
            rid = conn.request_id or 1 if data.draw(st.integers(0, 9)) else 2
        else:
            what = data.draw(st.sampled_from(sorted(PEER) + APP))
            rid = data.draw(st.sampled_from([1, 2]))
        side = "app" if what in APP else "peer"
        before = (conn.our_state, conn.their_state, conn.request_id)
        if side == "peer":
            if eof:
                continue
            chunk = PEER[what](rid)
            eof = not chunk
            conn.receive_data(chunk)
            try:
                while (ev := conn.next_event()) is not NEED_DATA:
                    if isinstance(ev, RequestStarted | AbortRequested):
                        started.add(ev.request_id)
                    if isinstance(ev, ConnectionClosed):
                        break
                    assert not isinstance(ev, StdinEnd) or conn.their_state is State.DONE
            except RemoteProtocolError:
                assert (conn.our_state, conn.their_state) == (State.ERROR, State.ERROR)
                with_error = True
            else:
                with_error = False
            auto = conn.data_to_send()
            assert len(auto) % 8 == 0
            parse_records(auto)
            if with_error:
                return
        else:
            allowed = conn.our_state is State.RESPONDING and conn.request_id == rid
            try:
                if what == "start_next_cycle":
                    conn.start_next_cycle()
                    assert before[0] is State.IDLE
                elif what == "send_response":
                    check_output(conn.send_response(rid, b"hello"), rid)
                elif what == "end_request":
                    check_output(conn.end_request(rid), rid)
                else:
                    check_output(getattr(conn, what)(rid, b"x"), rid)
            except LocalProtocolError:
                assert what == "start_next_cycle" or not allowed
                assert (conn.our_state, conn.their_state, conn.request_id) == before
            else:
                assert what == "start_next_cycle" or allowed
                assert what == "start_next_cycle" or rid in started
                if what in ("end_request", "send_response"):
                    assert conn.request_id is None
                    assert conn.our_state is (State.IDLE if conn.keep_conn else State.MUST_CLOSE)
        check_invariants(conn)
