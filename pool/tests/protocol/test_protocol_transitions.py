"""The transition table (fcgipool.protocol.states) is what the connection does: each path below, fed 8 bytes at a time
(the record loop) and in one read (the whole-request fast path), changes states only as the table says."""

from __future__ import annotations

import pytest
from fcgipool.protocol import (
    NEED_DATA,
    Connection,
    LocalProtocolError,
    RecordType,
    encode_begin_request,
    encode_record,
    encode_stream,
)
from fcgipool.protocol.states import TRANSITIONS, Move, State, after

BEGIN = encode_begin_request(1, keep_conn=True)
BEGIN_CLOSE = encode_begin_request(1, keep_conn=False)
PARAMS = encode_stream(RecordType.PARAMS, 1, b"\x01\x01ab", terminate=True)  # one pair, then the terminator
STDIN_END = encode_record(RecordType.STDIN, 1, b"")
ABORT = encode_record(RecordType.ABORT_REQUEST, 1, b"")
FILTER_CLOSE = encode_begin_request(1, role=3, keep_conn=False)

# (input records, what the application does after each event, the moves it takes)
PATHS = [
    ([BEGIN, PARAMS, STDIN_END], "end", [Move.BEGIN, Move.PARAMS_END, Move.STDIN_END, Move.END_KEEP]),
    ([BEGIN_CLOSE, PARAMS, STDIN_END], "end", [Move.BEGIN, Move.PARAMS_END, Move.STDIN_END, Move.END_CLOSE]),
    ([BEGIN, PARAMS, ABORT], "end", [Move.BEGIN, Move.PARAMS_END, Move.ABORT, Move.END_KEEP]),
    ([BEGIN, PARAMS, STDIN_END, b""], "", [Move.BEGIN, Move.PARAMS_END, Move.STDIN_END, Move.EOF]),
    ([FILTER_CLOSE], "", [Move.REJECT_CLOSE]),
]


def walk(records: list[bytes], action: str, whole: bool) -> list[tuple[State, State]]:
    conn = Connection()
    seen = [(conn.their_state, conn.our_state)]
    chunks = records
    if whole:  # every record in one read (the fast path takes BEGIN + PARAMS at once), then EOF if the path has it
        chunks = [b"".join(records)] + [b"" for r in records if not r]
    for chunk in chunks:
        pieces = [chunk] if whole or not chunk else [chunk[i : i + 8] for i in range(0, len(chunk), 8)]
        for piece in pieces:
            conn.receive_data(piece)
            while (ev := conn.next_event()) is not NEED_DATA:
                seen.append((conn.their_state, conn.our_state))
                if type(ev).__name__ == "ConnectionClosed":
                    break
                if action == "end" and type(ev).__name__ in ("StdinEnd", "AbortRequested"):
                    conn.end_request(ev.request_id)
                    seen.append((conn.their_state, conn.our_state))
            seen.append((conn.their_state, conn.our_state))
    return [pair for i, pair in enumerate(seen) if i == 0 or pair != seen[i - 1]]


@pytest.mark.parametrize("whole", [False, True], ids=["record-loop", "fast-path"])
@pytest.mark.parametrize(("records", "action", "moves"), PATHS)
def test_every_state_change_is_a_row_of_the_table(records, action, moves, whole) -> None:
    states = walk(records, action, whole)
    expected = [(State.IDLE, State.IDLE)]
    for move in moves:
        expected.append(TRANSITIONS[(*expected[-1], move)])
    # in order along the table's path (one read may take several moves at once, as the fast path does), ending where
    # the table ends
    rest = iter(expected)
    assert all(pair in rest for pair in states), (states, expected)
    assert states[-1] == expected[-1]
    if not whole:  # record by record every state along the path shows
        assert states == [pair for i, pair in enumerate(expected) if i == 0 or pair != expected[i - 1]]


def test_moves_with_one_starting_pair_are_read_once_and_the_others_are_refused() -> None:
    assert after(Move.BEGIN) == (State.PARAMS, State.IDLE)
    assert after(Move.STDIN_END) == (State.DONE, State.RESPONDING)
    with pytest.raises(ValueError):
        after(Move.END_KEEP)  # several starting pairs: the connection looks it up
    conn = Connection()
    with pytest.raises(LocalProtocolError, match="no transition for end_request"):
        conn._move(Move.END_KEEP)  # not responding: a bug in the caller, not a state change
    assert (conn.their_state, conn.our_state) == (State.IDLE, State.IDLE)
