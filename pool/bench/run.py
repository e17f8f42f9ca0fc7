"""`make bench`: hello world through one nginx, fcgipool vs other servers, side by side, with wrk.

Run: `.venv/bin/python pool/bench/run.py` (settings: BENCH_* environment variables, see --help).
Each backend in turn gets the same nginx, the same worker count, a unix socket, a warm-up and a
measured wrk run; its workers' memory is read from /proc afterwards; then it is stopped before the
next one starts. Results: a table on stdout, JSON + markdown in pool/bench/results/.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

if __package__ in (None, ""):  # run as a script: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import backends as backends_mod
from bench import nginx, procs, report, settings, syscalls, wrk
from bench.backends import Backend

EXPECTED_BODY = b"Hello, World!\n"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def wait_ready(group: procs.Group, port: int, workers: int, timeout: float) -> None:
    """Until the backend answers through nginx with the hello body and all its workers exist."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if not group.alive():
            raise RuntimeError(f"exited with code {group.proc.returncode} at start:\n{group.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                body = resp.read()
            if body != EXPECTED_BODY:
                raise RuntimeError(f"answered {body[:200]!r}, expected {EXPECTED_BODY!r}")
            if len(procs.children(group.pid)) >= workers:
                return
            last = f"{len(procs.children(group.pid))} of {workers} workers up"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"not ready within {timeout} s ({last}):\n{group.log_tail()}")


def worker_memory(master: int) -> dict[str, Any]:
    pids = procs.children(master)
    mems = {pid: m for pid in pids if (m := procs.memory_kib(pid))}
    rss = [m["rss"] for m in mems.values()]
    pss = [m["pss"] for m in mems.values() if "pss" in m]
    master_mem = procs.memory_kib(master) or {}
    return {
        "worker_count": len(mems),
        "worker_rss_kib": {str(pid): m["rss"] for pid, m in mems.items()},
        "rss_sum_kib": sum(rss) if rss else None,
        "rss_per_worker_kib": sum(rss) / len(rss) if rss else None,
        "pss_sum_kib": sum(pss) if len(pss) == len(rss) and pss else None,
        "master_rss_kib": master_mem.get("rss"),
    }


def start_backend(
    backend: Backend, exe: str, sock: Path, run_dir: Path, workers: int, extra_args: tuple[str, ...] = ()
) -> procs.Group:
    """Start `backend` on `sock` in its own process group; `extra_args` go right after the executable."""
    sock.unlink(missing_ok=True)
    launch = backend.launch(exe, sock, workers, run_dir)
    env = {**os.environ, "PYTHONPATH": str(backends_mod.APPS_DIR), **launch.env_extra}
    argv = [launch.argv[0], *extra_args, *launch.argv[1:]]
    return procs.start(
        backend.row, argv, run_dir / f"{backend.row}.log", cwd=launch.cwd, env=env, stop_signal=launch.stop_signal
    )


T = TypeVar("T")


def round_order(items: list[T], round_no: int) -> list[T]:
    """The rows of round ``round_no`` (from 1), rotated by one place a round: each row runs first, second, ... equally
    often, so no row always runs just after the same one. A pair of rows compared round by round (the request log's
    cost: fcgipool-requestlog / fcgipool-keepconn) then does not carry a bias of always running first or second."""
    if not items:
        return []
    shift = (round_no - 1) % len(items)
    return items[shift:] + items[:shift]


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return (total - idle) / ticks, total / ticks


def measured_run(url: str, cfg: settings.Settings, backend_master: int, nginx_master: int) -> dict[str, Any]:
    """The measured wrk run plus where the machine's CPU went meanwhile."""
    backend_pids = [backend_master, *procs.children(backend_master)]
    nginx_pids = [nginx_master, *procs.children(nginx_master)]
    backend_cpu, nginx_cpu = procs.cpu_seconds(backend_pids), procs.cpu_seconds(nginx_pids)
    busy, total = machine_cpu_seconds()
    wrk_usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = wrk.run(url, duration=cfg.duration, connections=cfg.connections, threads=cfg.threads, method=cfg.method)
    wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    backend_cpu = procs.cpu_seconds(backend_pids) - backend_cpu
    nginx_cpu = procs.cpu_seconds(nginx_pids) - nginx_cpu
    wrk_cpu = (wrk_after.ru_utime + wrk_after.ru_stime) - (wrk_usage.ru_utime + wrk_usage.ru_stime)
    busy_after, total_after = machine_cpu_seconds()
    busy, total = busy_after - busy, total_after - total
    per_req = 1e6 / result.requests if result.requests else 0.0
    return {
        "status": "ok",
        "rps": result.rps,
        "requests": result.requests,
        "duration_s": result.duration_s,
        "errors": result.error_count,
        "error_detail": result.errors,
        "p50_ms": result.p50_ms,
        "p90_ms": result.p90_ms,
        "p99_ms": result.p99_ms,
        "max_ms": result.max_ms,
        # CPU microseconds per request: less sensitive than req/s to other work on a shared machine.
        "backend_cpu_us_per_req": backend_cpu * per_req,
        "nginx_cpu_us_per_req": nginx_cpu * per_req,
        "wrk_cpu_us_per_req": wrk_cpu * per_req,
        # Share of the machine's CPU time: busy overall, and busy with something other than this row.
        "machine_busy": busy / total if total else None,
        "other_busy": max(0.0, busy - backend_cpu - nginx_cpu - wrk_cpu) / total if total else None,
        # What the row would do if it had the machine's CPUs to itself: CPUs / CPU time per request of
        # backend + nginx + wrk. Holds while the run is CPU-bound (machine_busy near 1), as on 2 cores.
        "cpu_bound_rps": (os.cpu_count() or 1) * result.requests / (backend_cpu + nginx_cpu + wrk_cpu)
        if backend_cpu + nginx_cpu + wrk_cpu > 0
        else None,
    }


