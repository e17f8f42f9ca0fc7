"""Pool hooks for the sample app (set in app/pool.conf.py)."""

from __future__ import annotations

from typing import Any

from sampleapp.ledger import Ledger
from sampleapp.settings import data_dir_from_env


def on_task_lost(server: Any, task: Any) -> None:
    """Record an after-response task the pool could not finish (timeout, shutdown, killed, never started).

    Runs in the worker or in the arbiter. It must never raise: a failing hook would hide the loss it reports.
    """
    try:
        # A short busy timeout: in the arbiter this call holds up process management while it waits.
        Ledger(data_dir_from_env() / "ledger.sqlite3", busy_timeout_s=5).record_lost(
            task.name, task.reason, getattr(task, "request_uri", None), getattr(task, "pid", None)
        )
    except Exception:
        log = getattr(server, "log", None)
        if log is not None:
            log.exception("could not record lost task %r (%s) in the ledger", task.name, task.reason)
        else:
            raise


class _LazyLedger:
    """The spill hook's Ledger, made on first use (the data dir comes from the environment at run time) and kept:
    it runs once per spilled task, and a fresh Ledger re-checks the schema on every call."""

    def __init__(self) -> None:
        self._ledger: Ledger | None = None

    def record(self, kind: str, event: str) -> None:
        if self._ledger is None:
            self._ledger = Ledger(data_dir_from_env() / "ledger.sqlite3", busy_timeout_s=5)
        self._ledger.record(kind, event)


_SPILL_LEDGER = _LazyLedger()


def on_task_spilled(server: Any, task: Any) -> None:
    """An after-response task handed to the spill queue (its own code counts where it then runs). Never raises."""
    try:
        _SPILL_LEDGER.record(task.name, "spilled")
    except Exception:
        log = getattr(server, "log", None)
        if log is not None:
            log.exception("could not record spilled task %r in the ledger", task.name)
