"""Lost after-response tasks: the record, and the one place that reports them (log + hook).

A task is *lost* when it did not finish: interrupted by the background timeout, dropped at shutdown,
killed with its worker, or never started. Every lost task is reported once (at least once if a worker is
killed inside its own hook call), by whoever knows it is lost: the worker for what it gives up on itself,
the arbiter for what a dead worker left pending in its scoreboard slot.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

REASONS = ("timeout", "shutdown", "killed", "not_started")


@dataclass(frozen=True)
class LostTask:
    """One task that did not finish. ``started`` says whether it began running before it was lost."""

    name: str
    reason: str
    request_uri: str = ""
    pid: int = field(default_factory=os.getpid)
    started: bool = False

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown lost-task reason {self.reason!r}; expected one of {REASONS}")


def report_lost(
    owner: Any,
    tasks: Iterable[LostTask],
    log: Any,
    hook: Callable[[Any, LostTask], Any] | None,
) -> int:
    """Log each lost task as an error and pass it to the ``on_task_lost`` hook. Returns how many."""
    count = 0
    for task in tasks:
        count += 1
        log.error(
            "after-response task lost: %s (reason: %s%s, request: %s, pid: %s)",
            task.name,
            task.reason,
            ", was running" if task.started else "",
            task.request_uri or "-",
            task.pid,
        )
        if hook is None:
            continue
        try:
            hook(owner, task)
        except Exception:
            log.exception("on_task_lost hook failed for task %s", task.name)
    return count
