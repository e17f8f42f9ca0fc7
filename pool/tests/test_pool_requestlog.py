"""The request log: one JSON line per request with its after-response work, written in bulk, reopened on USR1.
Unit level (the writer) and through a real pool and nginx."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from fcgipool import requestlog
from fcgipool.requestlog import PyRows, RequestLog, path_only
from support import NginxServer, PoolProcess, fastcgi_site, fcgi_request, wait_for

APPS = Path(__file__).parent / "apps"


@pytest.fixture(params=["default", "python"])
def rows_impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The writer tests run with the batch the pool runs (C when built) and with the pure-Python one."""
    if request.param == "python":
        monkeypatch.setattr(requestlog, "Rows", PyRows)
    monkeypatch.setattr(requestlog, "_MS_TEXT", {})
    return "python" if requestlog.Rows is PyRows else "c"


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def own(path: Path) -> list[dict[str, Any]]:
    """The lines of the test's own requests (not PoolProcess's readiness probe, GET /)."""
    return [x for x in lines(path) if x["uri"] != "/"]


def test_rows_are_written_as_json_lines_in_one_write(tmp_path: Path, rows_impl: str) -> None:
    log = RequestLog(str(tmp_path / "r.log"))
    log.rows.append(("GET", "/work?token=1", None, "200 OK", 0.0, None, 1795700000.5, (0.0123, 0.0011), 31_000_000))
    log.rows.append(
        (
            "POST",
            "/cart/ada",
            "/cart/<user>",
            "202 Accepted",
            0.3,
            [("cart", "ok"), ('mail "x"', "lost:timeout")],
            1795700001.0,
            (0.004, 0.002),
            32_000_000,
        )
    )
    assert not (tmp_path / "r.log").exists(), "nothing is written before a flush"
    log.flush()
    first, second = lines(tmp_path / "r.log")
    assert first == {"time": 1795700000.5, "method": "GET", "uri": "/work", "route": "/work", "status": 200,
                     "answer_ms": 12.3, "after_ms": 0.0, "tasks": [], "pid": os.getpid(), "cpu_ms": 1.1,
                     "rss": 31_000_000}  # fmt: skip
    assert second["route"] == "/cart/<user>" and second["after_ms"] == 300.0 and second["status"] == 202
    assert second["tasks"] == [{"name": "cart", "outcome": "ok"}, {"name": 'mail "x"', "outcome": "lost:timeout"}]
    assert log.written == 2 and len(log.rows) == 0


def test_each_row_gets_its_own_time_request_line_times_and_rss(tmp_path: Path, rows_impl: str) -> None:
    """The formatting keeps state from row to row (the second being written, the last request line, the RSS
    text, the text of each µs value): none of it leaks into the next row -- across a second, a status or method
    change, a clock stepped back, times over 1 ms (not kept) and a time that rounds up to 1 ms."""
    log = RequestLog(str(tmp_path / "r.log"))
    for row in [
        ("GET", "/a", None, "200 OK", 0.0, None, 1795700000.9994, (0.0003124, 0.0000201), 21_000_000),
        ("GET", "/a", None, "404 Not Found", 0.0, None, 1795700000.9996, (0.0003124, 0.0000201), 21_000_000),
        ("GET", "/b", None, "404 Not Found", 0.0, None, 1795700001.0001, (0.0123456, 1.5), 22_000_000),
        ("POST", "/b", "/<x>", "404 Not Found", 0.0, None, 1795700001.25, (0.0004996, 0.0), 22_000_000),
        ("GET", "/a", None, "200 OK", 0.0, None, 1795699999.5, (0.0009996, 0.0000201), 0),
    ]:
        log.rows.append(row)
    log.flush()
    text = (tmp_path / "r.log").read_text()
    got = [(x["time"], x["method"], x["route"], x["status"], x["answer_ms"], x["cpu_ms"], x["rss"])
           for x in lines(tmp_path / "r.log")]  # fmt: skip
    assert got == [
        (1795700000.999, "GET", "/a", 200, 0.312, 0.02, 21_000_000),
        (1795700000.999, "GET", "/a", 404, 0.312, 0.02, 21_000_000),
        (1795700001.0, "GET", "/b", 404, 12.346, 1500.0, 22_000_000),
        (1795700001.25, "POST", "/<x>", 404, 0.5, 0.0, 22_000_000),
        (1795699999.5, "GET", "/a", 200, 1.0, 0.02, 0),
    ]
    # always 3 decimals, as %.3f wrote them
    assert '"time":1795700001.000,' in text and '"answer_ms":1.000,' in text and '"cpu_ms":0.000,' in text
    if rows_impl == "python":
        assert sorted(requestlog._MS_TEXT) == [0.0, 20.0, 312.0, 500.0], "only texts under 1 ms are kept (bounded)"


