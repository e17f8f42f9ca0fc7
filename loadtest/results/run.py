"""A whole `python -m loadtest run`: each scenario's result by name, the run's facts, the checks and the advice,
and the summary the report and the command print."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

from loadtest.results.common import Check, NginxSummary, StatusPage
from loadtest.results.sample import Baseline, Lock, Signup, Timeout
from loadtest.results.serial import Record, optional, record
from loadtest.results.settings import Recommendations
from loadtest.results.spill import Spill
from loadtest.results.stepped import Stepped

Scenario = Baseline | Stepped | Spill | Timeout | Lock | Signup
SAMPLE: dict[str, type[Scenario]] = {"baseline": Baseline, "spill": Spill, "timeout": Timeout, "lock": Lock,
                                     "signup": Signup}
S = TypeVar("S", Baseline, Stepped, Spill, Timeout, Lock, Signup)


@record
class RunResults(Record):
    scenarios: dict[str, Scenario] = dataclasses.field(default_factory=dict)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)  # scenario -> why it did not run
    stepped: list[str] = dataclasses.field(default_factory=list)  # the stepped scenarios, in run order
    normal: list[str] = dataclasses.field(default_factory=list)  # the scenarios of normal traffic: the advice's input
    run_id: str = ""
    started: float = 0.0
    workers: int = 0
    mode: str = ""
    base_url: str = ""
    status_url: str = ""
    budget_s: float = 0.0
    budget_source: str = ""
    smoke: bool = False
    locustfile: str | None = None
    config: dict = dataclasses.field(default_factory=dict)
    finished: float = 0.0
    ledger: dict | None = optional()  # the sample app's /ledger before and after the run
    nginx: NginxSummary | None = None
    rss_mb_per_worker: float | None = None
    status_page_ms: StatusPage | None = None
    recommendations: Recommendations | None = None
    checks: list[Check] = dataclasses.field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict) -> RunResults:
        stepped = set(data.get("stepped", []))
        out = super().from_dict({k: v for k, v in data.items() if k != "scenarios"})
        kinds = {name: Stepped if name in stepped else SAMPLE[name] for name in data.get("scenarios", {})}
        out.scenarios = {name: kinds[name].from_dict(d) for name, d in data.get("scenarios", {}).items()}
        return out

    def one(self, cls: type[S]) -> S | None:
        """The run's scenario of this kind (the sample scenarios run at most once)."""
        return next((s for s in self.scenarios.values() if isinstance(s, cls)), None)

    def stepped_scenarios(self) -> list[tuple[str, Stepped]]:
        return [(n, s) for n, s in self.scenarios.items() if n in self.stepped and isinstance(s, Stepped)]

    def summary_lines(self) -> list[str]:
        lines = [f"fcgipool load test — {self.workers} workers, {self.mode} stack at {self.base_url}"]
        if self.locustfile:
            lines.append(f"  scenarios from {self.locustfile}; pool status from {self.status_url}")
        for name, sc in sorted(self.scenarios.items(), key=lambda kv: kv[1].SUMMARY_ORDER):
            lines += sc.summary_lines(name)
        if n := self.nginx:
            lines.append(f"  nginx       {n.requests} requests logged: 502 {n.status_502}, 504 {n.status_504}, "
                         f"upstream response p99 {n.upstream_response_p99_s} s; worker RSS max "
                         f"{self.rss_mb_per_worker} MB")
        if self.status_page_ms:
            lines.append(self.status_page_ms.line())
        for name, why in self.skipped.items():
            lines.append(f"  {name:<11} SKIPPED: {why}")
        lines.append("checks:")
        lines += [f"  [{c.mark}] {c.name}: {c.detail}" for c in self.checks]
        lines.append("recommended settings (from normal traffic: " + (", ".join(self.normal) or "none")
                     + "; predictions with their 95 % interval):")
        if self.recommendations:
            lines += self.recommendations.summary_lines()
        return lines
