"""A user's own locustfile, run in the open-loop driver (`make loadtest TARGET=... LOCUSTFILE=...`).

The contract (docs/loadtest.md, "Bring your own app"; an example in loadtest/example_locustfile.py):

* every non-abstract `HttpUser` / `FastHttpUser` subclass with tasks is a scenario, named by its class name
  (`SCENARIOS=` picks some); tasks are methods decorated with `@task` (weights allowed), not TaskSets;
* one task run is one *arrival*: the driver starts tasks at Poisson times, each in its own greenlet, on one
  instance of the class (so `on_start` runs once, and tasks must not rely on running one at a time);
  `wait_time` is ignored — the driver sets the rate;
* every request the task sends through `self.client` is recorded through locust's request event; the
  first request of a task counts its latency from the task's intended start time (open loop), later ones
  from their own send;
* optional class attributes: `fcgipool_loads` (offered load of the stable steps as fractions of the measured
  capacity, default (0.5, 0.65, 0.8)), `fcgipool_overload` (the step past capacity, default 1.3; None skips
  it and the capacity check), `fcgipool_normal` (default True; False keeps a deliberately abnormal class —
  say, one that overruns the background budget on purpose — out of the recommendations).
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import time
from pathlib import Path

import gevent
import requests
import requests.adapters
from locust import HttpUser, User
from locust.contrib.fasthttp import FastHttpUser

from loadtest.scenarios import OpenLoopUser
from loadtest.stepped import OVERLOAD_LOAD, STABLE_LOADS, Plan


class LocustfileError(ValueError):
    """The locustfile does not follow the contract; the message says what to change."""


def load(path: str | Path) -> dict[str, type]:
    """The user classes a locustfile defines, by name, in file order."""
    path = Path(path)
    if not path.is_file():
        raise LocustfileError(f"LOCUSTFILE {path} not found")
    spec = importlib.util.spec_from_file_location(f"user_locustfile_{abs(hash(str(path.resolve())))}", path)
    if spec is None or spec.loader is None:
        raise LocustfileError(f"LOCUSTFILE {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code: report it as theirs, with its type
        raise LocustfileError(f"LOCUSTFILE {path} failed to import: {type(exc).__name__}: {exc}") from exc
    found = {}
    for name, obj in vars(module).items():
        if (inspect.isclass(obj) and issubclass(obj, User) and obj.__module__ == module.__name__
                and not obj.__dict__.get("abstract", False)):
            found[name] = obj
    if not found:
        raise LocustfileError(f"LOCUSTFILE {path} defines no user class (a subclass of HttpUser or FastHttpUser "
                              "with @task methods)")
    return found


def select(classes: dict[str, type], names: list[str] | None) -> dict[str, type]:
    if not names:
        return classes
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise LocustfileError(f"unknown scenario(s) {', '.join(unknown)}; the locustfile's user classes are "
                              f"{', '.join(classes)}")
    return {n: classes[n] for n in names}


def tasks_of(cls: type) -> list:
    """The class's task functions, each repeated by its weight (locust's own expansion)."""
    if not issubclass(cls, HttpUser | FastHttpUser):
        raise LocustfileError(f"{cls.__name__}: the driver runs HttpUser and FastHttpUser classes (it needs "
                              "self.client)")
    tasks = list(cls.tasks or [])
    if not tasks:
        raise LocustfileError(f"{cls.__name__} has no @task methods")
    nested = [t for t in tasks if inspect.isclass(t)]
    if nested:
        raise LocustfileError(f"{cls.__name__}: TaskSets ({', '.join(t.__name__ for t in nested)}) are not "
                              "supported; put the @task methods on the user class itself")
    return tasks


def plan_for(cls: type) -> Plan:
    loads = tuple(float(x) for x in getattr(cls, "fcgipool_loads", STABLE_LOADS))
    if not loads or any(not 0 < x < 1 for x in loads):
        raise LocustfileError(f"{cls.__name__}.fcgipool_loads must be fractions of capacity in (0, 1), got {loads}")
    overload = getattr(cls, "fcgipool_overload", OVERLOAD_LOAD)
    if overload is not None and float(overload) <= 1:
        raise LocustfileError(f"{cls.__name__}.fcgipool_overload must be > 1 (or None), got {overload}")
    return Plan(loads, float(overload) if overload is not None else None)


def is_normal(cls: type) -> bool:
    return bool(getattr(cls, "fcgipool_normal", True))


def open_loop(cls: type) -> type:
    """An OpenLoopUser that runs ``cls``'s tasks as arrivals on one instance of ``cls``."""
    tasks = tasks_of(cls)
    attrs = {"abstract": False, "__module__": cls.__module__}
    if issubclass(cls, FastHttpUser):  # open loop needs more connections than a closed-loop user's 10
        attrs["concurrency"] = OpenLoopUser.concurrency
    inner = type(cls.__name__, (cls,), attrs)  # ours to change: its host is set to TARGET at start
    return type(f"OpenLoop{cls.__name__}", (ForeignOpenLoop,), {"inner_class": inner, "inner_tasks": tasks})


class ForeignOpenLoop(OpenLoopUser):
    """Runs another user class's tasks as open-loop arrivals and records their requests from locust's events."""

    abstract = True
    inner_class: type
    inner_tasks: list

    def on_start(self) -> None:
        if self.environment.host:  # TARGET (or the stack's URL) wins over a host written in the locustfile
            self.inner_class.host = self.environment.host
        self.inner = self.inner_class(self.environment)
        if isinstance(self.inner.client, requests.Session):  # HttpUser: keep as many connections as are in flight
            self.inner.client.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=self.concurrency))
            self.inner.client.mount("https://", requests.adapters.HTTPAdapter(pool_maxsize=self.concurrency))
        self.first_of: dict = {}  # greenlet -> its task's intended start: the first request's latency counts from it
        self.environment.task_errors = []
        self.environment.open_loop_user = self
        self.inner.on_start()

    def arrival(self, rng, row: dict):
        task = rng.choice(self.inner_tasks)
        return self._run_task, (task, row["intended"])

    def _run_task(self, task, intended: float) -> None:
        me = gevent.getcurrent()
        self.first_of[me] = intended
        try:
            task(self.inner)
        except Exception as exc:  # the user's task: count and show it, keep the schedule going
            errors = self.environment.task_errors
            if len(errors) < 5:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
            self.environment.recorder.task_errors += 1
        finally:
            self.first_of.pop(me, None)

    @classmethod
    def request_listener(cls, env):
        """A handler for locust's request event that adds one recorder row per request."""

        def on_request(request_type, name, response_time, response_length, exception=None, context=None,
                       start_time=None, url=None, response=None, **_kw):
            p = env.params
            now = time.time()
            sent = start_time or now - (response_time or 0) / 1000
            user = getattr(env, "open_loop_user", None)
            intended = user.first_of.pop(gevent.getcurrent(), sent) if user else sent
            status = getattr(response, "status_code", 0) or 0
            row = {"scenario": p["scenario"], "step": p.get("step", ""), "rate": p["rate"], "intended": min(
                intended, sent), "sent": sent, "done": now, "status": status, "name": name, "method": request_type,
                "error": "" if exception is None else f"{type(exception).__name__}: {exception}"[:200]}
            if not row["error"] and status >= 400:
                row["error"] = f"HTTP {status}"
            row["latency_ms"] = (now - row["intended"]) * 1000
            row["service_ms"] = (now - sent) * 1000
            env.recorder.sent += 1
            env.recorder.add(row)

        return on_request
