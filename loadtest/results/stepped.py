"""A stepped scenario's result (the sample's `exhaustion`, every class of a LOCUSTFILE): its steps, the model
check's points, the capacity check, and how the report shows them."""

from __future__ import annotations

from loadtest.results.common import Latency, LocustView
from loadtest.results.serial import Record, flat, optional, present_if, record, samples


@record
class StepJudgement(Record):
    """What a stable step the model check judged adds: where its waits came from, its p99 wait and the model's."""

    wait_source: str
    prediction_method: str
    prediction_notes: str
    measured_p99_wait_ms: float | None
    predicted_p99_wait_ms: float | None


@record
class Step(Record):
    label: str
    phase: str  # calibration | stable | overload
    offered_rate: float
    duration_s: float
    workers: int
    arrival_rate: float
    throughput: float
    ca2: float
    latency: Latency = flat()
    error_rate: float | None
    occupancy_s: float | None
    service_n: int
    utilization: float | None
    stable: bool
    relaxation_s: float | None
    mean_listen_queue: float | None
    max_listen_queue: float | None
    mean_answering: float | None
    mean_finishing: float | None
    mean_active: float | None
    mean_loadavg: float | None
    cores: int
    judged: StepJudgement | None = flat(optional=True)

    def summary_line(self) -> str:
        j, lat = self.judged, self.latency
        pred = f", model {j.predicted_p99_wait_ms} ms" if j and j.predicted_p99_wait_ms is not None else ""
        meas = f", wait p99 {j.measured_p99_wait_ms} ms" if j and j.measured_p99_wait_ms is not None else ""
        return (f"              {self.phase:<11} {self.arrival_rate:6.1f}/s (u {self.utilization}, "
                f"{lat.requests} req): p99 {lat.p99_ms} ms, served {self.throughput}/s{meas}{pred}, "
                f"502/504 {lat.status_502}/{lat.status_504}, queue max {self.max_listen_queue}")


@record
class ModelPoint(Record):
    """One quantity at one stable step: the prediction's [value, low, high] and, when judged, the measurement's."""

    quantity: str  # p_wait | mean_wait_s | p90_wait_s | p99_wait_s
    name: str
    label: str
    rate: float
    utilization: float
    requests: int
    predicted: list[float | None]
    measured: list[float | None] | None = optional()
    agrees: bool | None
    error: float | None = present_if("measured")
    why: str
    measured_unjudged: list[float | None] | None = optional()


@record
class WaitCalibration(Record):
    """The calibration step's zero for waits (loadtest.modelcheck.Calibration, in ms)."""

    source: str
    median_ms: float
    resolution_ms: float
    tau_ms: float
    false_wait: float


@record
class ClosedLoop(Record):
    """The top step once more, closed loop, as a default locust run measures it."""

    rate: float
    users: int
    duration: float
    latency: Latency = flat()
    throughput: float


@record
class Capacity(Record):
    """Throughput past capacity against workers / occupancy (loadtest.steps.capacity_check)."""

    measured_capacity: float | None
    capacity_error: float | None
    capacity_ok: bool | None
    capacity_tolerance: float


@record
class Stepped(Record):
    workers: int
    occupancy_s: float | None
    occupancy_se_s: float | None
    occupancy_n: int
    cs2: float
    service_source: str
    response_s: float | None
    background_s: float | None
    after_samples_s: list[float] = samples()
    variability_measured: bool
    expected_capacity: float | None
    steps: list[Step]
    model_points: list[ModelPoint]
    calibration: dict[str, WaitCalibration]
    service_samples_s: list[float] = samples()
    answer_samples_s: list[float] = samples()
    capacity: Capacity = flat()
    # what loadtest.stepped.run_stepped adds around the analysis
    pool_delta: dict | None = None
    estimated_capacity_before: float | None = None
    background_ratio: float | None = None
    request_log_lines: int | None = None
    locust: list[LocustView] | None = None
    answer_latency_samples_s: list[float] = samples()
    note: str | None = optional()
    closed_loop: ClosedLoop | None = optional()  # exhaustion
    normal: bool | None = optional()  # a LOCUSTFILE's class: fcgipool_normal
    task_errors: int | None = optional()

    SUMMARY_ORDER = 1

    def summary_lines(self, name: str) -> list[str]:
        normal = "" if self.normal is not False else " (not normal traffic: left out of the recommendations)"
        occ = f"{self.occupancy_s * 1000:.0f} ms" if self.occupancy_s else "?"
        lines = [f"  {name:<11} occupancy {occ}/request ({self.service_source}) -> capacity "
                 f"{self.expected_capacity:.1f} req/s expected, {self.capacity.measured_capacity} measured{normal}"]
        lines += [s.summary_line() for s in self.steps]
        if cl := self.closed_loop:
            lines.append(f"              closed loop ({cl.users} users, {cl.rate:g}/s offered): achieved "
                         f"{cl.throughput}/s, p99 {cl.latency.p99_ms} ms — the queue it hides (coordinated omission)")
        if self.task_errors:
            lines.append(f"              {self.task_errors} task(s) raised (their requests still count)")
        return lines

    def table_lines(self, name: str) -> list[str]:
        """The steps and the model's points as markdown tables (report.md, index.html)."""
        md = [f"## {name}: steps", "",
              "| phase | rate | util | requests | throughput | p50 | p99 | p99 from actual send | mean queue | 502 "
              "| 504 |",
              "|" + "---|" * 11]
        for s in self.steps:
            lat = s.latency
            md.append(f"| {s.phase} | {s.arrival_rate} | {s.utilization} | {lat.requests} | {s.throughput} "
                      f"| {lat.p50_ms} | {lat.p99_ms} | {lat.send_p99_ms} | {s.mean_listen_queue} | "
                      f"{lat.status_502} | {lat.status_504} |")
        md += ["", f"### {name}: the model against each stable step", "",
               "Predicted: the model's value and the range 99.8 % of simulated runs of the same length give (the "
               "interval the check uses); measured: the value and its ~95 % confidence interval (batch means for "
               "P(wait) and the mean; order statistics for the quantiles, which treat the waits as independent, so "
               "they are narrower than the truth: the check does not use them).", "",
               "| step | quantity | requests | predicted [interval] | measured [CI] | verdict |",
               "|---|---|---|---|---|---|"]
        for p in self.model_points:
            unit = "" if p.quantity == "p_wait" else " ms"
            verdict = {True: "agrees", False: f"DISAGREES: {p.why}", None: f"not judged: {p.why}"}[p.agrees]
            md.append(f"| {p.label} | {p.name} | {p.requests} | {_iv(p.predicted, unit)} | "
                      f"{_iv(p.measured, unit)} | {verdict} |")
        if self.calibration:
            c = self.calibration.get("server") or self.calibration["client"]
            md += ["", f"Waits measured from {c.source}; resolution {c.resolution_ms} ms, a request counts as "
                   f"waiting above {c.tau_ms} ms (P(wait > tau) is compared), calibration noise "
                   f"{c.false_wait} subtracted.", ""]
        return md


def _iv(v: list | None, unit: str = "") -> str:
    if not v or v[0] is None:
        return "-"
    return f"{v[0]}{unit} [{v[1]}-{'inf' if v[2] is None else v[2]}]"
