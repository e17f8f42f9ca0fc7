"""The `spill` scenario's result (loadtest/spillrun.py): each step with spill off and on, the verdict at the top
load, the advice on when to spill and how many queue workers."""

from __future__ import annotations

from loadtest.results.common import Latency
from loadtest.results.serial import Record, empty_none, flat, optional, record


@record
class TaskCounts(Record):
    """Where a step's after-response tasks went (the sample app's ledger, kind `work`)."""

    started: int
    finished: int
    failed: int
    lost: int
    spilled: int
    ran_in_queue: int

    @property
    def in_pool(self) -> int:
        return self.started - self.ran_in_queue


@record
class SpillStep(Record):
    spill: str  # off | on
    load: float  # x the pool-only capacity
    offered_rate: float
    label: str
    seconds: float | None = optional()  # how long it ran (the judged steps run longer than step_s)
    latency: Latency = flat()
    throughput: float
    tasks: TaskCounts
    queue_depth_max: int
    drain_s: float | None  # None: the queue did not drain in time
    depth_at_end: int | None


@record
class SpillFacts(Record):
    unloaded_p99_ms: float
    on_p99_ms: float | None
    off_p99_ms: float | None
    on_p99_ratio: float | None
    off_p99_ratio: float | None
    on_502_504: int
    on_lost: int
    spilled_not_run: int
    drained: bool
    drain_s: float | None
    spilled_at_top: int
    unloaded_requests: int | None = optional()
    on_requests: int | None = optional()
    p99_not_judged: str | None = optional()  # why the p99s were not compared (too few requests); None: they were

    @property
    def judged(self) -> bool:
        return self.p99_not_judged is None

    def p99_text(self) -> str:
        """The p99 comparison, with what each p99 rests on."""
        def n(count: int | None) -> str:
            return "" if count is None else f" ({count} requests)"

        text = (f"p99 {self.on_p99_ms or 0:.0f} ms{n(self.on_requests)} = {self.on_p99_ratio}x the unloaded "
                f"{self.unloaded_p99_ms:.0f} ms{n(self.unloaded_requests)} (spill off: {self.off_p99_ratio}x)")
        return text if self.judged else f"{text}; not judged: {self.p99_not_judged}"


@record
class SpillVerdict(Record):
    """At the top load with spill on: p99 within 2x unloaded, 0 502/504, 0 lost, drained (ok None: steps missing)."""

    ok: bool | None
    why: str | None = optional()
    facts: SpillFacts | None = flat(optional=True)


@record
class SpillAdvice(Record):
    turn_on: bool
    why: str
    spill_rate_per_s: float
    task_s: float
    queue_workers: int
    queue_workers_why: str


@record
class Spill(Record):
    capacity: float
    loads: list[float]
    step_s: float
    steps: list[SpillStep]
    background_ms: float
    verdict: SpillVerdict | None = None
    advice: SpillAdvice | None = empty_none()

    SUMMARY_ORDER = 2

    def step(self, half: str, load: float) -> SpillStep | None:
        return next((s for s in self.steps if s.spill == half and s.load == load), None)

    def summary_lines(self, name: str) -> list[str]:
        return ["  spill       " + line for line in self.table_lines()]

    def table_lines(self) -> list[str]:
        lines = ["| spill | load | offered req/s | p50 ms | p99 ms | 502/504 | in pool | spilled | ran in queue | lost "
                 "| queue depth max | drained in s |",
                 "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for s in self.steps:
            t, lat = s.tasks, s.latency
            lines.append(f"| {s.spill} | {s.load:g}x | {s.offered_rate:g} | {lat.p50_ms or 0:.0f} | "
                         f"{lat.p99_ms or 0:.0f} | {lat.status_502 + lat.status_504} | {t.in_pool} | {t.spilled} | "
                         f"{t.ran_in_queue} | {t.lost} | {s.queue_depth_max} | "
                         f"{'-' if s.drain_s is None else s.drain_s} |")
        v, a = self.verdict, self.advice
        if v and v.ok is not None and (f := v.facts):
            lines += ["", f"At {max(self.loads):g}x capacity with spill on: {f.p99_text()}, "
                          f"{f.on_502_504} 502/504, {f.on_lost} lost, queue drained in {f.drain_s} s — "
                          f"{'PASS' if v.ok else 'FAIL'}"]
        if a:
            lines += [f"Advice: {'turn spill on (--spill-when saturated)' if a.turn_on else 'spill is not needed'}"
                      f" — {a.why}; {a.queue_workers_why}"]
        return lines
