"""Every fault against both nginx set-ups (keep-conn as the stack runs it, and without: the common php-fpm one)."""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from loadtest.faults import table
from loadtest.faults.phpfpm import faults, stack
from loadtest.faults.table import FaultRow

VARIANTS = [("php-fpm (keep-conn)", True), ("php-fpm (no keep-conn)", False)]
REPORTS = Path(__file__).resolve().parents[2] / "reports"


def default_out_dir() -> Path:
    return REPORTS / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-phpfpm-faults"


def machine() -> dict[str, str]:
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "nproc": str(os.cpu_count()),
            "kernel": platform.release(), **stack.versions()}


def run(out_dir: Path | None = None, short: bool = False, only: tuple[str, ...] = (),
        log=lambda msg: print(msg, file=sys.stderr, flush=True)) -> list[FaultRow]:
    """One row per fault and nginx variant, measured only (``passed=None``).

    Raises :class:`~loadtest.faults.phpfpm.stack.Unavailable` (saying what to install) without php-fpm or nginx.
    With ``out_dir``: faults.md, faults.json, machine.json and every run's logs and configs under logs/.
    ``only`` names faults (reload, kill9, terminate, term, quit, silent, recycle) to run just those.
    """
    stack.executables()
    timing = faults.SHORT if short else faults.FULL
    chosen = [(name, fn) for name, fn in faults.FAULTS if not only or name in only]
    rows: list[FaultRow] = []
    with tempfile.TemporaryDirectory(prefix="phpfpm-faults-") as tmp:
        for server, keep_conn in VARIANTS:
            ctx = faults.Ctx(server, keep_conn, timing, Path(tmp),
                             out_dir / "logs" if out_dir is not None else None)
            for name, fn in chosen:
                started = time.monotonic()
                row = fn(ctx)
                log(f"phpfpm faults: {server} {name}: {row.requests} requests, {row.failed} failed, "
                    f"{row.replays} replays, {row.lost_unreported} work lost ({time.monotonic() - started:.1f} s)")
                rows.append(row)
    if out_dir is not None:
        info = machine()
        table.write(rows, out_dir, title=f"PHP-FPM faults ({info['date']}, {info['php-fpm']}, {info['nginx']})")
        (out_dir / "machine.json").write_text(json.dumps(info, indent=2) + "\n")
    return rows
