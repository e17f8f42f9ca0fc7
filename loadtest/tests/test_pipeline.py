"""The whole `python -m loadtest` pipeline: against the stand-in stack always, against the real one when up."""

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from loadtest.tests.conftest import REPO
from loadtest.tests.reportcheck import check_report


def run_cli(*args: str, timeout: float = 110) -> subprocess.CompletedProcess:
    # a fresh interpreter: locust patches the standard library for gevent at import
    return subprocess.run([sys.executable, "-m", "loadtest", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_smoke_run_against_fake_stack(fake_stack, tmp_path):
    out = tmp_path / "report"
    proc = run_cli("--stack-file", str(fake_stack), "--out", str(out), "run", "--smoke")
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    assert "recommended settings" in proc.stdout and "--workers" in proc.stdout
    results = check_report(out)
    sc = results["scenarios"]
    # the stand-in enforces its 1 s budget exactly and delivers every mail: these must hold
    assert sc["timeout"]["lost_agrees"], sc["timeout"]
    assert sc["timeout"]["ledger_lost"] > 0
    assert sc["signup"]["no_mail_lost"] and sc["signup"]["signups_accepted"] > 0
    assert sc["lock"]["late_waits_about_hold"] and sc["lock"]["early_does_not_wait"], sc["lock"]
    exh = sc["exhaustion"]
    # an overloaded open-loop step queues: its p99 is far above the light step's
    assert exh["steps"][-1]["p99_ms"] > 3 * exh["steps"][0]["p99_ms"]
    assert exh["capacity_ok"], exh


@pytest.mark.slow
def test_sizing_resizes_and_restores_the_pool(fake_stack, tmp_path):
    out = tmp_path / "sizing"
    proc = run_cli("--stack-file", str(fake_stack), "--out", str(out), "sizing", "--workers", "2,3", "--loads",
                   "0.5", "--step-seconds", "3", "--target-rps", "10")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert [p["workers"] for p in res["points"]] == [2, 3]
    assert res["recommended_workers"] >= 2
    assert (out / "sweep.csv").is_file() and (out / "sweep_wait_vs_rate.png").is_file()
    status_url = json.loads(fake_stack.read_text())["status_url"]
    with urllib.request.urlopen(status_url + "?json", timeout=5) as resp:
        assert json.load(resp)["total processes"] == 4  # put back as it was


def test_missing_stack_file_says_what_to_do(tmp_path):
    proc = run_cli("--stack-file", str(tmp_path / "nope.json"), "run", "--smoke", timeout=60)
    assert proc.returncode == 2
    assert "make up" in proc.stderr


def test_bad_arguments_are_rejected():
    proc = run_cli("run", "--rate", "-3", timeout=60)
    assert proc.returncode == 2 and "must be > 0" in proc.stderr
    proc = run_cli("run", "--scenarios", "baseline,nope", timeout=60)
    assert proc.returncode == 2 and "unknown scenario(s) nope; choose from baseline" in proc.stderr


@pytest.mark.stack
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_smoke_run_against_running_stack(tmp_path):
    """CI smoke (<= 60 s of load): the real stack from `make up`; files exist and numbers are consistent."""
    out = tmp_path / "report"
    proc = run_cli("--out", str(out), "run", "--smoke", timeout=180)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    results = check_report(out)
    sc = results["scenarios"]
    assert sc["signup"]["no_mail_lost"], sc["signup"]
    if "timeout" in sc:
        assert sc["timeout"]["ledger_lost"] == sc["timeout"]["pool_lost"], sc["timeout"]


@pytest.mark.nginx
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_own_app_via_target_and_locustfile(tmp_path):
    """`run --target --locustfile` against an app that is not the sample app (loadtest/tests/otherapp), behind its
    own nginx + fcgipool: the same full report, the scenarios from the user's classes."""
    from loadtest.tests.otherapp.serve import running

    out = tmp_path / "report"
    with running(workers=2) as app:
        proc = run_cli("--out", str(out), "run", "--smoke", "--target", app["target"], "--locustfile",
                       str(REPO / "loadtest" / "example_locustfile.py"), "--scenarios", "Shopper",
                       "--request-log", app["request_log"], "--access-log", app["access_log"], timeout=180)
        receipts = (Path(app["dir"]) / "receipts.log").read_text().count("\n")
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    assert "recommended settings" in proc.stdout and "--workers" in proc.stdout, proc.stdout
    results = check_report(out)
    assert results["stepped"] == ["Shopper"] and results["normal"] == ["Shopper"]
    shop = results["scenarios"]["Shopper"]
    assert shop["workers"] == 2
    assert shop["service_source"].startswith("pool request log")  # exact occupancy per request
    # 5 : 3 : 2 pages, searches (30 ms) and orders (200 ms receipt after the response): ~50 ms a request
    assert 0.025 < shop["occupancy_s"] < 0.1, shop["occupancy_s"]
    names = {r["name"] for r in _csv(out / "requests.csv") if r["scenario"] == "Shopper"}
    assert names == {"/", "/search", "/orders"}
    assert (out / "Shopper_latency_vs_rate.png").stat().st_size > 1000
    orders = sum(1 for r in _csv(out / "requests.csv") if r["name"] == "/orders" and r["status"] == "202")
    assert receipts == orders > 0  # the app's own after-response work ran for every accepted order
    assert "--workers" in (out / "report.md").read_text()


def _csv(path):
    import csv

    with path.open() as fh:
        return list(csv.DictReader(fh))
