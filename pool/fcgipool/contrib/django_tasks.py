"""Django's task framework on fcgipool: ``my_task.enqueue(...)`` in a view runs after the response (docs/django.md).

settings.py::

    TASKS = {"default": {"BACKEND": "fcgipool.contrib.django_tasks.FcgipoolBackend"}}

Each enqueued task becomes one ``fcgipool.background.add`` of the request, so it gets what every after-response
task gets: the request's ``--background-timeout`` budget, ``on_task_lost`` reports by the task's module path, and
spill to Redis + RQ (``--spill-to``). The class works with Django's own ``django.tasks`` (Django >= 6.0) and with
the ``django-tasks`` backport (Django 4.2 - 5.2), whichever is importable, the built-in one first. Importing this
module imports Django; ``fcgipool`` itself never does.

Outside a request (a management command, the shell, a cron script, a test without the pool) ``enqueue`` raises
:class:`fcgipool.background.NoRequestError`, like ``background.add``; ``OPTIONS = {"OUTSIDE_REQUEST":
"immediate"}`` runs the task at once in the caller instead, as Django's ImmediateBackend would.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
import traceback
import weakref
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .. import background

__all__ = ["FcgipoolBackend", "run_task"]

log = logging.getLogger("fcgipool.django_tasks")
OUTSIDE_REQUEST = ("error", "immediate")


@dataclass(frozen=True)
class _Framework:
    """One implementation of the task framework: django.tasks or the django_tasks backport. Only their common
    ground is used: ``base`` (Task, TaskResult, TaskResultStatus, TaskContext, TaskError) and ``signals``."""

    package: str
    base: ModuleType
    signals: ModuleType

    def normalize_json(self, value: Any) -> Any:
        try:  # Django >= 6.0
            from django.utils.json import normalize_json
        except ImportError:
            normalize_json = importlib.import_module(f"{self.package}.utils").normalize_json
        return normalize_json(value)


def _frameworks() -> list[_Framework]:
    found = []
    for package in ("django.tasks", "django_tasks"):
        try:
            found.append(_Framework(package, *(importlib.import_module(f"{package}.{m}") for m in ("base", "signals"))))
        except ImportError:
            continue
    if not found:
        raise ImportError(
            "fcgipool.contrib.django_tasks needs Django's task framework: Django >= 6.0 (django.tasks), or the "
            "django-tasks backport for Django 4.2 - 5.2 (pip install 'fcgipool[django]')"
        )
    return found


# Both may be importable (Django 6 with the backport still installed): each task is run with its own.
_FRAMEWORKS = _frameworks()
BaseTaskBackend: Any = importlib.import_module(f"{_FRAMEWORKS[0].package}.backends.base").BaseTaskBackend


def _framework_of(task: Any) -> _Framework:
    for framework in _FRAMEWORKS:
        if isinstance(task, framework.base.Task):
            return framework
    raise TypeError(f"{task!r} is not a task of {' or '.join(f.package for f in _FRAMEWORKS)} (decorate it with @task)")


# The TaskResult each pending task's enqueue() returned, per request: run_task updates that very object (status,
# times, errors) when it runs in the pool. Keyed weakly by the request's task list, so tasks that never ran
# (lost) leave nothing behind.
_pending: weakref.WeakKeyDictionary[background.TaskList, dict[str, Any]] = weakref.WeakKeyDictionary()


class FcgipoolBackend(BaseTaskBackend):
    """Runs each enqueued task after the response, in the worker that served the request (or in the spill queue).

    OPTIONS: ``SPILL`` (default True: the pool may hand the task to ``--spill-to``; False keeps it in the
    worker), ``OUTSIDE_REQUEST`` ("error", the default, or "immediate").
    """

    supports_defer = False  # no run_after: a task runs right after its response or not at all
    supports_async_task = True  # Task.call runs a coroutine to its end with async_to_sync
    supports_get_result = False  # results live in the worker's memory until the request's tasks are done
    supports_priority = False  # tasks run in the order they were enqueued

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        options = params.get("OPTIONS") or {}
        self.spill = bool(options.get("SPILL", True))
        self.outside_request = options.get("OUTSIDE_REQUEST", "error")
        if self.outside_request not in OUTSIDE_REQUEST:
            from django.core.exceptions import ImproperlyConfigured

            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS']['OUTSIDE_REQUEST'] must be one of {OUTSIDE_REQUEST}, "
                f"got {self.outside_request!r}"
            )

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        self.validate_task(task)
        result = _new_result(task, self.alias, args, kwargs)
        try:
            tasks = background.current()
        except background.NoRequestError:
            if self.outside_request == "immediate":
                _enqueued(result)
                _execute(result, reraise=False)
                return result
            raise background.NoRequestError(
                f"{task.module_path}.enqueue(): no request is being handled, so there is no 'after the response' "
                f"to run it in. The fcgipool task backend ({self.alias!r}) works while a request runs under "
                "fcgipool (or under another WSGI server with the app wrapped in fcgipool.background.wsgi); for "
                "management commands and tests set TASKS[...]['OPTIONS'] = {'OUTSIDE_REQUEST': 'immediate'} or "
                "use Django's ImmediateBackend there"
            ) from None
        _pending.setdefault(tasks, {})[result.id] = result
        # plain data only (the import path, JSON-normalized arguments): what the spill queue can pickle and run
        tasks.add(run_task, self.alias, task.module_path, result.id, result.args, result.kwargs,
                  name=task.module_path, spill=self.spill)  # fmt: skip
        _enqueued(result)
        return result


def run_task(alias: str, module_path: str, result_id: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    """Run one enqueued task: in the pool after the response, or in an RQ worker when the task spilled.

    The task's own exception is recorded in its result and raised again, so the pool (or RQ) counts it failed;
    so is the pool's BackgroundTimeout, after the result says FAILED: the pool then reports the task lost.
    """
    result = None
    with contextlib.suppress(background.NoRequestError):  # raised in an RQ worker: a fresh process
        result = _pending.get(background.current(), {}).pop(result_id, None)
    if result is None:
        _setup_django()
        from django.utils import timezone
        from django.utils.module_loading import import_string

        task = import_string(module_path)
        _framework_of(task)  # a clear TypeError for anything else
        if task.backend != alias:
            task = task.using(backend=alias)
        result = _new_result(task, alias, args, kwargs)
        _set(result, enqueued_at=timezone.now())  # task_enqueued was sent by the pool's process
    _execute(result, reraise=True)


def _setup_django() -> None:
    from django.apps import apps

    if apps.ready:
        return
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        raise RuntimeError(
            "a Django task spilled to the queue runs in the RQ worker's process: start `rq worker` with "
            "DJANGO_SETTINGS_MODULE set and your project on PYTHONPATH (docs/django.md)"
        )
    import django

    django.setup()


def _new_result(task: Any, alias: str, args: Any, kwargs: Any) -> Any:
    from django.utils.crypto import get_random_string

    fw = _framework_of(task)
    return fw.base.TaskResult(
        task=task, id=get_random_string(32), status=fw.base.TaskResultStatus.READY, enqueued_at=None,
        started_at=None, finished_at=None, last_attempted_at=None, args=args, kwargs=kwargs, backend=alias,
        errors=[], worker_ids=[],
    )  # fmt: skip


def _set(result: Any, **values: Any) -> None:
    for name, value in values.items():
        object.__setattr__(result, name, value)  # TaskResult is frozen; backends update it this way


def _enqueued(result: Any) -> None:
    from django.utils import timezone

    _set(result, enqueued_at=timezone.now())
    _framework_of(result.task).signals.task_enqueued.send(type(result.task.get_backend()), task_result=result)


def _execute(result: Any, *, reraise: bool) -> None:
    from django.utils import timezone

    task = result.task
    fw = _framework_of(task)
    status = fw.base.TaskResultStatus
    sender = type(task.get_backend())
    now = timezone.now()
    _set(result, status=status.RUNNING, started_at=now, last_attempted_at=now)
    result.worker_ids.append(f"{socket.gethostname()}:{os.getpid()}")
    fw.signals.task_started.send(sender, task_result=result)
    try:
        if task.takes_context:
            value = task.call(fw.base.TaskContext(task_result=result), *result.args, **result.kwargs)
        else:
            value = task.call(*result.args, **result.kwargs)
    except BaseException as exc:
        if not reraise and not isinstance(exc, Exception):
            raise  # KeyboardInterrupt, SystemExit: let them go
        error = fw.base.TaskError(exception_class_path=f"{type(exc).__module__}.{type(exc).__qualname__}",
                                  traceback="".join(traceback.format_exception(exc)))  # fmt: skip
        result.errors.append(error)
        _set(result, status=status.FAILED, finished_at=timezone.now())
        fw.signals.task_finished.send(sender, task_result=result)
        if reraise:
            raise
        log.exception("task %s failed (run at once: no request, OUTSIDE_REQUEST='immediate')", task.module_path)
        return
    _set(result, _return_value=fw.normalize_json(value), status=status.SUCCESSFUL, finished_at=timezone.now())
    fw.signals.task_finished.send(sender, task_result=result)
