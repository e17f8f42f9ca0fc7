"""The pool's request log: one JSON line per request, after-response work included (PHP-FPM's access.log, for
what PHP-FPM cannot see). ``fcgipool advise`` sizes a pool from it; docs/request-log.md has the format.

Off the hot path: a finished request adds one row to a batch (``Rows.add``); the worker formats and writes the
lines in bulk -- with one ``write()`` on an ``O_APPEND`` descriptor, so the lines of several workers never
interleave -- once a second, when 2,048 are waiting, and when it exits. ``reopen()`` (SIGUSR1, as after logrotate)
opens the path again at the next flush.

The batch is C when it is built (``fcgipool._crequestlog.Rows``, fcgipool.speedups): in Python the log added 2.2 µs
to a 27.8 µs hello-world request in ``make bench``, ~1 µs of it building and keeping a tuple per request and 0.9
formatting (0.39 µs per row warm, bench/experiments/requestlog_format.py; docs/benchmarks.md). :class:`PyRows` is
the Python twin: the reference the C one is tested against, byte for byte.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from typing import Any

from . import scoreboard  # noqa: F401 - its C slot first: the C rows read a C slot's facts through it
from .speedups import load

#: rows waiting before a worker writes them out even within its second. A write costs ~36 µs of cold kernel path
#: before its first byte (ext4), and formatting ~10 µs before its first line: in ``make bench`` 2,048-row batches
#: cost 0.114 µs a row to format and write, 512-row ones 0.183. Memory is touched only as far as batches have filled
#: (~240 bytes a row, the row and its line): ~0.8 MiB for a worker at 2,048 requests a second or more, ~50 kB at 200.
FLUSH_ROWS = 2048
# the time's ms as text; keyed by int, looked up with the float floor (an integral float hashes as its int)
_MS3: dict[float, str] = {ms: f"{ms:03d}" for ms in range(1000)}
# answer and CPU times under this many µs keep their text (RequestLog._ms)
_CACHED_US = 1000.0
# what the server appends per request (fcgipool.server): method, uri, route (or None), the status line ("200 OK"),
# after-response seconds, task outcomes (or None), start (time.time()), (answer s, CPU s), RSS bytes
Row = tuple[str, str, "str | None", "str | None", float, Any, float, tuple[float, float], int]

__all__ = ["FLUSH_ROWS", "PyRows", "RequestLog", "path_only"]


def path_only(uri: str) -> str:
    """The URI without its query string (which may hold tokens, and makes every line a URI of its own)."""
    cut = uri.find("?")
    return uri if cut < 0 else uri[:cut]


class PyRows(list[Row]):
    """The rows waiting for a flush, in Python (``fcgipool._crequestlog.Rows`` is the C twin: same methods)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def add(self, slot: Any, method: str, uri: str, route: str | None, status: str | None, after: float,
            outcomes: Any) -> bool:  # fmt: skip
        """One request's row; ``slot`` (its scoreboard slot) gives its start, (answer, CPU) and RSS. True when
        the batch is full (flush it)."""
        self.append((method, uri, route, status, after, outcomes, slot.wall0, slot.last, slot.rss))
        return len(self) >= self.capacity

    def format(self, prefix: Callable[[str, str, str | None, str | None], str],
               tail: Callable[[float, Any], str], no_tasks: str) -> memoryview:  # fmt: skip
        """The lines of the rows, which are dropped: one loop with everything in locals (a call per row cost a
        third of it), and no float formatted per line (two thirds of the rest): the time's whole second is
        formatted once a second and its ms come from a table; answer and CPU times are rounded to whole µs, and
        the text of each µs value is kept (:func:`_ms`): a fast request's values repeat. 0.80 -> 0.39 µs per row
        in 512-row batches, 0.83 -> 0.46 with four routes mixed (bench/experiments/requestlog_format.py)."""
        ms_text, thousandths = _MS_TEXT, _MS3
        base, time_text = -math.inf, ""  # the second being written (floor of start), its text
        rss_seen: int | None = None
        rss_text = ""
        # the last request line and its prefix (under load, runs of one route are common)
        method0: str | None = None
        route0: str | None = None
        status0: str | None = None
        uri0 = line_prefix = ""
        out: list[str] = []
        append = out.append
        for method, uri, route, status, after, outcomes, start, (answer, cpu), rss in self:
            if method != method0 or uri != uri0 or route != route0 or status != status0:
                method0, uri0, route0, status0 = method, uri, route, status
                line_prefix = prefix(method, uri, route, status)
            frac = start - base
            if not 0.0 <= frac < 1.0:
                base = start // 1.0
                time_text, frac = f'{{"time":{int(base)}.', start - base
            if rss is not rss_seen:  # the scoreboard's reading: one int object for a second
                rss_seen, rss_text = rss, f',"rss":{rss}}}\n'
            a = (answer * 1e6 + 0.5) // 1.0  # µs, rounded, as a float: floor division costs less than a call
            c = (cpu * 1e6 + 0.5) // 1.0
            row_tail = no_tasks if outcomes is None else tail(after, outcomes)
            append(f"{time_text}{thousandths[frac * 1000.0 // 1.0]},{line_prefix},"
                   f'"answer_ms":{ms_text.get(a) or _ms(a)},{row_tail},"cpu_ms":{ms_text.get(c) or _ms(c)}'
                   f"{rss_text}")  # fmt: skip
        self.clear()
        return memoryview("".join(out).encode("utf-8", "replace"))


