"""What a worker records in its scoreboard slot, behind one small adapter.

The worker talks to this class only, so the scoreboard's API can change in one place. Without a slot (a
plain ``gunicorn -k fcgipool.worker.FastCGIWorker`` run, or unit tests) every call is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .scoreboard import Slot, State


class Recorder:
    def __init__(self, slot: Slot | None = None) -> None:
        self.slot = slot

    def accepted(self) -> None:
        if self.slot:
            self.slot.conn_accepted()

    def reading(self, deadline: float) -> None:
        """Reading a request; ``deadline`` is the arbiter's hard limit (see :meth:`deadline`)."""
        if self.slot:
            self.slot.reading(deadline)

    def begin(
        self, method: str, uri: str, query: str, content_length: int, script: str, deadline: float | None = None
    ) -> None:
        """The app runs; ``deadline``, when given, is set in the same write."""
        if self.slot:
            self.slot.begin_request(method, uri, query, content_length, script, deadline)

    def end_response(self) -> None:
        if self.slot:
            self.slot.end_response()

    def finishing(self) -> None:
        if self.slot:
            self.slot.set_state(State.FINISHING)

    def idle(self) -> None:
        """Idle, and no deadline: back to gunicorn's heartbeat."""
        if self.slot:
            self.slot.rest()

    def ending(self) -> None:
        if self.slot:
            self.slot.set_state(State.ENDING)

    def deadline(self, monotonic: float) -> None:
        if self.slot:
            self.slot.set_deadline(monotonic)

    def pending(self, names: Iterable[str]) -> None:
        if self.slot:
            self.slot.set_pending(list(names))

    def task_done(self, task: Any, ok: bool, seconds: float) -> None:
        if self.slot:
            self.slot.task_finished(task.name, ok, seconds)

    def lost(self, n: int) -> None:
        if self.slot:
            self.slot.tasks_lost(n)
