"""What the fault suite (make faults) needs from the app: a full disk under the ledger answered clearly, a
leak on request, and a response phase long enough to pass the pool's --timeout."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sampleapp import ledger as ledger_mod
from sampleapp import params, work
from sampleapp.ledger import Ledger, LedgerUnavailable
from sampleapp.settings import Settings
from stack_testing import NO_SPILL, free_port, make_app


def genuine_disk_full() -> sqlite3.OperationalError:
    """A real SQLITE_FULL from SQLite (a database capped at its current size), not a hand-made one."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE a (x)")
    conn.execute("PRAGMA max_page_count = 2")
    try:
        conn.execute("INSERT INTO a VALUES (randomblob(20000))")
    except sqlite3.OperationalError as exc:
        return exc
    raise AssertionError("SQLite accepted a row larger than max_page_count allows")


def open_fds_on(path: Path) -> int:
    return sum(1 for fd in Path("/proc/self/fd").iterdir() if os.path.realpath(fd).startswith(str(path)))


@pytest.fixture
def full_disk(monkeypatch):
    """Every ledger connection fails the way a full disk makes it fail."""
    exc = genuine_disk_full()

    def connect(*args, **kwargs):
        raise exc

    monkeypatch.setattr(ledger_mod.sqlite3, "connect", connect)
    return exc


def test_full_disk_is_ledger_unavailable_with_what_to_do(tmp_path, full_disk):
    ledger = Ledger(tmp_path / "l.sqlite3")
    with pytest.raises(LedgerUnavailable, match="database or disk is full") as info:
        ledger.record("work", "started")
    assert f"free space on {tmp_path}" in str(info.value) and "df -h" in str(info.value)
    assert info.value.__cause__ is full_disk


