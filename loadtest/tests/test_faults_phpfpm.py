"""The PHP-FPM side of the fault suite: accounting, configs and the load client without php-fpm, then (slow) the
short harness end to end against Debian's php-fpm8.2 and nginx."""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from loadtest.faults.phpfpm import accounting, stack
from loadtest.faults.phpfpm.load import Load, Result, one
from loadtest.faults.table import FaultRow

# --- $upstream_status --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "attempts"),
    [("200", 1), ("502, 502", 2), ("502, 200", 2), ("502 : 200", 2), ("502, -", 1), ("-", 0), ("", 0), (None, 0),
     ("504, 502, 200", 3)],
)
def test_upstream_attempts_counts_every_try_as_the_fcgipool_rows_do(value, attempts):
    assert accounting.upstream_attempts(value) == attempts


def _entry(rid, upstream_status, status=200, response_time=0.01):
    return {"uri": f"/app.php?id={rid}&respond_ms=5", "status": status, "upstream_status": upstream_status,
            "upstream_response_time": response_time}


def test_upstream_counts_replays_and_attempts_per_request():
    up = accounting.upstream([
        _entry("a", "200"),
        _entry("b", "502, 502", 502),
        _entry("c", "502, 200"),
        _entry("d", "-", 499, 20.0),  # one attempt, the client gave up before an answer
        _entry("e", "-", 400, None),  # never reached the upstream
        {"uri": "/app.php", "status": 200, "upstream_status": "200, 200", "upstream_response_time": 0.1},
    ])
    assert up.entries == 6
    assert up.replays == 3  # b, c and the entry without an id
    assert up.attempts_by_id == {"a": 1, "b": 2, "c": 2, "d": 1, "e": 0}
    assert up.upstream_status_by_id["b"] == "502, 502"
    assert up.status_counts == {200: 3, 400: 1, 499: 1, 502: 1}


def test_request_id_comes_from_the_query():
    assert accounting.request_id("/app.php?respond_ms=5&id=r3-17&bg_ms=20") == "r3-17"
    assert accounting.request_id("/app.php") is None
    assert accounting.request_id(None) is None


# --- the ledger and lost work ------------------------------------------------------------------------------


def _result(rid, status=200, bg_ms=20, start=0.0, end=0.02):
    return Result(rid, "POST", f"/app.php?id={rid}", start, end, status, None if status else "RemoteDisconnected",
                  bg_ms)


LEDGER = """start ok1 100 1.0
end ok1 100 1.02
start cut 101 1.0
start twice 102 1.0
end twice 102 1.1
start twice 103 1.2
end twice 103 1.3
start failed 104 1.0
end failed 104 1.1
garbage line
"""


def test_parse_ledger_counts_starts_and_ends():
    ledger = accounting.parse_ledger(LEDGER)
    assert ledger.started == Counter({"twice": 2, "ok1": 1, "cut": 1, "failed": 1})
    assert ledger.finished == Counter({"twice": 2, "ok1": 1, "failed": 1})


def test_work_owed_by_answered_requests_that_did_not_finish_is_lost_unreported():
    results = [
        _result("ok1"),
        _result("cut"),  # answered, work started, never finished (child killed)
        _result("never"),  # answered, work never started
        _result("twice"),  # answered, replayed: ran twice
        _result("failed", status=502),  # not answered: owes nothing, but its work ran
        _result("nowork", bg_ms=0),  # answered without after-response work
        _result("conn", status=None),
    ]
    work = accounting.work(results, accounting.parse_ledger(LEDGER))
    assert (work.owed, work.finished, work.lost_unreported) == (4, 2, 2)
    assert (work.started_not_finished, work.never_started) == (1, 1)
    assert work.ran_twice == 1
    assert work.ran_for_failed == 1


def test_failures_next_to_what_nginx_logged():
    up = accounting.upstream([_entry("b", "502", 502), _entry("t", "200", 200)])
    results = [_result("a"), _result("b", 502), _result("t", None), _result("x", None)]
    assert accounting.failures_vs_nginx(results, up) == Counter(
        {"502 / nginx 502": 1, "RemoteDisconnected / nginx 200": 1, "RemoteDisconnected / nginx none": 1})


def test_failures_by_kind_and_percentiles():
    results = [_result("a"), _result("b", 502), _result("c", 502), _result("d", None), _result("e", 404)]
    assert accounting.failures(results) == Counter({"502": 2, "RemoteDisconnected": 1, "404": 1})
    values = [float(v) for v in range(100, 0, -1)]
    assert accounting.percentile(values, 0.99) == 99.0
    assert accounting.percentile(values, 1.0) == 100.0
    assert accounting.percentile(iter(values), 0.0) == 1.0
    assert accounting.percentile([7.0], 0.99) == 7.0
    assert accounting.percentile([], 0.99) is None


# --- error logs --------------------------------------------------------------------------------------------

