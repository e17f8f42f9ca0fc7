"""Settings that recycle or stop workers that misbehave (declared once; see fcgipool.config)."""

from __future__ import annotations

from .config import FcgiSetting
from .validators import non_negative_int

__all__ = ["MaxWorkerMemory"]


class MaxWorkerMemory(FcgiSetting):
    name = "max_worker_memory"
    cli = ["--max-worker-memory"]
    meta = "MIB"
    validator = non_negative_int("max_worker_memory")
    default = 0
    desc = """\
        Recycle a worker whose resident memory (RSS) grows past this many MiB; 0 turns the check off.

        The worker checks its RSS once a second between requests (one read of ``/proc/self/statm``). Past the
        limit it finishes the request and its after-response work, passes its idle kept connections to the
        other workers and exits; the arbiter starts a fresh one -- the same graceful path as
        ``max_requests``, so nothing is lost. ``max_requests`` bounds a slow leak by count; this bounds a
        fast one by size (uWSGI's ``reload-on-rss``). Set it well above a healthy worker's RSS (the status
        page's ``memory rss``).
        """
