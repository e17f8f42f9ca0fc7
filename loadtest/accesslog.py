"""nginx's JSON access log (keys in docs/architecture.md): read only what one run appended."""

from __future__ import annotations

import json
import os
from pathlib import Path

TIME_KEYS = ("request_time", "upstream_connect_time", "upstream_header_time", "upstream_response_time")


def log_size(path: str | None) -> int:
    try:
        return os.path.getsize(path) if path else 0
    except OSError:
        return 0


def upstream_seconds(value) -> float | None:
    """nginx writes '-' with no upstream, and 'a, b' (or 'a : b') when it tried several; sum the attempts."""
    if value is None or value in ("", "-"):
        return None
    if isinstance(value, int | float):
        return float(value)
    total, seen = 0.0, False
    for part in str(value).replace(":", ",").split(","):
        part = part.strip()
        if part and part != "-":
            total += float(part)
            seen = True
    return total if seen else None


def parse_line(line: str) -> dict | None:
    try:
        raw = json.loads(line)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    row = {k: raw.get(k) for k in ("time", "method", "uri", "upstream_status")}
    try:
        row["msec"] = float(raw["msec"]) if raw.get("msec") not in (None, "", "-") else None
    except (TypeError, ValueError):
        row["msec"] = None
    try:
        row["status"] = int(raw.get("status") or 0)
    except (TypeError, ValueError):
        row["status"] = 0
    for key in TIME_KEYS:
        try:
            row[key] = upstream_seconds(raw.get(key))
        except ValueError:
            row[key] = None
    return row


def read_from(path: str | None, offset: int) -> list[dict]:
    """Entries appended after ``offset`` (a log rotated meanwhile is read from its start)."""
    if not path or not Path(path).exists():
        return []
    size = os.path.getsize(path)
    start = offset if size >= offset else 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        fh.seek(start)
        return [row for line in fh if line.strip() and (row := parse_line(line)) is not None]


def summarize(rows: list[dict]) -> dict:
    """Counts of 5xx that nginx produced itself (502/504 mean the pool did not answer in time or at all).

    The sampler's own /pool-status polls are left out: they are served by the arbiter, not the workers.
    """
    rows = [r for r in rows if not str(r.get("uri") or "").startswith("/pool-")]
    times = [r["upstream_response_time"] for r in rows if r["upstream_response_time"] is not None]
    out = {"requests": len(rows), "status_502": 0, "status_504": 0, "status_5xx": 0, "status_2xx": 0,
           "upstream_response_p99_s": round(sorted(times)[int(0.99 * (len(times) - 1))], 4) if times else None}
    for r in rows:
        s = r["status"]
        out["status_502"] += s == 502
        out["status_504"] += s == 504
        out["status_5xx"] += 500 <= s < 600
        out["status_2xx"] += 200 <= s < 300
    return out


def upstream_times(rows: list[dict], prefix: str, start: float, end: float) -> list[float]:
    """upstream_response_time of successful requests to ``prefix`` logged (msec) within [start, end]."""
    return [r["upstream_response_time"] for r in rows
            if r.get("msec") and start <= r["msec"] <= end and str(r.get("uri") or "").startswith(prefix)
            and 200 <= r["status"] < 300 and r["upstream_response_time"] is not None]
