"""The pool's request log: one JSON line per request, after-response work included (PHP-FPM's access.log, for
what PHP-FPM cannot see). ``fcgipool advise`` sizes a pool from it; docs/request-log.md has the format.

Off the hot path: a finished request appends one tuple to a list (about 0.1 µs); the worker formats and writes
the lines in bulk -- with one ``write()`` on an ``O_APPEND`` descriptor, so the lines of several workers never
interleave -- once a second, when 512 are waiting, and when it exits. ``reopen()`` (SIGUSR1, as after
logrotate) opens the path again at the next flush.
"""

from __future__ import annotations

import json
import os
from typing import Any

#: rows waiting before a worker writes them out even within its second
FLUSH_ROWS = 512
# time (epoch s), the method/uri/route/status prefix, answer ms, after-response ms, tasks, pid, CPU ms, RSS bytes
_LINE = '{"time":%.3f,%s,"answer_ms":%.3f,"after_ms":%.3f,"tasks":%s,"pid":%d,"cpu_ms":%.3f,"rss":%d}\n'
Row = tuple[float, str, str, str, int, float, float, Any, float, int]

__all__ = ["FLUSH_ROWS", "RequestLog", "path_only"]


def path_only(uri: str) -> str:
    """The URI without its query string (which may hold tokens, and makes every line a route of its own)."""
    cut = uri.find("?")
    return uri if cut < 0 else uri[:cut]


class RequestLog:
    """A worker's writer. ``rows`` is appended to directly by the server (one tuple per request)."""

    def __init__(self, path: str, *, log: Any = None) -> None:
        self.path = path
        self.log = log
        self.rows: list[Row] = []
        self.written = 0
        self.dropped = 0
        self._fd = -1
        self._reopen = True
        self._failing = False
        self._prefixes: dict[tuple[str, str, str, int], str] = {}
        self._pid = os.getpid()

    def reopen(self) -> None:
        """The file was rotated (SIGUSR1): open the path again before the next write. Signal-safe."""
        self._reopen = True

    def flush(self) -> None:
        rows, self.rows = self.rows, []
        if not rows:
            return
        data = "".join(self._format(r) for r in rows).encode("utf-8", "replace")
        try:
            if self._reopen or self._fd < 0:
                self._open()
            os.write(self._fd, data)
        except OSError as exc:
            self.dropped += len(rows)
            if not self._failing and self.log is not None:  # once per episode, not once a second
                self.log.error("cannot write the request log %s: %s (check the path, its permissions and the free "
                               "space); %d lines dropped so far", self.path, exc, self.dropped)  # fmt: skip
            self._failing = True
            return
        if self._failing and self.log is not None:
            self.log.warning("the request log %s is written again (%d lines were dropped)", self.path, self.dropped)
        self._failing = False
        self.written += len(rows)

    def close(self) -> None:
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._reopen = fd, False

    def _format(self, row: Row) -> str:
        start, method, uri, route, status, answer, after, tasks, cpu, rss = row
        key = (method, uri, route, status)
        prefix = self._prefixes.get(key)
        if prefix is None:
            if len(self._prefixes) > 4096:
                self._prefixes.clear()
            prefix = self._prefixes[key] = (
                f'"method":{json.dumps(method)},"uri":{json.dumps(uri)},"route":{json.dumps(route)},"status":{status}'
            )
        task_json = "[]" if not tasks else json.dumps([{"name": n, "outcome": o} for n, o in tasks])
        return _LINE % (start, prefix, answer * 1000, after * 1000, task_json, self._pid, cpu * 1000, rss)
