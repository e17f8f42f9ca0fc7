"""One FaultRow from one run: the client's results, nginx's access and error logs, php-fpm's log, the ledger."""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from loadtest.faults.phpfpm import accounting
from loadtest.faults.phpfpm.load import Result
from loadtest.faults.phpfpm.stack import Stack
from loadtest.faults.table import FaultRow

LOGS = ("error.log", "php-fpm.log", "access.log", "ledger.txt", "nginx.conf", "php-fpm.conf")


@dataclass(frozen=True)
class LoadShape:
    clients: int
    pause_ms: int
    respond_ms: int
    bg_ms: int

    def describe(self, results: list[Result]) -> str:
        span = (max(r.end for r in results) - min(r.start for r in results)) if results else 0.0
        return (f"POST x{self.clients} clients ({self.pause_ms} ms pause), {span:.0f} s "
                f"({self.respond_ms} ms + {self.bg_ms} ms after the response)")


def build(stack: Stack, *, server: str, fault: str, shape: LoadShape, results: list[Result], expectation: str,
          expected: set[str] | None = None, notes: list[str] | None = None, details: dict | None = None,
          logs_dir: Path | None = None) -> FaultRow:
    """The row for one run; call it after the stack stopped. ``expected``: ids of requests the fault is meant
    to fail (counted in ``expected_errors``, not ``failed``). Copies the run's logs to ``logs_dir``."""
    expected = expected or set()
    counted = [r for r in results if r.rid not in expected]
    up = accounting.upstream(stack.access_entries())
    work = accounting.work(results, accounting.parse_ledger(stack.text("ledger.txt")))
    nginx_text, fpm_text = stack.text("error.log"), stack.text("php-fpm.log")
    fails = accounting.failures(counted)
    latencies = [r.seconds for r in counted if r.ok]
    p50, p99 = accounting.percentile(latencies, 0.5), accounting.percentile(latencies, 0.99)
    lines = list(notes or [])
    lines.append("failed: " + (", ".join(f"{k} x{v}" for k, v in fails.most_common()) or "none"))
    if work.lost_unreported:
        lines.append(f"work lost: {work.started_not_finished} cut off, {work.never_started} never started")
    if work.ran_twice:
        lines.append(f"work ran twice: {work.ran_twice}")
    if p50 is not None and p99 is not None:
        lines.append(f"latency p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")
    all_details = {
        "settings": asdict(stack.settings),
        "load": asdict(shape),
        "failures": dict(fails),
        "failures_vs_nginx": dict(accounting.failures_vs_nginx(counted, up)),
        "expected_failures": {r.rid: r.status or r.error for r in results if r.rid in expected and not r.ok},
        "access_log": {"entries": up.entries, "status": up.status_counts,
                       "replayed": {k: up.upstream_status_by_id[k] for k, n in up.attempts_by_id.items() if n > 1}},
        "work": asdict(work),
        "latency_s": {"p50": p50, "p99": p99, "max": max(latencies) if latencies else None},
        "nginx_errors": dict(accounting.nginx_errors(nginx_text).most_common()),
        "php_fpm_log": dict(accounting.fpm_events(fpm_text).most_common()),
        "nginx_error_sample": [ln for ln in nginx_text.splitlines() if "[error]" in ln or "[warn]" in ln][:4],
        **(details or {}),
    }
    if logs_dir is not None:
        dest = logs_dir / stack.run_dir.name
        dest.mkdir(parents=True, exist_ok=True)
        for name in LOGS:
            if (stack.run_dir / name).exists():
                shutil.copy(stack.run_dir / name, dest / ("nginx-error.log" if name == "error.log" else name))
    return FaultRow(
        fault=fault, server=server, load=shape.describe(results), requests=len(results), failed=sum(fails.values()),
        replays=up.replays, lost_unreported=work.lost_unreported, expectation=expectation, passed=None,
        expected_errors=sum(1 for r in results if r.rid in expected and not r.ok), notes="; ".join(lines),
        details=all_details)