def test_other_sqlite_errors_are_not_called_a_full_disk(tmp_path, monkeypatch):
    def connect(*args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(ledger_mod.sqlite3, "connect", connect)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        Ledger(tmp_path / "l.sqlite3").summary()


def test_io_error_counts_as_full_only_when_the_disk_is(tmp_path, monkeypatch):
    # What a full disk really gives with per-call connections: the WAL index (-shm) cannot be created.
    exc = sqlite3.OperationalError("disk I/O error")
    exc.sqlite_errorcode = 4874  # type: ignore[attr-defined]  # SQLITE_IOERR_SHMSIZE
    exc.sqlite_errorname = "SQLITE_IOERR_SHMSIZE"  # type: ignore[attr-defined]
    free = {"bytes": 0}
    monkeypatch.setattr(ledger_mod.shutil, "disk_usage", lambda d: type("U", (), {"free": free["bytes"]})())
    assert "database or disk is full" in (ledger_mod.disk_full(exc, tmp_path) or "")
    free["bytes"] = 50 * 1024 * 1024
    assert ledger_mod.disk_full(exc, tmp_path) is None


def test_a_failed_connect_leaves_no_file_open(tmp_path, monkeypatch):
    # A connection left to the garbage collector keeps the disk busy (make faults could not unmount it).
    path = tmp_path / "l.sqlite3"
    Ledger(path).summary()
    real_connect = sqlite3.connect

    class Failing(sqlite3.Connection):
        def execute(self, sql, *args):  # type: ignore[override]
            if sql.startswith("PRAGMA synchronous"):
                raise genuine_disk_full()
            return super().execute(sql, *args)

    monkeypatch.setattr(ledger_mod.sqlite3, "connect", lambda *a, **k: real_connect(*a, factory=Failing, **k))
    with pytest.raises(LedgerUnavailable) as info:
        Ledger(path).record("work", "started")
    assert open_fds_on(path) == 0, "the connection is still open"
    del info


def test_ledger_endpoint_answers_503_json_on_a_full_disk(tmp_path, full_disk):
    client = make_app(Settings(data_dir=tmp_path / "data", smtp_port=free_port())).test_client()
    response = client.get("/ledger")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == 503 and "database or disk is full" in body["error"]
    assert response.headers["Retry-After"]


def test_signup_is_still_accepted_on_a_full_disk(tmp_path, full_disk):
    client = make_app(Settings(data_dir=tmp_path / "data", smtp_port=free_port(), smtp_timeout_s=1)).test_client()
    assert client.post("/signup", data={"email": "ada@example.com"}).status_code == 202
    assert client.get("/").status_code == 200


def test_tracked_task_does_not_run_when_its_start_cannot_be_recorded(tmp_path, full_disk):
    ran = []
    task = Ledger(tmp_path / "l.sqlite3").tracked("work", lambda: ran.append(1))
    with pytest.raises(LedgerUnavailable):
        task()
    assert ran == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a tmpfs")
def test_a_real_full_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mount not permitted here")
    try:
        ledger = Ledger(disk / "l.sqlite3")
        ledger.record("work", "started")
        fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        os.close(fd)
        with pytest.raises(LedgerUnavailable, match="database or disk is full"):
            ledger.record("work", "finished")
        with pytest.raises(LedgerUnavailable):
            ledger.summary()
        (disk / "filler").unlink()
        ledger.record("work", "finished")
        assert ledger.summary()["kinds"]["work"] == {"started": 1, "finished": 1, "failed": 0, "lost": 0, **NO_SPILL}
    finally:
        busy = subprocess.run(["umount", str(disk)], capture_output=True).returncode
        if busy:
            subprocess.run(["umount", "-l", str(disk)])
        assert not busy, "the ledger kept a file open on the disk"


def test_leak_kb_keeps_memory_in_the_worker(client):
    before = sum(len(b) for b in work.LEAKED)
    try:
        response = client.get("/work?leak_kb=1024&tasks=0")
        assert response.status_code == 200
        assert response.get_json()["leaked_kb"] == before // 1024 + 1024
        assert sum(len(b) for b in work.LEAKED) == before + 1024 * 1024
    finally:
        work.LEAKED.clear()


def test_leak_rss_grows() -> None:
    """In a fresh interpreter: in the test process freed memory from earlier tests can absorb the leak."""
    code = (
        "from pathlib import Path\n"
        "from sampleapp import work\n"
        "def rss(): return int(Path('/proc/self/status').read_text().split('VmRSS:')[1].split()[0])\n"
        "start = rss(); work.leak(4096); print(rss() - start)\n"
    )
    app_dir = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(app_dir)}, check=True)  # fmt: skip
    assert int(out.stdout) >= 3500, f"the leaked bytes are not resident: RSS grew {out.stdout.strip()} KiB"


@pytest.mark.parametrize(("query", "field"), [("leak_kb=4097", "leak_kb"), ("leak_kb=-1", "leak_kb"),
                                              ("respond_ms=60001", "respond_ms"), ("lost=0", None)])
def test_new_bounds(client, query, field):
    url = "/ledger?" + query if query.startswith("lost") else "/work?" + query
    response = client.get(url)
    assert response.status_code == 400
    if field:
        assert response.get_json()["field"] == field


def test_respond_ms_reaches_past_the_default_pool_timeout():
    assert params.RESPOND_MS.high == 60_000
    assert params.RESPOND_MS.parse({"respond_ms": "32000"}, "respond_ms") == 32_000


def test_ledger_lost_takes_a_limit(client, settings, monkeypatch):
    from fcgipool.lost import LostTask
    from sampleapp.hooks import on_task_lost

    monkeypatch.setenv("SAMPLEAPP_DATA_DIR", str(settings.data_dir))
    for i in range(3):
        on_task_lost(None, LostTask("work", "killed", f"/work?fault=x-{i}", pid=1))
    assert len(client.get("/ledger?lost=2").get_json()["lost_tasks"]) == 2
    assert len(client.get("/ledger?lost").get_json()["lost_tasks"]) == 3
