"""Nothing is lost silently: every after-response task that does not finish is reported by name, once.

A real fcgipool arbiter with the ``on_task_lost`` hook from ``apps/lost_hook.py`` (one JSON line per lost
task in $BGAPP_DIR/lost.log). Requests go straight to the pool's socket with a FastCGI client, and one test
goes through nginx.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from support import NginxServer, PoolProcess, fastcgi_site, fcgi_request, wait_for

APPS = Path(__file__).parent / "apps"
HOOK = str(APPS / "lost_hook.py")
pytestmark = pytest.mark.slow


def lost(directory: Path, key: str) -> list[dict[str, Any]]:
    path = directory / "lost.log"
    if not path.exists():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [e for e in entries if f"key={key}" in e["uri"]]


def marks(directory: Path, name: str, key_prefix: str) -> list[dict[str, Any]]:
    path = directory / "marks.log"
    if not path.exists():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [m for m in entries if m["mark"] == name and str(m.get("key", "")).startswith(key_prefix)]


def get(pool: PoolProcess, path: str) -> Any:
    doc, _, query = path.partition("?")
    return fcgi_request(pool.socket_path, {"PATH_INFO": doc, "QUERY_STRING": query, "REQUEST_URI": path})


def summary(entries: list[dict[str, Any]]) -> list[tuple[str, str, bool, str]]:
    return [(e["name"], e["reason"], e["started"], e["by"]) for e in entries]


@pytest.fixture(scope="module")
def outdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lost")


@pytest.fixture(scope="module")
def pool(outdir: Path) -> Iterator[PoolProcess]:
    args = ["-c", HOOK, "--background-timeout", "1", "--kill-grace", "1", "--timeout", "3",
            "--background-stop-on-error"]  # fmt: skip
    with PoolProcess("bgapp:app", workers=2, args=args, app_dir=APPS, env={"BGAPP_DIR": str(outdir)}, status=True) as p:
        yield p


def test_idle_workers_are_not_killed_after_their_last_deadline(pool: PoolProcess) -> None:
    before = pool.worker_pids()
    kills = pool.log_count("WORKER TIMEOUT")
    for _ in range(4):
        assert get(pool, "/hello").status == 200
    time.sleep(3 + 1 + 2.5)  # past --timeout + --kill-grace of those requests, plus an arbiter round
    assert pool.worker_pids() == before
    assert pool.log_count("WORKER TIMEOUT") == kills


def test_task_over_background_timeout_is_interrupted_and_reported(pool: PoolProcess, outdir: Path) -> None:
    t0 = time.monotonic()
    r = get(pool, "/tasks?plan=sleep5000,sleep10&key=soft")
    assert r.status == 200 and time.monotonic() - t0 < 0.5
    entries = wait_for(lambda: len(lost(outdir, "soft")) >= 2 and lost(outdir, "soft"), 6, "lost-task reports")
    assert summary(entries) == [
        ("sleep5000#0", "timeout", True, "FastCGIWorker"),
        ("sleep10#1", "timeout", False, "FastCGIWorker"),
    ]
    assert 0.8 < time.monotonic() - t0 < 4
    assert not marks(outdir, "task_done", "soft")
    assert "after-response task lost: sleep5000#0 (reason: timeout, was running" in pool.log_text()


def test_task_ignoring_the_soft_timeout_gets_its_worker_killed(pool: PoolProcess, outdir: Path) -> None:
    before = set(pool.worker_pids())
    r = get(pool, "/tasks?plan=stubborn,sleep10&key=stubborn")
    assert r.status == 200
    entries = wait_for(lambda: len(lost(outdir, "stubborn")) >= 2 and lost(outdir, "stubborn"), 12, "kill + report")
    assert summary(entries) == [
        ("stubborn#0", "killed", True, "PoolArbiter"),
        ("sleep10#1", "killed", False, "PoolArbiter"),
    ]
    assert marks(outdir, "stubborn_ignored_interrupt", "stubborn"), "the task should have swallowed the interrupt"
    assert "WORKER TIMEOUT" in pool.log_text()
    wait_for(lambda: len(pool.worker_pids()) == 2, 10, "a replacement worker")
    assert set(pool.worker_pids()) != before
    time.sleep(0.2)
    assert len(lost(outdir, "stubborn")) == 2, "reported exactly once"


def test_task_looping_in_c_gets_its_worker_killed(pool: PoolProcess, outdir: Path) -> None:
    r = get(pool, "/tasks?plan=busy,sleep10&key=busyc")
    assert r.status == 200
    entries = wait_for(lambda: len(lost(outdir, "busyc")) >= 2 and lost(outdir, "busyc"), 12, "kill + report")
    assert summary(entries) == [
        ("busy#0", "killed", True, "PoolArbiter"),
        ("sleep10#1", "killed", False, "PoolArbiter"),
    ]
    wait_for(lambda: len(pool.worker_pids()) == 2, 10, "a replacement worker")
    assert get(pool, "/hello").body == b"hello\n"


def test_tasks_after_a_failed_task_are_reported_not_started(pool: PoolProcess, outdir: Path) -> None:
    get(pool, "/tasks?plan=fail,sleep10,sleep10&key=stop")
    entries = wait_for(lambda: len(lost(outdir, "stop")) >= 2 and lost(outdir, "stop"), 5, "reports")
    assert summary(entries) == [
        ("sleep10#1", "not_started", False, "FastCGIWorker"),
        ("sleep10#2", "not_started", False, "FastCGIWorker"),
    ]
    assert "after-response task fail#0 failed" in pool.log_text()
    assert "RuntimeError: task stop:0 failed on purpose" in pool.log_text()


def _raw_request(pool: PoolProcess, uri: str) -> tuple[bytes, float]:
    """Send one request on a fresh connection; everything that comes back until the pool closes it, and when."""
    import socket

    from fcgipool.protocol import encode_request

    params = {"REQUEST_METHOD": "GET", "PATH_INFO": "/tasks", "QUERY_STRING": uri.split("?")[1], "REQUEST_URI": uri}
    data = b""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(15)
        sock.connect(pool.socket_path)
        t0 = time.monotonic()
        sock.sendall(encode_request(1, params))
        while chunk := sock.recv(65536):
            data += chunk
        return data, time.monotonic() - t0


def test_a_request_past_the_response_timeout_is_answered_504_and_its_tasks_reported(
    pool: PoolProcess, outdir: Path
) -> None:
    """The soft stop: the app is interrupted at --timeout (3 s), its finally blocks run, the worker answers 504
    through END_REQUEST on the request's own connection and keeps serving; the tasks it added never run."""
    import socket

    from support.fcgi_client import read_response

    pids = set(pool.worker_pids())
    data, elapsed = _raw_request(pool, "/tasks?plan=sleep10&sleep=30&key=respsoft")
    assert 2.5 < elapsed < 3.9, f"answered after {elapsed:.2f} s with --timeout 3 (the hard kill comes at 4+ s)"
    a, b = socket.socketpair()
    with a, b:
        a.sendall(data)
        a.shutdown(socket.SHUT_WR)
        r = read_response(b)
    assert r.status == 504 and r.header("Content-Type") == "application/json", r
    assert json.loads(r.body) == {"error": "the request ran longer than the pool's timeout (3 s)", "status": 504}
    assert marks(outdir, "response_finally", "respsoft"), "the app's finally block did not run"
    entries = wait_for(lambda: lost(outdir, "respsoft"), 5, "the report")
    assert summary(entries) == [("sleep10#0", "timeout", False, "FastCGIWorker")]
    assert set(pool.worker_pids()) == pids, "a soft stop must not cost the worker"
    assert "still running after timeout (3 s): interrupted, answered 504" in pool.log_text()
    status = pool.status()
    assert status["request timeouts"] >= 1 and status["request timeout kills"] == 0, status