NGINX_ERRORS = """\
2026/11/26 13:50:17 [error] 14824#14824: *3 recv() failed (104: Connection reset by peer) while reading response \
header from upstream, client: 127.0.0.1, server: _, request: "POST /app.php?id=r0-161 HTTP/1.1", upstream: "x"
2026/11/26 13:50:18 [error] 14823#14823: *41 recv() failed (104: Connection reset by peer) while reading response \
header from upstream, client: 127.0.0.1, server: _, request: "POST /app.php?id=r1-324 HTTP/1.1", upstream: "x"
2026/11/26 13:52:45 [error] 16701#16701: *4 upstream prematurely closed connection while reading response header \
from upstream, client: 127.0.0.1, server: _, request: "POST /app.php?id=r2-198 HTTP/1.1"
2026/11/26 13:52:46 [notice] 16700#16700: signal process started
"""

FPM_LOG = """\
[26-Nov-2026 13:50:15] NOTICE: fpm is running, pid 14821
[26-Nov-2026 13:50:22] WARNING: [pool faults] child 14863 exited on signal 9 (SIGKILL) after 1.048003 seconds from start
[26-Nov-2026 13:50:23] WARNING: [pool faults] child 14864 exited on signal 9 (SIGKILL) after 2.077056 seconds from start
[26-Nov-2026 13:52:54] WARNING: [pool faults] child 16731, script '/work/app.php' (request: "GET /app.php?id=slowget") \
execution timed out (3.930659 sec), terminating
[26-Nov-2026 13:52:34.981074] DEBUG: pid 16463, fpm_pctl_kill_all(), line 163: [pool faults] sending signal 15 SIGTERM \
to child 16470
[26-Nov-2026 13:52:34.981126] DEBUG: pid 16463, fpm_pctl_kill_all(), line 163: [pool faults] sending signal 15 SIGTERM \
to child 16469
[26-Nov-2026 13:52:34.981140] DEBUG: pid 16463, fpm_event_loop(), line 419: event module triggered 1 events
[26-Nov-2026 13:52:34.982213] DEBUG: pid 16463, fpm_got_signal(), line 82: received SIGCHLD
"""


def test_nginx_errors_group_by_message_and_keep_errnos():
    counts = accounting.nginx_errors(NGINX_ERRORS)
    assert counts == Counter({
        "[error] recv() failed (104: Connection reset by peer) while reading response header from upstream": 2,
        "[error] upstream prematurely closed connection while reading response header from upstream": 1,
        "[notice] signal process started": 1,
    })


def test_fpm_events_group_by_message_and_keep_only_signals_of_the_debug_lines():
    counts = accounting.fpm_events(FPM_LOG)
    assert counts == Counter({
        "NOTICE: fpm is running, pid N": 1,
        "WARNING: [pool faults] child N exited on signal N (SIGKILL) after N seconds from start": 2,
        "WARNING: [pool faults] child N execution timed out (N sec), terminating": 1,
        "DEBUG: [pool faults] sending signal N SIGTERM to child N": 2,
    })


# --- configs -----------------------------------------------------------------------------------------------


def test_render_fills_placeholders_and_refuses_missing_ones():
    assert stack.render("a @@x@@ $nginx_var @@y@@", x=1, y="two") == "a 1 $nginx_var two"
    with pytest.raises(KeyError, match="y"):
        stack.render("@@x@@ @@y@@", x=1)


def test_nginx_config_variants(tmp_path):
    sock = tmp_path / "php-fpm.sock"
    keep = stack.nginx_config(stack.Settings(keep_conn=True), tmp_path, sock, 18080)
    plain = stack.nginx_config(stack.Settings(keep_conn=False), tmp_path, sock, 18080)
    for conf in (keep, plain):
        assert "listen 127.0.0.1:18080;" in conf
        assert f"server unix:{sock};" in conf
        assert "fastcgi_next_upstream error timeout;" in conf  # nginx's default: a POST is never resent
        assert "non_idempotent" not in conf
        assert '"upstream_status":"$upstream_status"' in conf
        assert f"access_log {tmp_path}/access.log faults_json;" in conf
    assert "fastcgi_keep_conn on;" in keep and "keepalive 32;" in keep
    assert "fastcgi_keep_conn on;" not in plain and "keepalive 32;" not in plain


def test_fpm_config_carries_the_fault_settings(tmp_path):
    settings = stack.Settings(children=3, max_requests=50, request_terminate_timeout="3s",
                              process_control_timeout="10s", log_level="debug")
    conf = stack.fpm_config(settings, tmp_path, tmp_path / "s.sock")
    for line in ("pm = static", "pm.max_children = 3", "pm.max_requests = 50", "request_terminate_timeout = 3s",
                 "process_control_timeout = 10s", "log_level = debug", f"listen = {tmp_path}/s.sock",
                 f"env[FAULTS_LEDGER] = {tmp_path}/ledger.txt"):
        assert line in conf
    assert stack.Settings().pool_size >= 2


def test_missing_says_what_to_install(monkeypatch):
    monkeypatch.setattr(stack.shutil, "which", lambda *a, **k: None)
    reason = stack.missing()
    assert reason is not None and "php-fpm8.2" in reason and "apt-get install -y php8.2-fpm" in reason
    with pytest.raises(stack.Unavailable, match="apt-get install"):
        stack.executables()


