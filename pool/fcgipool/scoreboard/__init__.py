"""Shared-memory scoreboard: one fixed-size slot per worker, written by that worker, read by the arbiter.

The mmap is anonymous and MAP_SHARED, created by the arbiter before it forks, so every worker inherits it.
Each slot has exactly one writer (its worker). Writers never take a lock: they bump the slot's sequence
counter to an odd value, write, and bump it to even again (a seqlock). Readers copy the slot and retry while
the counter is odd or changed, so a worker that is stuck or killed mid-write can never block the arbiter;
after a bounded number of retries the reader returns the last copy flagged ``torn``.

Pool totals (accepted connections, requests, tasks, slow requests, memory peak) survive worker deaths: on
``release`` the arbiter folds the dead worker's counters into totals kept in the arbiter's own memory.
"""

from .layout import PENDING_BYTES, SLOT_SIZE, WorkerState, rss_bytes
from .reader import Scoreboard
from .snapshots import PoolSnapshot, PoolTotals, SlotSnapshot
from .writer import Slot

__all__ = ["PENDING_BYTES", "SLOT_SIZE", "PoolSnapshot", "PoolTotals", "Scoreboard", "Slot", "SlotSnapshot",
           "WorkerState", "rss_bytes"]  # fmt: skip
