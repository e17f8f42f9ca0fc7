"""make faults without a stack: the arithmetic, the load client, a row's window with a fake stack, the CLI."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from loadtest.faults import __main__ as cli
from loadtest.faults import accounting as acc
from loadtest.faults import base, suite
from loadtest.faults import load as ld
from loadtest.faults.table import FaultRow, markdown

REPO = Path(__file__).resolve().parents[2]


def res(seq: int, path: str, status: int, error: str = "") -> ld.Result:
    return ld.Result(seq, "POST" if path.startswith("/signup") else "GET", path, status, error, 0.0, 0.01)


# --- access log: replays ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "attempts"), [
    ("202", ["202"]), ("502, 502", ["502", "502"]), ("502, 200", ["502", "200"]), ("-", []), ("", []),
    (None, []), ("504 : -", ["504"]), ("502 : 200", ["502", "200"]),
])
def test_upstream_attempts(value, attempts):
    assert acc.upstream_attempts(value) == attempts
    assert acc.is_replay({"upstream_status": value}) == (len(attempts) > 1)


def test_markers_do_not_match_a_longer_tag():
    assert acc.marker_seq("/signup?fault=ab12-timeout-7", "ab12-timeout") == 7
    assert acc.marker_seq("/work?respond_ms=5000&tasks=0&fault=ab12-timeout-slow-0", "ab12-timeout") is None
    assert acc.marker_seq("/work?respond_ms=5000&tasks=0&fault=ab12-timeout-slow-0", "ab12-timeout-slow") == 0
    assert acc.marker_seq("/signup?fault=ab12-timeout-7&x=1", "ab12-timeout") == 7
    assert acc.marker_seq(None, "ab12") is None
    lines = [{"uri": "/signup?fault=t-1"}, {"uri": "/signup?fault=u-1"}, {"uri": "/"}]
    assert acc.own_lines(lines, "t") == [lines[0]]


# --- ledger accounting --------------------------------------------------------------------------------------

def test_owed_tasks_only_for_answered_requests():
    results = [res(0, "/signup?fault=t-0", 202), res(1, "/signup?fault=t-1", 502),
               res(2, "/work?background_ms=5&tasks=3&fault=t-2", 200), res(3, "/work?fault=t-3", 200),
               res(4, "/work?tasks=2&fault=t-4", 0, "ConnectionResetError: x"), res(5, "/?fault=t-5", 200)]
    assert acc.owed_tasks(results) == {"record_signup": 1, "welcome_mail": 1, "work": 4}


def test_unreported_is_per_kind_and_never_netted():
    owed = {"record_signup": 10, "welcome_mail": 10, "work": 0}
    delta = acc.ledger_delta(
        {"record_signup": {"started": 5, "finished": 5}},
        {"record_signup": {"started": 15, "finished": 14, "failed": 1},
         "welcome_mail": {"started": 10, "finished": 7, "lost": 1}, "work": {"finished": 2}})
    missing, extra, per_kind = acc.unreported(owed, delta)
    assert per_kind == {"record_signup": 0, "welcome_mail": 2, "work": -2}
    assert (missing, extra) == (2, 2)  # two extra "work" do not hide two missing welcome mails


def test_reports_for_failed_requests_are_not_counted_as_owed():
    results = [res(0, "/signup?fault=t-0", 202), res(1, "/signup?fault=t-1", 502)]
    lost = [{"at": 100.0, "kind": "welcome_mail", "reason": "killed", "request_uri": "/signup?fault=t-1"},
            {"at": 100.0, "kind": "record_signup", "reason": "killed", "request_uri": "/signup?fault=t-1"},
            {"at": 100.0, "kind": "welcome_mail", "reason": "killed", "request_uri": "/signup?fault=t-0"},
            {"at": 10.0, "kind": "welcome_mail", "reason": "killed", "request_uri": "/signup?fault=t-1"},
            {"at": 100.0, "kind": "welcome_mail", "reason": "killed", "request_uri": "/signup?fault=other-1"}]
    not_owed = acc.lost_of_unanswered(lost, ["t"], results, since=50.0)
    assert not_owed == {"welcome_mail": 1, "record_signup": 1}
    delta = {"record_signup": {"finished": 1, "lost": 1}, "welcome_mail": {"lost": 2}}
    assert acc.unreported(acc.owed_tasks(results), delta, not_owed)[:2] == (0, 0)
    assert acc.unreported(acc.owed_tasks(results), delta)[:2] == (0, 2)


def test_percentile_and_failed():
    assert acc.percentile([], 0.99) is None
    assert acc.percentile([float(i) for i in range(1, 101)], 0.99) == 99.0
    results = [res(0, "/", 200), res(1, "/", 504), res(2, "/signup", 202), res(3, "/", 0, "ConnectionRefusedError: x")]
    assert [r.seq for r in acc.failed_requests(results)] == [1, 3]
    assert acc.status_counts(results) == {"200": 1, "202": 1, "504": 1, "ConnectionRefusedError": 1}


# --- a row's window, against a fake stack --------------------------------------------------------------------

class FakeControl:
    """What Window reads: the ledger before and after, lost-task reports, the access log."""

    def __init__(self, log: Path, before: dict, after: dict, lost: list[dict]) -> None:
        self.stack = type("S", (), {"access_log": str(log), "background_timeout": 1.0})()
        self.ledgers = [before, after]
        self.lost = lost

    def settled_ledger(self, timeout: float) -> dict:
        return self.ledgers.pop(0)

    def status(self) -> dict:
        return {"background tasks failed": 0}

    def log_mark(self) -> float:
        return 0.0

    def lost_tasks(self) -> list[dict]:
        return self.lost


def window_measure(tmp_path, after: dict, lines: list[dict], lost: list[dict] | None = None) -> base.Measure:
    log = tmp_path / "access.log"
    log.write_text(json.dumps({"uri": "/old?fault=t-0", "status": 200, "upstream_status": "200, 200"}) + "\n")
    ctl = FakeControl(log, {"welcome_mail": {"started": 3, "finished": 3}}, after, lost or [])
    ctx = base.Ctx(ctl, "run", base.Profile.make(short=True), say=lambda msg: None)  # type: ignore[arg-type]
    w = base.Window(ctx, ["t"])
    with log.open("a") as fh:
        for line in lines:
            fh.write(json.dumps(line) + "\n")
    results = [res(i, f"/signup?fault=t-{i}", 202) for i in range(2)]
    return w.close(results)


def test_window_counts_only_its_own_lines_and_the_ledger_change(tmp_path):
    lines = [{"uri": "/signup?fault=t-0", "status": 202, "upstream_status": "202"},
             {"uri": "/signup?fault=t-1", "status": 202, "upstream_status": "502, 202"},
             {"uri": "/signup?fault=x-1", "status": 202, "upstream_status": "502, 202"}]
    after = {"welcome_mail": {"started": 5, "finished": 5}, "record_signup": {"started": 2, "finished": 2}}
    m = window_measure(tmp_path, after, lines)
    assert m.replays == 1 and len(m.lines) == 2
    assert m.lost_unreported == 0 and not m.failed
    row = base.row("f", "load", m, "0 of everything", base.basic_checks(m))
    assert row.passed is False and "FAILED: 1 replays (expected 0)" in row.notes


def test_window_finds_tasks_nobody_reported(tmp_path):
    after = {"welcome_mail": {"started": 5, "finished": 4}, "record_signup": {"started": 2, "finished": 2}}
    m = window_measure(tmp_path, after, [])
    assert m.lost_unreported == 1 and m.per_kind["welcome_mail"] == 1
    row = base.row("f", "load", m, "0 lost", base.basic_checks(m))
    assert row.passed is False and row.lost_unreported == 1
    assert suite.failure_lines([row]) == ["f: 1 after-response tasks unreported (expected 0)"]


def test_window_lists_lost_reasons_of_its_own_requests(tmp_path):
    after = {"welcome_mail": {"started": 5, "finished": 4, "lost": 1}, "record_signup": {"started": 2, "finished": 2}}
    lost = [{"at": 2e9, "kind": "welcome_mail", "reason": "shutdown", "request_uri": "/signup?fault=t-1"},
            {"at": 2e9, "kind": "welcome_mail", "reason": "killed", "request_uri": "/signup?fault=x-1"}]
    m = window_measure(tmp_path, after, [], lost)
    assert m.lost_reasons == {"welcome_mail:shutdown": 1} and m.lost_unreported == 0
    assert base.row("f", "load", m, "0 lost", base.basic_checks(m)).passed is True


def test_kill_allows_one_failure_per_kill():
    m = base.Measure([], [], [res(0, "/signup", 502)], 0, {}, {}, {}, 0, 0, {}, {}, {})
    assert all(ok for _, ok in base.basic_checks(m, max_failed=3))
    assert not all(ok for _, ok in base.basic_checks(m))


def test_skipped_rows_render_and_do_not_fail_the_run(tmp_path, capsys):
    rows = [base.skipped("disk", "-", "x", "needs root"),
            FaultRow("hup", "fcgipool", "l", 10, 0, 0, 0, "x", True)]
    assert "| skipped | skipped: needs root |" in markdown(rows)
    assert suite.print_summary(rows, tmp_path) == 0
    rows.append(FaultRow("kill", "fcgipool", "l", 10, 5, 0, 0, "x", False, details={"checks": {"5 failed": False}}))
    assert suite.print_summary(rows, tmp_path) == 1
    assert "kill: 5 failed" in capsys.readouterr().err


# --- the load client ----------------------------------------------------------------------------------------

class Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _go(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status = 202 if self.path.startswith("/signup") else 500 if "boom" in self.path else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = _go


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_load_is_bounded_and_marks_every_request(server):
    results = ld.Load(server, ld.signup("t"), connections=3, duration=10, max_requests=25, pause=0).start().wait()
    assert len(results) == 25 and {r.status for r in results} == {202}
    assert sorted(s for r in results if (s := acc.marker_seq(r.path, "t")) is not None) == list(range(25))
    assert [r.status for r in ld.burst(server, ld.get("/boom", "b"), 3)] == [500, 500, 500]


def test_load_records_connection_errors(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = ld.Load(f"http://127.0.0.1:{port}", ld.get("/", "t"), connections=1, max_requests=2).start().wait()
    assert [r.status for r in results] == [0, 0] and "ConnectionRefused" in results[0].error


# --- full disk (root) ---------------------------------------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount")
def test_small_disk_fills_and_gives_the_ledger_back(tmp_path):
    from loadtest.faults.disk import DiskError, SmallDisk

    data = tmp_path / "data"
    (data / "mail").mkdir(parents=True)
    (data / "mail" / "messages.jsonl").write_text("{}\n")
    # closing(): sqlite3's own context manager commits but leaves the file open, which keeps the umount busy
    with closing(sqlite3.connect(data / "ledger.sqlite3")) as conn:
        conn.execute("CREATE TABLE t (n)")
    try:
        with SmallDisk(data) as disk:
            assert disk.fill() > 0
            with pytest.raises(sqlite3.OperationalError), closing(sqlite3.connect(data / "ledger.sqlite3")) as conn:
                conn.execute("INSERT INTO t VALUES (randomblob(100000))")
            assert (data / "mail" / "messages.jsonl").read_text() == "{}\n"  # the real mail store, bound back
            disk.free()
            with closing(sqlite3.connect(data / "ledger.sqlite3", isolation_level=None)) as conn:
                conn.execute("INSERT INTO t VALUES (42)")
    except DiskError as exc:
        if "mount" in str(exc) and "umount" not in str(exc):
            pytest.skip(f"mount not permitted here: {exc}")
        raise
    assert str(data) not in Path("/proc/mounts").read_text()
    with closing(sqlite3.connect(data / "ledger.sqlite3")) as conn:
        assert conn.execute("SELECT n FROM t").fetchall() == [(42,)]  # what it recorded meanwhile came back


# --- the CLI ------------------------------------------------------------------------------------------------

def test_only_keeps_the_run_order_and_rejects_unknown_names(capsys):
    args = cli.parser().parse_args(["run", "--only", "leak,hup"])
    assert args.only == ["hup", "leak"] and not args.short
    assert cli.parser().parse_args(["run"]).only == list(suite.ROWS)
    with pytest.raises(SystemExit) as exc:
        cli.parser().parse_args(["run", "--only", "hup,nope"])
    assert exc.value.code == 2 and "unknown fault(s) nope" in capsys.readouterr().err


def test_without_a_stack_it_says_make_up(tmp_path, capsys):
    assert cli.main(["run", "--short", "--stack-file", str(tmp_path / "stack.json")]) == 2
    assert "make up" in capsys.readouterr().err


def test_stack_file_follows_stack_var(monkeypatch, tmp_path):
    monkeypatch.delenv("STACK_FILE", raising=False)
    monkeypatch.setenv("STACK_VAR", str(tmp_path))
    assert suite.stack_file() == tmp_path / "stack.json"
    monkeypatch.setenv("STACK_FILE", str(tmp_path / "x.json"))
    assert suite.stack_file() == tmp_path / "x.json"
    assert suite.stack_file("given.json") == Path("given.json")


def test_module_runs_as_a_program():
    out = subprocess.run([sys.executable, "-m", "loadtest.faults", "run", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "--short" in out.stdout and "downup" in out.stdout


def test_restart_uses_the_environment_the_stack_was_started_with(tmp_path, monkeypatch):
    from loadtest.faults.control import Control

    state = {"mode": "native", "base_url": "http://127.0.0.1:8090", "mail_url": "http://127.0.0.1:8095/messages",
             "status_url": "http://127.0.0.1:8090/pool-status", "timeout": 3.0,
             "up_env": {"FCGIPOOL_TIMEOUT": "3", "PORT": "8090", "SMTP_PORT": "2535"}}
    (tmp_path / "stack.json").write_text(json.dumps(state))
    monkeypatch.setenv("FCGIPOOL_WORKERS", "9")  # set now, not when the stack started: must not leak in
    monkeypatch.setenv("PORT", "8080")
    env, note = Control(tmp_path / "stack.json").stack_env()
    assert env["FCGIPOOL_TIMEOUT"] == "3" and "FCGIPOOL_WORKERS" not in env and env["PORT"] == "8090"
    assert env["STACK_VAR"] == str(tmp_path.resolve()) and env["MODE"] == "native" and not note
    del state["up_env"]
    (tmp_path / "stack.json").write_text(json.dumps(state))
    env, note = Control(tmp_path / "stack.json").stack_env()
    assert env["FCGIPOOL_WORKERS"] == "9" and env["PORT"] == "8090" and env["MAIL_PORT"] == "8095"
    assert "current environment" in note or "this environment" in note


def test_a_slot_without_a_pid_is_never_a_victim_and_pid_0_is_never_killed() -> None:
    """A worker just forked to replace a killed one can be listed before it wrote its pid: os.kill(0, SIGKILL)
    would kill the faults run's own process group (it once took a whole CI run down)."""
    import random

    from loadtest.faults.control import Control
    from loadtest.faults.rows_process import pick_victim

    rng = random.Random(1)
    procs = [{"pid": 0, "state": "Running"}, {"pid": "", "state": "Running"}, {"pid": 4242, "state": "Idle"}]
    assert all(pick_victim(procs, "Running", rng)["pid"] == 4242 for _ in range(20))
    assert pick_victim(procs[:2], "Running", rng) is None
    ctl = Control.__new__(Control)
    for pid in (0, -1, 1):
        with pytest.raises(ValueError, match="not a worker"):
            ctl.kill_worker(pid)
