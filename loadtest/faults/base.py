"""What every fault row shares: the run's settings (short or full), and the window that measures one row.

A :class:`Window` opens on an idle pool (ledger, status counters, access-log offset, pool-log mark) and
closes once the pool is idle again and the ledger has settled; :meth:`Window.close` then counts failed
requests and replays (only the row's own, by marker) and the after-response tasks left unreported.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from loadtest import accesslog
from loadtest.faults import accounting as acc
from loadtest.faults.control import Control
from loadtest.faults.load import Result
from loadtest.faults.table import FaultRow

SERVER = "fcgipool"


@dataclass(frozen=True)
class Profile:
    """Durations and sizes of one run; ``short`` is what CI runs (about 2 minutes with a 30 s --timeout)."""

    short: bool
    load_s: float  # HUP and kill rows: seconds of load around the three faults
    connections: int  # load connections (closed loop, a 20 ms pause between requests)
    mail_down_s: float
    disk_s: float
    idle_conns: int
    idle_hold_s: float
    baseline_s: float
    leak_recycles: int  # recycled workers the leak row waits for (0: every worker it started with)
    leak_max_s: float

    @classmethod
    def make(cls, short: bool) -> Profile:
        if short:
            return cls(True, 6.0, 4, 3.0, 3.0, 100, 5.0, 2.0, 2, 45.0)
        return cls(False, 15.0, 4, 6.0, 6.0, 100, 10.0, 3.0, 0, 120.0)


@dataclass
class Ctx:
    ctl: Control
    run_id: str
    profile: Profile
    say: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))

    def tag(self, row: str) -> str:
        return f"{self.run_id}-{row}"

    @property
    def budget(self) -> float:
        """The pool's after-response budget (stack.json background_timeout), for settle timeouts."""
        return float(self.ctl.stack.background_timeout or 30.0)

    def settle_timeout(self) -> float:
        return self.budget + 45.0


@dataclass
class Measure:
    results: list[Result]
    lines: list[Mapping]
    failed: list[Result]
    replays: int
    owed: dict[str, int]
    delta: dict
    not_owed: dict[str, int]
    lost_unreported: int
    over_counted: int
    per_kind: dict[str, int]
    lost_reasons: dict[str, int]
    ledger_after: dict

    def details(self) -> dict:
        return {"status_counts": acc.status_counts(self.results), "owed": self.owed, "ledger_delta": self.delta,
                "lost_reports_of_failed_requests": self.not_owed, "unreported_per_kind": self.per_kind,
                "over_counted": self.over_counted, "lost_reasons": self.lost_reasons,
                "failures": [f"{r.method} {r.path}: {r.status or r.error}" for r in self.failed[:20]]}


class Window:
    def __init__(self, ctx: Ctx, tags: list[str]) -> None:
        self.ctx = ctx
        self.tags = tags
        ctl = ctx.ctl
        self.ledger_before = ctl.settled_ledger(ctx.settle_timeout())
        self.status_before = ctl.status()
        self.offset = accesslog.log_size(ctl.stack.access_log)
        self.log_mark = ctl.log_mark()
        self.t0 = time.time()

    def close(self, results: list[Result], ok: tuple[int, ...] = (200, 202)) -> Measure:
        ctl = self.ctx.ctl
        ledger_after = ctl.settled_ledger(self.ctx.settle_timeout())
        lines = [line for tag in self.tags for line in acc.own_lines(accesslog.read_from(ctl.stack.access_log,
                                                                                          self.offset), tag)]
        lost = [t for t in ctl.lost_tasks() if float(t.get("at") or 0) >= self.t0 - 1]
        own_lost = [t for t in lost if any(acc.marker_seq(t.get("request_uri"), tag) is not None
                                           for tag in self.tags)]
        reasons: dict[str, int] = {}
        for t in own_lost:
            reasons[f"{t['kind']}:{t['reason']}"] = reasons.get(f"{t['kind']}:{t['reason']}", 0) + 1
        owed = acc.owed_tasks(results)
        delta = acc.ledger_delta(self.ledger_before, ledger_after)
        not_owed = acc.lost_of_unanswered(own_lost, self.tags, results, self.t0 - 1)
        missing, extra, per_kind = acc.unreported(owed, delta, not_owed)
        return Measure(results, lines, acc.failed_requests(results, ok), sum(acc.is_replay(x) for x in lines),
                       owed, delta, not_owed, missing, extra, per_kind, reasons, ledger_after)


def row(fault: str, load: str, m: Measure | None, expectation: str, checks: list[tuple[str, bool]], *,
        requests: int | None = None, failed: int | None = None, lost: int | None = None, expected_errors: int = 0,
        notes: str = "", details: dict | None = None) -> FaultRow:
    """A FaultRow from a measure and named checks; the failed checks go first into the notes."""
    broken = [name for name, ok in checks if not ok]
    text = "; ".join([*(f"FAILED: {b}" for b in broken), *([notes] if notes else [])])
    return FaultRow(
        fault=fault, server=SERVER, load=load,
        requests=requests if requests is not None else (len(m.results) if m else 0),
        failed=failed if failed is not None else (len(m.failed) if m else 0),
        replays=m.replays if m else 0,
        lost_unreported=lost if lost is not None else (m.lost_unreported if m else None),
        expectation=expectation, passed=not broken, expected_errors=expected_errors, notes=text,
        details={**(m.details() if m else {}), **(details or {}), "checks": dict(checks)},
    )


def skipped(fault: str, load: str, expectation: str, reason: str) -> FaultRow:
    return FaultRow(fault=fault, server=SERVER, load=load, requests=0, failed=0, replays=0, lost_unreported=None,
                    expectation=expectation, passed=None, notes=f"skipped: {reason}", skipped=reason)


def basic_checks(m: Measure, max_failed: int = 0) -> list[tuple[str, bool]]:
    return [
        (f"{len(m.failed)} failed requests (expected at most {max_failed})" if max_failed
         else f"{len(m.failed)} failed requests (expected 0)", len(m.failed) <= max_failed),
        (f"{m.replays} replays (expected 0)", m.replays == 0),
        (f"{m.lost_unreported} after-response tasks unreported (expected 0)", m.lost_unreported == 0),
    ]


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"
