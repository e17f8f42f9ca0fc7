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

The worker's keep-conn reminders (:meth:`Watchdog.remind`, see ``handoff_after`` in fcgipool.worker) use
the process's ``ITIMER_REAL``; the handler tells the two apart by time, so they never wait for each other.
"""

from __future__ import annotations

import os
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
        self._reminder: Callable[[], None] | None = None
        self._remind_at = 0.0
        self._open = _Open(self)  # one per watchdog: entered once per request
        self._clock: threading.Thread | None = None
        self._stop = threading.Event()
        self._main_ident = 0
        self.tick = TICK

    def install(self) -> None:
        """Take SIGALRM and start the clock thread (in the worker, after fork)."""
        signal.signal(signal.SIGALRM, self._on_alarm)
        self._main_ident = threading.main_thread().ident or 0
        if self._clock is None:
            self._stop.clear()
            self._clock = threading.Thread(target=self._run_clock, name="fcgipool-deadline", daemon=True)
            self._clock.start()

    def close(self) -> None:
        """Stop the clock thread (tests; a worker just exits)."""
        self._stop.set()
        if self._clock is not None:
            self._clock.join(timeout=5)
            self._clock = None

    # --- control ---------------------------------------------------------------------------------------
    def arm(self, deadline: float, reason: str = "timeout") -> float:
        """After-response work: interrupt it at ``deadline`` (monotonic; 0 = no limit unless capped).

        Returns the effective deadline (the earlier of ``deadline`` and the shutdown cap), 0 if none.
        """
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

    def remind(self, seconds: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` once (from the signal handler, between two bytecodes of whatever runs) after
        ``seconds``, unless :meth:`forget` comes first. Independent of any armed deadline."""
        self._reminder = callback
        self._remind_at = time.monotonic() + seconds
        signal.setitimer(signal.ITIMER_REAL, seconds)

    def forget(self) -> None:
        """Cancel :meth:`remind` (one syscall; none if no reminder was set or it already ran)."""
        if self._reminder is not None:
            self._reminder = None
            signal.setitimer(signal.ITIMER_REAL, 0)

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
        while not self._stop.is_set():
            deadline = self._deadline
            now = time.monotonic()
            if not deadline or self._fired or now < deadline:
                self._stop.wait(min(self.tick, deadline - now) if deadline and deadline > now else self.tick)
                continue
            if deadline != signalled_for:
                signalled_for, resignals = deadline, 0
            elif now < next_signal:
                self._stop.wait(max(0.001, min(self.tick, next_signal - now)))
                continue
            elif resignals >= len(RESIGNAL_AFTER):
                self._stop.wait(self.tick)  # held back for good (pool code blocking): safe points raise it
                continue
            else:
                resignals += 1
            next_signal = now + RESIGNAL_AFTER[min(resignals, len(RESIGNAL_AFTER) - 1)]
            try:
                signal.pthread_kill(self._main_ident, signal.SIGALRM)
            except (OSError, ValueError):
                return  # the main thread is gone: the process is exiting

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        reminder = self._reminder
        if reminder is not None:
            if now >= self._remind_at - 0.0005:
                self._reminder = None
                reminder()
            elif signal.getitimer(signal.ITIMER_REAL)[0] == 0:  # the timer rang early (rounding): the rest
                signal.setitimer(signal.ITIMER_REAL, self._remind_at - now)
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
