"""The `make bench` harness: parsing, tables, targets, process cleanup, and one short real run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

POOL_DIR = Path(__file__).resolve().parents[2]
REPO = POOL_DIR.parent
sys.path.insert(0, str(POOL_DIR))

from bench import backends, nginx, procs, report, settings, wrk  # noqa: E402

WRK_OUTPUT = """\
Running 1s test @ http://127.0.0.1:1234/
  2 threads and 32 connections
WRK_SUMMARY {"requests": 12000, "duration_us": 2000000, "bytes": 100, \
"errors": {"connect": 0, "read": 1, "write": 0, "status": 2, "timeout": 0}, \
"latency_us": {"mean": 900.5, "stdev": 10.0, "p50": 800, "p90": 1500, "p99": 3000, "max": 9000}}
"""


def test_wrk_summary_is_parsed():
    result = wrk.parse(WRK_OUTPUT)
    assert result.rps == 6000
    assert (result.p50_ms, result.p99_ms) == (0.8, 3.0)
    assert result.error_count == 3


def test_wrk_output_without_summary_is_an_error():
    with pytest.raises(wrk.WrkError, match="no WRK_SUMMARY"):
        wrk.parse("Running 1s test\nunable to connect to 127.0.0.1:1 Connection refused\n")


def test_settings_defaults_and_bad_values():
    cfg = settings.from_env({})
    assert (cfg.duration, cfg.connections, cfg.workers, cfg.rounds) == (10, 32, 2, 1)
    assert settings.from_env({"BENCH_ONLY": "fcgipool, uwsgi"}).only == ("fcgipool", "uwsgi")
    # nginx keeps as many idle upstream connections as wrk has in flight, unless told otherwise
    assert (cfg.connections, cfg.upstream_keepalive) == (32, 32)
    assert settings.from_env({"BENCH_CONNECTIONS": "16"}).upstream_keepalive == 16
    assert settings.from_env({"BENCH_CONNECTIONS": "16", "BENCH_UPSTREAM_KEEPALIVE": "8"}).upstream_keepalive == 8
    args = settings.from_env({"BENCH_FCGIPOOL_ARGS": "--pythonpath 'a dir' --worker-class x.Y"}).fcgipool_args
    assert args == ("--pythonpath", "a dir", "--worker-class", "x.Y")
    with pytest.raises(settings.SettingsError, match="BENCH_DURATION='ten'"):
        settings.from_env({"BENCH_DURATION": "ten"})
    with pytest.raises(settings.SettingsError, match="below the minimum"):
        settings.from_env({"BENCH_CONNECTIONS": "0"})
    assert settings.from_env({"BENCH_METHOD": "post"}).method == "POST"
    with pytest.raises(settings.SettingsError, match="GET or POST"):
        settings.from_env({"BENCH_METHOD": "DELETE"})
    with pytest.raises(settings.SettingsError, match="connection per thread"):
        settings.from_env({"BENCH_THREADS": "8", "BENCH_CONNECTIONS": "4"})


def test_select_by_row_or_server_and_unknown_names():
    rows = backends.all_backends()
    assert rows[0].row == backends.REFERENCE_ROW
    assert {b.row for b in backends.select(rows, ("uwsgi", "gunicorn-http"))} == {
        "uwsgi",
        "uwsgi-keepconn",
        "gunicorn-http",
    }
    with pytest.raises(ValueError, match="unknown rows"):
        backends.select(rows, ("nope",))
    # the Python floor from experiments/ is not a server: with keep-conn it is the CPU target's yardstick and
    # runs by default; without, only when asked for
    default = {b.row for b in backends.select(rows, ())}
    assert "minimal-keepconn" in default and "minimal" not in default
    assert [b.row for b in backends.select(rows, ("minimal",))] == ["minimal-keepconn", "minimal"]


def _row(
    name: str, server: str, rps_values: list[float], rss: int = 20480, cpu_factor: float = 1.5,
    cpu_us: float = 30.0, syscalls: float | None = None,
) -> report.Row:  # fmt: skip
    row = report.Row(name, server, name, "ok")
    for i, rps in enumerate(rps_values):
        row.rounds.append(
            {
                "round": i + 1, "status": "ok", "rps": rps, "errors": 0, "p50_ms": 1.0, "p99_ms": 4.0,
                "worker_count": 2, "rss_sum_kib": rss, "rss_per_worker_kib": rss / 2, "pss_sum_kib": rss // 2,
                "cpu_bound_rps": rps * cpu_factor, "backend_cpu_us_per_req": cpu_us,
                **({"syscalls_per_req": syscalls, "syscalls_top": {"recvfrom": 1.0}} if syscalls and i == 0 else {}),
            }
        )  # fmt: skip
    return row


def test_table_targets_and_ratios():
    rows = [
        _row("fcgipool-keepconn", "fcgipool", [20000, 22000, 21000]),
        _row("uwsgi", "uwsgi", [25000], rss=40960),
        _row("flup", "flup", [6000]),
        _row("gunicorn-http", "gunicorn", [11000]),
        report.Row("php-fpm", "php-fpm", "php-fpm", "skipped", note="not installed"),
    ]
    ref = report.reference(rows, "fcgipool-keepconn")
    assert ref is rows[0] and ref.rps == 21000
    assert ref.spread == pytest.approx(2000 / 21000)
    checks = {t["target"]: t for t in report.targets(rows)}
    assert checks["fcgipool >= 1.1x uwsgi"]["status"] == "missed"
    assert checks["fcgipool >= 2x flup"]["status"] == "met"
    assert checks["fcgipool >= 2.5x gunicorn"]["status"] == "missed"
    assert checks["fcgipool >= 2.5x gunicorn"]["ratio"] == pytest.approx(21000 / 11000)

    # the CPU-bound estimate can tell a different story than the noisy measured req/s
    rows[1] = _row("uwsgi", "uwsgi", [25000], rss=40960, cpu_factor=1.0)
    by_cpu = {t["target"]: t for t in report.targets(rows, key="cpu_bound_rps")}
    assert by_cpu["fcgipool >= 1.1x uwsgi"]["status"] == "met"  # 31,500 vs 25,000 = 1.26x
    assert "req/s CPU-bound" in by_cpu["fcgipool >= 1.1x uwsgi"]["detail"]

    text = report.text_table(rows, ref).splitlines()
    assert len(text) == 2 + len(rows) and len({len(line.rstrip()) for line in text[:2]}) == 1
    uwsgi_line = next(line for line in text if line.startswith("uwsgi"))
    assert "25,000" in uwsgi_line and "1.19x" in uwsgi_line and "2.00x" in uwsgi_line  # req/s and RSS ratios
    assert "skipped" in next(line for line in text if line.startswith("php-fpm"))

    md = report.markdown_table(rows, ref).splitlines()
    assert {line.count("|") for line in md} == {len(report.COLUMNS) + 1}


def test_targets_not_applicable_without_fcgipool():
    checks = report.targets([_row("uwsgi", "uwsgi", [25000])])
    assert {t["status"] for t in checks} == {"n/a"}
    assert {t["status"] for t in report.cost_targets([_row("uwsgi-keepconn", "uwsgi", [25000])])} == {"n/a"}


LOG = "fcgipool-requestlog"


def _cpu_rounds(name: str, values: list[float]) -> report.Row:
    row = _row(name, "fcgipool", [20000] * len(values))
    for r, cpu in zip(row.rounds, values, strict=True):
        r["backend_cpu_us_per_req"] = cpu
    return row


@pytest.mark.parametrize(
    "on, status, ratio",
    [
        ([20.4, 20.5, 20.9], "met", 1.025),  # per round 1.02, 1.025, 1.045: the median
        ([21.0, 20.9, 22.0], "missed", 1.05),
        ([20.0, 30.0, 21.2], "missed", 1.06),  # one wild round does not decide it
    ],
    ids=["met", "missed", "outlier"],
)
def test_request_log_target_is_the_median_of_per_round_ratios(on: list[float], status: str, ratio: float) -> None:
    rows = [_cpu_rounds("fcgipool-keepconn", [20.0] * 12), _cpu_rounds("fcgipool-requestlog", on * 4)]
    check = report.request_log_target(rows)
    assert check["status"] == status and check["ratio"] == pytest.approx(ratio), check
    assert check["target"] == "request log CPU/request <= 1.03x fcgipool-keepconn"
    assert "median of 12 rounds" in check["detail"]
    few = report.request_log_target([_cpu_rounds("fcgipool-keepconn", [20.0] * 3), _cpu_rounds(LOG, on)])
    assert few["status"] == "n/a" and "only 3 rounds" in few["detail"] and few["ratio"] == pytest.approx(ratio)
    assert report.request_log_target(rows[:1])["status"] == "n/a"
    assert "BENCH_ROUNDS=20" in report.request_log_target(rows[:1])["detail"]


@pytest.mark.parametrize(
    "ours_cpu, ours_sys, cpu_status, sys_status",
    [(30.0, 2.0, "met", "met"), (40.0, 2.0, "missed", "met"), (30.0, 3.5, "met", "missed")],
    ids=["both-met", "cpu-over-floor", "more-syscalls"],
)
def test_cost_targets_cpu_against_the_floor_and_syscalls_against_uwsgi(
    ours_cpu: float, ours_sys: float, cpu_status: str, sys_status: str
) -> None:
    rows = [
        _row("fcgipool-keepconn", "fcgipool", [20000], cpu_us=ours_cpu, syscalls=ours_sys),
        _row("uwsgi-keepconn", "uwsgi", [18000], cpu_us=20.0, syscalls=3.0),
        _row("minimal-keepconn", "minimal", [22000], cpu_us=25.0, syscalls=2.5),
    ]
    checks = {t["target"]: t for t in report.cost_targets(rows)}
    cpu = checks["fcgipool CPU/request <= 1.25x minimal-keepconn"]
    assert cpu["status"] == cpu_status and cpu["ratio"] == pytest.approx(ours_cpu / 25.0)
    sys_check = checks["fcgipool syscalls/request <= uwsgi-keepconn"]
    assert sys_check["status"] == sys_status and sys_check["ratio"] == pytest.approx(ours_sys / 3.0)
    text = report.text_table(rows, rows[0])
    assert f"{ours_sys:.2f}" in text.splitlines()[2]


def test_rounds_rotate_the_order_of_the_rows() -> None:
    from bench.run import round_order

    rows = ["a", "b", "c"]
    orders = [round_order(rows, n) for n in range(1, 7)]
    assert orders[:3] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]] and orders[3:] == orders[:3]
    for row in rows:  # each row in each place equally often
        assert sorted(order.index(row) for order in orders) == [0, 0, 1, 1, 2, 2]
    pair = ["fcgipool-keepconn", "fcgipool-requestlog"]
    assert [round_order(pair, n)[0] for n in (1, 2, 3, 4)] == [pair[0], pair[1], pair[0], pair[1]]
    assert round_order([], 3) == [] and rows == ["a", "b", "c"]


def test_strace_summary_is_parsed() -> None:
    from bench import syscalls

    text = """% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 45.10    0.010000           2      5000           sendto
 30.00    0.006000           1      5000      1200 recvfrom
  0.50    0.000100          10        10           poll
