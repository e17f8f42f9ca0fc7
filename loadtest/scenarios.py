"""The locust scenarios. Each user class reads its knobs from ``environment.params`` (set by the driver) and
records one row per request in ``environment.recorder``; latency of open-loop users counts from the
*intended* send time, so a stalled pool cannot hide its queue (no coordinated omission).
"""

from __future__ import annotations

import random
import time
import uuid

import gevent
import gevent.pool
from locust import between, constant, constant_throughput, task
from locust.contrib.fasthttp import FastHttpUser
from locust.exception import StopUser

from loadtest.arrivals import poisson_schedule, timeout_task_ms


class Recorder:
    """Rows of per-request measurements, shared by every user of one run."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.sent = 0
        self.task_errors = 0  # a user locustfile's tasks that raised (their requests are still rows)

    def add(self, row: dict) -> None:
        self.rows.append(row)

    @property
    def in_flight(self) -> int:
        return self.sent - len(self.rows)


def _request(user: FastHttpUser, method: str, path: str, name: str, row: dict, **kwargs) -> dict:
    """Send one request through locust's client (so locust's own stats see it) and fill ``row``."""
    rec: Recorder = user.environment.recorder
    rec.sent += 1
    row.setdefault("intended", time.time())
    row["sent"] = time.time()
    row.update(status=0, error="")
    try:
        with user.client.request(method, path, name=name, catch_response=True, **kwargs) as resp:
            row["status"] = resp.status_code or 0
            row["lock_wait_ms"] = _float(resp.headers.get("X-Lock-Wait-Ms")) if resp.headers else None
            if resp.status_code and resp.status_code < 400:
                resp.success()
            else:
                row["error"] = str(resp.error or f"HTTP {resp.status_code}")[:200]
                resp.failure(row["error"])
    except Exception as exc:  # a load generator must keep going and count the error
        row["error"] = f"{type(exc).__name__}: {exc}"[:200]
    row["done"] = time.time()
    row["latency_ms"] = (row["done"] - row["intended"]) * 1000
    row["service_ms"] = (row["done"] - row["sent"]) * 1000
    rec.add(row)
    return row


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class OpenLoopUser(FastHttpUser):
    """Open-loop driver: one instance sends requests at Poisson arrival times for ``params['duration']`` s at
    ``params['rate']`` req/s, each in its own greenlet, never waiting for earlier answers. A request that
    cannot get a connection or an answer in time is late, and its lateness is part of its latency."""

    abstract = True
    concurrency = 400  # connections the open-loop client may hold; beyond that, arrivals wait (and it shows)
    network_timeout = 60.0
    connection_timeout = 10.0
    wait_time = constant(0)

    def request_for(self, rng: random.Random) -> tuple[str, str, str, dict]:
        """(method, path, name, extra row fields) of the next request."""
        raise NotImplementedError

    def arrival(self, rng: random.Random, row: dict) -> tuple:
        """(function, args) that sends the next arrival's request(s) and records ``row`` for it."""
        method, path, name, extra = self.request_for(rng)
        row.update(extra)
        return _request, (self, method, path, name, row)

    @task
    def dispatch(self) -> None:
        p = self.environment.params
        # reproducible per step, but independent between steps (not one schedule rescaled)
        rng = random.Random(f"{p.get('seed', 1)}:{p.get('step', '')}")
        times = poisson_schedule(p["rate"], p["duration"], rng)
        group = gevent.pool.Group()
        t0_wall, t0 = time.time(), time.monotonic()
        for t in times:
            row = {"scenario": p["scenario"], "step": p.get("step", ""), "rate": p["rate"], "intended": t0_wall + t}
            fn, args = self.arrival(rng, row)
            delay = t0 + t - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            group.spawn(fn, *args)
        group.join(timeout=p.get("drain", 60.0))
        group.kill(block=False)
        p["finished"].set()
        raise StopUser()


class BaselineUser(OpenLoopUser):
    """baseline — `GET /` only, open loop: what the pool answers without any after-response work. Its latency
    is the floor every other scenario is compared with."""

    def request_for(self, rng):
        return "GET", "/", "/", {}


def work_request(params: dict, rng: random.Random) -> tuple[str, str, str, dict]:
    bg = round(params["background_ms"] * rng.uniform(0.5, 1.5))
    # spill=0 unless asked: exhaustion measures the pool running every task itself (the model's assumption)
    path = f"/work?respond_ms={params['respond_ms']}&background_ms={bg}&tasks=1&spill={params.get('spill', 0)}"
    return "GET", path, "/work", {"bg_ms": bg}


