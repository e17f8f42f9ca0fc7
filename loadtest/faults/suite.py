"""Runs the fault rows one after another against the running stack and writes the table."""

from __future__ import annotations

import os
import platform
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

from loadtest.faults import rows_process as proc
from loadtest.faults import rows_resource as res
from loadtest.faults import rows_spill as spill
from loadtest.faults import table
from loadtest.faults.base import SERVER, Ctx, Profile
from loadtest.faults.control import Control
from loadtest.faults.load import stop_all
from loadtest.faults.table import FaultRow
from loadtest.stack import DEFAULT_STACK_FILE, REPO, StackError

# name (for --only) -> row; the order is the run's (the leak row last: the workers keep what it leaked)
ROWS: dict[str, Callable[[Ctx], FaultRow]] = {
    "hup": proc.hup,
    "kill9": proc.kill9,
    "kill9kept": proc.kill9_kept,
    "timeout": proc.timeout,
    "term": proc.term,
    "downup": proc.downup,
    "downspill": spill.downspill,
    "mail": res.mail,
    "redis": spill.redis,
    "queuekill": spill.queuekill,
    "disk": res.disk,
    "idleconns": res.idleconns,
    "leak": res.leak,
}


def stack_file(explicit: str | None = None) -> Path:
    """--stack-file, else $STACK_FILE, else $STACK_VAR/stack.json (where `make up` wrote it), else var/."""
    if explicit:
        return Path(explicit)
    if os.environ.get("STACK_FILE"):
        return Path(os.environ["STACK_FILE"])
    if os.environ.get("STACK_VAR"):
        return Path(os.environ["STACK_VAR"]) / "stack.json"
    return DEFAULT_STACK_FILE


def new_out_dir() -> Path:
    return REPO / "loadtest" / "reports" / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-faults"


def failure_lines(rows: list[FaultRow]) -> list[str]:
    """One line per failed row: the fault and which of its checks failed."""
    out = []
    for r in rows:
        if r.passed is False:
            broken = [name for name, ok in r.details.get("checks", {}).items() if not ok] or [r.notes]
            out.append(f"{r.fault}: {'; '.join(broken)}")
    return out


def crashed(fault: str, exc: BaseException) -> FaultRow:
    return FaultRow(fault=fault, server=SERVER, load="-", requests=0, failed=0, replays=0, lost_unreported=None,
                    expectation="the row runs", passed=False, notes=f"FAILED: the row raised {exc!r}",
                    details={"checks": {f"the row raised {type(exc).__name__}: {exc}": False},
                             "traceback": traceback.format_exc()})


def machine() -> str:
    return f"{platform.node()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, " \
           f"Python {platform.python_version()}"


def run(names: list[str], short: bool, out: Path | None, stack_path: Path,
        say: Callable[[str], None] | None = None) -> tuple[list[FaultRow], Path]:
    ctl = Control(stack_path)
    ctx = Ctx(ctl, uuid.uuid4().hex[:8], Profile.make(short))
    if say is not None:
        ctx.say = say
    if not ctl.healthy():
        raise StackError(f"the stack in {stack_path} does not answer (GET {ctl.stack.base_url}/); `make up` first")
    out = out or new_out_dir()
    rows: list[FaultRow] = []
    started, started_at = time.monotonic(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for name in names:
        t0 = time.monotonic()
        ctx.say(f"[faults] {name} ...")
        if not ctl.healthy() and ctl.wait_healthy(60) is None:
            rows.append(crashed(name, StackError("the stack did not answer before this row (an earlier row broke it)")))
            continue
        try:
            result = ROWS[name](ctx)
        except Exception as exc:  # one broken row must not hide the others' results
            result = crashed(name, exc)
        finally:
            stop_all()
        result.details["seconds"] = round(time.monotonic() - t0, 1)
        rows.append(result)
        verdict = "skipped" if result.skipped else {True: "pass", False: "FAIL", None: "measured"}[result.passed]
        ctx.say(f"[faults] {name}: {verdict} in {time.monotonic() - t0:.0f} s — {result.notes}")
    title = (f"Faults ({'short' if short else 'full'}), {started_at}, {ctl.mode} mode, {machine()}, "
             f"{time.monotonic() - started:.0f} s")
    table.write(rows, out, title=title)
    return rows, out


def print_summary(rows: list[FaultRow], out: Path) -> int:
    print(table.markdown(rows))
    print(f"written to {out}/faults.md and {out}/faults.json")
    broken = failure_lines(rows)
    if broken:
        print(f"\nmake faults: {len(broken)} of {len(rows)} rows failed:", file=sys.stderr)
        for line in broken:
            print(f"  - {line}", file=sys.stderr)
        return 1
    return 0
