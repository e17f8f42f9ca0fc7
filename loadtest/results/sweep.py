"""`python -m loadtest sizing`'s result (loadtest/sweep.py): the calibration, each worker count x rate point with
the model's prediction, and the recommended worker count."""

from __future__ import annotations

from loadtest.results.common import Latency
from loadtest.results.serial import Record, flat, record, samples


@record
class SweepCalibration(Record):
    """What one request costs a worker, from a light step (loadtest.analysis.measure_occupancy)."""

    rate: float
    response_s: float
    client_unloaded_s: float
    answer_source: str
    background_s: float
    occupancy_s: float
    cs2: float
    background_ratio: float
    background_samples_s: list[float] = samples()
    response_samples_s: list[float] = samples()


@record
class SweepPoint(Record):
    """One open-loop step at one worker count (loadtest.analysis.measure_step, then loadtest.sweep)."""

    label: str
    workers: int
    arrival_rate: float
    throughput: float
    ca2: float
    latency: Latency = flat()
    error_rate: float | None
    measured_p99_wait_ms: float
    measured_p99_wait_ci_ms: list[float] | None
    measured_p_wait: float | None
    predicted_p99_wait_ms: float | None  # infinity (null in results.json) past capacity
    predicted_p_wait: float
    predicted_mean_queue: float | None
    predicted_error_rate: float
    utilization: float
    stable: bool
    mean_listen_queue: float | None
    max_listen_queue: float | None
    mean_answering: float | None
    mean_finishing: float | None
    mean_active: float | None
    mean_loadavg: float | None
    little_occupancy_s: float | None
    offered_rate: float | None = None
    occupancy_s: float | None = None
    seconds: float | None = None
    measured_mean_queue: float | None = None
    agrees: bool | None = None
    why: str = ""

    def summary_line(self) -> str:
        verdict = {True: "agrees", False: "DISAGREES", None: "n/a"}[self.agrees]
        return (f"  {self.workers:2d} workers {self.arrival_rate:6.1f}/s (u={self.utilization:.2f}): p99 wait "
                f"measured {self.measured_p99_wait_ms} ms, model {self.predicted_p99_wait_ms} ms; queue "
                f"{self.measured_mean_queue} vs {self.predicted_mean_queue}; errors {self.error_rate} — {verdict}")


@record
class Agreement(Record):
    judged: int
    agree: int
    where_it_agrees: list[str]
    where_it_does_not: list[str]

    @classmethod
    def of(cls, points: list[SweepPoint]) -> Agreement:
        judged = [p for p in points if p.agrees is not None]
        good = [p for p in judged if p.agrees]
        bad = [p for p in judged if not p.agrees]
        return cls(judged=len(judged), agree=len(good), where_it_agrees=[p.label for p in good],
                   where_it_does_not=[f"{p.label} (utilization {p.utilization}: predicted {p.predicted_p99_wait_ms} "
                                      f"ms, measured {p.measured_p99_wait_ms} ms): {p.why}" for p in bad])


@record
class SweepResults(Record):
    calibration: SweepCalibration
    points: list[SweepPoint]
    workers_swept: list[int]
    loads: list[float]
    rss_mb: float | None
    original_workers: int
    target_rps: float
    p99_ms: float
    memory_mb: float
    needed_workers: int | None
    memory_cap: int | None
    recommended_workers: int | None
    agreement: Agreement

    def summary_lines(self) -> list[str]:
        cal = self.calibration
        lines = [f"sizing sweep — workers {self.workers_swept}, loads {self.loads}, occupancy "
                 f"{cal.occupancy_s * 1000:.0f} ms/request (cs² {cal.cs2})"]
        lines += [p.summary_line() for p in self.points]
        a = self.agreement
        lines.append(f"model agrees within 25 % at {a.agree} of {a.judged} points")
        lines += [f"  does not agree: {why}" for why in a.where_it_does_not]
        lines.append(f"--workers {self.recommended_workers}: smallest count with predicted p99 wait <= "
                     f"{self.p99_ms:g} ms at {self.target_rps:g} req/s is {self.needed_workers}; memory "
                     f"{self.memory_mb:g} MB / {self.rss_mb} MB per worker allows {self.memory_cap}")
        return lines
