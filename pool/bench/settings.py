"""Benchmark settings, read once from the environment (every knob is a BENCH_* variable)."""

from __future__ import annotations

import os
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


class SettingsError(ValueError):
    """A BENCH_* variable has a value the benchmark cannot use."""


def _int(env: dict[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number (default {default})") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} is below the minimum of {minimum}")
    return value


@dataclass(frozen=True)
class Settings:
    duration: int  # seconds of each measured wrk run
    warmup: int  # seconds of the unmeasured wrk run before it (0 = none)
    connections: int  # wrk -c
    threads: int  # wrk -t
    rounds: int  # the whole sequence of backends is repeated this many times, interleaved
    workers: int  # worker processes of every backend
    nginx_workers: int  # worker_processes of the shared nginx
    upstream_keepalive: int  # idle kept upstream connections per backend (nginx `keepalive`)
    only: tuple[str, ...]  # rows or servers to run (empty = all)
    results_dir: Path
    start_timeout: int  # seconds a backend gets to answer its first request
    fcgipool_args: tuple[str, ...] = ()  # extra command-line arguments for the fcgipool rows (A/B runs)
    method: str = "GET"  # HTTP method of wrk's requests; POST sends a small form body
    syscalls: int = 3  # seconds of the extra run under strace -c, first round only (0 = no syscall count)

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["results_dir"] = str(self.results_dir)
        data["only"] = list(self.only)
        data["fcgipool_args"] = list(self.fcgipool_args)
        return data


HELP = """\
Environment variables (defaults in brackets):
  BENCH_DURATION     seconds of each measured wrk run [10]
  BENCH_WARMUP       seconds of the unmeasured warm-up run before it [2]
  BENCH_CONNECTIONS  wrk connections [32]
  BENCH_THREADS      wrk threads [2]
  BENCH_ROUNDS       repeat the whole sequence, interleaved, and report the median and spread [1]
  BENCH_WORKERS      worker processes of every backend [2]
  BENCH_NGINX_WORKERS  nginx worker_processes [1]
  BENCH_UPSTREAM_KEEPALIVE  nginx upstream `keepalive` (idle kept connections) [= BENCH_CONNECTIONS]
  BENCH_ONLY         comma-separated rows or servers, e.g. "fcgipool,uwsgi" [all default rows]
                     (minimal-keepconn, the Python floor from experiments/, is one; `minimal` without
                     keep-conn runs only when named)
  BENCH_RESULTS_DIR  where the JSON and markdown go [pool/bench/results]
  BENCH_START_TIMEOUT  seconds a backend gets to answer its first request [30]
  BENCH_METHOD       GET, or POST with a small form body (nginx never resends a failed POST) [GET]
  BENCH_SYSCALLS     seconds of an extra run per row under `strace -c` (first round): syscalls/request [3; 0 = off]
  BENCH_FCGIPOOL_ARGS  extra arguments for the fcgipool rows, shell-quoted, e.g. "--worker-class x.Y" []
"""


def from_env(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    connections = _int(env, "BENCH_CONNECTIONS", 32, 1)
    threads = _int(env, "BENCH_THREADS", 2, 1)
    if threads > connections:
        raise SettingsError(
            f"BENCH_THREADS={threads} exceeds BENCH_CONNECTIONS={connections}; wrk needs a connection per thread"
        )
    method = env.get("BENCH_METHOD", "").strip().upper() or "GET"
    if method not in ("GET", "POST"):
        raise SettingsError(f"BENCH_METHOD={method!r}: use GET or POST")
    only = tuple(part.strip() for part in env.get("BENCH_ONLY", "").split(",") if part.strip())
    return Settings(
        duration=_int(env, "BENCH_DURATION", 10, 1),
        warmup=_int(env, "BENCH_WARMUP", 2, 0),
        connections=connections,
        threads=threads,
        rounds=_int(env, "BENCH_ROUNDS", 1, 1),
        workers=_int(env, "BENCH_WORKERS", 2, 1),
        nginx_workers=_int(env, "BENCH_NGINX_WORKERS", 1, 1),
        # as many idle kept connections as requests in flight: with fewer, nginx closes and reopens
        # connections under load and a keep-conn row measures connection churn (docs/benchmarks.md)
        upstream_keepalive=_int(env, "BENCH_UPSTREAM_KEEPALIVE", connections, 1),
        only=only,
        results_dir=Path(env.get("BENCH_RESULTS_DIR") or BENCH_DIR / "results"),
        start_timeout=_int(env, "BENCH_START_TIMEOUT", 30, 1),
        fcgipool_args=tuple(shlex.split(env.get("BENCH_FCGIPOOL_ARGS", ""))),
        method=method,
        syscalls=_int(env, "BENCH_SYSCALLS", 3, 0),
    )
