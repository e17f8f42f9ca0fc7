"""strace attached to a running process for a block of a test: ``with traced(pid, path, "-e", ...) as lines``."""

from __future__ import annotations

import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _attached(tracer: subprocess.Popen[str], timeout: float) -> str:
    """Wait for strace's "Process N attached" line; return what it said instead if it stopped first."""
    assert tracer.stderr is not None
    said = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([tracer.stderr], [], [], deadline - time.monotonic())
        if not ready:
            break
        line = tracer.stderr.readline()
        if not line:  # strace exited
            break
        said.append(line)
        if "attached" in line:
            return ""
    return "".join(said) or "no output"


@contextmanager
def traced(pid: int, out: Path, *expr: str) -> Iterator[list[str]]:
    """Trace ``pid`` (all its threads) with strace ``expr`` into ``out`` while the block runs; the list yielded
    is filled with strace's lines when the block ends. Skips the test without strace or ptrace permission."""
    import pytest

    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (apt-get install strace, or make install-system)")
    command = [strace, "-f", *expr, "-o", str(out), "-p", str(pid)]
    tracer = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    lines: list[str] = []
    try:
        problem = _attached(tracer, 10)
        if problem:
            pytest.skip(f"strace cannot attach to the worker (ptrace not permitted here?): {problem.strip()}")
        yield lines
    finally:
        tracer.send_signal(signal.SIGINT)  # detaches from the process, which goes on
        tracer.communicate(timeout=10)
        if out.exists():
            lines.extend(out.read_text().splitlines())
