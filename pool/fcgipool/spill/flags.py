"""Pool-wide flags the arbiter sets and every worker reads: one byte of shared memory each, no syscall to read.

``saturated``: finishing workers at or above ``spill_threshold`` of the pool, or connections waiting in the
listen queue (set from the status sampler, every 0.1 s).
"""

from __future__ import annotations

import mmap


class PoolFlags:
    def __init__(self) -> None:
        self._mm = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)

    @property
    def saturated(self) -> bool:
        return self._mm[0] == 1

    @saturated.setter
    def saturated(self, value: bool) -> None:
        self._mm[0] = 1 if value else 0