def test_an_app_that_ignores_the_soft_stop_is_killed_and_its_tasks_reported(pool: PoolProcess, outdir: Path) -> None:
    """The hard stop: the app swallows RequestTimeout; kill_grace (1 s) later the arbiter kills the worker."""
    data, elapsed = _raw_request(pool, "/tasks?plan=sleep10&sleep=30&stubborn=1&key=resphard")
    assert data == b"", "the worker should die without answering"
    assert 3.5 < elapsed < 9
    entries = wait_for(lambda: lost(outdir, "resphard"), 5, "the report")
    assert summary(entries) == [("sleep10#0", "killed", False, "PoolArbiter")]
    wait_for(lambda: len(pool.worker_pids()) == 2, 10, "a replacement worker")
    assert "hard stop: the soft stop did not end it within kill_grace" in pool.log_text()
    assert pool.status()["request timeout kills"] >= 1


@pytest.mark.parametrize("plan, by", [("sleep8000,sleep10", "FastCGIWorker"), ("busy,sleep10", "PoolArbiter")])
def test_term_during_tasks_reports_what_cannot_finish(tmp_path: Path, plan: str, by: str) -> None:
    args = ["-c", HOOK, "--graceful-timeout", "4", "--kill-grace", "1", "--background-timeout", "30"]
    pool = PoolProcess("bgapp:app", workers=1, args=args, app_dir=APPS, env={"BGAPP_DIR": str(tmp_path)}).start()
    try:
        assert get(pool, f"/tasks?plan={plan}&key=term").status == 200
        time.sleep(0.3)
        t0 = time.monotonic()
        pool.signal(signal.SIGTERM)
        pool.wait(15)
        elapsed = time.monotonic() - t0
    finally:
        pool.stop()
    assert elapsed < 7, f"shutdown took {elapsed:.1f} s with graceful_timeout 4"
    entries = lost(tmp_path, "term")
    first = plan.split(",")[0]
    assert summary(entries) == [(f"{first}#0", "shutdown", True, by), ("sleep10#1", "shutdown", False, by)]
    pool.cleanup()