def nginx_errors(error_log: Path, offset: int) -> tuple[int, str]:
    """Error lines nginx logged since `offset`, and one of them: upstream failures nginx retried on its own
    (a kept connection closed under it) never reach wrk, so they are counted here."""
    try:
        with open(error_log, "rb") as fh:
            fh.seek(offset)
            lines = [ln for ln in fh.read().decode(errors="replace").splitlines() if "[error]" in ln or "[crit]" in ln]
    except OSError:
        return 0, ""
    sample = lines[-1].split("] ", 1)[-1][:300] if lines else ""
    return len(lines), sample


def measure(
    backend: Backend,
    exe: str,
    sock: Path,
    port: int,
    cfg: settings.Settings,
    run_dir: Path,
    nginx_master: int,
    *,
    count_syscalls: bool = False,
) -> dict[str, Any]:
    """One round of one backend: start, check, warm up, measure, read memory, (count syscalls), stop."""
    extra = cfg.fcgipool_args if backend.server == "fcgipool" else ()
    group = start_backend(backend, exe, sock, run_dir, cfg.workers, extra)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_ready(group, port, cfg.workers, cfg.start_timeout)
        if cfg.warmup:
            wrk.run(url, duration=cfg.warmup, connections=cfg.connections, threads=cfg.threads, method=cfg.method)
        load_before = os.getloadavg()[0]
        error_log = run_dir / "nginx" / "error.log"
        log_offset = error_log.stat().st_size if error_log.exists() else 0
        result = measured_run(url, cfg, group.pid, nginx_master)
        result["nginx_errors"], result["nginx_error_sample"] = nginx_errors(error_log, log_offset)
        memory = worker_memory(group.pid)
        if count_syscalls and cfg.syscalls:
            pids = [group.pid, *procs.children(group.pid)]

            def traced_run() -> int:
                return wrk.run(url, duration=cfg.syscalls, connections=cfg.connections, threads=cfg.threads,
                               method=cfg.method).requests  # fmt: skip

            result.update(syscalls.count(pids, run_dir / f"{backend.row}.strace", traced_run))
        if not group.alive():
            raise RuntimeError(f"exited during the run:\n{group.log_tail()}")
    finally:
        group.stop()
    return {**result, "loadavg_1m_before": load_before, **memory}