class ExhaustionUser(OpenLoopUser):
    """exhaustion — `GET /work` whose after-response work holds the worker: capacity falls to
    workers / (response + background time). Run at rates below and above that capacity, it shows the listen
    queue, the wait and nginx's 502/504 growing once arrivals pass it. Background times are uniform in
    [0.5, 1.5] x the mean, so the model's variability correction has something to correct."""

    def request_for(self, rng):
        return work_request(self.environment.params, rng)


class ExhaustionClosedUser(FastHttpUser):
    """exhaustion, closed loop — the same requests sent the way a default locust run sends them: a fixed
    number of users, each waiting for its answer before pacing the next (`constant_throughput`). When the
    pool slows down the users slow down with it, so this view under-reports the wait (coordinated omission);
    the report shows it beside the open-loop numbers."""

    def wait_time(self):
        p = self.environment.params
        return constant_throughput(p["rate"] / p["users"])(self)

    def on_start(self) -> None:
        self.rng = random.Random(id(self))

    @task
    def work(self) -> None:
        p = self.environment.params
        method, path, name, extra = work_request(p, self.rng)
        _request(self, method, path, name + " (closed)", {"scenario": "exhaustion-closed", "step": p["step"],
                                                          "rate": p["rate"], **extra})


class TimeoutUser(OpenLoopUser):
    """timeout — `GET /work` whose after-response time sometimes exceeds the pool's background budget
    (`--background-timeout`): lognormal around a median below the budget, never within ±15 % of it, at least
    one request in four over it (loadtest.arrivals.timeout_task_ms). The pool cuts the slow ones; the run
    compares the tasks lost by the ledger, by the pool's counters and by what was sent."""

    sent = over = 0

    def request_for(self, rng):
        p = self.environment.params
        budget_ms = p["budget_s"] * 1000
        bg = timeout_task_ms(rng, budget_ms, self.sent, self.over, p.get("median_share", 0.6),
                             p.get("max_bg_ms", 60_000))
        self.sent += 1
        self.over += bg > budget_ms
        # spill=0: the pool's own budget is under test; a task the saturated pool sent to the queue is not cut
        path = f"/work?respond_ms={p['respond_ms']}&background_ms={bg}&tasks=1&spill=0"
        return "GET", path, "/work(timeout)", {"bg_ms": bg, "over_budget": bg > budget_ms}


class LockUser(FastHttpUser):
    """lock — a user's follow-up request arriving while the after-response work of their previous request
    still holds the session lock (like PHP file sessions). Each iteration sends `POST /cart/<user>` and,
    as soon as it is answered, a second one for the same user; the second one's `X-Lock-Wait-Ms` is the
    cost of `release=late` against `release=early` (the `session_write_close()` fix). Closed loop: a user
    waits for their own answers, as a browser does."""

    wait_time = between(0.05, 0.15)

    def on_start(self) -> None:
        self.user_id = f"lt{uuid.uuid4().hex[:10]}"
        self.turn = 0

    @task
    def add_twice(self) -> None:
        p = self.environment.params
        release = "late" if self.turn % 2 else "early"
        self.turn += 1
        path = f"/cart/{self.user_id}?hold_ms={p['hold_ms']}&release={release}"
        for role in ("first", "follow"):
            row = {"scenario": "lock", "step": release, "rate": 0, "role": role, "release": release}
            _request(self, "POST", path, f"/cart ({release})", row)
        # let the follow-up's own hold pass, so the next pair starts on a free lock
        gevent.sleep(p["hold_ms"] / 1000 + 0.05)


class SignupUser(FastHttpUser):
    """signup — a realistic mix: page views (`GET /`), signups (`POST /signup`, 202 at once, a welcome mail
    sent over SMTP after the response) and some `/work`. Every accepted signup's mail must arrive at the
    mail sink: the run counts the unique addresses it used there."""

    wait_time = between(0.1, 0.5)

    def _row(self, **extra) -> dict:
        return {"scenario": "signup", "step": "mix", "rate": 0, **extra}

    @task(4)
    def page(self) -> None:
        _request(self, "GET", "/", "/", self._row())

    @task(2)
    def signup(self) -> None:
        email = f"lt-{self.environment.params['run_id']}-{uuid.uuid4().hex[:12]}@example.com"
        _request(self, "POST", "/signup", "/signup", self._row(email=email), json={"email": email})

    @task(1)
    def work(self) -> None:
        _request(self, "GET", "/work?respond_ms=5&background_ms=50&tasks=1", "/work", self._row(bg_ms=50))


USERS = {
    "baseline": BaselineUser,
    "exhaustion": ExhaustionUser,
    "exhaustion-closed": ExhaustionClosedUser,
    "timeout": TimeoutUser,
    "lock": LockUser,
    "signup": SignupUser,
    "spill": ExhaustionUser,  # the same requests with spill=0, then spill=1 (loadtest/spillrun.py)
}
