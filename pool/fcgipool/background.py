"""After-response tasks: ``from fcgipool import background``.

During a request::

    background.add(send_welcome_mail, user.email)          # runs after the client has the response
    background.add(rebuild_cache, key, name="cache:rebuild")
    background.finish_request()                            # PHP's fastcgi_finish_request()

Under fcgipool the tasks run in the same worker after END_REQUEST has been sent, in the order they were
added (a task may add more; they are appended). Under any other WSGI server wrap the app with
:func:`wsgi`: tasks then run when the server closes the response; the worker stays busy and, depending
on the server, the client waits for them.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

from .lost import LostTask
from .watchdog import BackgroundTimeout, Watchdog, calls_user_code

__all__ = [
    "BackgroundTimeout",
    "LostTask",
    "NoRequestError",
    "Task",
    "TaskList",
    "add",
    "current",
    "finish_request",
    "run_tasks",
    "wsgi",
]

ENVIRON_KEY = "fcgipool.background"
log = logging.getLogger("fcgipool.background")
_current: contextvars.ContextVar[TaskList | None] = contextvars.ContextVar("fcgipool_background", default=None)


class NoRequestError(RuntimeError):
    """``background.add``/``finish_request`` was called while no request is being handled."""


@dataclass
class Task:
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    spill_path: str | None = None  # the import path the spill queue runs it by; None: it stays in the pool


class Spill(Protocol):
    """What running tasks needs of spill (fcgipool.spill.Spiller)."""

    def check(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str: ...

    def offload(self, task: Task, request_uri: str, forced: str | None = None) -> str | None:
        """Hand ``task`` to the queue if it should not run here (``forced``: for that reason); the reason, or
        None when it runs in the pool."""
        ...

    def ran(self, name: str, seconds: float) -> None: ...


class TaskList:
    """The after-response tasks of one request (``environ["fcgipool.background"]``)."""

    def __init__(
        self,
        request_uri: str = "",
        *,
        on_change: Callable[[list[str]], None] | None = None,
        on_finish_request: Callable[[], None] | None = None,
        spill: Spill | None = None,
    ) -> None:
        self.request_uri = request_uri
        self.tasks: list[Task] = []
        self.done = 0  # tasks[:done] have run (or were reported lost)
        self.finish_requested = False
        self._on_change = on_change
        self._on_finish_request = on_finish_request
        self._spill = spill

    def add(self, fn: Callable[..., Any], *args: Any, name: str | None = None, spill: bool = True,
            **kwargs: Any) -> None:  # fmt: skip
        """``spill=False``: never hand this task to the spill queue (it holds a lock, a socket, ...)."""
        if not callable(fn):
            raise TypeError(f"background.add() needs a callable, got {fn!r}")
        task_name = name or getattr(fn, "__qualname__", None) or repr(fn)
        # with spill on, what the queue could never run is refused now, not lost later (SpillRefused)
        path = self._spill.check(fn, args, kwargs) if spill and self._spill is not None else None
        self.tasks.append(Task(fn, args, kwargs, task_name, path))
        if self._on_change is not None:
            self._on_change(self.pending_names())

    def finish_request(self) -> None:
        self.finish_requested = True
        if self._on_finish_request is not None:
            self._on_finish_request()
        else:
            _warn_once(
                "finish_request",
                "background.finish_request() has no effect under this server: the response ends when the "
                "application returns (run under fcgipool to end it early)",
            )

    def pending_names(self) -> list[str]:
        return [t.name for t in self.tasks[self.done :]]

    @property
    def has_pending(self) -> bool:
        return self.done < len(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def __repr__(self) -> str:
        return f"<TaskList {self.request_uri!r} {self.done}/{len(self.tasks)} done>"


def current() -> TaskList:
    """The task list of the request being handled; :class:`NoRequestError` outside a request."""
    tasks = _current.get()
    if tasks is None:
        raise NoRequestError(
            "no request is being handled: background.add() and finish_request() work only while a request "
            "runs under fcgipool, or under another WSGI server when the app is wrapped with "
            "fcgipool.background.wsgi(app)"
        )
    return tasks


def add(fn: Callable[..., Any], *args: Any, name: str | None = None, spill: bool = True, **kwargs: Any) -> None:
    """Run ``fn(*args, **kwargs)`` after the response has been sent. ``name`` defaults to ``fn.__qualname__``.

    With spill on (``--spill-to``) the task may run in the spill queue's worker instead: it must then be a
    module-level function with picklable arguments (else SpillRefused, now); ``spill=False`` keeps it here.
    """
    current().add(fn, *args, name=name, spill=spill, **kwargs)


def finish_request() -> None:
    """End the response now (PHP's ``fastcgi_finish_request``); the rest of the app runs after it."""
    current().finish_request()


def activate(tasks: TaskList | None) -> contextvars.Token[TaskList | None]:
    """Make ``tasks`` the current request's list (servers call this; reset with ``deactivate``)."""
    return _current.set(tasks)


def deactivate(token: contextvars.Token[TaskList | None]) -> None:
    _current.reset(token)


# --- running ---------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    ran: int = 0
    failed: int = 0
    spilled: int = 0
    lost: list[LostTask] = field(default_factory=list)
    seconds: float = 0.0
    # (task name, "ok" | "failed" | "spilled:<reason>" | "lost:<reason>")
    outcomes: list[tuple[str, str]] = field(default_factory=list)


@calls_user_code
def run_tasks(
    tasks: TaskList,
    *,
    logger: logging.Logger | Any = log,
    stop_on_error: bool = False,
    watchdog: Watchdog | None = None,
    on_done: Callable[[Task, bool, float], None] | None = None,
    on_lost: Callable[[list[LostTask]], None] | None = None,
    skip_reason: str | None = None,
    spill: Spill | None = None,
    on_spilled: Callable[[Task, str], None] | None = None,
) -> RunResult:
    """Run the pending tasks in order, in this thread; tasks may append more while it runs.

    A task's exception is logged with its traceback and counted, and the next task runs (unless
    ``stop_on_error``). :class:`BackgroundTimeout` from ``watchdog`` ends the run: the interrupted task and
    the ones never started are lost. ``skip_reason`` reports every pending task lost without running any.
    ``on_done``/``on_lost`` are called inside the watchdog's shield so bookkeeping is never cut in half.
    ``SystemExit``/``KeyboardInterrupt`` propagate untouched: the process is going away and whatever is
    still pending is reported by whoever reaps it. With ``spill``, a task may go to the spill queue instead of
    running (``on_spilled``), and a stop that cuts the run short hands the tasks not started to it.
    """
    result = RunResult()
    shield = watchdog.shield if watchdog is not None else nullcontext
    interruptible = watchdog.interruptible if watchdog is not None else nullcontext
    token = _current.set(tasks)
    started = False
    reason = skip_reason
    t_run = time.monotonic()
    try:
        while reason is None and tasks.has_pending:
            if watchdog is not None and watchdog.expired:
                reason = watchdog.reason
                break
            task = tasks.tasks[tasks.done]
            if spill is not None and task.spill_path is not None:
                why = spill.offload(task, tasks.request_uri)
                if why is not None:
                    with shield():
                        _spilled(tasks, task, why, result, on_spilled)
                    continue
            t0 = time.monotonic()
            started = True
            try:
                with interruptible():
                    task.fn(*task.args, **task.kwargs)
                ok = True
            except Exception as exc:
                ok = False
                _log_failure(logger, task.name, tasks.request_uri or "-", exc)
            with shield():
                started = False
                tasks.done += 1
                result.ran += 1
                result.failed += not ok
                result.outcomes.append((task.name, "ok" if ok else "failed"))
                if on_done is not None:
                    on_done(task, ok, time.monotonic() - t0)
            if spill is not None:
                spill.ran(task.name, time.monotonic() - t0)
            if not ok and stop_on_error:
                reason = "not_started"
    except BackgroundTimeout as exc:
        reason = exc.reason
    finally:
        _current.reset(token)
    if reason == "shutdown" and spill is not None and tasks.has_pending:
        _spill_unstarted(tasks, spill, result, on_spilled, interrupted=started)
    if reason is not None and tasks.has_pending:
        if watchdog is not None:
            watchdog.disarm()
        lost = [
            LostTask(t.name, reason, tasks.request_uri, started=(started and i == 0))
            for i, t in enumerate(tasks.tasks[tasks.done :])
        ]
        tasks.done = len(tasks.tasks)
        result.lost = lost
        result.outcomes.extend((t.name, f"lost:{t.reason}") for t in lost)
        if on_lost is not None:
            on_lost(lost)
    result.seconds = time.monotonic() - t_run
    return result


def _spilled(tasks: TaskList, task: Task, why: str, result: RunResult,
             on_spilled: Callable[[Task, str], None] | None) -> None:  # fmt: skip
    tasks.done += 1
    result.spilled += 1
    result.outcomes.append((task.name, f"spilled:{why}"))
    if on_spilled is not None:
        on_spilled(task, why)


def _spill_unstarted(tasks: TaskList, spill: Spill, result: RunResult,
                     on_spilled: Callable[[Task, str], None] | None, *, interrupted: bool) -> None:  # fmt: skip
    """A stop cut the run short: the tasks that never started go to the queue (the interrupted one is lost)."""
    first = tasks.done + (1 if interrupted else 0)
    keep = tasks.tasks[: first]
    for task in tasks.tasks[first:]:
        why = spill.offload(task, tasks.request_uri, "shutdown") if task.spill_path is not None else None
        if why is None:
            keep.append(task)
        else:
            result.spilled += 1
            result.outcomes.append((task.name, f"spilled:{why}"))
            if on_spilled is not None:
                on_spilled(task, why)
    tasks.tasks[:] = keep  # what is left after tasks.done is reported lost by the caller


#: a failing task's traceback is logged at most once per this many seconds per task name; the failures in
#: between get one line each (a mail server down made 1,000 tracebacks in 6 s in `make faults`)
TRACEBACK_EVERY = 10.0
_tracebacks: dict[str, tuple[float, int]] = {}  # task name -> (when its last traceback was logged, failures since)


def _log_failure(logger: logging.Logger | Any, name: str, uri: str, exc: Exception) -> None:
    now = time.monotonic()
    last, quiet = _tracebacks.get(name, (-TRACEBACK_EVERY, 0))
    if now - last < TRACEBACK_EVERY:
        _tracebacks[name] = (last, quiet + 1)
        logger.error("after-response task %s failed (request %s): %s: %s (its traceback is logged at most once "
                     "every %g s)", name, uri, type(exc).__name__, exc, TRACEBACK_EVERY)  # fmt: skip
        return
    if len(_tracebacks) > 1000:
        _tracebacks.clear()
    _tracebacks[name] = (now, 0)
    since = f" ({quiet} more failure(s) of this task since its last traceback)" if quiet else ""
    logger.exception("after-response task %s failed (request %s)%s", name, uri, since)


# --- portability: the same API under any WSGI server ------------------------------------------------------

_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


def wsgi(app: Callable[..., Any]) -> Callable[..., Any]:
    """Middleware that makes :func:`add` work under any WSGI server; a pass-through under fcgipool.

    Tasks run when the server closes the response (PEP 3333 ``close()``), in the same thread, so that
    worker stays busy and (with most servers) the client waits; a warning says so once per process.
    """

    @functools.wraps(app)
    def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if ENVIRON_KEY in environ:
            return app(environ, start_response)
        tasks = TaskList(environ.get("REQUEST_URI") or environ.get("PATH_INFO", ""))
        environ[ENVIRON_KEY] = tasks
        token = _current.set(tasks)
        try:
            result = app(environ, start_response)
        except BaseException:
            _run_inline(tasks)
            raise
        finally:
            _current.reset(token)
        return _ClosingResult(result, tasks)

    return middleware


def _run_inline(tasks: TaskList) -> None:
    if not tasks.has_pending:
        return
    _warn_once(
        "inline",
        "after-response tasks run inside the response's close() under this WSGI server: the worker stays busy "
        "and, depending on the server, the client waits for them (run the app under fcgipool to end the "
        "response first)",
    )
    run_tasks(tasks, on_lost=_log_lost)


def _log_lost(lost: list[LostTask]) -> None:
    for task in lost:
        log.error("after-response task lost: %s (reason: %s)", task.name, task.reason)


class _ClosingResult:
    """Wraps the app's iterable so tasks added while it is iterated count, and run on ``close()``."""

    def __init__(self, result: Iterable[bytes], tasks: TaskList) -> None:
        self._result = result
        self._tasks = tasks
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        iterator = iter(self._result)
        while True:
            token = _current.set(self._tasks)
            try:
                chunk = next(iterator)
            except StopIteration:
                return
            finally:
                _current.reset(token)
            yield chunk

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        token = _current.set(self._tasks)
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            _current.reset(token)
            _run_inline(self._tasks)
