"""Run wrk (bounded by its own duration and a hard timeout) and read its summary."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass

from bench.settings import BENCH_DIR

SUMMARY_SCRIPT = BENCH_DIR / "wrk_summary.lua"
MARKER = "WRK_SUMMARY "


class WrkError(RuntimeError):
    """wrk failed or printed no summary."""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def parse(output: str) -> WrkResult:
    """The WrkResult from wrk's stdout when run with wrk_summary.lua."""
    for line in output.splitlines():
        if line.startswith(MARKER):
            data = json.loads(line[len(MARKER) :])
            lat = data["latency_us"]
            return WrkResult(
                requests=data["requests"],
                duration_s=data["duration_us"] / 1e6,
                errors=dict(data["errors"]),
                p50_ms=lat["p50"] / 1000,
                p90_ms=lat["p90"] / 1000,
                p99_ms=lat["p99"] / 1000,
                max_ms=lat["max"] / 1000,
                mean_ms=lat["mean"] / 1000,
            )
    raise WrkError(f"no {MARKER.strip()} line in wrk's output:\n{output[-2000:]}")


def run(url: str, *, duration: int, connections: int, threads: int, method: str = "GET", wrk: str = "wrk") -> WrkResult:
    argv = [
        wrk,
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={duration}s",
        "--timeout=5s",
        "--latency",
        f"--script={SUMMARY_SCRIPT}",
        url,
    ]
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=duration + 30,
            check=False,
            env={**os.environ, "BENCH_METHOD": method},
        )
    except subprocess.TimeoutExpired:
        raise WrkError(f"wrk did not finish within {duration + 30} s") from None
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    return parse(done.stdout)


def version(exe: str = "wrk") -> str:
    done = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=10, check=False)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].split(" Copyright")[0] if lines else "wrk (unknown version)"
