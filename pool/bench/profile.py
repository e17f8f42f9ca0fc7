"""Profile one benchmark backend under wrk load: syscalls (strace -c), Python stacks (py-spy), C-level self time
(perf, a software clock: no hardware counters needed), cProfile.

    .venv/bin/python pool/bench/profile.py [ROW] [--seconds N] [--tool strace|py-spy|perf|cprofile|all]

ROW is a row of run.py (default fcgipool-keepconn). The backend runs behind the benchmark's nginx with
the same settings (BENCH_* variables) as `make bench`. Profilers slow the workers down: use the req/s
printed here only to relate counts to requests, never as a benchmark result. Output goes to
pool/bench/results/profile-ROW-STAMP/ and the most telling lines are printed.
"""

from __future__ import annotations

import argparse
import collections
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import backends as backends_mod
from bench import nginx, procs, settings, wrk
from bench.run import start_backend, wait_ready

# A gunicorn config (fcgipool and gunicorn rows): cProfile each worker from fork to exit. It counts the
# thread's CPU time, not wall time: on a busy machine a wall clock charges preemption to whatever call
# was running (a send() that wakes nginx, any syscall), which hides where the CPU really goes.
CPROFILE_CONF = """\
import cProfile, os, time
_profiles = {{}}

def post_fork(server, worker):
    _profiles[os.getpid()] = cProfile.Profile(time.thread_time)
    _profiles[os.getpid()].enable()

def worker_exit(server, worker):
    prof = _profiles.pop(os.getpid(), None)
    if prof is not None:
        prof.disable()
        prof.dump_stats(os.path.join({out!r}, f"cprofile-{{os.getpid()}}.out"))
"""


def strace_summary(workers: list[int], seconds: int, url: str, cfg: settings.Settings, out: Path) -> str:
    argv = ["strace", "-c", "-f", "-o", str(out / "strace.txt")]
    for pid in workers:
        argv += ["-p", str(pid)]
    tracer = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        time.sleep(0.5)  # let it attach
        result = wrk.run(url, duration=seconds, connections=cfg.connections, threads=cfg.threads, method=cfg.method)
    finally:
        os.killpg(tracer.pid, signal.SIGINT)
        tracer.wait(timeout=30)
    table = (out / "strace.txt").read_text()
    calls = 0
    for line in table.splitlines():
        if line.strip().endswith(" total"):
            calls = int(line.split()[3])
    per_request = calls / result.requests if result.requests else 0
    summary = f"{result.requests} requests under strace ({result.rps:,.0f} req/s): {per_request:.1f} syscalls/request"
    return f"{table}\n{summary}"


