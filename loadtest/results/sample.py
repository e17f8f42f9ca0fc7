"""The sample app's single-run scenarios (loadtest/scenarios.py): baseline, timeout, lock, signup."""

from __future__ import annotations

from loadtest.results.common import Latency, LocustView
from loadtest.results.serial import Record, flat, optional, record, samples


@record
class Baseline(Record):
    rate: float
    latency: Latency = flat()
    locust: LocustView | None = None

    SUMMARY_ORDER = 0

    def summary_lines(self, name: str) -> list[str]:
        lat = self.latency
        return [f"  baseline    {lat.requests} req at {self.rate:g}/s: p50 {lat.p50_ms} ms, p99 {lat.p99_ms} ms, "
                f"errors {lat.errors}"]


@record
class Timeout(Record):
    """Work over the pool's background budget: the tasks lost by the ledger, by the pool's counter and by what
    was sent over budget must agree exactly."""

    budget_s: float
    latency: Latency = flat()
    tasks_sent: int
    sent_over_budget: int
    ledger_started: int
    ledger_finished: int
    ledger_lost: int
    pool_lost: int
    lost_agrees: bool
    predicted_lost_share: float
    measured_lost_share: float | None
    background_samples_s: list[float] = samples()
    # what the runner adds
    rate: float | None = None
    locust: LocustView | None = None
    ledger_delta: dict | None = None
    note: str | None = optional()
    budget_source: str | None = optional()

    SUMMARY_ORDER = 3

    def summary_lines(self, name: str) -> list[str]:
        source = "?" if self.budget_source is None else self.budget_source
        lines = [f"  timeout     budget {self.budget_s:g} s ({source}): lost {self.ledger_lost} "
                 f"(ledger) / {self.pool_lost} (pool) / {self.sent_over_budget} sent over budget, of "
                 f"{self.tasks_sent}"]
        if self.note:
            lines.append(f"              note: {self.note}")
        return lines


@record
class LockWaits(Record):
    """The follow-up requests' X-Lock-Wait-Ms for one release mode."""

    n: int
    mean_ms: float | None
    p50_ms: float | None
    p99_ms: float | None
    samples: list[float] = samples()


@record
class Lock(Record):
    hold_ms: float
    latency: Latency = flat()
    early: LockWaits
    late: LockWaits
    late_waits_about_hold: bool
    early_does_not_wait: bool
    users: int | None = None
    locust: LocustView | None = None

    SUMMARY_ORDER = 4

    def summary_lines(self, name: str) -> list[str]:
        return [f"  lock        follow-up waits p50: late {self.late.p50_ms} ms, early {self.early.p50_ms} ms "
                f"(hold {self.hold_ms} ms)"]


@record
class Signup(Record):
    latency: Latency = flat()
    signups_sent: int
    signups_accepted: int
    mail_arrived: int
    mail_missing: int
    missing_sample: list[str]
    no_mail_lost: bool
    ledger: dict
    locust: LocustView | None = None

    SUMMARY_ORDER = 5

    def summary_lines(self, name: str) -> list[str]:
        return [f"  signup      {self.signups_accepted} accepted, {self.mail_arrived} mails arrived, "
                f"{self.mail_missing} missing"]
