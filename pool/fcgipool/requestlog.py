"""The pool's request log: one JSON line per request, after-response work included (PHP-FPM's access.log, for
what PHP-FPM cannot see). ``fcgipool advise`` sizes a pool from it; docs/request-log.md has the format.

Off the hot path: a finished request appends one tuple to a list; the worker formats and writes the lines in
bulk -- with one ``write()`` on an ``O_APPEND`` descriptor, so the lines of several workers never interleave --
once a second, when 512 are waiting, and when it exits. Cost in ``make bench``: 2.6 µs per hello-world request
(32.6 -> 35.1 µs of worker CPU), two thirds of it the formatting. ``reopen()`` (SIGUSR1, as after logrotate)
opens the path again at the next flush.
"""

from __future__ import annotations

import json
import os
from typing import Any

#: rows waiting before a worker writes them out even within its second
FLUSH_ROWS = 512
# time (whole seconds, then ms), the method/uri/route/status prefix, answer ms, after-response work + pid, CPU ms, RSS
_LINE = '{"time":%s.%03d,%s,"answer_ms":%.3f,%s,"cpu_ms":%.3f,"rss":%d}\n'
# what the server appends per request (fcgipool.server): method, uri, route (or None), the status line ("200 OK"),
# after-response seconds, task outcomes (or None), start (time.time()), (answer s, CPU s), RSS bytes
Row = tuple[str, str, "str | None", "str | None", float, Any, float, tuple[float, float], int]

__all__ = ["FLUSH_ROWS", "RequestLog", "path_only"]


def path_only(uri: str) -> str:
    """The URI without its query string (which may hold tokens, and makes every line a URI of its own)."""
    cut = uri.find("?")
    return uri if cut < 0 else uri[:cut]


class RequestLog:
    """A worker's writer. ``rows`` is appended to directly by the server (one tuple per request, no formatting:
    that is done in bulk by :meth:`flush`)."""

    def __init__(self, path: str, *, keep_query: bool = False, log: Any = None) -> None:
        self.path = path
        self.keep_query = keep_query
        self.log = log
        self.rows: list[Row] = []
        self.written = 0
        self.dropped = 0
        self._fd = -1
        self._reopen = True
        self._failing = False
        self._prefixes: dict[tuple[str, str, str | None, str | None], str] = {}
        self._pid = f'"pid":{os.getpid()}'
        self._no_tasks = f'"after_ms":0,"tasks":[],{self._pid}'

    def reopen(self) -> None:
        """The file was rotated (SIGUSR1): open the path again before the next write. Signal-safe."""
        self._reopen = True

    def flush(self) -> None:
        rows, self.rows = self.rows, []
        if not rows:
            return
        data = self._format(rows).encode("utf-8", "replace")
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

    def _format(self, rows: list[Row]) -> str:
        """The lines of ``rows``: one loop with everything in locals (a call per row cost a third of it)."""
        prefixes, line, no_tasks, pid = self._prefixes, _LINE, self._no_tasks, self._pid
        whole_sec, sec_text = -1, ""
        out = []
        for method, uri, route, status, after, outcomes, start, (answer, cpu), rss in rows:
            prefix = prefixes.get((method, uri, route, status)) or self._prefix((method, uri, route, status))
            whole = int(start)
            if whole != whole_sec:  # float formatting of a 10-digit epoch costs more than the rest of the line
                whole_sec, sec_text = whole, str(whole)
            tail = no_tasks if outcomes is None else (
                f'"after_ms":{after * 1000:.3f},"tasks":'
                + json.dumps([{"name": n, "outcome": o} for n, o in outcomes]) + f",{pid}"
            )  # fmt: skip
            out.append(line % (sec_text, (start - whole) * 1000, prefix, answer * 1000, tail, cpu * 1000, rss))
        return "".join(out)

    def _prefix(self, key: tuple[str, str, str | None, str | None]) -> str:
        method, uri, route, status = key
        shown = uri if self.keep_query else path_only(uri)
        code = status[:3] if status and status[:3].isdigit() else "500"
        if len(self._prefixes) > 4096:
            self._prefixes.clear()
        prefix = self._prefixes[key] = (
            f'"method":{json.dumps(method)},"uri":{json.dumps(shown)},"route":{json.dumps(route or shown)},'
            f'"status":{code}'
        )
        return prefix
