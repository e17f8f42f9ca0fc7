"""Polls the pool's status page once a second during a run (a thread; a greenlet once locust patched it)."""

from __future__ import annotations

import csv
import os
import statistics
import threading
import time
from pathlib import Path

from loadtest.stack import Stack, StackError

# status page key -> CSV column
FIELDS = {
    "active processes": "active",
    "finishing processes": "finishing",
    "idle processes": "idle",
    "total processes": "total",
    "listen queue": "listen_queue",
    "max listen queue": "max_listen_queue",
    "max children reached": "max_children_reached",
    "accepted conn": "accepted_conn",
    "slow requests": "slow_requests",
    "background tasks run": "bg_run",
    "background tasks failed": "bg_failed",
    "background tasks lost": "bg_lost",
    "background seconds": "bg_seconds",
    "background tasks spilled": "bg_spilled",  # with the spill queue on (docs/spill.md); empty otherwise
    "spill queue depth": "spill_depth",
}
COLUMNS = ["t", "time", "label", *FIELDS.values(), "answering", "rss_mb_mean", "rss_mb_max", "poll_ms", "loadavg1",
           "error"]


def status_row(status: dict, rss: list[float]) -> dict:
    """One CSV row from a status JSON document (missing keys stay empty rather than invented)."""
    row: dict = {col: status.get(key, "") for key, col in FIELDS.items()}
    if row["active"] != "" and row["finishing"] != "":
        row["answering"] = int(row["active"]) - int(row["finishing"])  # busy before the response ended
    else:
        row["answering"] = ""
    row["rss_mb_mean"] = round(statistics.fmean(rss), 2) if rss else ""
    row["rss_mb_max"] = round(max(rss), 2) if rss else ""
    return row


class Sampler(threading.Thread):
    def __init__(self, stack: Stack, interval: float = 1.0) -> None:
        super().__init__(name="status-sampler", daemon=True)
        self.stack = stack
        self.interval = interval
        self.rows: list[dict] = []
        self.label = ""
        self.latest: dict = {}
        self.t0 = time.time()
        self._stop_event = threading.Event()

    def sample_once(self) -> dict:
        started = time.time()
        try:
            st = self.stack.status(full=True, timeout=max(self.interval, 2.0))
            row = status_row(st, self.stack.worker_rss_mb(st))
            row["error"] = ""
        except (StackError, KeyError, ValueError, TypeError) as exc:
            row = {"error": str(exc)[:200]}
        row.update(t=round(started - self.t0, 3), time=round(started, 3), label=self.label,
                   poll_ms=round((time.time() - started) * 1000, 1), loadavg1=os.getloadavg()[0])
        self.rows.append(row)
        self.latest = row
        return row

    def run(self) -> None:
        next_at = time.time()
        while not self._stop_event.is_set():
            self.sample_once()
            next_at += self.interval
            self._stop_event.wait(max(0.0, next_at - time.time()))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    def write_csv(self, path: Path) -> None:
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, COLUMNS, extrasaction="ignore")
            w.writeheader()
            w.writerows(self.rows)
