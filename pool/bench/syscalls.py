"""Syscalls per request: ``strace -c`` attached to a backend's processes during a short extra wrk run.

Counted once per row (the first round), after the measured run and outside it: strace stops the traced
process at every syscall, so the row's throughput under it is a fraction of the real one and is not reported.
The count per request is what it is for: the same requests, the same nginx, every process of the backend
(master, workers and their threads). A slowed backend batches a little more per wake-up than an untraced one,
for every row alike.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ATTACH_TIMEOUT = 15.0


def parse(text: str) -> dict[str, int]:
    """``strace -c``'s summary table as {syscall: calls}, with the "total" row."""
    calls: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(fields) in (5, 6) and fields[3].isdigit() and not line.startswith(("-", "%")):
            calls[fields[-1]] = int(fields[3])
    return calls


def _wait_attached(tracer: subprocess.Popen[bytes], expected: int) -> str:
    """Until strace said it attached to ``expected`` processes; what it said instead if it stopped first. Reads
    the raw pipe: a buffered readline would keep lines select() no longer reports."""
    assert tracer.stderr is not None
    fd = tracer.stderr.fileno()
    said = b""
    deadline = time.monotonic() + ATTACH_TIMEOUT
    while said.count(b"attached") < expected and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            return said.decode(errors="replace") or "strace exited"
        said += chunk
    if said.count(b"attached") >= expected:
        return ""
    return said.decode(errors="replace")[-300:] or "strace did not attach in time"


def count(pids: list[int], out: Path, run: Callable[[], int]) -> dict[str, Any]:
    """Trace ``pids`` while ``run()`` (returns the requests it sent) runs: syscalls per request, and the most
    frequent ones. Without strace or ptrace permission: a note saying so instead."""
    strace = shutil.which("strace")
    if strace is None:
        return {"syscalls_note": "strace is not installed (apt-get install strace): no syscall count"}
    argv = [strace, "-c", "-f", "-o", str(out)]
    for pid in pids:
        argv += ["-p", str(pid)]
    tracer = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        problem = _wait_attached(tracer, len(pids))
        if problem:
            return {"syscalls_note": f"strace could not attach (ptrace not permitted?): {problem.strip()[:300]}"}
        requests = run()
    finally:
        tracer.send_signal(signal.SIGINT)  # detaches; the processes go on
        try:
            tracer.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            tracer.kill()
            tracer.communicate()
    calls = parse(out.read_text()) if out.exists() else {}
    total = calls.pop("total", 0)
    if not requests or not total:
        return {"syscalls_note": f"no count: {requests} requests, {total} syscalls seen"}
    top = sorted(calls.items(), key=lambda kv: -kv[1])[:6]
    return {
        "syscalls_per_req": total / requests,
        "syscalls_top": {name: round(n / requests, 3) for name, n in top},
        "syscalls_requests": requests,
    }
