"""Synthetic work for the load scenarios: wall-clock bounded, either sleeping (I/O-like) or burning CPU."""

from __future__ import annotations

import hashlib
import time

# What leak() keeps alive: module-level, so it lives as long as the worker process (a leak, on purpose).
LEAKED: list[bytes] = []


def spend(ms: int, cpu: bool = False) -> None:
    """Occupy the worker for `ms` of wall-clock time, so occupancy is what the caller asked for."""
    end = time.perf_counter() + ms / 1000.0
    if not cpu:
        time.sleep(max(0.0, end - time.perf_counter()))
        return
    block = b"x" * 4096
    while time.perf_counter() < end:
        for _ in range(50):
            block = hashlib.sha256(block).digest() * 128


def leak(kb: int) -> int:
    """Keep `kb` KiB alive in this process for good; returns the KiB leaked so far. The bytes are written (not a
    lazily mapped zero page), so they count in the worker's RSS at once."""
    if kb > 0:
        LEAKED.append(b"\x5a" * (kb * 1024))
    return sum(len(b) for b in LEAKED) // 1024
