"""Reading what ``fcgipool advise`` sizes from: the pool's request log and, optionally, nginx's JSON access log.

Both are read line by line; a line that is not what it should be is skipped and counted (with the first few
reasons and line numbers), so one truncated line after a crash does not stop the advice, while a file that is
not a request log at all gives a clear error. The request log's ``time`` is when a worker *began* the request,
after any wait in the listen queue; nginx's ``msec - request_time`` is when the request *arrived*, so the
access log, where given, supplies the arrival times and the waits that were actually measured.
"""

from __future__ import annotations

import glob
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["AccessLine", "LogError", "ReadResult", "Request", "match_waits", "read_access_logs", "read_request_logs"]

MAX_REASONS = 5
MATCH_TOLERANCE_S = 0.05  # nginx's upstream end and the pool's END_REQUEST, same clock, ~1 ms apart on one host


class LogError(Exception):
    """A log that cannot be used at all (missing, empty, not this format), with what to do about it."""


@dataclass(frozen=True)
class Request:
    """One request-log line (times in seconds)."""

    time: float  # when a worker began it (epoch)
    method: str
    uri: str
    route: str
    status: int
    answer_s: float
    after_s: float
    tasks: tuple[tuple[str, str], ...]  # (name, outcome)
    pid: int
    rss: int

    @property
    def occupancy_s(self) -> float:
        """How long the request held its worker: the answer plus the after-response work."""
        return self.answer_s + self.after_s


@dataclass(frozen=True)
class AccessLine:
    """One nginx access-log line that reached the pool (upstream timings present)."""

    arrival: float  # msec - request_time: when nginx read the request
    end: float  # msec
    method: str
    path: str  # request_uri without the query
    status: int
    upstream_s: float  # upstream_response_time: wait for a worker + answer, as nginx saw it


@dataclass
class ReadResult:
    """Lines read, lines skipped and why."""

    items: list = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    lines: int = 0
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)

    def skip(self, path: str, number: int, why: str) -> None:
        self.skipped += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(f"{path}:{number}: {why}")


def expand(patterns: Sequence[str], what: str) -> list[str]:
    """Paths and globs to files; a pattern that matches nothing is an error (a typo must not look like 'no
    traffic')."""
    files: list[str] = []
    for pattern in patterns:
        found = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not found:
            raise LogError(f"{what} {pattern!r} matches no file: check the path (quote globs so the shell keeps them)")
        for path in found:
            if not os.path.isfile(path):
                raise LogError(f"{what} {path} does not exist or is not a file: check the path"
                               + (" (the pool writes it only with --request-log PATH)" if "request" in what else ""))
            files.append(path)
    return files


def _lines(paths: Iterable[str], what: str) -> Iterable[tuple[str, int, str]]:
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for number, line in enumerate(f, 1):
                    if line.strip():
                        yield path, number, line
        except OSError as exc:
            raise LogError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc


def _num(raw: dict, key: str) -> float:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{key} is {value!r}, not a number >= 0")
    return float(value)


def parse_request(raw: object) -> Request:
    """A request-log line's JSON object as a :class:`Request`; ValueError/KeyError/TypeError names the problem."""
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    tasks = raw.get("tasks") or []
    if not isinstance(tasks, list):
        raise ValueError("tasks is not a list")
    uri = str(raw.get("uri", ""))
    return Request(
        time=_num(raw, "time"),
        method=str(raw.get("method", "")),
        uri=uri,
        route=str(raw.get("route") or uri),
        status=int(raw.get("status", 0)),
        answer_s=_num(raw, "answer_ms") / 1000,
        after_s=_num(raw, "after_ms") / 1000,
        tasks=tuple((str(t.get("name", "")), str(t.get("outcome", ""))) for t in tasks if isinstance(t, dict)),
        pid=int(raw.get("pid", 0)),
        rss=int(raw.get("rss", 0) or 0),
    )


