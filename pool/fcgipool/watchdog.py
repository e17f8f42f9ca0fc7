"""Soft time limit for after-response work: a one-shot ITIMER_REAL that interrupts the running task.

The interruption is :class:`BackgroundTimeout`, a ``BaseException`` so that ``except Exception`` in a task
does not swallow it. It is raised only inside :meth:`Watchdog.interruptible` regions (the code of tasks and
of the app after ``finish_request()``), never in the server's own code around them; bookkeeping that must
not be cut in half (scoreboard writes) runs inside :meth:`Watchdog.shield`. An alarm that arrives outside
an interruptible region or inside a shield is raised when such a region is entered or the shield is left.

A task that ignores the interruption (catches ``BaseException``, or loops in C where Python never gets
control) is the arbiter's job: the worker publishes a hard deadline in its scoreboard slot and the arbiter
kills it when that passes.

The same timer serves the worker's keep-conn reminders (:meth:`Watchdog.remind`, see ``handoff_after`` in
fcgipool.worker) while no deadline is armed.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from types import FrameType, TracebackType


class BackgroundTimeout(BaseException):
    """Raised inside a running after-response task when its request's budget is used up."""

    def __init__(self, reason: str = "timeout") -> None:
        super().__init__(f"after-response work interrupted ({reason})")
        self.reason = reason


class Watchdog:
    """One per worker process. ``arm(deadline)`` before running tasks, ``disarm()`` after."""

    def __init__(self) -> None:
        self._deadline = 0.0  # time.monotonic(); 0 = not armed
        self._reason = "timeout"
        self._cap = 0.0  # set on graceful stop: nothing may run past it
        self._shield_depth = 0
        self._open_depth = 0
        self._pending = False
        self._fired = False
        self._reminder: Callable[[], None] | None = None
        self._open = _Open(self)  # one per watchdog: entered once per request
        self._remind_after = 0.0

    def install(self) -> None:
        signal.signal(signal.SIGALRM, self._on_alarm)

    # --- control ---------------------------------------------------------------------------------------
    def arm(self, deadline: float, reason: str = "timeout") -> float:
        """Interrupt the running code at ``deadline`` (monotonic; 0 = no limit unless capped).

        Returns the effective deadline (the earlier of ``deadline`` and the shutdown cap), 0 if none.
        """
        self._reason = reason
        self._fired = False
        self._pending = False
        if self._cap and (not deadline or self._cap < deadline):
            deadline, self._reason = self._cap, "shutdown"
        self._deadline = deadline
        self._set_timer()
        return deadline

    def cap(self, deadline: float) -> None:
        """Graceful stop: whatever runs must end by ``deadline``. Safe to call from a signal handler."""
        if self._cap and self._cap <= deadline:
            return
        self._cap = deadline
        if self._deadline and deadline < self._deadline and not self._fired:
            self._deadline, self._reason = deadline, "shutdown"
            self._set_timer()

    def remind(self, seconds: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` once (from the signal handler, between two bytecodes of whatever runs) after
        ``seconds``, unless :meth:`forget` comes first. The timer is shared: while a deadline is armed the
        reminder waits, and :meth:`disarm` starts it again with its full delay."""
        self._reminder = callback
        self._remind_after = seconds
        if not self._deadline:
            signal.setitimer(signal.ITIMER_REAL, seconds)

    def forget(self) -> None:
        """Cancel :meth:`remind` (one syscall; none if no reminder was set or it already ran)."""
        if self._reminder is not None:
            self._reminder = None
            if not self._deadline:
                signal.setitimer(signal.ITIMER_REAL, 0)

    def disarm(self) -> None:
        self._deadline = 0.0
        self._pending = False
        signal.setitimer(signal.ITIMER_REAL, self._remind_after if self._reminder is not None else 0)

    @property
    def deadline(self) -> float:
        return self._deadline

    @property
    def reason(self) -> str:
        return self._reason

    @property
    def expired(self) -> bool:
        """The budget is used up (whether or not the interruption was swallowed)."""
        return bool(self._deadline) and time.monotonic() >= self._deadline

    def shield(self) -> _Shield:
        return _Shield(self)

    def interruptible(self) -> _Open:
        return self._open

    # --- internals -------------------------------------------------------------------------------------
    def _set_timer(self) -> None:
        if not self._deadline:
            signal.setitimer(signal.ITIMER_REAL, self._remind_after if self._reminder is not None else 0)
            return
        signal.setitimer(signal.ITIMER_REAL, max(self._deadline - time.monotonic(), 0.001))

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        reminder = self._reminder
        if reminder is not None and not self._deadline:
            self._reminder = None
            reminder()
            return
        if not self._deadline or self._fired:
            return
        remaining = self._deadline - time.monotonic()
        if remaining > 0.0005:  # early wake-up (timer rounding): wait for the rest
            signal.setitimer(signal.ITIMER_REAL, remaining)
            return
        if self._shield_depth or not self._open_depth:
            self._pending = True
            return
        self._fired = True
        raise BackgroundTimeout(self._reason)

    def _raise_pending(self) -> None:
        if self._pending and self._deadline and self._open_depth and not self._shield_depth:
            self._pending = False
            self._fired = True
            raise BackgroundTimeout(self._reason)

    def _leave_shield(self, exc_pending: bool) -> None:
        self._shield_depth -= 1
        if not exc_pending:
            self._raise_pending()


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