def test_reopen_follows_a_rotated_file(tmp_path: Path, rows_impl: str) -> None:
    path = tmp_path / "r.log"
    log = RequestLog(str(path))
    log.rows.append(("GET", "/a", None, "200 OK", 0.0, None, 1.0, (0.0, 0.0), 0))
    log.flush()
    path.rename(tmp_path / "r.log.1")  # logrotate
    log.rows.append(("GET", "/b", None, "200 OK", 0.0, None, 2.0, (0.0, 0.0), 0))
    log.flush()
    assert [x["uri"] for x in lines(tmp_path / "r.log.1")] == ["/a", "/b"], "before USR1 the old file is written"
    log.reopen()
    log.rows.append(("GET", "/c", None, "200 OK", 0.0, None, 3.0, (0.0, 0.0), 0))
    log.flush()
    assert [x["uri"] for x in lines(path)] == ["/c"]


def test_a_log_that_cannot_be_written_says_so_once_and_the_worker_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, rows_impl: str
) -> None:
    log = RequestLog(str(tmp_path / "missing-dir" / "r.log"), log=logging.getLogger("test.rl"))
    with caplog.at_level(logging.ERROR, logger="test.rl"):
        for _ in range(3):
            log.rows.append(("GET", "/a", None, "200 OK", 0.0, None, 1.0, (0.0, 0.0), 0))
            log.flush()
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 1 and "cannot write the request log" in errors[0] and "free space" in errors[0]
    assert log.dropped == 3


SHORT_WRITE = """
import os, resource, signal, sys
from fcgipool import requestlog
if sys.argv[2] == "python":
    requestlog.Rows = requestlog.PyRows
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit write() fails with EFBIG instead of killing us
log = requestlog.RequestLog(sys.argv[1])
def batch(n, uri):
    for _ in range(n):
        log.rows.append(("GET", uri, None, "200 OK", 0.0, None, 1795700000.5, (0.001, 0.001), 1000))
    log.flush()
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
batch(20, "/first")  # ~150 bytes a line: the kernel takes 1,000 bytes, then refuses
batch(5, "/refused")  # nothing fits: all dropped
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
batch(4, "/after")
print(log.written, log.dropped)
"""


