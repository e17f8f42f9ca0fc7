"""A request's after-response work, once its response is out and its connection closed: the budget armed and
published for the arbiter, the tasks run, and lost tasks reported (the hook, the log, the scoreboard slot)."""

from __future__ import annotations

import functools
import time
from typing import Any, Protocol

from .background import RunResult, Spill, TaskList, run_tasks
from .lost import LostTask, report_lost
from .recorder import Recorder
from .watchdog import Watchdog

NO_LIMIT = 10 * 365 * 86400.0  # "no deadline" as a deadline: the arbiter never kills for it


class TaskHost(Protocol):
    """What after-response work needs from its worker (a part of fcgipool.server.Host)."""

    log: Any
    recorder: Recorder
    watchdog: Watchdog
    spill: Spill | None

    def notify(self) -> None: ...

    def task_lost_hook(self) -> Any: ...


def begin(host: TaskHost, background_timeout: float, kill_grace: float) -> None:
    """After-response work starts: its budget on the watchdog (which also gives a keep-conn round waiting for its
    reminder the reminder now, fcgipool.keepconn) and the hard deadline in the scoreboard slot."""
    rec = host.recorder
    rec.finishing()
    soft = host.watchdog.arm(time.monotonic() + background_timeout if background_timeout else 0.0)
    # no budget: a deadline far away, so the arbiter does not fall back to the (silent) heartbeat
    rec.deadline(soft + kill_grace if soft else time.monotonic() + NO_LIMIT)


def run(host: TaskHost, tasks: TaskList, status: int, *, stop_on_error: bool, only_on_success: bool) -> RunResult:
    """Run the request's tasks (after :func:`begin`); the worker is idle, with no deadline, afterwards."""
    skip = "not_started" if (only_on_success and status >= 400) else None
    if skip:
        host.log.info("%s: response status %s, after-response tasks skipped", tasks.request_uri, status)
    try:
        result = run_tasks(
            tasks,
            logger=host.log,
            stop_on_error=stop_on_error,
            watchdog=host.watchdog,
            on_done=host.recorder.task_done,
            on_lost=functools.partial(report, host),
            skip_reason=skip,
            spill=host.spill,
            on_spilled=host.recorder.task_spilled,
        )
    finally:
        host.watchdog.disarm()
    if any(t.reason == "timeout" for t in result.lost):
        host.recorder.background_timeout()
    host.notify()
    host.recorder.idle()  # and no deadline
    return result


def report(host: TaskHost, lost: list[LostTask]) -> None:
    hook = host.task_lost_hook()
    for task in lost:
        # hook first, then off the slot's pending list: a worker killed in between (a slow hook past the
        # arbiter's deadline) leaves the task pending, and the arbiter reports it (at least once, never none)
        report_lost(host, [task], host.log, hook)
        host.recorder.lost([task.name])
