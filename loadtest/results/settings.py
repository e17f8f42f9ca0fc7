"""The recommended settings (loadtest/advice.py), each with the numbers behind it, and how the summary lists them."""

from __future__ import annotations

from loadtest.results.serial import Record, optional, record

Intervals = dict[str, list[float | None]]  # quantity -> [value, low, high] (fcgipool.sizing.predict)


@record
class Setting(Record):
    value: int | float | str | None
    reason: str


@record
class WorkersSetting(Record):
    value: int | None  # the smaller of what the target needs and what memory allows
    scenario: str
    needed: int | None
    memory_cap: int | None
    prediction: Intervals | None = optional()  # with ``needed`` workers
    prediction_at_cap: Intervals | None = optional()  # memory-bound: with ``memory_cap`` workers
    reason: str = ""


@record
class Target(Record):
    rps: dict[str, float]
    p99_wait_ms: float
    memory_mb: float


@record
class Recommendations(Record):
    workers: WorkersSetting | None = optional()  # the most any normal scenario needs
    workers_by_scenario: dict[str, WorkersSetting] | None = optional()
    not_derived: dict[str, str] | None = optional()  # setting -> why the run could not derive it
    background_timeout: Setting | None = optional()
    timeout: Setting
    fastcgi_read_timeout: Setting
    target: Target | None = optional()

    def summary_lines(self) -> list[str]:
        flags = (("workers", "--workers", self.workers), ("timeout", "--timeout", self.timeout),
                 ("background_timeout", "--background-timeout", self.background_timeout),
                 ("fastcgi_read_timeout", "nginx fastcgi_read_timeout", self.fastcgi_read_timeout))
        lines = []
        for key, flag, setting in flags:
            if setting is not None:
                lines.append(f"  {flag} {setting.value}  — {setting.reason}")
            elif key in (self.not_derived or {}):
                lines.append(f"  {flag}: not derived — {(self.not_derived or {})[key]}")
        return lines
