"""Runs one locust user class headless through locust's library API, with a progress line."""

from __future__ import annotations

import sys
import time

import gevent
import gevent.event
from locust.env import Environment
from locust.event import Events

from loadtest.model import quantile
from loadtest.sampler import Sampler
from loadtest.scenarios import OpenLoopUser, Recorder


def progress_line(label: str, elapsed: float, total: float, rec: Recorder, sampler: Sampler | None) -> str:
    recent = [r["latency_ms"] for r in rec.rows[-200:]]
    errors = sum(1 for r in rec.rows if r["error"])
    s = sampler.latest if sampler else {}
    pool = (f" | pool answering {s.get('answering', '?')} finishing {s.get('finishing', '?')} "
            f"idle {s.get('idle', '?')} queue {s.get('listen_queue', '?')}") if s else ""
    p99 = f"{quantile(recent, 0.99):7.0f}" if recent else "      -"
    return (f"\r[{label:<22}] {elapsed:5.1f}/{total:4.0f}s sent {rec.sent:5d} done {len(rec.rows):5d} "
            f"in-flight {rec.in_flight:4d} err {errors:4d} p99 {p99} ms{pool}   ")


def run_user(
    user_cls: type,
    host: str,
    params: dict,
    recorder: Recorder,
    *,
    users: int = 1,
    duration: float,
    label: str,
    sampler: Sampler | None = None,
    quiet: bool = False,
) -> dict:
    """Run ``user_cls`` for ``duration`` s (open-loop users: until their schedule is sent and answered).

    Returns locust's own view of the run (latency from the actual send, as a closed-loop tool reports it).
    """
    params = dict(params)
    params["finished"] = gevent.event.Event()
    env = Environment(user_classes=[user_cls], host=host, events=Events())
    env.params = params  # type: ignore[attr-defined]
    env.recorder = recorder  # type: ignore[attr-defined]
    if hasattr(user_cls, "request_listener"):  # a user locustfile's class: its requests come as locust events
        env.events.request.add_listener(user_cls.request_listener(env))
    runner = env.create_local_runner()
    open_loop = issubclass(user_cls, OpenLoopUser)
    total = duration + (params.get("drain", 60.0) if open_loop else 0)
    started = time.monotonic()
    runner.start(users if not open_loop else 1, spawn_rate=max(users, 1) * 10)
    deadline = started + (total if open_loop else duration)
    tick = 0
    while time.monotonic() < deadline:
        if open_loop and params["finished"].is_set():
            break
        tick += 1
        if not quiet and (sys.stderr.isatty() or tick % 5 == 0):
            end = "" if sys.stderr.isatty() else "\n"
            sys.stderr.write(progress_line(label, time.monotonic() - started, duration, recorder, sampler) + end)
            sys.stderr.flush()
        gevent.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    runner.quit()
    if not quiet:
        sys.stderr.write(progress_line(label, time.monotonic() - started, duration, recorder, sampler) + "\n")
    st = env.stats.total
    return {
        "requests": st.num_requests,
        "failures": st.num_failures,
        "p50_ms": st.get_response_time_percentile(0.5) if st.num_requests else None,
        "p99_ms": st.get_response_time_percentile(0.99) if st.num_requests else None,
        "avg_ms": st.avg_response_time if st.num_requests else None,
        "rps": st.num_requests / max(1e-9, time.monotonic() - started),
    }
