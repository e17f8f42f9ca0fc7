"""The after-response tasks, as module-level functions: the pool runs them, or -- with spill on (--spill-to) --
an `rq worker` imports them by name (``sampleapp.tasks.welcome_mail``) and runs them with the same arguments.

Each counts itself in the ledger it is given (its path: the queue's worker sees the same files, a shared volume
in docker) -- started, finished or failed -- and, when it runs inside an RQ job, also ``ran_in_queue``: the
ledger shows where every task ran (docs/spill.md). Arguments are plain data (paths, ids, strings, numbers), so
they pickle; the cart's late release holds a lock object and stays in the pool
(``spill=False`` in sampleapp.app).
"""

from __future__ import annotations

from typing import Any

from sampleapp.ledger import Ledger
from sampleapp.mail import send_welcome
from sampleapp.work import spend


def _in_queue() -> bool:
    try:
        from rq import get_current_job
    except ImportError:  # RQ is only needed with spill on
        return False
    return get_current_job() is not None


_LEDGERS: dict[str, Ledger] = {}  # per path: a Ledger opens a connection per call, this only skips its schema check


def _ledger(path: str) -> Ledger:
    ledger = _LEDGERS.get(path)
    if ledger is None:
        ledger = _LEDGERS[path] = Ledger(path)
    return ledger


def _run(ledger_path: str, kind: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    start = ("ran_in_queue", "started") if _in_queue() else ("started",)
    return _ledger(ledger_path).tracked_as(kind, fn, start)(*args, **kwargs)


def record_signup(ledger: str, signup_id: str, email: str) -> None:
    _run(ledger, "record_signup", _ledger(ledger).record_signup, signup_id, email)


def welcome_mail(ledger: str, host: str, port: int, timeout_s: float, sender: str, to: str, signup_id: str,
                 requested_at: float) -> float:  # fmt: skip
    return float(_run(ledger, "welcome_mail", send_welcome, host, port, timeout_s, sender, to, signup_id,
                      requested_at))  # fmt: skip


def work(ledger: str, ms: int, cpu: bool = False) -> None:
    _run(ledger, "work", spend, ms, cpu=cpu)


def cart(ledger: str, hold_ms: int) -> None:
    """The cart's after-response work once its lock is released (release=early)."""
    _run(ledger, "cart", spend, hold_ms)
