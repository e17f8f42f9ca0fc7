"""The pool's request log (fcgipool --request-log, docs/request-log.md): what each request cost its worker.

The load test reads the lines a run appended (offset before, read after) as fcgipool.sizing.logs.Request; each
step's occupancy (answer + after-response time) and, matched with nginx's access log, its waits come from them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fcgipool.sizing.logs import Request, parse_request


def log_size(path: str | None) -> int:
    try:
        return os.path.getsize(path) if path else 0
    except OSError:
        return 0


def parse_line(line: str) -> Request | None:
    try:
        req = parse_request(json.loads(line))
    except (ValueError, KeyError, TypeError):
        return None
    # under plain gunicorn the log has no times (all 0): nothing to size from
    return req if req.time > 0 else None


def read_from(path: str | None, offset: int) -> list[Request]:
    """Lines appended after ``offset`` (a log rotated meanwhile is read from its start), by start time."""
    if not path or not Path(path).exists():
        return []
    start = offset if os.path.getsize(path) >= offset else 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        fh.seek(start)
        rows = [row for line in fh if line.strip() and (row := parse_line(line)) is not None]
    return sorted(rows, key=lambda r: r.time)