# --- the load client ---------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Answers app.php-style requests: 502 for every 5th id, no answer at all for every 7th, else 200."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        seq = int(accounting.request_id(self.path).split("-")[1])
        if seq % 7 == 3:
            self.close_connection = True  # no answer: the client sees the connection closed
            return
        body = b"{}\n"
        self.send_response(502 if seq % 5 == 0 else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_load_is_bounded_and_records_statuses_and_connection_errors(http_server):
    load = Load(http_server, tag="t", respond_ms=5, bg_ms=20, clients=3, pause=0, seconds=10, max_requests=60,
                timeout=5)
    results = load.start().wait()  # the clients stop by themselves at max_requests
    assert len(results) == 60  # max_requests, well before the 10 s
    assert results[-1].end - results[0].start < 5
    assert sorted(int(r.rid.split("-")[1]) for r in results) == list(range(60))
    by_seq = {int(r.rid.split("-")[1]): r for r in results}
    assert all(by_seq[s].status is None and by_seq[s].error for s in by_seq if s % 7 == 3)
    assert all(by_seq[s].status == 502 for s in by_seq if s % 5 == 0 and s % 7 != 3)
    assert sum(r.ok for r in results) == sum(1 for s in range(60) if s % 5 and s % 7 != 3)
    assert all(r.bg_ms == 20 and r.method == "POST" and r.end >= r.start for r in results)
    assert all(f"id={r.rid}&" in r.path for r in results)


def test_load_stop_ends_the_clients_early(http_server):
    load = Load(http_server, clients=2, pause=0.01, seconds=30, timeout=5).start()
    threading.Event().wait(0.3)
    load.stop()
    results = load.join()
    assert results and results[-1].end - results[0].start < 5
    assert len(results) < 20_000


def test_one_request_on_its_own_connection(http_server):
    ok = one(http_server, "x-1", "POST", "/app.php?id=x-1", {"email": "a@example.com"}, timeout=5)
    assert (ok.rid, ok.status, ok.ok, ok.bg_ms) == ("x-1", 200, True, 0)
    gone = one(http_server, "x-3", "POST", "/app.php?id=x-3", {"email": "a@example.com"}, timeout=5)
    assert gone.status is None and gone.error and not gone.ok


# --- end to end --------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_short_harness_against_php_fpm(tmp_path):
    reason = stack.missing()
    if reason:
        pytest.skip(f"the PHP-FPM fault harness needs php-fpm8.2 and nginx: {reason}")
    from loadtest.faults.phpfpm import faults, run

    rows = run(tmp_path, short=True)
    assert all(isinstance(r, FaultRow) for r in rows)
    assert len(rows) == 2 * len(faults.FAULTS)
    assert {r.server for r in rows} == {"php-fpm (keep-conn)", "php-fpm (no keep-conn)"}
    for row in rows:
        assert row.passed is None
        assert row.requests > 0 and 0 <= row.failed <= row.requests
        assert 0 <= row.replays <= row.details["access_log"]["entries"]
        assert row.lost_unreported is not None and 0 <= row.lost_unreported <= row.details["work"]["owed"]
        assert row.details["access_log"]["entries"] >= row.requests - row.failed  # nginx logged what was answered
    assert len({(r.server, r.fault) for r in rows}) == len(rows)

    def find(server: str, start: str) -> list[FaultRow]:
        return [r for r in rows if r.server == server and r.fault.startswith(start)]

    for server in ("php-fpm (keep-conn)", "php-fpm (no keep-conn)"):
        kill = find(server, "kill -9")[0]
        assert sum(n for msg, n in kill.details["php_fpm_log"].items() if "(SIGKILL)" in msg) == 3
        slow = find(server, "request past")[0]
        assert slow.expected_errors == 2  # the two 5 s requests, killed at 3 s
        assert all(s["status"] == 502 and s["sent"] >= 1 for s in slow.details["slow"].values())
        assert any("execution timed out" in msg for msg in slow.details["php_fpm_log"])
        term = find(server, "TERM")[0]
        assert term.details["work_in_flight"] >= 1
        assert term.lost_unreported >= 1  # SIGTERM, then SIGKILL: work after fastcgi_finish_request dies
        graceful = find(server, "QUIT to the master")[1]  # process_control_timeout=10s reaches php-fpm:
        assert "process_control_timeout=10s" in graceful.fault
        assert graceful.details["settings"]["process_control_timeout"] == "10s"
        assert graceful.details["master_exit_s"] > 0.2  # the master waited for the work in flight
        assert graceful.lost_unreported == 0
        recycle = find(server, "pm.max_requests")[0]
        assert recycle.details["recycles"] >= 5

    written = json.loads((tmp_path / "faults.json").read_text())
    assert len(written) == len(rows)
    assert (tmp_path / "faults.md").read_text().count("| measured |") == len(rows)
    assert (tmp_path / "machine.json").exists()
    logs = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert len(logs) == len(rows)
    assert all((tmp_path / "logs" / name / "php-fpm.log").exists() for name in logs)
    assert Path(tmp_path / "logs" / logs[0] / "access.log").stat().st_size > 0
