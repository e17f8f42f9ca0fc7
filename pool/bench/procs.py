"""Processes the benchmark starts: own process groups, always stopped, and their workers' memory."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple


@dataclass
class Group:
    """A started command, leader of its own process group (so stopping it stops its workers too)."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    stop_signal: int = signal.SIGTERM

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        """Signal the whole group, wait up to `grace` seconds, then SIGKILL whatever is left."""
        _signal_group(self.pid, self.stop_signal)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_exists(self.pid):
            self.proc.poll()
            time.sleep(0.05)
        if _group_exists(self.pid):
            _signal_group(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=grace)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_exists(self.pid):
            time.sleep(0.05)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_exists(pgid: int) -> bool:
    """True while a live (non-zombie) process of the group remains."""
    for pid in _all_pids():
        stat = _stat(pid)
        if stat is not None and stat.pgrp == pgid and stat.state != "Z":
            return True
    return False


def start(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stop_signal: int = signal.SIGTERM,
) -> Group:
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    return Group(name, proc, log_path, stop_signal)


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


class _Stat(NamedTuple):
    state: str
    ppid: int
    pgrp: int
    cpu: float  # utime + stime, seconds


def _stat(pid: int) -> _Stat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    fields = raw[raw.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return _Stat(fields[0], int(fields[1]), int(fields[2]), (int(fields[11]) + int(fields[12])) / ticks)


def children(pid: int) -> list[int]:
    """Live direct children of `pid` (the workers of a pre-forking master)."""
    found = []
    for candidate in _all_pids():
        stat = _stat(candidate)
        if stat is not None and stat.ppid == pid and stat.state != "Z":
            found.append(candidate)
    return sorted(found)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time used so far by `pids` (processes that are gone count 0)."""
    total = 0.0
    for pid in pids:
        stat = _stat(pid)
        if stat is not None:
            total += stat.cpu
    return total


def memory_kib(pid: int) -> dict[str, int] | None:
    """VmRSS and (when the kernel has smaps_rollup) Pss of a process, in KiB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    result = {}
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            result["rss"] = int(line.split()[1])
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                result["pss"] = int(line.split()[1])
    return result if "rss" in result else None