def pyspy_summary(workers: list[int], seconds: int, url: str, cfg: settings.Settings, out: Path) -> str:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        return "py-spy is not installed: `.venv/bin/pip install py-spy`"
    raw = out / f"py-spy-{workers[0]}.txt"
    argv = [exe, "record", "--pid", str(workers[0]), "--duration", str(seconds), "--rate", "250"]
    argv += ["--format", "raw", "--output", str(raw), "--nonblocking"]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        time.sleep(0.5)
        wrk.run(url, duration=seconds, connections=cfg.connections, threads=cfg.threads, method=cfg.method)
        spy.wait(timeout=seconds + 30)
    finally:
        if spy.poll() is None:
            os.killpg(spy.pid, signal.SIGKILL)
    if not raw.exists():
        return f"py-spy wrote nothing: {spy.stderr.read().decode(errors='replace') if spy.stderr else ''}"
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"py-spy, worker {workers[0]}, {total} samples; raw stacks in {raw}", "", "self time:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(20)]
    lines += ["", "inclusive time:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(25)]
    return "\n".join(lines)


def perf_summary(workers: list[int], seconds: int, url: str, cfg: settings.Settings, out: Path) -> str:
    """C-level self time of the workers (interpreter, libc, kernel) with Linux perf's software clock: what py-spy
    cannot see, such as the cost of memory traffic in the interpreter or of a syscall's kernel side."""
    exe = shutil.which("perf")
    if exe is None:
        return "perf is not installed: `apt-get install linux-perf` (Debian)"
    data = out / "perf.data"
    argv = [exe, "record", "-q", "-g", "-e", "cpu-clock", "-F", "999", "-o", str(data)]
    argv += ["-p", ",".join(map(str, workers))]
    recorder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        time.sleep(0.5)
        result = wrk.run(url, duration=seconds, connections=cfg.connections, threads=cfg.threads, method=cfg.method)
    finally:
        os.killpg(recorder.pid, signal.SIGINT)
        recorder.wait(timeout=30)
    if not data.exists():
        return f"perf wrote nothing: {recorder.stderr.read().decode(errors='replace') if recorder.stderr else ''}"
    argv = [exe, "report", "-i", str(data), "--stdio", "--no-children", "-g", "none", "--sort", "dso,sym"]
    report = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    (out / "perf.txt").write_text(report.stdout)
    top = [line for line in report.stdout.splitlines() if line.strip() and not line.startswith("#")][:30]
    return "\n".join([f"perf, workers {workers}, {result.requests} requests ({result.rps:,.0f} req/s); "
                      f"full report in {out / 'perf.txt'}", *top])  # fmt: skip


def cprofile_summary(out: Path) -> str:
    dumps = sorted(out.glob("cprofile-*.out"))
    if not dumps:
        return "no cProfile output (only gunicorn-based rows write it, at worker exit)"
    text = out / "cprofile.txt"
    with open(text, "w") as fh:
        stats = pstats.Stats(*map(str, dumps), stream=fh)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(30)
    return text.read_text()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("row", nargs="?", default=backends_mod.REFERENCE_ROW)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--tool", choices=["strace", "py-spy", "perf", "cprofile", "all"], default="all")
    args = parser.parse_args()
    cfg = settings.from_env()
    backend = next((b for b in backends_mod.all_backends() if b.row == args.row), None)
    if backend is None:
        parser.error(f"unknown row {args.row!r}; rows: {[b.row for b in backends_mod.all_backends()]}")
    exe = backend.find()
    if exe is None:
        parser.error(backend.missing_hint)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = cfg.results_dir / f"profile-{backend.row}-{stamp}"
    out.mkdir(parents=True)
    run_dir = Path(tempfile.mkdtemp(prefix="fcgipool-profile-"))
    sock, port = run_dir / f"{backend.row}.sock", nginx.free_port()
    conf = nginx.render(
        [(backend, sock, port)], run_dir, nginx_workers=cfg.nginx_workers, keepalive=cfg.upstream_keepalive
    )
    web = nginx.start(nginx.find_nginx(), run_dir, conf, [port])
    url = f"http://127.0.0.1:{port}/"
    tools = ["strace", "py-spy", "perf", "cprofile"] if args.tool == "all" else [args.tool]
    gunicorn_based = backend.server in ("fcgipool", "gunicorn")
    sections = []
    try:
        extra: tuple[str, ...] = ()
        if "cprofile" in tools and gunicorn_based:
            (run_dir / "cprofile_conf.py").write_text(CPROFILE_CONF.format(out=str(out)))
            extra = ("--config", str(run_dir / "cprofile_conf.py"))
        group = start_backend(backend, exe, sock, run_dir, cfg.workers, extra)
        try:
            wait_ready(group, port, cfg.workers, cfg.start_timeout)
            wrk.run(url, duration=1, connections=cfg.connections, threads=cfg.threads, method=cfg.method)
            workers = procs.children(group.pid)
            plain = wrk.run(
                url, duration=args.seconds, connections=cfg.connections, threads=cfg.threads, method=cfg.method
            )
            sections.append(f"without profiler: {plain.rps:,.0f} req/s, p50 {plain.p50_ms:.2f} ms")
            if "strace" in tools:
                sections.append(strace_summary(workers, args.seconds, url, cfg, out))
            if "py-spy" in tools:
                sections.append(pyspy_summary(workers, args.seconds, url, cfg, out))
            if "perf" in tools:
                sections.append(perf_summary(workers, args.seconds, url, cfg, out))
        finally:
            group.stop(grace=10)  # graceful, so gunicorn workers run worker_exit and dump cProfile
        if "cprofile" in tools:
            sections.append(cprofile_summary(out) if gunicorn_based else "cProfile: only for gunicorn-based rows")
    finally:
        web.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    report = f"profile of {backend.row} ({backend.label}), {cfg.connections} connections\n\n" + "\n\n".join(sections)
    (out / "summary.txt").write_text(report + "\n")
    print(report)
    print(f"\nfiles: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
