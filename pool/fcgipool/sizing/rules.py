"""The rules that turn measured times into the pool's timeouts, shared by ``fcgipool advise`` and the load tests'
report so both say the same thing (docs/loadtest.md, "How to read the report")."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .model import budget_for_loss

__all__ = ["KILL_GRACE_S", "background_timeout", "read_timeout", "worker_timeout"]

KILL_GRACE_S = 2.0  # fcgipool's default kill_grace: SIGABRT this long after --timeout, SIGKILL as long again
MIN_TIMEOUT_S = 10
TIMEOUT_FACTOR = 3.0
BACKGROUND_LOSS = 0.001  # the after-response work a recommended budget may cut: 0.1 %
BACKGROUND_HEADROOM = 1.5
MIN_BACKGROUND_S = 1


def worker_timeout(answer_p999_s: float) -> int:
    """``--timeout``: 3 x the p99.9 answer time, at least 10 s. It limits the response phase only (like PHP-FPM's
    request_terminate_timeout); after-response work has its own budget, so it never enters here."""
    return max(MIN_TIMEOUT_S, math.ceil(answer_p999_s * TIMEOUT_FACTOR))


def background_timeout(after_s: Sequence[float]) -> int:
    """``--background-timeout``: p99.9 of the after-response times x 1.5, at least 1 s: cuts <= 0.1 % of it."""
    if not after_s:
        return MIN_BACKGROUND_S
    return max(MIN_BACKGROUND_S, math.ceil(budget_for_loss(after_s, BACKGROUND_LOSS, BACKGROUND_HEADROOM)))


def read_timeout(timeout_s: float, kill_grace_s: float = KILL_GRACE_S) -> int:
    """nginx ``fastcgi_read_timeout``: just above the pool's hard kill (``--timeout`` + 2 x kill_grace + 1 s), so
    the pool stops a slow request first (logged, its tasks reported) and nginx's 504 only catches a pool that does
    not answer at all. After-response work runs after END_REQUEST and never counts against it."""
    return math.ceil(timeout_s + 2 * kill_grace_s + 1)