------ ----------- ----------- --------- --------- ----------------
100.00    0.016100           1     10010      1200 total
"""
    assert syscalls.parse(text) == {"sendto": 5000, "recvfrom": 5000, "poll": 10, "total": 10010}


def test_stop_kills_the_whole_group_even_if_it_ignores_term(tmp_path):
    script = "trap '' TERM; sleep 60 & sleep 60"
    group = procs.start("stubborn", ["sh", "-c", script], tmp_path / "log")
    deadline = time.monotonic() + 5
    while len(procs.children(group.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    kids = procs.children(group.pid)
    assert len(kids) == 2
    assert procs.memory_kib(kids[0])["rss"] > 0
    group.stop(grace=0.3)
    for pid in [group.pid, *kids]:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split(")")[1].split()[0] == "Z"
    assert group.proc.returncode == -signal.SIGKILL


@pytest.mark.nginx
@pytest.mark.skipif(shutil.which("nginx", path="/usr/sbin:/usr/bin:/usr/local/sbin") is None, reason="no nginx")
def test_generated_nginx_config_is_accepted(tmp_path):
    rows = [(b, tmp_path / f"{b.row}.sock", 10000 + i) for i, b in enumerate(backends.all_backends()) if b.default]
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx.render(rows, tmp_path, nginx_workers=1, keepalive=8))
    for sub in ("client_body", "fastcgi", "proxy", "uwsgi", "scgi"):
        (tmp_path / "tmp" / sub).mkdir(parents=True)
    exe = nginx.find_nginx()
    done = subprocess.run(
        [exe, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = conf.read_text()
    # Identical server blocks except for the pass directive.
    assert text.count("fastcgi_keep_conn on;") == 5 and text.count("fastcgi_keep_conn off;") == 4
    assert text.count("uwsgi_pass ") == 1 and text.count("proxy_pass ") == 1


def _leftovers(marker: str) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                found.append(f"{entry}: {cmdline}")
    return found


@pytest.mark.slow
@pytest.mark.nginx
@pytest.mark.timeout(400)
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_short_real_run_of_every_available_backend():
    """1 s per backend through real nginx: every backend that is installed answers and is measured."""
    # Short paths: unix socket names are limited to 107 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="bt-", dir="/tmp"))
    try:
        env = {
            **os.environ,
            "TMPDIR": str(tmp),
            "BENCH_DURATION": "1",
            "BENCH_WARMUP": "0",
            "BENCH_CONNECTIONS": "8",
            "BENCH_SYSCALLS": "1",
            "BENCH_RESULTS_DIR": str(tmp / "results"),
        }
        done = subprocess.run(
            [sys.executable, str(POOL_DIR / "bench" / "run.py")],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=380, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert not _leftovers(str(tmp)), "processes left running after the benchmark"

        data = json.loads((tmp / "results" / "latest.json").read_text())
        assert data["machine"]["nproc"] == os.cpu_count()
        rows = {r["row"]: r for r in data["rows"]}
        assert set(rows) == {b.row for b in backends.all_backends() if b.default}
        for name in ("gunicorn-http", "gunicorn-uwsgi", "flup", "flup-keepconn"):
            assert rows[name]["status"] == "ok", rows[name]
        for row in rows.values():
            assert row["status"] in ("ok", "skipped"), row
            if row["status"] == "ok":
                assert row["rps"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"]
                assert row["workers"] == 2 and row["rss_per_worker_kib"] > 1024
                assert row["backend_cpu_us_per_req"] > 0 and 0 <= row["other_busy"] <= 1
            else:
                assert row["note"]
        md = (tmp / "results" / "latest.md").read_text()
        assert {line.count("|") for line in md.splitlines() if line.startswith("|")} == {len(report.COLUMNS) + 1}
        assert "req/s" in done.stdout and "target fcgipool >= 1.1x uwsgi" in done.stdout
        assert "target fcgipool CPU/request <= 1.25x minimal-keepconn" in done.stdout
        if shutil.which("strace"):  # counted in the first round: every row that ran has a count
            assert all(r["syscalls_per_req"] > 0 for r in rows.values() if r["status"] == "ok"), rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
