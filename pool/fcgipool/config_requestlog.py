"""Settings of the pool's request log (declared once; see fcgipool.config and fcgipool.requestlog)."""

from __future__ import annotations

from typing import Any

from .config import FcgiSetting
from .validators import boolean

__all__ = ["RequestLogPath", "RequestLogQuery"]


def _path(val: Any) -> str:
    if val is None:
        return ""
    if not isinstance(val, str):
        raise ValueError(f"request_log must be a file path, got {val!r}")
    return val.strip()


class RequestLogPath(FcgiSetting):
    name = "request_log"
    cli = ["--request-log"]
    meta = "PATH"
    validator = _path
    default = ""
    desc = """\
        Write one JSON line per request to this file: time, method, URI, route, status, answer ms,
        after-response ms, task names and outcomes, worker pid, CPU ms, RSS (docs/request-log.md). Empty: off.

        PHP-FPM's ``access.log`` with what it cannot show: the after-response work each request left behind.
        ``fcgipool advise --request-log PATH`` sizes the pool from it. Written off the hot path (each worker
        formats and appends its lines in bulk, once a second); reopened on SIGUSR1, like the error log, so
        logrotate can move it (``postrotate kill -USR1 <arbiter pid>``).
        """


class RequestLogQuery(FcgiSetting):
    name = "request_log_query"
    cli = ["--request-log-query"]
    validator = boolean("request_log_query")
    action = "store_const"
    const = True
    default = False
    desc = """\
        Keep the query string in the request log's ``uri``.

        Off by default: query strings may carry tokens, and they make every line a URI of its own; the
        ``route`` (set by the app in ``environ["fcgipool.route"]``, else the path) is what ``advise`` groups by.
        """
