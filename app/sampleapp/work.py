"""Synthetic work for the load scenarios: wall-clock bounded, either sleeping (I/O-like) or burning CPU."""

from __future__ import annotations

import hashlib
import time


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
