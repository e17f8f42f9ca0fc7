"""One row per fault, and the table they make (Markdown for the terminal and docs, JSON for tools)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class FaultRow:
    """What one fault cost, measured against one server.

    ``failed``: client-visible failures the fault caused (5xx or a broken connection), excluding answers the
    fault is expected to produce (a 504 for a request past ``--timeout`` is counted in ``expected_errors``).
    ``replays``: requests nginx sent to the upstream more than once (``$upstream_status`` has several entries).
    ``lost_unreported``: after-response tasks owed by answered requests that the ledger cannot account for
    (neither finished, failed nor reported lost); None where the server has no ledger to ask.
    ``passed``: the expectation held; None for rows that are measured only (another server, for comparison).
    ``skipped``: why the fault could not be injected here (passed is then None and the counts are zeros).
    """

    fault: str
    server: str
    load: str
    requests: int
    failed: int
    replays: int
    lost_unreported: int | None
    expectation: str
    passed: bool | None
    expected_errors: int = 0
    notes: str = ""
    details: dict = field(default_factory=dict)
    skipped: str = ""

    def cells(self) -> list[str]:
        lost = "n/a" if self.lost_unreported is None else str(self.lost_unreported)
        verdict = "skipped" if self.skipped else {True: "pass", False: "**FAIL**", None: "measured"}[self.passed]
        return [
            self.fault,
            self.server,
            self.load,
            str(self.requests),
            str(self.failed),
            str(self.replays),
            lost,
            self.expectation,
            verdict,
            self.notes,
        ]


HEADER = [
    "fault",
    "server",
    "load",
    "requests",
    "failed",
    "replays",
    "tasks lost unreported",
    "expectation",
    "result",
    "notes",
]


def markdown(rows: Iterable[FaultRow]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(" --- " for _ in HEADER) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in row.cells()) + " |")
    return "\n".join(lines) + "\n"


def write(rows: list[FaultRow], folder: Path, *, title: str = "Faults") -> tuple[Path, Path]:
    """faults.md and faults.json in ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    md = folder / "faults.md"
    md.write_text(f"# {title}\n\n" + markdown(rows))
    js = folder / "faults.json"
    js.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return md, js