def source_version(path: Path) -> str:
    """The last commit that touched `path` and whether the working tree differs from it."""
    try:
        commit = subprocess.run(
            ["git", "log", "-1", "--format=%h %cI", "--", str(path)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            cwd=path,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", str(path)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            cwd=path,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return f"{commit or 'not in git'}{' + uncommitted changes' if dirty else ''}"


def machine() -> dict[str, Any]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "loadavg_before": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
    }


def command_line() -> str:
    env = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("BENCH_"))
    return f"{env + ' ' if env else ''}.venv/bin/python pool/bench/run.py"


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print(settings.HELP)
        return 0
    if argv:
        log(f"bench: unexpected arguments {argv}; settings are BENCH_* environment variables (see --help)")
        return 2
    try:
        cfg = settings.from_env()
        selected = backends_mod.select(backends_mod.all_backends(), cfg.only)
        nginx_exe = nginx.find_nginx()
        wrk_exe = shutil.which("wrk")
        if not wrk_exe:
            raise RuntimeError("wrk is not installed: `apt-get install wrk`")
    except (settings.SettingsError, ValueError, RuntimeError) as exc:
        log(f"bench: {exc}")
        return 2
    # Stopping `make bench` (TERM, HUP) must still stop every process started here.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)

    started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    meta: dict[str, Any] = {
        "started_at": started_at,
        "command": command_line(),
        "machine": machine(),
        "settings": cfg.as_dict(),
        "versions": {"nginx": nginx.version(nginx_exe), "wrk": wrk.version(wrk_exe)},
    }
    rows: list[report.Row] = []
    runnable: list[tuple[Backend, str, Path, int]] = []
    run_dir = Path(tempfile.mkdtemp(prefix="fcgipool-bench-"))
    for backend in selected:
        row = report.Row(backend.row, backend.server, backend.label, "ok")
        rows.append(row)
        exe = backend.find()
        if exe is None:
            row.status, row.note = "skipped", backend.missing_hint
            log(f"skip {backend.row}: {backend.missing_hint}")
            continue
        meta["versions"].setdefault(backend.server, backend.version(exe))
        if backend.server == "fcgipool":
            meta["versions"].setdefault("fcgipool source", source_version(settings.BENCH_DIR.parent / "fcgipool"))
        runnable.append((backend, exe, run_dir / f"{backend.row}.sock", nginx.free_port()))

    failed = False
    nginx_group = None
    try:
        config = nginx.render(
            [(b, sock, port) for b, _exe, sock, port in runnable],
            run_dir / "nginx",
            nginx_workers=cfg.nginx_workers,
            keepalive=cfg.upstream_keepalive,
        )
        (run_dir / "nginx").mkdir()
        nginx_group = nginx.start(nginx_exe, run_dir / "nginx", config, [port for *_, port in runnable])
        by_row = {r.row: r for r in rows}
        total = cfg.rounds * len(runnable)
        step = 0
        for round_no in range(1, cfg.rounds + 1):
            for backend, exe, sock, port in round_order(runnable, round_no):
                step += 1
                row = by_row[backend.row]
                try:
                    result = measure(backend, exe, sock, port, cfg, run_dir, nginx_group.pid,
                                     count_syscalls=round_no == 1)  # fmt: skip
                except (RuntimeError, OSError, wrk.WrkError) as exc:
                    failed = True
                    row.status = "failed"
                    row.note = str(exc).strip().replace("\n", " | ")[:600]
                    row.rounds.append({"round": round_no, "status": "failed", "error": str(exc)})
                    log(f"[{step}/{total}] {backend.row}: FAILED: {exc}")
                    continue
                row.rounds.append({"round": round_no, **result})
                if result.get("syscalls_note") and "syscall" not in row.note:
                    row.note = (row.note + "; " if row.note else "") + result["syscalls_note"]
                if result["errors"] and not row.note:
                    row.note = f"wrk counted errors: {result['error_detail']}"
                if result["nginx_errors"] and "nginx logged" not in row.note:
                    row.note = (row.note + "; " if row.note else "") + (
                        f"nginx logged {result['nginx_errors']} upstream errors in round {round_no} "
                        f"(nginx resends a failed GET, so wrk may not see them; a POST becomes a 502), "
                        f"e.g. {result['nginx_error_sample']}"
                    )
                log(
                    f"[{step}/{total}] {backend.row}: {result['rps']:,.0f} req/s, p50 {result['p50_ms']:.2f} ms, "
                    f"p99 {result['p99_ms']:.2f} ms, errors {result['errors']} (nginx log: {result['nginx_errors']}), "
                    f"workers {result['worker_count']} RSS {(result['rss_sum_kib'] or 0) / 1024:.1f} MiB, "
                    f"CPU {result['backend_cpu_us_per_req']:.1f} us/req"
                    + (f", {result['syscalls_per_req']:.2f} syscalls/req" if "syscalls_per_req" in result else "")
                )
    except (nginx.NginxError, OSError) as exc:
        log(f"bench: {exc}")
        failed = True
    except KeyboardInterrupt:
        log("bench: interrupted; stopping everything started")
        failed = True
        raise
    finally:
        if nginx_group is not None:
            nginx_group.stop()
        if failed:
            log(f"bench: logs kept in {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)

    meta["loadavg_after"] = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    ref = report.reference(rows, backends_mod.REFERENCE_ROW)
    meta["reference_row"] = ref.row if ref else None
    meta["targets"] = report.targets(rows)
    meta["targets_cpu_bound"] = report.targets(rows, key="cpu_bound_rps")
    meta["targets_cost"] = report.cost_targets(rows)
    print()
    print(report.text_table(rows, ref))
    print()
    print(f"reference row: {ref.row if ref else '(no fcgipool row ran)'}")
    print(report.LEGEND)
    for t in meta["targets"]:
        print(f"target {t['target']}: {t['status']} - {t['detail']}")
    for t in meta["targets_cpu_bound"]:
        print(f"  same, CPU-bound estimate: {t['status']} - {t['detail']}")
    for t in meta["targets_cost"]:
        print(f"target {t['target']}: {t['status']} - {t['detail']}")
    for note in report.notes(rows):
        print(f"note: {note}")
    write_results(cfg.results_dir, meta, rows, ref)
    return 1 if failed else 0


def write_results(results_dir: Path, meta: dict[str, Any], rows: list[report.Row], ref: report.Row | None) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = meta["started_at"].replace(":", "").replace("-", "")
    data = {**meta, "rows": [r.summary() for r in rows], "rounds": {r.row: r.rounds for r in rows}}
    text = json.dumps(data, indent=2)
    md = report.markdown(meta, rows, ref)
    for name in (f"bench-{stamp}", "latest"):
        (results_dir / f"{name}.json").write_text(text + "\n")
        (results_dir / f"{name}.md").write_text(md)
    print(f"results: {results_dir / f'bench-{stamp}.json'} and .md (also latest.json, latest.md)")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
