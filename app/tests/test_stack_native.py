"""The whole stack in native mode, through real nginx: `stackctl.py up` (what `make up` runs) -> requests -> down.

Uses its own var/ folder and free ports, so it runs beside a developer's `make up`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from stack_testing import free_port

ROOT = Path(__file__).resolve().parents[2]
STACKCTL = ROOT / "pool" / "stackctl.py"
MAIL_DELAY_S = 1.0
BACKGROUND_BUDGET_S = 3

pytestmark = [
    pytest.mark.nginx,
    pytest.mark.slow,
    pytest.mark.skipif(not (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx")),
                       reason="needs Debian's nginx: sudo make install-system"),
]


def stackctl(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(STACKCTL), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def pid_running(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text()), 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return False
    return True


def ensure_workers(state: dict, n: int) -> None:
    """The lock test needs a second idle worker; resize at runtime with TTIN, as operators do."""
    status_url = state["status_url"] + "?json"
    total = requests.get(status_url, timeout=5).json()["total processes"]
    pid = int(Path(state["pool_pidfile"]).read_text())
    for _ in range(n - total):
        os.kill(pid, signal.SIGTTIN)
        time.sleep(0.2)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if requests.get(status_url, timeout=5).json()["idle processes"] >= n:
            return
        time.sleep(0.2)
    pytest.fail(f"pool did not grow to {n} idle workers")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    var = tmp_path_factory.mktemp("stack-var")
    env = {
        **os.environ, "MODE": "native", "STACK_VAR": str(var),
        "PORT": str(free_port()), "MAIL_PORT": str(free_port()), "SMTP_PORT": str(free_port()),
        "REDIS_PORT": str(free_port()),  # a stack started with `make up` may hold the default
        # A slow mail server makes "after the response" unmistakable.
        "MAILSINK_DELAY_MS": str(int(MAIL_DELAY_S * 1000)),
        # A short after-response budget, so the lost-work test finishes quickly.
        "FCGIPOOL_BACKGROUND_TIMEOUT": str(BACKGROUND_BUDGET_S),
    }
    up = stackctl(env, "up")
    if up.returncode != 0:
        stackctl(env, "down")
        pytest.fail(f"stackctl up failed:\n{up.stdout}\n{up.stderr}")
    assert "mode native" in up.stdout and "ready" in up.stdout
    state = json.loads((var / "stack.json").read_text())
    ensure_workers(state, 3)
    yield {"env": env, "var": var, "state": state, "up": up}
    down = stackctl(env, "down")
    assert down.returncode == 0, down.stderr


def test_stack_json_contract(stack):
    state = stack["state"]
    assert state["mode"] == "native"
    assert state["base_url"] == f"http://127.0.0.1:{stack['env']['PORT']}"
    assert state["mail_url"].endswith(f":{stack['env']['MAIL_PORT']}/messages")
    assert state["status_url"] == state["base_url"] + "/pool-status"
    assert Path(state["pool_pidfile"]).exists() and Path(state["access_log"]).parent.is_dir()
    assert state["background_timeout"] == BACKGROUND_BUDGET_S


def test_pool_sockets_are_group_only(stack):
    for name in ("pool.sock", "status.sock"):
        mode = (stack["var"] / "run" / name).stat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660, f"{name}: {oct(stat.S_IMODE(mode))}"


def test_signup_answers_before_the_mail_is_delivered(stack):
    base, mail_url = stack["state"]["base_url"], stack["state"]["mail_url"]
    email = f"ada.{time.time_ns()}@example.com"
    t0 = time.time()
    response = requests.post(f"{base}/signup", data={"email": email}, timeout=10)
    answered = time.time()
    assert response.status_code == 202, response.text
    assert answered - t0 < MAIL_DELAY_S / 2, "the client waited for the mail"
    deadline = time.monotonic() + 20
    messages: list = []
    while not messages and time.monotonic() < deadline:
        messages = requests.get(mail_url, params={"to": email}, timeout=5).json()["messages"]
        time.sleep(0.1)
    assert len(messages) == 1
    assert messages[0]["received_at"] >= answered, "the mail must arrive after the response"
    assert messages[0]["headers"]["X-Signup-Id"] == response.json()["signup_id"]
    # The ledger counts the task (recorded when the task ends, a moment after the mail is stored).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        kinds = requests.get(f"{base}/ledger", timeout=5).json()["kinds"]
        if kinds.get("welcome_mail", {}).get("finished", 0) >= 1:
            break
        time.sleep(0.1)
    assert kinds["welcome_mail"]["finished"] >= 1 and kinds["welcome_mail"]["failed"] == 0
    assert kinds["record_signup"]["finished"] >= 1


def _cart_pair(base: str, user: str, release: str, hold_ms: int) -> tuple[float, float]:
    """First request (release mode, hold_ms); the same user's next one right after. Returns (t_first, wait_ms)."""
    t0 = time.perf_counter()
    first = requests.post(f"{base}/cart/{user}", params={"hold_ms": hold_ms, "release": release}, timeout=30)
    t_first = time.perf_counter() - t0
    assert first.status_code == 200 and "X-Lock-Wait-Ms" in first.headers
    second = requests.post(f"{base}/cart/{user}", params={"hold_ms": 0}, timeout=30)
    assert second.status_code == 200
    return t_first, float(second.headers["X-Lock-Wait-Ms"])


def test_cart_late_release_makes_the_next_request_wait(stack):
    base = stack["state"]["base_url"]
    t_first, waited = _cart_pair(base, f"late{time.time_ns()}", "late", 1500)
    assert t_first < 0.75, "the first response must not wait for its own after-response hold"
    assert 1000 <= waited <= 2500


