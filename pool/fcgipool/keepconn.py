"""The keep-conn policy, sans-IO: what a worker does with the kept connections it holds and serves.

Events in, decisions out, in the manner of h11: the worker's loop (:mod:`fcgipool.serveloop`) and the server
(:mod:`fcgipool.server`) tell the policy what happened -- a poll round begins or ends, a connection is about to
be served or has been, a connection joins the ones it holds, the clock's reminder came, after-response work is
about to start -- and carry out the answer: serve, hold, pass on (to the pool's hand-off queue), close. The
policy does no I/O and reads no clock: the facts it needs (how many connections are held, whether a new
connection waits in the listen queue, the time) come with the events, so
``pool/tests/test_pool_keepconn_policy.py`` drives it from tables.

The rules (docs/server-behaviour.md, "keep-conn"): no request waits on a connection held by a busy worker for
longer than ``handoff_after`` while another worker idles, and no connection the web server may reuse is closed
while the pool runs.

- A worker serves everything one ``poll`` reports ready, in turn (a *round*). While it serves, its other idle
  connections stay with it (under load each gets its next request before another worker could take it);
  once the round has kept it busy for ``handoff_after`` -- the clock thread's reminder (fcgipool.watchdog),
  which also comes at once when after-response work starts -- it passes them on: at once inside a request,
  else before the round's next request. ``handoff_after`` 0 passes them on before every request.
- A request with after-response work ends its connection's time in this worker before that work starts: one
  the web server keeps is passed on (its next request is served by another worker at once; Apache and HAProxy
  reuse it without looking at bytes after END_REQUEST), without a hand-off queue it is closed, END_REQUEST
  followed by the no-reuse marker (fcgipool.server.NO_REUSE).
- It holds at most :data:`MAX_HELD`; past that the one idle longest is closed.
- A stopping worker passes on what it holds and what it just served.
- Without a hand-off queue (plain gunicorn) a worker holds one kept connection: before it serves another it
  lets go of the rest -- a request already sent on one is served first and ends it with the no-reuse marker,
  an idle one is closed -- and it gives a connection up (no-reuse marker) once a new connection has waited
  in the listen queue for :data:`YIELD_AFTER` of its requests or :data:`YIELD_WAIT` seconds.
"""

from __future__ import annotations

import enum

#: idle kept connections one worker holds at most; past it the one idle longest is closed (the only close of
#: a reusable connection while the pool runs: keep nginx's keepalive x worker_processes below workers x this)
MAX_HELD = 64
#: keep-conn fairness without a hand-off queue: requests served on a kept connection, or seconds, while a new
#: connection waits in the listen queue, before the kept one is given up
YIELD_AFTER = 4
YIELD_WAIT = 0.02


class Outcome(enum.Enum):
    """What serving a connection came to (``FastCGIConnection.serve``)."""

    KEPT = "kept"  # open and idle at a request boundary: the web server may send its next request on it
    CLOSED = "closed"


class Action(enum.Enum):
    """What the worker does with a connection."""

    HOLD = "hold"  # keep it idle, watched by the worker's poll
    PASS_ON = "pass on"  # give it to the hand-off queue (an idle worker takes it); close it if that cannot be done
    SERVE_LAST = "serve last"  # no queue: serve a request already sent on it (no-reuse marker), then close it
    CLOSE = "close"


# module globals: an enum member read as a class attribute costs ~50 ns, a few times per request
_KEPT = Outcome.KEPT
_HOLD, _PASS_ON, _SERVE_LAST, _CLOSE = Action.HOLD, Action.PASS_ON, Action.SERVE_LAST, Action.CLOSE


class KeepConnPolicy:
    """One per worker. ``queue``: the pool has a hand-off queue (the worker runs under PoolArbiter)."""

    __slots__ = ("_due", "_in_request", "_in_round", "_reminded", "_seen", "_streak", "handoff_after", "queue", "timed")

    def __init__(self, *, queue: bool, handoff_after: float) -> None:
        self.queue = queue
        self.handoff_after = handoff_after
        #: rounds are timed by the clock's reminder (else the others are passed on before every request)
        self.timed = queue and handoff_after > 0
        self._in_round = False  # serving what one poll reported ready
        self._in_request = False  # inside FastCGIConnection.serve: the worker's loop is not touching what it holds
        self._due = False  # the reminder came between two requests of the round: pass on before the next
        self._reminded = False  # this round asked the clock for its reminder (and it has not come yet)
        self._seen = 0.0  # no queue: since when a new connection waits in the listen queue
        self._streak = 0  # ... and for how many of our requests

    # --- a poll round ------------------------------------------------------------------------------------
    def round_begins(self, held: int) -> bool:
        """A poll reported connections ready; ``held``: idle connections held. True: ask for the reminder."""
        self._in_round = True
        self._reminded = False
        return self.holding(held)

    def round_ends(self) -> None:
        self._in_round = False
        self._due = False  # idle again: the worker watches what it holds itself

    def holding(self, held: int = 1) -> bool:
        """``held`` connections are held now (one just joined). True: ask the clock for the round's reminder."""
        if held and self._in_round and self.timed and not self._reminded:
            self._reminded = True
            return True
        return False

    def must_evict(self, held: int) -> bool:
        """A connection is about to join ``held`` others: True = close the one idle longest first."""
        return held >= MAX_HELD

    # --- serving one connection ------------------------------------------------------------------------
    def serving(self, others: int) -> bool:
        """A request is about to be served while ``others`` idle connections are held. True: let go of those first,
        then ask again; False: the request starts (a reminder from now on lets go of what is held at once). One
        event per request, not two: each call is ~0.1 us of a worker's ~25 us request."""
        if others and (self._due or not self.timed):
            self._due = False
            return True
        self._in_request = True
        return False

    def give_up(self, waiting: bool, now: float) -> bool:
        """No queue, before a connection is served: ``waiting``, a new connection waits in the listen queue.
        True: end this one after its request (no-reuse marker), so the waiting one is taken next."""
        if not waiting:
            self._seen, self._streak = 0.0, 0
            return False
        if not self._seen:
            self._seen = now
        self._streak += 1
        if self._streak >= YIELD_AFTER or now - self._seen >= YIELD_WAIT:
            self._seen, self._streak = 0.0, 0
            return True
        return False

    def served(self, outcome: Outcome, alive: bool) -> Action:
        """Serving ended; ``alive``: the worker goes on. What to do with the connection.

        Until this call the request counts as running: a reminder meanwhile lets go of what is held at once,
        which is right while the worker finishes its bookkeeping (and harmless once it is exiting)."""
        self._in_request = False
        if outcome is not _KEPT:
            return _CLOSE
        return _HOLD if alive else _PASS_ON

    def work_ahead(self, kept: bool) -> Action:
        """After-response work starts once the request being served has sent END_REQUEST; ``kept``: the web
        server keeps the connection and nothing on our side ends it (not stopping, not given up). PASS_ON: to
        the hand-off queue right after END_REQUEST (closed if that cannot be done); CLOSE: END_REQUEST with the
        no-reuse marker, then close."""
        return _PASS_ON if kept and self.queue else _CLOSE

    def reminder(self) -> bool:
        """The clock's reminder: the round has kept the worker busy for ``handoff_after``, or after-response work
        starts. True: let go of what is held now (inside a request); else it is done before the next request."""
        self._reminded = False
        if self._in_request:
            return True
        self._due = True
        return False

    def letting_go(self, *, stopping: bool) -> Action:
        """A held connection must leave this worker (:meth:`serving`, :meth:`reminder`, or it stops)."""
        if self.queue or stopping:
            return _PASS_ON
        return _SERVE_LAST