def _ms(us: float) -> str:
    """``us`` (whole µs) as ms with 3 decimals -- what ``%.3f`` of the ms gives, but for exact ties of half a ns;
    kept for values under 1 ms (at most 1000 texts, ~80 kB)."""
    text = f"{us / 1000:.3f}"  # us / 1000 is the double nearest to the 3-decimal value: printed exactly
    if 0.0 <= us < _CACHED_US:
        _MS_TEXT[us] = text
    return text


_MS_TEXT: dict[float, str] = {}  # whole µs -> ms text, see _ms
_crequestlog = load("fcgipool._crequestlog")
Rows: Callable[[int], PyRows] = _crequestlog.Rows if _crequestlog is not None else PyRows


class RequestLog:
    """A worker's writer. The server calls :attr:`add` (``Rows.add``) per request; :meth:`flush` formats and
    writes the batch."""

    def __init__(self, path: str, *, keep_query: bool = False, log: Any = None) -> None:
        self.path = path
        self.keep_query = keep_query
        self.log = log
        self.rows = Rows(FLUSH_ROWS)
        self.add = self.rows.add  # one attribute lookup less per request
        self.written = 0
        self.dropped = 0
        self._fd = -1
        self._reopen = True
        self._failing = False
        self._torn = False
        self._prefixes: dict[tuple[str, str, str | None, str | None], str] = {}
        self._pid = f'"pid":{os.getpid()}'
        self._no_tasks = f'"after_ms":0,"tasks":[],{self._pid}'

    def reopen(self) -> None:
        """The file was rotated (SIGUSR1): open the path again before the next write. Signal-safe."""
        self._reopen = True

    def flush(self) -> None:
        count = len(self.rows)
        if not count:
            return
        lines = self.rows.format(self._prefix, self._tail, self._no_tasks)  # the C rows' own buffer: no copy
        try:
            self._write(lines, count)
        finally:
            lines.release()  # the rows format the next batch into the same buffer

    def _write(self, lines: memoryview, count: int) -> None:
        data: bytes | memoryview = lines
        done = skip = 0
        try:
            if self._reopen or self._fd < 0:
                self._open()
            if self._torn:  # the last write stopped inside a line: end that line, so that only it is lost
                data, skip = b"\n" + data, 1
            while done < len(data):  # a short write (a full disk, a file size limit) goes on until the kernel refuses
                done += os.write(self._fd, data[done:] if done else data)
        except OSError as exc:
            whole = bytes(data[skip:done]).count(b"\n")  # the lines that reached the file whole
            self._torn = data[done - 1] != 10 if done else self._torn
            self.written += whole
            self.dropped += count - whole
            if not self._failing and self.log is not None:  # once per episode, not once a second
                self.log.error("cannot write the request log %s: %s (check the path, its permissions and the free "
                               "space); %d lines dropped so far", self.path, exc, self.dropped)  # fmt: skip
            self._failing = True
            return
        self._torn = False
        if self._failing and self.log is not None:
            self.log.warning("the request log %s is written again (%d lines were dropped)", self.path, self.dropped)
        self._failing = False
        self.written += count

    def close(self) -> None:
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._reopen, self._torn = fd, False, False  # a new file starts on a line of its own

    def _tail(self, after: float, outcomes: Any) -> str:
        tasks = json.dumps([{"name": n, "outcome": o} for n, o in outcomes])
        return f'"after_ms":{after * 1000:.3f},"tasks":{tasks},{self._pid}'

    def _prefix(self, method: str, uri: str, route: str | None, status: str | None) -> str:
        key = (method, uri, route, status)
        prefix = self._prefixes.get(key)
        if prefix is not None:
            return prefix
        shown = uri if self.keep_query else path_only(uri)
        code = status[:3] if status and status[:3].isdigit() else "500"
        if len(self._prefixes) > 4096:
            self._prefixes.clear()
        prefix = self._prefixes[key] = (
            f'"method":{json.dumps(method)},"uri":{json.dumps(shown)},"route":{json.dumps(route or shown)},'
            f'"status":{code}'
        )
        return prefix