def test_cart_early_release_does_not(stack):
    base = stack["state"]["base_url"]
    t_first, waited = _cart_pair(base, f"early{time.time_ns()}", "early", 1500)
    assert t_first < 0.75
    assert waited < 200


@pytest.mark.parametrize(("method", "path", "kwargs", "status"), [
    ("post", "/signup", {}, 400),
    ("post", "/signup", {"data": {"email": "nope"}}, 400),
    ("get", "/work?background_ms=99999999", {}, 400),
    ("get", "/work?tasks=abc", {}, 400),
    ("post", "/cart/x?release=sometime", {}, 400),
    ("get", "/does-not-exist", {}, 404),
    ("post", "/signup", {"data": {"email": "a@b.co", "pad": "x" * (2 * 1024 * 1024)}}, 413),
])
def test_bad_input_through_nginx_is_json_4xx(stack, method, path, kwargs, status):
    response = getattr(requests, method)(stack["state"]["base_url"] + path, timeout=10, **kwargs)
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_status_page_shows_finishing_workers(stack):
    base = stack["state"]["base_url"]
    client = threading.Thread(target=requests.get, args=(f"{base}/work?background_ms=2500",), kwargs={"timeout": 10})
    client.start()
    deadline = time.monotonic() + 2
    finishing = 0
    while time.monotonic() < deadline and not finishing:
        status = requests.get(f"{base}/pool-status?json", timeout=5)
        assert status.status_code == 200
        finishing = status.json()["finishing processes"]
        time.sleep(0.1)
    client.join()
    assert finishing >= 1
    assert requests.get(f"{base}/pool-ping", timeout=5).status_code == 200


def test_work_over_the_budget_is_counted_lost_in_the_ledger(stack):
    base = stack["state"]["base_url"]
    deadline = time.monotonic() + 15
    while True:  # let earlier tests' work tasks end first, so the differences below are ours alone
        before = requests.get(f"{base}/ledger", timeout=5).json()["kinds"].get("work", {})
        ended = before.get("finished", 0) + before.get("failed", 0) + before.get("lost", 0)
        if before.get("started", 0) <= ended or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    t0 = time.perf_counter()
    response = requests.get(f"{base}/work", params={"background_ms": 5000, "tasks": 2}, timeout=10)
    assert response.status_code == 200 and time.perf_counter() - t0 < 1
    deadline = time.monotonic() + BACKGROUND_BUDGET_S + 10
    work: dict = {}
    while time.monotonic() < deadline:
        body = requests.get(f"{base}/ledger?lost", timeout=5).json()
        work = body["kinds"].get("work", {})
        if work.get("lost", 0) - before.get("lost", 0) >= 2:
            break
        time.sleep(0.2)
    # The running task was interrupted by the budget, the second never started: both lost, none finished.
    assert work["lost"] - before.get("lost", 0) == 2
    assert work["started"] - before.get("started", 0) == 1
    assert work["finished"] == before.get("finished", 0)
    reasons = [t["reason"] for t in body["lost_tasks"] if t["kind"] == "work"][:2]
    assert reasons == ["timeout", "timeout"]


def test_access_log_is_json_with_upstream_timings(stack):
    base = stack["state"]["base_url"]
    requests.get(f"{base}/?marker=accesslog", timeout=5)
    time.sleep(0.2)
    lines = [json.loads(line) for line in Path(stack["state"]["access_log"]).read_text().splitlines()]
    entry = next(e for e in reversed(lines) if e["uri"] == "/?marker=accesslog")
    for key in ("time", "method", "uri", "status", "request_time", "upstream_connect_time", "upstream_header_time",
                "upstream_response_time", "upstream_status", "bytes_sent"):
        assert key in entry
    assert entry["status"] == 200 and entry["upstream_status"] == "200"


def supervisorctl(stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**stack["env"], "STACK_ROOT": str(ROOT), "STACK_VENV": str(Path(sys.executable).parent.parent),
           "NGINX_BIN": shutil.which("nginx") or "/usr/sbin/nginx"}
    ctl = Path(sys.executable).parent / "supervisorctl"
    return subprocess.run([str(ctl), "-c", str(ROOT / "pool" / "supervisord.conf"), *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_pool_down_gives_a_json_502_and_recovers(stack):
    base = stack["state"]["base_url"]
    assert supervisorctl(stack, "stop", "fcgipool").returncode == 0
    try:
        response = requests.get(f"{base}/", timeout=5)
        assert response.status_code == 502
        assert "worker pool" in response.json()["error"]
    finally:
        assert supervisorctl(stack, "start", "fcgipool").returncode == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if requests.get(f"{base}/", timeout=5).status_code == 200:
            break
        time.sleep(0.2)
    assert requests.get(f"{base}/", timeout=5).status_code == 200
    # the new arbiter has a new pid file for the load tests' TTIN/TTOU
    assert pid_running(Path(stack["state"]["pool_pidfile"]))


def test_up_again_is_idempotent_and_down_leaves_nothing(stack):
    env, var = stack["env"], stack["var"]
    again = stackctl(env, "up")
    assert again.returncode == 0 and "already running" in again.stdout
    pidfiles = [var / "run" / "supervisord.pid", var / "run" / "pool.pid", var / "nginx" / "run" / "nginx.pid"]
    assert all(pid_running(p) for p in pidfiles)
    down = stackctl(env, "down")
    assert down.returncode == 0, down.stderr
    assert not any(pid_running(p) for p in pidfiles)
    assert not (var / "stack.json").exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(stack["state"]["base_url"], timeout=2)
    # the fixture's own down is now a no-op
