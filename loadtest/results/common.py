"""Result parts every scenario shares: the latency summary of a set of requests, a check, nginx's counts, the
status page's own latency."""

from __future__ import annotations

import dataclasses

from loadtest.results.serial import Record, optional, record


@record
class Latency(Record):
    """Open-loop latency (from the intended send time) and the answers' status codes."""

    requests: int
    errors: int
    status_5xx: int
    status_502: int
    status_504: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    send_p50_ms: float | None  # from the actual send: what a closed-loop tool would report
    send_p99_ms: float | None


@record
class Check(Record):
    """PASS (ok True) / FAIL (False) / n/a (None); ``hard``: correctness, `run` exits 1 when one fails."""

    name: str
    ok: bool | None
    kind: str | None = optional()
    hard: bool | None = optional()
    detail: str
    judged: int | None = optional()

    @property
    def mark(self) -> str:
        return {True: "PASS", False: "FAIL", None: "n/a "}[self.ok]


@record
class NginxSummary(Record):
    """Counts of the answers nginx logged (loadtest.accesslog.summarize)."""

    requests: int
    status_502: int
    status_504: int
    status_5xx: int
    status_2xx: int
    upstream_response_p99_s: float | None


@record
class StatusPage(Record):
    """How fast the pool's status page answered the sampler. ``samples`` (the poll count) has never been in
    results.json: the writer drops every key named "samples"."""

    samples: int | None = dataclasses.field(default=None, metadata={"samples": True})
    p50: float | None
    max: float | None
    errors: int

    def line(self) -> str:
        return (f"  status      {self.samples} polls of /pool-status?json&full: p50 {self.p50} ms, max {self.max} ms, "
                f"{self.errors} failed (served outside the worker pool: it answers when the pool is full)")


@record
class LocustView(Record):
    """Locust's own view of a run (latency from the actual send, as a closed-loop tool reports it)."""

    requests: int
    failures: int
    p50_ms: float | None
    p99_ms: float | None
    avg_ms: float | None
    rps: float
    start: float  # wall clock: when the run's first request could be sent
    duration: float
    task_errors: int  # a LOCUSTFILE's tasks that raised (their requests still count)