@pytest.mark.parametrize("plan, by", [("sleep8000,sleep10", "FastCGIWorker"), ("busy,sleep10", "PoolArbiter")])
def test_reload_during_tasks_reports_what_cannot_finish(tmp_path: Path, plan: str, by: str) -> None:
    """HUP: the old worker gets TERM; what cannot finish within graceful_timeout is reported as shutdown."""
    args = ["-c", HOOK, "--graceful-timeout", "3", "--kill-grace", "1", "--background-timeout", "30"]
    with PoolProcess("bgapp:app", workers=1, args=args, app_dir=APPS, env={"BGAPP_DIR": str(tmp_path)}) as pool:
        old = set(pool.worker_pids())
        assert get(pool, f"/tasks?plan={plan}&key=hupcut").status == 200
        time.sleep(0.3)
        t0 = time.monotonic()
        pool.signal(signal.SIGHUP)
        entries = wait_for(lambda: len(lost(tmp_path, "hupcut")) >= 2 and lost(tmp_path, "hupcut"), 10, "the report")
        elapsed = time.monotonic() - t0
        wait_for(lambda: pool.worker_pids() and not set(pool.worker_pids()) & old, 5, "the old worker to be gone")
    first = plan.split(",")[0]
    assert summary(entries) == [(f"{first}#0", "shutdown", True, by), ("sleep10#1", "shutdown", False, by)]
    assert elapsed < 6, f"the old worker was stopped {elapsed:.1f} s after HUP with graceful_timeout 3"


def test_term_lets_short_tasks_finish(tmp_path: Path) -> None:
    args = ["-c", HOOK, "--graceful-timeout", "5"]
    pool = PoolProcess("bgapp:app", workers=1, args=args, app_dir=APPS, env={"BGAPP_DIR": str(tmp_path)}).start()
    try:
        get(pool, "/tasks?plan=sleep1000,sleep10&key=short")
        time.sleep(0.2)
        pool.signal(signal.SIGTERM)
        pool.wait(15)
    finally:
        pool.stop()
    assert len(marks(tmp_path, "task_done", "short")) == 2
    assert lost(tmp_path, "short") == []
    pool.cleanup()


def test_reload_and_max_requests_let_tasks_finish(tmp_path: Path) -> None:
    args = ["-c", HOOK, "--graceful-timeout", "5", "--max-requests", "2"]
    pool = PoolProcess("bgapp:app", workers=1, args=args, app_dir=APPS, env={"BGAPP_DIR": str(tmp_path)}).start()
    try:
        first = set(pool.worker_pids())
        get(pool, "/tasks?plan=sleep800&key=hup")
        pool.signal(signal.SIGHUP)  # reload: the old worker gets TERM while its task runs
        wait_for(lambda: marks(tmp_path, "task_done", "hup"), 10, "the task to finish across the reload")
        wait_for(lambda: pool.worker_pids() and not set(pool.worker_pids()) & first, 10, "the old worker to exit")
        # max_requests=2: the second request recycles the worker after its task
        get(pool, "/hello")
        pid = pool.worker_pids()
        get(pool, "/tasks?plan=sleep500&key=maxreq")
        wait_for(lambda: marks(tmp_path, "task_done", "maxreq"), 10, "the task of the last request")
        wait_for(lambda: pool.worker_pids() != pid, 10, "the recycled worker to be replaced")
    finally:
        pool.stop()
    assert lost(tmp_path, "hup") == [] and lost(tmp_path, "maxreq") == []
    pool.cleanup()


@pytest.mark.nginx
def test_lost_task_through_nginx(pool: PoolProcess, outdir: Path) -> None:
    with NginxServer(fastcgi_site(pool.bind, keep_conn=True), workers=2) as nginx:
        t0 = time.monotonic()
        r = requests.get(nginx.url("/tasks?plan=sleep5000&key=viangx"), timeout=5)
        assert r.status_code == 200 and time.monotonic() - t0 < 0.5
        entries = wait_for(lambda: lost(outdir, "viangx"), 6, "the report")
        assert summary(entries) == [("sleep5000#0", "timeout", True, "FastCGIWorker")]
        assert requests.get(nginx.url("/hello"), timeout=5).status_code == 200


