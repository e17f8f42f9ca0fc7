"""The ledger: exact per-kind counts of after-response tasks in SQLite (WAL): started, finished, failed, lost, and
with spill on, spilled (handed to the queue) and ran_in_queue (started by the queue's worker).

Every write is a single UPSERT statement in autocommit mode, so SQLite's writer lock makes concurrent
increments from many worker processes exact. Connections are opened per call: the ledger is used from
forked workers and from the arbiter (lost-task hook), and a connection must never cross a fork.
"""

from __future__ import annotations

import functools
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

EVENTS = ("started", "finished", "failed", "lost", "spilled", "ran_in_queue")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS task_counts (
    kind  TEXT NOT NULL,
    event TEXT NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (kind, event)
);
CREATE TABLE IF NOT EXISTS lost_tasks (
    id          INTEGER PRIMARY KEY,
    at          REAL NOT NULL,
    kind        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    request_uri TEXT,
    pid         INTEGER
);
CREATE TABLE IF NOT EXISTS signups (
    id        TEXT PRIMARY KEY,
    email     TEXT NOT NULL,
    at        REAL NOT NULL
);
"""


class LedgerUnavailable(RuntimeError):
    """The ledger cannot be used because its disk is full; the message says what to do about it."""


LOW_SPACE_BYTES = 1024 * 1024  # below this, an I/O error is put down to the full disk


def disk_full(exc: sqlite3.Error, directory: Path) -> str | None:
    """Why the ledger cannot be written, if the disk is full; None for any other error.

    SQLite says SQLITE_FULL only when it runs out of room in a file it already has. The ledger opens a
    connection per call, and the last one to close removes the WAL index (-shm), so on a full disk the next
    open fails earlier, with SQLITE_IOERR_SHMSIZE ("disk I/O error"): the free space tells the two apart.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    name = getattr(exc, "sqlite_errorname", None) or "SQLite error"
    if code == sqlite3.SQLITE_FULL or "disk is full" in str(exc):
        return f"database or disk is full ({name})"
    if code is not None and code & 0xFF == sqlite3.SQLITE_IOERR:
        try:
            free = shutil.disk_usage(directory).free
        except OSError:
            return None
        if free < LOW_SPACE_BYTES:
            return f"database or disk is full ({name}: {exc}; {free} bytes free)"
    return None


class Ledger:
    def __init__(self, path: Path | str, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._ready = False

    def _connect(self) -> sqlite3.Connection:
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        try:
            if not self._ready:
                # WAL: readers (GET /ledger) never block the writers (tasks); the mode is stored in the file.
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                self._ready = True
            # NORMAL is durable across application crashes in WAL mode; only an OS crash can lose the last commits.
            conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            # Close now: the exception's traceback would keep the connection (and its files) open until it is freed.
            conn.close()
            raise
        return conn

    @contextmanager
    def _open(self) -> Iterator[sqlite3.Connection]:
        """A connection for one call; a full disk becomes LedgerUnavailable, which says what to do."""
        try:
            with closing(self._connect()) as conn:
                yield conn
        except sqlite3.OperationalError as exc:
            why = disk_full(exc, self.path.parent)
            if why is None:
                raise
            raise LedgerUnavailable(
                f"ledger {self.path}: {why}: free space on {self.path.parent} (`df -h {self.path.parent}`); "
                "until then after-response tasks fail without being counted here (the pool still counts them "
                "in 'background tasks failed') and GET /ledger answers 503"
            ) from exc

    def record(self, kind: str, *events: str) -> None:
        """Count ``events`` of ``kind``, all in one statement: one write transaction however many (under spill
        load the queue's workers and the pool write hundreds a second and wait for SQLite's one writer)."""
        unknown = [e for e in events if e not in EVENTS]
        if unknown or not events:
            raise ValueError(f"unknown ledger event(s) {unknown or events!r}; expected some of {EVENTS}")
        with self._open() as conn:
            conn.execute(
                "INSERT INTO task_counts (kind, event, n) VALUES " + ", ".join(["(?, ?, 1)"] * len(events))
                + " ON CONFLICT (kind, event) DO UPDATE SET n = n + 1",
                [v for event in events for v in (kind, event)],
            )

    def record_lost(self, kind: str, reason: str, request_uri: str | None = None, pid: int | None = None) -> None:
        with self._open() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO task_counts (kind, event, n) VALUES (?, 'lost', 1) "
                "ON CONFLICT (kind, event) DO UPDATE SET n = n + 1",
                (kind,),
            )
            conn.execute(
                "INSERT INTO lost_tasks (at, kind, reason, request_uri, pid) VALUES (?, ?, ?, ?, ?)",
                (time.time(), kind, reason, request_uri, pid),
            )
            conn.execute("COMMIT")

    def record_signup(self, signup_id: str, email: str) -> None:
        with self._open() as conn:
            conn.execute("INSERT INTO signups (id, email, at) VALUES (?, ?, ?)", (signup_id, email, time.time()))

    def tracked(self, kind: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap an after-response task so the ledger sees it start and end; failures are re-raised for the pool.

        Only ``Exception`` counts as failed: the pool interrupts over-budget work with a BaseException and then
        reports the task lost through ``on_task_lost`` (sampleapp.hooks), so it is never counted twice.
        """

        return self.tracked_as(kind, fn, ("started",))

    def tracked_as(self, kind: str, fn: Callable[..., Any], start: tuple[str, ...]) -> Callable[..., Any]:
        """:meth:`tracked`, counting ``start`` (e.g. ran_in_queue and started, in one write) when it starts."""

        @functools.wraps(fn)
        def task(*args: Any, **kwargs: Any) -> Any:
            # LedgerUnavailable here fails the task before it does anything the ledger could not count.
            self.record(kind, *start)
            try:
                result = fn(*args, **kwargs)
            except LedgerUnavailable:
                raise  # recording "failed" would fail the same way
            except Exception:
                self.record(kind, "failed")
                raise
            self.record(kind, "finished")
            return result

        return task

    def summary(self) -> dict[str, Any]:
        with self._open() as conn:
            rows = conn.execute("SELECT kind, event, n FROM task_counts ORDER BY kind").fetchall()
            (signups,) = conn.execute("SELECT COUNT(*) FROM signups").fetchone()
        kinds: dict[str, dict[str, int]] = {}
        for kind, event, n in rows:
            kinds.setdefault(kind, dict.fromkeys(EVENTS, 0))[event] = n
        totals = {event: sum(counts[event] for counts in kinds.values()) for event in EVENTS}
        return {"kinds": kinds, "totals": totals, "signups": signups}

    def lost_tasks(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._open() as conn:
            rows = conn.execute(
                "SELECT at, kind, reason, request_uri, pid FROM lost_tasks ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [dict(zip(("at", "kind", "reason", "request_uri", "pid"), row, strict=True)) for row in rows]
