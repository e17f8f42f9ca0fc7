"""Soft time limits: the response phase (``timeout``) and after-response work (``background_timeout``).

A deadline interrupts the application's code with :class:`RequestTimeout` (response phase) or
:class:`BackgroundTimeout` (after-response work), both ``BaseException`` so that ``except Exception`` in app
code does not swallow them; the app's ``finally`` blocks run. The interruption is raised only inside
:meth:`Watchdog.interruptible` regions (the app call, each task) and never in the pool's own code: when the
signal arrives while a frame of this package runs (parsing a record, writing the response, a scoreboard
write) it is held back and raised at the next safe point. :meth:`Watchdog.shield` marks more such code.

No syscall per request: arming a deadline is two attribute stores. A clock thread per worker (started by
:meth:`Watchdog.install`, after fork) looks at the deadline every ``tick`` and sends SIGALRM to the main
thread once it has passed; a held-back interruption is signalled again a few times. Code that ignores the
interruption (catches ``BaseException``, or loops in C where Python never gets control) is the arbiter's
job: the worker publishes a hard deadline in its scoreboard slot and the arbiter kills it when that passes.

The same thread times the worker's keep-conn rounds (``handoff_after``, fcgipool.keepconn): the worker counts
rounds in two attribute stores (:meth:`Watchdog.round_begins` / :meth:`Watchdog.round_ends`) and the thread,
which looks every ``handoff_after`` while rounds go on, signals the main thread once a round it has seen has
lasted ``handoff_after`` -- so the reminder comes between ``handoff_after`` and twice that after the round
began. No timer syscall per round (``ITIMER_REAL`` made two: set and cancel, a setitimer every ~6 requests
in ``make bench``); a worker that was idle for a while wakes the thread once, when its next round wants one.
After-response work can be long, so arming its budget (:meth:`Watchdog.arm`) gives a round waiting for its
reminder the reminder at once, in the calling thread: the keep-conn policy (fcgipool.keepconn) takes both alike.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from types import CodeType, FrameType, TracebackType
from typing import TypeVar

#: clock thread: longest sleep between two looks at the deadline (a deadline fires at most this late)
TICK = 0.05
#: a held-back interruption is signalled again after these delays (then only safe points raise it)
RESIGNAL_AFTER = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
#: functions of this package whose own frame calls into the app (the app call, a task): an interruption
#: arriving while that frame is the innermost (the app runs C code, such as time.sleep) is raised there
_CALL_SITES: set[CodeType] = set()
F = TypeVar("F", bound=Callable[..., object])


def calls_user_code(fn: F) -> F:
    """Mark ``fn`` as a call site into application code (see module docstring)."""
    _CALL_SITES.add(fn.__code__)
    return fn


class Interrupted(BaseException):
    """A soft time limit ran out while application code ran."""

    phase = ""

    def __init__(self, reason: str = "timeout") -> None:
        super().__init__(f"{self.phase} interrupted ({reason})")
        self.reason = reason


class RequestTimeout(Interrupted):
    """Raised inside the app when its response phase outlives ``timeout``: the worker answers 504."""

    phase = "response"


class BackgroundTimeout(Interrupted):
    """Raised inside a running after-response task when its request's budget is used up."""

    phase = "after-response work"