def read_request_logs(patterns: Sequence[str]) -> ReadResult:
    """Every usable line of the request logs (paths or globs), sorted by time."""
    files = expand(patterns, "request log")
    out = ReadResult(files=files)
    for path, number, line in _lines(files, "request log"):
        out.lines += 1
        try:
            out.items.append(parse_request(json.loads(line)))
        except json.JSONDecodeError:
            out.skip(path, number, "not JSON (a line cut short by a crash or a full disk?)")
        except KeyError as exc:
            out.skip(path, number, f"no {exc.args[0]!r} field")
        except (TypeError, ValueError) as exc:
            out.skip(path, number, str(exc))
    if out.lines == 0:
        raise LogError(f"the request log ({', '.join(files)}) is empty: let the pool serve traffic with "
                       "--request-log PATH for a while (a busy hour or day), then run advise on it")  # fmt: skip
    if not out.items:
        raise LogError(f"none of the {out.lines} lines of {', '.join(files)} is a request-log line "
                       f"(first problems: {'; '.join(out.reasons)}). advise reads the file fcgipool writes with "
                       "--request-log (docs/request-log.md); nginx's access log goes to --access-log")  # fmt: skip
    out.items.sort(key=lambda r: r.time)
    return out


def _seconds(value: object) -> float | None:
    """nginx writes '-' without an upstream and 'a, b' when it tried several: the sum of the attempts."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or value in ("", "-"):
        return None
    parts = [p.strip() for p in value.replace(":", ",").split(",")]
    nums = [float(p) for p in parts if p and p != "-"]
    return sum(nums) if nums else None


def read_access_logs(patterns: Sequence[str]) -> ReadResult:
    """nginx JSON access-log lines (``log_format stack_json``, nginx/nginx.conf.template) that reached the pool,
    sorted by arrival. Lines without an upstream (static files, nginx's own errors) are not counted as bad."""
    files = expand(patterns, "access log")
    out = ReadResult(files=files)
    for path, number, line in _lines(files, "access log"):
        out.lines += 1
        try:
            raw = json.loads(line)
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
            msec, request_time = float(raw["msec"]), float(raw["request_time"])
            upstream = _seconds(raw.get("upstream_response_time"))
        except json.JSONDecodeError:
            out.skip(path, number, "not JSON (is this nginx's JSON access log? see log_format stack_json)")
            continue
        except KeyError as exc:
            out.skip(path, number, f"no {exc.args[0]!r} field (log_format stack_json has msec and request_time)")
            continue
        except (TypeError, ValueError) as exc:
            out.skip(path, number, str(exc))
            continue
        if upstream is None:
            continue
        uri = str(raw.get("uri", ""))
        out.items.append(AccessLine(msec - request_time, msec, str(raw.get("method", "")), uri.split("?", 1)[0],
                                    int(raw.get("status", 0) or 0), upstream))  # fmt: skip
    if out.lines and not out.items:
        raise LogError(f"no line of the access log ({', '.join(files)}) reached the pool"
                       + (f" (first problems: {'; '.join(out.reasons)})" if out.reasons else "")
                       + ": advise needs nginx's JSON log format with msec, request_time and upstream_response_time "
                       "(log_format stack_json in nginx/nginx.conf.template)")  # fmt: skip
    out.items.sort(key=lambda a: a.arrival)
    return out


def match_waits(requests: Sequence[Request], access: Sequence[AccessLine]) -> list[tuple[Request, float]]:
    """Pair access-log lines with request-log lines (same method and path, nginx's upstream end within 50 ms of
    the pool's END_REQUEST) and return each matched request with its measured wait for a worker: nginx's
    upstream time minus the pool's answer time (never below 0)."""
    by_key: dict[tuple[str, str], list[AccessLine]] = {}
    for a in access:
        by_key.setdefault((a.method, a.path), []).append(a)
    for same in by_key.values():
        same.sort(key=lambda a: a.end)
    used: set[int] = set()
    out: list[tuple[Request, float]] = []
    for r in requests:
        lines = by_key.get((r.method, r.uri.split("?", 1)[0]))  # --request-log-query keeps the query
        if not lines:
            continue
        done = r.time + r.answer_s
        lo, hi = 0, len(lines)
        while lo < hi:  # first line ending at or after done - tolerance
            mid = (lo + hi) // 2
            if lines[mid].end < done - MATCH_TOLERANCE_S:
                lo = mid + 1
            else:
                hi = mid
        best, best_gap = None, MATCH_TOLERANCE_S
        for i in range(lo, len(lines)):
            gap = lines[i].end - done
            if gap > MATCH_TOLERANCE_S:
                break
            if id(lines[i]) not in used and abs(gap) <= best_gap:
                best, best_gap = lines[i], abs(gap)
        if best is not None:
            used.add(id(best))
            out.append((r, max(0.0, best.upstream_s - r.answer_s)))
    return out