def test_a_short_write_counts_the_lines_it_lost_and_only_the_cut_line_is_broken(tmp_path: Path, rows_impl: str) -> None:
    """A full disk or a file size limit ends a write part-way: the lines that reached the file whole are counted
    as written, the rest as dropped, and the next write ends the cut line first (advise skips that one line)."""
    import subprocess
    import sys

    path = tmp_path / "r.log"
    done = subprocess.run([sys.executable, "-c", SHORT_WRITE, str(path), rows_impl], capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    written, dropped = map(int, done.stdout.split())
    raw = path.read_bytes().split(b"\n")
    assert raw[-1] == b"" and len(raw[:-1]) == written + 1, raw  # the whole lines and one cut line
    whole = [json.loads(line) for line in raw[:-1] if line.endswith(b"}")]
    cut = [line for line in raw[:-1] if not line.endswith(b"}")]
    assert len(cut) == 1 and len(cut[0]) > 0 and cut[0] == raw[len(whole) - 4]
    assert [x["uri"] for x in whole] == ["/first"] * (written - 4) + ["/after"] * 4
    assert 1000 // 160 <= written - 4 <= 1000 // 140 and written + dropped == 29
    assert len(path.read_bytes()) >= 1000


def test_path_only_drops_the_query_unless_asked_to_keep_it(tmp_path: Path, rows_impl: str) -> None:
    assert path_only("/work?token=secret&x=1") == "/work"
    assert path_only("/plain") == "/plain"
    log = RequestLog(str(tmp_path / "r.log"), keep_query=True)
    log.rows.append(("GET", "/w?a=1", None, None, 0.0, None, 1.0, (0.0, 0.0), 0))
    log.flush()
    assert lines(tmp_path / "r.log")[0]["uri"] == "/w?a=1" and lines(tmp_path / "r.log")[0]["status"] == 500


# --- through a real pool -----------------------------------------------------------------------------------------


def test_the_pool_logs_each_request_with_its_after_response_work(tmp_path: Path) -> None:
    """A request, one with tasks (one fails), one whose task outlives --background-timeout: each gets its line
    once its work is done, with the route the app named, the query dropped, and the outcome of every task."""
    log_path = tmp_path / "requests.log"
    args = ["--request-log", str(log_path), "--background-timeout", "1", "--kill-grace", "1"]
    with PoolProcess("bgapp:app", workers=1, app_dir=APPS, env={"BGAPP_DIR": str(tmp_path)}, args=args) as pool:
        (pid,) = pool.worker_pids()
        fcgi_request(pool.socket_path, {"PATH_INFO": "/hello", "REQUEST_URI": "/hello?secret=1",
                                        "QUERY_STRING": "secret=1"})  # fmt: skip
        fcgi_request(pool.socket_path, {"PATH_INFO": "/tasks", "QUERY_STRING": "plan=sleep200,fail&key=rl1"})
        fcgi_request(pool.socket_path, {"PATH_INFO": "/tasks", "QUERY_STRING": "plan=sleep3000,sleep10&key=rl2"})
        entries = wait_for(lambda: own(log_path) if len(own(log_path)) >= 3 else None, 10, "three lines")
    hello, mixed, late = entries
    assert hello["uri"] == "/hello" and hello["route"] == "/hello" and hello["status"] == 200
    assert hello["tasks"] == [] and hello["after_ms"] == 0 and hello["pid"] == pid
    assert hello["answer_ms"] > 0 and hello["rss"] > 10_000_000 and abs(hello["time"] - time.time()) < 60
    assert [(t["name"], t["outcome"]) for t in mixed["tasks"]] == [("sleep200#0", "ok"), ("fail#1", "failed")]
    assert 150 <= mixed["after_ms"] < 2000, mixed
    assert [(t["name"], t["outcome"]) for t in late["tasks"]] == [
        ("sleep3000#0", "lost:timeout"),
        ("sleep10#1", "lost:timeout"),
    ]
    assert 900 <= late["after_ms"] < 2500, late


@pytest.mark.nginx
def test_through_nginx_with_routes_and_rotation_on_usr1(tmp_path: Path) -> None:
    """The app names the route (environ["fcgipool.route"]); SIGUSR1 to the arbiter makes every worker reopen."""
    log_path = tmp_path / "requests.log"
    args = ["--request-log", str(log_path)]
    env = {"BGAPP_DIR": str(tmp_path)}
    with (
        PoolProcess("bgapp:app", workers=2, app_dir=APPS, env=env, args=args) as pool,
        NginxServer(fastcgi_site(pool.bind, keep_conn=True), workers=1) as nginx,
        requests.Session() as web,
    ):
        for user in ("ada", "bob"):
            assert web.get(nginx.url(f"/user/{user}?x=1"), timeout=5).status_code == 200
        wait_for(lambda: len(own(log_path)) >= 2, 5, "the lines")
        log_path.rename(tmp_path / "requests.log.1")
        pool.signal(signal.SIGUSR1)
        time.sleep(0.5)
        assert web.get(nginx.url("/user/cy"), timeout=5).status_code == 200
        fresh = wait_for(lambda: lines(log_path) or None, 5, "a line in the reopened file")
    rotated = own(tmp_path / "requests.log.1")
    assert [(x["uri"], x["route"]) for x in rotated] == [("/user/ada", "/user/<name>"), ("/user/bob", "/user/<name>")]
    assert [(x["uri"], x["route"]) for x in fresh] == [("/user/cy", "/user/<name>")]