@pytest.mark.nginx
def test_background_timeout_and_response_timeout_are_separate_budgets(tmp_path: Path) -> None:
    """--timeout 1 limits the response phase only: a 2.5 s task finishes within --background-timeout 5."""
    args = ["-c", HOOK, "--timeout", "1", "--background-timeout", "5", "--kill-grace", "1"]
    with (
        PoolProcess("bgapp:app", workers=1, args=args, app_dir=APPS, env={"BGAPP_DIR": str(tmp_path)}) as pool,
        NginxServer(fastcgi_site(pool.bind, keep_conn=True), workers=1) as nginx,
    ):
        (pid,) = pool.worker_pids()
        r = requests.get(nginx.url("/tasks?plan=sleep2500&key=budget"), timeout=5)
        assert r.status_code == 200
        wait_for(lambda: marks(tmp_path, "task_done", "budget"), 8, "the 2.5 s task to finish")
        assert pool.worker_pids() == [pid], "the worker was replaced although its task was within budget"
        assert lost(tmp_path, "budget") == []
        assert "WORKER TIMEOUT" not in pool.log_text()
        # the response phase is still held to --timeout: the app is stopped and the pool itself answers 504
        t0 = time.monotonic()
        r = requests.get(nginx.url("/sleep?s=6"), timeout=10)
        assert r.status_code == 504 and time.monotonic() - t0 < 2.5, (r.status_code, time.monotonic() - t0)
        assert r.json()["error"] == "the request ran longer than the pool's timeout (1 s)"
        assert pool.worker_pids() == [pid], "a soft stop must not cost the worker"
        assert "WORKER TIMEOUT" not in pool.log_text()


def test_worker_killed_inside_its_slow_hook_leaves_the_rest_to_the_arbiter(tmp_path: Path) -> None:
    """At least once, never zero times: the worker's hook for the timed-out task outlasts --kill-grace, the
    arbiter kills the worker mid-hook and reports that task and the two after it (still pending) as killed."""
    args = ["-c", str(APPS / "lost_hook_slow.py"), "--background-timeout", "1", "--kill-grace", "1",
            "--timeout", "3"]  # fmt: skip
    env = {"BGAPP_DIR": str(tmp_path), "SLOW_HOOK_SECONDS": "60"}
    with PoolProcess("bgapp:app", workers=1, args=args, app_dir=APPS, env=env) as pool:
        (worker,) = pool.worker_pids()
        assert get(pool, "/tasks?plan=sleep5000,sleep10,sleep10&key=slowhook").status == 200
        names = ["sleep5000#0", "sleep10#1", "sleep10#2"]

        # the soft timeout (1 s), the worker's deadline (+1 s), SIGABRT, the reap: a few arbiter rounds
        wait_for(lambda: worker not in pool.worker_pids(), 15, "the arbiter to kill the worker stuck in its hook")
        # the arbiter reports a dead worker's pending tasks when it reaps it, before it spawns the replacement
        wait_for(lambda: len(pool.worker_pids()) == 1, 10, "a replacement worker")
        entries = lost(tmp_path, "slowhook")
        assert {e["name"] for e in entries} == set(names), f"a task never reached on_task_lost: {summary(entries)}"
        in_worker = [e for e in entries if e["by"] == "FastCGIWorker"]
        assert summary(in_worker) == [("sleep5000#0", "timeout", True, "FastCGIWorker")]
        assert in_worker[0]["process"] == worker and in_worker[0]["pid"] == worker
        assert not [e for e in entries if e.get("returned")], "the worker's hook was meant to be cut short by the kill"
        # the task in the slow hook and the ones after it were still pending in the dead worker's slot
        arbiter = [e for e in entries if e["by"] == "PoolArbiter"]
        assert [(e["name"], e["reason"], e["by"]) for e in arbiter] == [(n, "killed", "PoolArbiter") for n in names]
        # the first was running when SIGABRT unwound the worker (its slot stays Finishing, not Ending)
        assert [e["started"] for e in arbiter] == [True, False, False]
        assert {e["process"] for e in arbiter} == {pool.pid} and {e["pid"] for e in arbiter} == {worker}
        assert "WORKER TIMEOUT" in pool.log_text()
        # the pool keeps serving, and a task of a later request runs to the end
        assert get(pool, "/hello").body == b"hello\n"
        assert get(pool, "/tasks?plan=sleep10&key=afterkill").status == 200
        wait_for(lambda: marks(tmp_path, "task_done", "afterkill"), 5, "the next request's task to finish")
        assert lost(tmp_path, "afterkill") == []
        assert len(lost(tmp_path, "slowhook")) == len(entries), "reported again later"