class Watchdog:
    """One per worker process. ``arm(deadline)`` before running tasks, ``disarm()`` after."""

    def __init__(self) -> None:
        self._deadline = 0.0  # time.monotonic(); 0 = not armed
        self._reason = "timeout"
        self._exc: type[Interrupted] = BackgroundTimeout
        self._cap = 0.0  # set on graceful stop: no after-response work may run past it
        self._shield_depth = 0
        self._open_depth = 0
        self._pending = False
        self._fired = False
        # keep-conn rounds: _rounds is odd while one runs; _want_round is the round that asked for a reminder,
        # _due_round the round the clock signalled for (the handler checks it is still the same round)
        self._round_cb: Callable[[], None] | None = None
        self._round_after = 0.0
        self._rounds = 0
        self._want_round = -1
        self._due_round = -1
        self._cold = False  # the clock thread sleeps a full tick: a round that wants a reminder must wake it
        self._open = _Open(self)  # one per watchdog: entered once per request
        self._clock: threading.Thread | None = None
        self._stopping = False
        self._wake_r = self._wake_w = -1  # a pipe: the clock thread sleeps in poll() on it, one syscall a tick
        self._sleeper: select.poll | None = None
        self._main_ident = 0
        self.tick = TICK

    def install(self) -> None:
        """Take SIGALRM and start the clock thread (in the worker, after fork)."""
        signal.signal(signal.SIGALRM, self._on_alarm)
        self._main_ident = threading.main_thread().ident or 0
        if self._clock is None:
            self._stopping = False
            self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._sleeper = select.poll()
            self._sleeper.register(self._wake_r, select.POLLIN)
            self._clock = threading.Thread(target=self._run_clock, name="fcgipool-deadline", daemon=True)
            self._clock.start()

    def close(self) -> None:
        """Stop the clock thread (tests; a worker just exits)."""
        self._stopping = True
        if self._clock is not None:
            self._poke()
            self._clock.join(timeout=5)
            self._clock = None
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1

    # --- control ---------------------------------------------------------------------------------------
    def arm(self, deadline: float, reason: str = "timeout") -> float:
        """After-response work: interrupt it at ``deadline`` (monotonic; 0 = no limit unless capped).

        Returns the effective deadline (the earlier of ``deadline`` and the shutdown cap), 0 if none. A round
        waiting for its reminder gets it now (see module docstring).
        """
        rounds = self._rounds
        if self._want_round == rounds and rounds & 1 and self._round_cb is not None:
            self._rounds = rounds + 2  # as in _on_alarm: the same round to the worker, a new one to the clock
            self._round_cb()
        self._reason = reason
        if self._cap and (not deadline or self._cap < deadline):
            deadline, self._reason = self._cap, "shutdown"
        self._set(deadline, BackgroundTimeout)
        return deadline

    def arm_response(self, deadline: float) -> None:
        """The response phase: interrupt the app with :class:`RequestTimeout` at ``deadline`` (0 = none)."""
        self._reason = "timeout"
        self._set(deadline, RequestTimeout)

    def _set(self, deadline: float, exc: type[Interrupted]) -> None:
        self._fired = False
        self._pending = False
        self._exc = exc
        self._deadline = deadline

    def cap(self, deadline: float) -> None:
        """Graceful stop: after-response work must end by ``deadline``. Safe to call from a signal handler."""
        if self._cap and self._cap <= deadline:
            return
        self._cap = deadline
        if self._exc is BackgroundTimeout and self._deadline and deadline < self._deadline and not self._fired:
            self._deadline, self._reason = deadline, "shutdown"

    def watch_rounds(self, after: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the SIGALRM handler, between two bytecodes of whatever runs) when a round that
        asked for it with :meth:`want_reminder` has lasted ``after`` seconds (at most twice that); once per
        request for it. Set once, in the worker."""
        self._round_after = after
        self._round_cb = callback

    def round_begins(self) -> None:
        self._rounds += 1

    def round_ends(self) -> None:
        self._rounds += 1

    def want_reminder(self) -> None:
        """This round (it must have begun) wants the callback; asking again after it ran starts a new wait."""
        self._want_round = self._rounds
        if self._cold:
            self._cold = False
            self._poke()  # the one syscall: only when the thread sleeps a full tick (the worker was idle)

    def _poke(self) -> None:
        with contextlib.suppress(OSError):  # full (the thread is awake anyway) or closed
            os.write(self._wake_w, b"!")

    def disarm(self) -> None:
        self._deadline = 0.0
        self._pending = False

    @property
    def deadline(self) -> float:
        return self._deadline

    @property
    def reason(self) -> str:
        return self._reason

    @property
    def fired(self) -> bool:
        """The interruption was raised into the app (whether or not it swallowed it)."""
        return self._fired

    @property
    def expired(self) -> bool:
        """The budget is used up (whether or not the interruption was swallowed)."""
        return bool(self._deadline) and time.monotonic() >= self._deadline

    def shield(self) -> _Shield:
        return _Shield(self)

    def interruptible(self) -> _Open:
        return self._open

    # --- internals -------------------------------------------------------------------------------------
    def _run_clock(self) -> None:
        resignals = 0
        signalled_for = 0.0
        next_signal = 0.0
        seen_round, seen_at, last_rounds = -1, 0.0, -1
        while not self._stopping:
            now = time.monotonic()
            sleep = self.tick
            # keep-conn rounds: watched every handoff_after while the worker is busy, every tick once it idles
            if self._round_cb is not None:
                rounds = self._rounds
                busy = rounds != last_rounds or rounds & 1
                last_rounds = rounds
                if rounds & 1 and self._want_round == rounds:
                    if rounds != seen_round:
                        seen_round, seen_at = rounds, now
                    elif now - seen_at >= self._round_after and self._due_round != rounds:
                        self._due_round = rounds
                        self._signal()
                if busy:
                    sleep = min(sleep, max(self._round_after, 0.001))
                else:
                    self._cold = True  # set before the look below: a want_reminder() after it sees the flag
                    if self._rounds & 1 and self._want_round == self._rounds:
                        self._cold, sleep = False, 0.0
            deadline = self._deadline
            if not deadline or self._fired or now < deadline:
                if deadline and deadline > now:
                    sleep = min(sleep, deadline - now)
                self._sleep(sleep)
                continue
            if deadline != signalled_for:
                signalled_for, resignals = deadline, 0
            elif now < next_signal:
                self._sleep(max(0.001, min(sleep, next_signal - now)))
                continue
            elif resignals >= len(RESIGNAL_AFTER):
                self._sleep(sleep)  # held back for good (pool code blocking): safe points raise it
                continue
            else:
                resignals += 1
            next_signal = now + RESIGNAL_AFTER[min(resignals, len(RESIGNAL_AFTER) - 1)]
            if not self._signal():
                return

    def _sleep(self, seconds: float) -> None:
        sleeper = self._sleeper
        if seconds > 0 and sleeper is not None and sleeper.poll(seconds * 1000):
            with contextlib.suppress(OSError):
                os.read(self._wake_r, 64)
        self._cold = False

    def _signal(self) -> bool:
        try:
            signal.pthread_kill(self._main_ident, signal.SIGALRM)
        except (OSError, ValueError):
            return False  # the main thread is gone: the process is exiting
        return True

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        rounds = self._rounds
        if self._due_round == rounds and self._want_round == rounds and self._round_cb is not None:
            self._rounds = rounds + 2  # the same round to the worker (odd), a new one to the clock
            self._round_cb()
        now = time.monotonic()
        if not self._deadline or self._fired or now < self._deadline:
            return
        if self._shield_depth or not self._open_depth or _in_pool_code(frame):
            self._pending = True  # raised at the next safe point (or when the clock signals again)
            return
        self._fired = True
        raise self._exc(self._reason)

    def _raise_pending(self) -> None:
        if self._pending and self._deadline and self._open_depth and not self._shield_depth:
            self._pending = False
            self._fired = True
            raise self._exc(self._reason)

    def _leave_shield(self, exc_pending: bool) -> None:
        self._shield_depth -= 1
        if not exc_pending:
            self._raise_pending()


def _in_pool_code(frame: FrameType | None) -> bool:
    """The innermost frame is this package's own code (not one of its call sites into the app)."""
    if frame is None:
        return False
    code = frame.f_code
    return code.co_filename.startswith(_PACKAGE_DIR) and code not in _CALL_SITES


class _Shield:
    __slots__ = ("_dog",)

    def __init__(self, dog: Watchdog) -> None:
        self._dog = dog

    def __enter__(self) -> None:
        self._dog._shield_depth += 1

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._dog._leave_shield(exc_type is not None)


class _Open:
    __slots__ = ("_dog",)

    def __init__(self, dog: Watchdog) -> None:
        self._dog = dog

    def __enter__(self) -> None:
        dog = self._dog
        dog._open_depth += 1
        try:
            dog._raise_pending()
        except BaseException:
            dog._open_depth -= 1  # __exit__ does not run when __enter__ raises
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._dog._open_depth -= 1
