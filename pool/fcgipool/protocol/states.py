"""The FastCGI connection's states and every transition between them, as one table (h11's ``_state.py`` manner).

A connection has two states: ``their_state`` tracks what the web server sends for the current request,
``our_state`` what the application may send. :data:`TRANSITIONS` maps (their, ours, :class:`Move`) to the new
pair; a move the table does not list is a bug in the caller (``Connection`` checks the peer's input and the
application's calls first, with messages that say what was wrong). Every state change takes its new states
from the table: a lookup (``_move``), or, for a move that can start from one pair only, the answer read once
(:func:`after`). Malformed input moves both states to
ERROR from anywhere (sticky), outside the table; a LocalProtocolError changes nothing.

=================  ==============================  ============  ==============================
their_state        move (event)                    our_state     notes
=================  ==============================  ============  ==============================
IDLE               BEGIN (RESPONDER role)          IDLE          no event yet
PARAMS             PARAMS_END → RequestStarted     RESPONDING    send_stdout/send_stderr allowed
STDIN              STDIN → StdinData               RESPONDING    no move
STDIN              STDIN_END → StdinEnd            RESPONDING    their → DONE
PARAMS/STDIN/DONE  ABORT → AbortRequested          RESPONDING    their → ABORTED; answer with end_request()
ABORTED            later PARAMS/STDIN ignored      RESPONDING    no move
any                END_KEEP (end_request())        IDLE          automatic next cycle; their → IDLE
any                END_CLOSE (end_request())       MUST_CLOSE    flush, then close the socket
IDLE               REJECT_CLOSE (other role)       MUST_CLOSE    END_REQUEST(UNKNOWN_ROLE), no keep-conn
IDLE / DONE / ...  EOF at a record boundary        unchanged     their → CLOSED, ConnectionClosed
PARAMS / STDIN     EOF                             ERROR         "connection closed mid-request"
any                malformed input                 ERROR         RemoteProtocolError, sticky
=================  ==============================  ============  ==============================

("any" for END_*: whatever their state is while we respond, STDIN, DONE, ABORTED or CLOSED; CLOSED stays.)
"""

from __future__ import annotations

import enum

__all__ = ["TRANSITIONS", "Move", "State", "after"]


class State(enum.Enum):
    IDLE = "IDLE"
    PARAMS = "PARAMS"
    STDIN = "STDIN"
    DONE = "DONE"
    ABORTED = "ABORTED"
    RESPONDING = "RESPONDING"
    MUST_CLOSE = "MUST_CLOSE"
    CLOSED = "CLOSED"
    ERROR = "ERROR"

    # members are singletons: hash by identity (Enum's own __hash__ is Python code, and TRANSITIONS hashes
    # three members per move, four moves per request)
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return self.value


class Move(enum.Enum):
    """What moves a connection from one pair of states to the next."""

    __hash__ = object.__hash__  # as State's

    BEGIN = "BEGIN_REQUEST (RESPONDER)"
    PARAMS_END = "end of PARAMS"
    STDIN_END = "end of STDIN"
    ABORT = "ABORT_REQUEST"
    END_KEEP = "end_request() with FCGI_KEEP_CONN"
    END_CLOSE = "end_request() without FCGI_KEEP_CONN"
    REJECT_CLOSE = "BEGIN_REQUEST for another role, without FCGI_KEEP_CONN"
    EOF = "EOF at a record boundary"


IDLE, PARAMS, STDIN, DONE = State.IDLE, State.PARAMS, State.STDIN, State.DONE
ABORTED, RESPONDING, MUST_CLOSE, CLOSED, ERROR = (
    State.ABORTED, State.RESPONDING, State.MUST_CLOSE, State.CLOSED, State.ERROR
)  # fmt: skip

#: (their_state, our_state, move) -> (their_state, our_state)
TRANSITIONS: dict[tuple[State, State, Move], tuple[State, State]] = {
    (IDLE, IDLE, Move.BEGIN): (PARAMS, IDLE),
    (IDLE, IDLE, Move.REJECT_CLOSE): (IDLE, MUST_CLOSE),
    (PARAMS, IDLE, Move.PARAMS_END): (STDIN, RESPONDING),
    (STDIN, RESPONDING, Move.STDIN_END): (DONE, RESPONDING),
    (PARAMS, IDLE, Move.ABORT): (ABORTED, RESPONDING),
    (STDIN, RESPONDING, Move.ABORT): (ABORTED, RESPONDING),
    (DONE, RESPONDING, Move.ABORT): (ABORTED, RESPONDING),
}
for _theirs in (STDIN, DONE, ABORTED, CLOSED):
    _next = CLOSED if _theirs is CLOSED else IDLE  # a peer that closed stays closed
    TRANSITIONS[_theirs, RESPONDING, Move.END_KEEP] = (_next, IDLE)
    TRANSITIONS[_theirs, RESPONDING, Move.END_CLOSE] = (_next, MUST_CLOSE)
for _theirs, _ours in ((IDLE, IDLE), (IDLE, MUST_CLOSE), (DONE, RESPONDING), (ABORTED, RESPONDING),
                       (CLOSED, IDLE), (CLOSED, MUST_CLOSE), (CLOSED, RESPONDING)):  # fmt: skip
    TRANSITIONS[_theirs, _ours, Move.EOF] = (CLOSED, _ours)


def after(move: Move) -> tuple[State, State]:
    """The states after ``move``, for a move the table lets start from one pair only (BEGIN, PARAMS_END, STDIN_END,
    REJECT_CLOSE): the connection takes this answer, read from the table once, instead of a lookup per request."""
    (pair,) = [new for (_t, _o, m), new in TRANSITIONS.items() if m is move]
    return pair
