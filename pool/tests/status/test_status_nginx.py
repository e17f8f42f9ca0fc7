"""Status, ping, slowlog and max-children through real nginx and a real fcgipool arbiter."""

from __future__ import annotations

import contextlib
import json
import re
import statistics
import threading
import time
from pathlib import Path
from xml.etree import ElementTree

import pytest
import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from support import NginxServer, PoolProcess, fastcgi_site, wait_for
from support.nginx import FASTCGI_PARAMS
from test_status_formats import PHP_FPM_POOL_KEYS, PHP_FPM_PROC_KEYS, parse_php_fpm_text

HERE = Path(__file__).resolve().parent
pytestmark = [pytest.mark.nginx, pytest.mark.slow]


def status_locations(status_sock: str) -> str:
    """What a user puts in nginx: the status and ping paths go to the arbiter's own listener."""
    return f"""
        location = /pool-status {{
            fastcgi_pass unix:{status_sock};
{FASTCGI_PARAMS}
        }}
        location = /pool-ping {{
            fastcgi_pass unix:{status_sock};
{FASTCGI_PARAMS}
        }}
"""


def start_stack(tmp_path: Path, workers: int, *args: str, wait_path: str | None = "/"):
    tmp_path.chmod(0o755)
    status_sock = str(tmp_path / "status.sock")
    pool = PoolProcess(
        "statusapp:app",
        workers=workers,
        app_dir=HERE,
        args=["--status-listen", f"unix:{status_sock}", "--graceful-timeout", "5", *args],
        wait_path=wait_path,
    ).start()
    try:
        nginx = NginxServer(fastcgi_site(pool.bind, extra_server=status_locations(status_sock)), workers=2).start()
    except BaseException:
        pool.stop()
        raise
    return pool, nginx


@pytest.fixture
def stack(tmp_path):
    made = []

    def make(workers: int = 2, *args: str, wait_path: str | None = "/"):
        pool, nginx = start_stack(tmp_path, workers, *args, wait_path=wait_path)
        made.append((pool, nginx))
        return pool, nginx

    yield make
    for pool, nginx in made:
        nginx.stop()
        pool.stop()


