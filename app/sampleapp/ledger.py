"""The ledger: exact per-kind counts of after-response tasks (started, finished, failed, lost) in SQLite (WAL).

Every write is a single UPSERT statement in autocommit mode, so SQLite's writer lock makes concurrent
increments from many worker processes exact. Connections are opened per call: the ledger is used from
forked workers and from the arbiter (lost-task hook), and a connection must never cross a fork.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

EVENTS = ("started", "finished", "failed", "lost")

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


class Ledger:
    def __init__(self, path: Path | str, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._ready = False

    def _connect(self) -> sqlite3.Connection:
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        if not self._ready:
            # WAL: readers (GET /ledger) never block the writers (tasks); the mode is stored in the file.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            self._ready = True
        # NORMAL is durable across application crashes in WAL mode; only an OS crash can lose the last commits.
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def record(self, kind: str, event: str) -> None:
        if event not in EVENTS:
            raise ValueError(f"unknown ledger event {event!r}; expected one of {EVENTS}")
        with closing(self._connect()) as conn:
            conn.execute(
                "INSERT INTO task_counts (kind, event, n) VALUES (?, ?, 1) "
                "ON CONFLICT (kind, event) DO UPDATE SET n = n + 1",
                (kind, event),
            )

    def record_lost(self, kind: str, reason: str, request_uri: str | None = None, pid: int | None = None) -> None:
        with closing(self._connect()) as conn:
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
        with closing(self._connect()) as conn:
            conn.execute("INSERT INTO signups (id, email, at) VALUES (?, ?, ?)", (signup_id, email, time.time()))

    def tracked(self, kind: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap an after-response task so the ledger sees it start and end; failures are re-raised for the pool.

        Only ``Exception`` counts as failed: the pool interrupts over-budget work with a BaseException and then
        reports the task lost through ``on_task_lost`` (sampleapp.hooks), so it is never counted twice.
        """

        @functools.wraps(fn)
        def task(*args: Any, **kwargs: Any) -> Any:
            self.record(kind, "started")
            try:
                result = fn(*args, **kwargs)
            except Exception:
                self.record(kind, "failed")
                raise
            self.record(kind, "finished")
            return result

        return task

    def summary(self) -> dict[str, Any]:
        with closing(self._connect()) as conn:
            rows = conn.execute("SELECT kind, event, n FROM task_counts ORDER BY kind").fetchall()
            (signups,) = conn.execute("SELECT COUNT(*) FROM signups").fetchone()
        kinds: dict[str, dict[str, int]] = {}
        for kind, event, n in rows:
            kinds.setdefault(kind, dict.fromkeys(EVENTS, 0))[event] = n
        totals = {event: sum(counts[event] for counts in kinds.values()) for event in EVENTS}
        return {"kinds": kinds, "totals": totals, "signups": signups}

    def lost_tasks(self, limit: int = 50) -> list[dict[str, Any]]:
        with closing(self._connect()) as conn:
            rows = conn.execute(
                "SELECT at, kind, reason, request_uri, pid FROM lost_tasks ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [dict(zip(("at", "kind", "reason", "request_uri", "pid"), row, strict=True)) for row in rows]
