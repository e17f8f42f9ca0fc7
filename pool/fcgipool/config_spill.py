"""Settings of spill: after-response work handed to a durable queue (declared once; see fcgipool.config)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .config import FcgiSetting
from .validators import hook, non_negative_float

SECTION = "FastCGI pool: spill to a queue"
REASONS = ("shutdown", "saturated", "slow")  # fcgipool.spill.policy.REASONS (not imported: rq stays optional)

__all__ = ["SECTION", "parse_when"]


def _url(val: Any) -> str:
    if val is None or (isinstance(val, str) and not val.strip()):
        return ""
    if not isinstance(val, str) or urlsplit(val.strip()).scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"spill_to must be a Redis URL such as redis://127.0.0.1:6379/0, got {val!r}")
    return val.strip()


def parse_when(val: Any) -> list[str]:
    """``shutdown,saturated`` (a string) or a list -> the reasons, checked."""
    items = [p.strip().lower() for p in val.split(",")] if isinstance(val, str) else list(val or [])
    items = [i for i in items if i]
    unknown = [i for i in items if i not in REASONS]
    if unknown:
        raise ValueError(f"spill_when: unknown {unknown}; choose from {', '.join(REASONS)} (comma-separated)")
    return items


def _queue_name(val: Any) -> str:
    name = str(val or "").strip()
    if not name or any(c.isspace() for c in name):
        raise ValueError(f"spill_queue must be a queue name without spaces, got {val!r}")
    return name


def _share(val: Any) -> float:
    num = non_negative_float("spill_threshold")(val)
    if not 0 < num <= 1:
        raise ValueError(f"spill_threshold must be a share of the pool in (0, 1], got {val!r}")
    return num


class _S(FcgiSetting):
    """This module's settings: their own section of the reference."""

    abstract = True
    section = SECTION


class SpillTo(_S):
    name = "spill_to"
    cli = ["--spill-to"]
    meta = "URL"
    validator = _url
    default = ""
    desc = """\
        A Redis URL (``redis://host:6379/0``): after-response tasks that should not run in the pool
        (``spill_when``) are enqueued there as RQ jobs and run by ``rq worker`` -- on this machine or another.

        Needs RQ (``pip install rq``). A task must then be a module-level function with picklable arguments:
        ``background.add`` refuses anything else at once with a clear error (``spill=False`` keeps a task in
        the pool). When Redis does not answer within 0.25 s the task runs in the pool; the arbiter logs the
        episode once and counts it (``spill queue outages``). Empty: off. docs/spill.md.
        """


class SpillWhen(_S):
    name = "spill_when"
    cli = ["--spill-when"]
    meta = "REASONS"
    validator = parse_when
    default = ["shutdown", "saturated"]
    desc = """\
        When a task goes to the queue instead of running in the pool (comma-separated):

        ``shutdown``: tasks not yet started when a worker stops (TERM, HUP, max_requests, max_worker_memory),
        instead of being reported lost; ``saturated``: while finishing workers are at or above
        ``spill_threshold`` of the pool, or connections wait in the listen queue, so after-response work cannot
        exhaust the pool; ``slow``: a task name whose p95 over its recent runs passed ``spill_slower_than``,
        from then on.
        """


class SpillThreshold(_S):
    name = "spill_threshold"
    cli = ["--spill-threshold"]
    meta = "SHARE"
    validator = _share
    default = 0.5
    desc = """\
        ``saturated``: the share of the pool's workers busy with after-response work at which new tasks go to
        the queue (0.5: half the pool finishing). Connections waiting in the listen queue count as saturated too.
        """


class SpillSlowerThan(_S):
    name = "spill_slower_than"
    cli = ["--spill-slower-than"]
    meta = "MS"
    validator = non_negative_float("spill_slower_than")
    default = 1000.0
    desc = """\
        ``slow``: a task name whose p95 over its last 50 runs (at least 10) in a worker passes this many
        milliseconds goes to the queue from then on.
        """


class SpillQueue(_S):
    name = "spill_queue"
    cli = ["--spill-queue"]
    meta = "NAME"
    validator = _queue_name
    default = "fcgipool"
    desc = """\
        The RQ queue's name (``rq worker --url URL NAME`` runs its jobs).
        """


class OnTaskSpilled(_S):
    name = "on_task_spilled"
    validator = hook("on_task_spilled", 2)

    def on_task_spilled(server, task):
        pass

    default = staticmethod(on_task_spilled)
    desc = """\
        Called in the worker for every after-response task handed to the queue.

        ``on_task_spilled(worker, task)``: ``task`` is a ``fcgipool.spill.policy.SpilledTask`` with ``name``,
        ``reason`` (``shutdown``, ``saturated``, ``slow``), ``request_uri``, ``job_id`` and ``pid``. The task's
        own code runs later in the queue's worker. Exceptions from the hook are logged and ignored.
        """