def fire(url: str, n: int, timeout: float = 20.0) -> list[threading.Thread]:
    """n concurrent GETs in background threads (their results do not matter, only the load)."""

    def get():
        with contextlib.suppress(requests.RequestException):
            requests.get(url, timeout=timeout)

    threads = [threading.Thread(target=get, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def status(nginx, query: str = "json") -> dict:
    return requests.get(nginx.url(f"/pool-status?{query}"), timeout=5).json()


def test_status_answers_fast_while_every_worker_does_after_response_work(stack):
    pool, nginx = stack(2)
    threads = fire(nginx.url("/busy?s=2"), 6)
    # both workers answered and are now busy after the response; the other connections wait in the queue
    busy = wait_for(
        lambda: (s := status(nginx))["finishing processes"] == 2 and s["listen queue"] > 0 and s,
        10,
        "2 finishing processes and a listen queue",
    )
    timings, bodies = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        r = requests.get(nginx.url("/pool-status?json&full"), timeout=5)
        timings.append(time.perf_counter() - t0)
        bodies.append(r.json())
    data = bodies[-1]
    assert statistics.median(timings) < 0.050, f"status took {[f'{t * 1000:.1f} ms' for t in timings]}"
    assert data["finishing processes"] == 2 and data["active processes"] == 2 and data["idle processes"] == 0
    assert data["listen queue"] > 0 and data["listen queue len"] > 0  # unix socket: PHP-FPM would say 0
    assert data["max listen queue"] >= data["listen queue"]
    assert data["max children reached"] >= 1  # static pm counts too
    assert list(data)[: len(PHP_FPM_POOL_KEYS)] == PHP_FPM_POOL_KEYS
    procs = data["processes"]
    assert {p["state"] for p in procs} == {"Finishing"} and all(p["request uri"] == "/busy?s=2" for p in procs)
    assert all(p["pending tasks"] == ["after_response_sleep"] for p in procs)
    assert list(procs[0])[: len(PHP_FPM_PROC_KEYS)] == PHP_FPM_PROC_KEYS
    # ping answers too, while a request to the pool itself cannot be served now
    t0 = time.perf_counter()
    assert requests.get(nginx.url("/pool-ping"), timeout=5).text == "pong"
    assert time.perf_counter() - t0 < 1.0
    with pytest.raises(requests.Timeout):
        requests.get(nginx.url("/"), timeout=0.5)
    assert busy["listen queue"] > 0
    for t in threads:
        t.join(30)
    after = wait_for(lambda: (s := status(nginx))["background tasks run"] == 6 and s, 10, "all 6 tasks to run")
    assert after["accepted conn"] >= 6 and after["background tasks lost"] == 0
    assert pool.log_count(r"server reached max children setting \(2\)") == after["max children reached"]


def test_openmetrics_and_text_formats_through_nginx(stack):
    _, nginx = stack(2)
    for _ in range(3):
        requests.get(nginx.url("/busy?s=0.01"), timeout=5)
    wait_for(lambda: status(nginx)["background tasks run"] == 3, 5, "the 3 tasks to finish")
    r = requests.get(nginx.url("/pool-status?openmetrics&full"), timeout=5)
    assert r.headers["Content-Type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert families["phpfpm_accepted_connections"].samples[0].value >= 3
    assert families["phpfpm_total_processes"].samples[0].value == 2
    assert families["phpfpm_listen_queue_length"].samples[0].value > 0
    assert len(families["fcgipool_process_state"].samples) == 2
    r = requests.get(nginx.url("/pool-status?full"), timeout=5)
    assert r.headers["Content-Type"].startswith("text/plain")
    pool_fields, procs = parse_php_fpm_text(r.text)
    assert pool_fields["pool"] == "www" and pool_fields["process manager"] == "static"
    assert int(pool_fields["background tasks run"]) >= 3 and len(procs) == 2
    xml = requests.get(nginx.url("/pool-status?xml&full"), timeout=5)
    assert xml.headers["Content-Type"].startswith("text/xml")
    root = ElementTree.fromstring(xml.content)
    assert root.findtext("pool") == "www" and len(root.findall("processes/process")) == 2
    assert int(root.findtext("background-tasks-run")) >= 3
    html = requests.get(nginx.url("/pool-status?html"), timeout=5)
    assert html.headers["Content-Type"].startswith("text/html") and 'http-equiv="refresh"' in html.text
    assert requests.get(nginx.url("/pool-status"), timeout=5, headers={}).text.startswith("pool:")


def test_slow_request_traceback_names_the_app_function(stack, tmp_path):
    slowlog = tmp_path / "slow.log"
    _, nginx = stack(2, "--slowlog-timeout", "0.3", "--slowlog", str(slowlog))
    assert requests.get(nginx.url("/slow?s=1"), timeout=10).text == "slow done\n"
    text = wait_for(lambda: slowlog.exists() and slowlog.read_text(), 5, "the slowlog entry")
    assert "request: GET /slow?s=1 (response running for" in text
    assert "in slow_app_function_for_slowlog" in text and "time.sleep(seconds)" in text
    assert re.search(r"\[pool www\] pid \d+", text)
    assert status(nginx)["slow requests"] == 1
    requests.get(nginx.url("/"), timeout=5)
    assert status(nginx)["slow requests"] == 1  # fast requests are not logged
    assert text.count("[pool www]") == 1


def test_ondemand_holds_no_workers_spawns_on_demand_and_reaps_idle(stack):
    pool, nginx = stack(
        0, "--pm", "ondemand", "--pm-max-children", "2", "--pm-process-idle-timeout", "1.5", wait_path=None
    )
    time.sleep(1.0)
    assert pool.worker_pids() == []
    idle_status = status(nginx)
    assert idle_status["total processes"] == 0 and idle_status["process manager"] == "ondemand"
    t0 = time.monotonic()
    r = requests.get(nginx.url("/"), timeout=10)
    first = time.monotonic() - t0
    assert r.text == "hello\n" and len(pool.worker_pids()) == 1, pool.log_text()
    assert first < 5.0  # spawn + app import; the arbiter noticed the waiting connection
    wait_for(lambda: pool.worker_pids() == [], 8, "the idle worker to be stopped after the idle timeout")
    idle_status = status(nginx)
    assert idle_status["total processes"] == 0
    # the stopped worker passed its idle kept connection on (the arbiter parks it while no worker runs) and
    # nginx still reuses it: a request on it is demand too, or it would wait for nginx's read timeout
    assert idle_status["kept connections waiting"] >= 1
    t0 = time.monotonic()
    r = requests.get(nginx.url("/"), timeout=10)
    assert r.text == "hello\n" and time.monotonic() - t0 < 5.0
    wait_for(lambda: pool.worker_pids() == [], 8, "the idle worker to be stopped again")
    # concurrent demand: up to max children, never more
    threads = fire(nginx.url("/slow?s=1.5"), 4)
    wait_for(lambda: len(pool.worker_pids()) == 2, 8, "a second worker for concurrent requests")
    peak = max(len(pool.worker_pids()) for _ in range(10) if time.sleep(0.1) is None)
    assert peak == 2
    # 2 busy workers and 2 connections waiting: max children reached, in ondemand too
    reached = wait_for(lambda: status(nginx)["max children reached"], 5, "a max-children episode")
    for t in threads:
        t.join(20)
    final = status(nginx)
    assert final["accepted conn"] == 6
    assert reached == final["max children reached"] == 1  # one episode: logged and counted once
    assert pool.log_count(r"server reached max children setting \(2\)") == 1


def test_dynamic_keeps_spares_within_bounds_under_a_step_load(stack):
    _pool, nginx = stack(
        2,
        "--pm",
        "dynamic",
        "--pm-max-children",
        "6",
        "--pm-start-servers",
        "2",
        "--pm-min-spare-servers",
        "1",
        "--pm-max-spare-servers",
        "2",
    )
    assert status(nginx)["total processes"] == 2
    # step: 3 requests in flight for 10 s, so the samples below (up to ~8 s after the step began on a slow
    # machine) never see the step end and the idle workers it leaves
    threads = fire(nginx.url("/slow?s=10"), 3)
    wait_for(lambda: status(nginx)["active processes"] == 3, 8, "3 busy workers")
    time.sleep(2.5)  # let the pm settle (one round per second)
    samples = []
    for _ in range(10):
        s = status(nginx)
        samples.append((s["idle processes"], s["active processes"], s["total processes"]))
        time.sleep(0.2)
    assert all(1 <= idle <= 2 and total <= 6 for idle, _, total in samples), samples
    for t in threads:
        t.join(20)
    # load gone: idle workers above max spare are stopped, one a second, down to 2
    wait_for(lambda: status(nginx)["total processes"] == 2, 10, "scale down to max spare")
    assert status(nginx)["idle processes"] == 2


def test_static_pm_still_resizes_with_ttin_and_ttou(stack):
    import signal

    pool, nginx = stack(2)
    pool.signal(signal.SIGTTIN)
    wait_for(lambda: status(nginx)["total processes"] == 3, 10, "a third worker after TTIN")
    pool.signal(signal.SIGTTOU)
    wait_for(lambda: status(nginx)["total processes"] == 2, 10, "back to 2 workers after TTOU")
    assert len(pool.worker_pids()) == 2


def test_fcgipool_status_cli_reads_the_listener(stack, tmp_path):
    import subprocess
    import sys

    _, _nginx = stack(2)
    cmd = [sys.executable, "-m", "fcgipool.cli", "status", "--status-listen", f"unix:{tmp_path}/status.sock"]
    out = subprocess.run([*cmd, "--json", "--full"], capture_output=True, text=True, timeout=20, check=True).stdout
    data = json.loads(out)
    assert data["total processes"] == 2 and len(data["processes"]) == 2
    text = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=True).stdout
    assert text.startswith("pool:                 www\n")
    xml = subprocess.run([*cmd, "--xml"], capture_output=True, text=True, timeout=20, check=True).stdout
    assert ElementTree.fromstring(xml).findtext("total-processes") == "2"


def test_pending_tasks_of_a_killed_worker_count_as_lost_and_counters_survive(stack):
    import os
    import signal

    _pool, nginx = stack(1)
    for _ in range(3):
        requests.get(nginx.url("/"), timeout=5)
    assert requests.get(nginx.url("/busy?s=30"), timeout=5).status_code == 200
    before = wait_for(lambda: (s := status(nginx, "json&full"))["finishing processes"] == 1 and s, 5, "finishing")
    victim = before["processes"][0]["pid"]
    os.kill(victim, signal.SIGKILL)
    after = wait_for(
        lambda: (s := status(nginx, "json&full"))["total processes"] == 1 and s["processes"][0]["pid"] != victim and s,
        10, "a replacement worker")  # fmt: skip
    assert after["background tasks lost"] == 1 and after["finishing processes"] == 0
    assert after["accepted conn"] >= before["accepted conn"] >= 4  # the dead worker's counts are kept
    assert after["processes"][0]["requests"] == 0
