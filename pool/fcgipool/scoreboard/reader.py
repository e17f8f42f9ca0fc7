"""Reader side of the scoreboard: the arbiter owns the mmap, hands slots to new workers and reads snapshots.

Readers never wait for a writer: a slot whose sequence counter stays odd (its worker stuck or killed mid-write)
is returned after ``_READ_RETRIES`` tries, flagged ``torn``.
"""

from __future__ import annotations

import mmap
import threading
import time

from .layout import _FIELDS, _OFFSETS, _RECORD, _SEQ, SLOT_SIZE, WorkerState, _dec
from .snapshots import PoolSnapshot, PoolTotals, SlotSnapshot
from .writer import Slot

__all__ = ["Scoreboard"]

_READ_RETRIES = 1000
_ENDING, _FINISHING = int(WorkerState.ENDING), int(WorkerState.FINISHING)


def _parse_pending(raw: bytes, count: int) -> tuple[str, ...]:
    if not count:
        return ()
    parts = raw.split(b"\0")
    return tuple(p.decode("utf-8", "replace") for p in parts[:count] if p)


class Scoreboard:
    """Arbiter side: owns the mmap, hands slots to new workers, reads consistent snapshots."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"scoreboard needs at least 1 slot, got {slots}")
        self.size = slots
        self._mm = mmap.mmap(-1, slots * SLOT_SIZE, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self._owner: list[int | None] = [None] * slots  # None = free; else the worker pid (0 before fork returns)
        self._lock = threading.Lock()  # arbiter-local (status thread vs main loop); never shared with workers
        self.totals = PoolTotals()

    # --- arbiter --------------------------------------------------------------------------------------
    def acquire(self, pid: int = 0) -> int:
        """Claim and reset a free slot for a new worker (call before fork; pass the pid later to assign)."""
        with self._lock:  # reset and claim together: a concurrent snapshot never sees the old worker's counters
            try:
                i = self._owner.index(None)
            except ValueError:
                raise RuntimeError(f"scoreboard full: all {self.size} slots are taken") from None
            base = i * SLOT_SIZE
            self._mm[base : base + SLOT_SIZE] = bytes(SLOT_SIZE)
            now = time.time()
            for name, value in (("pid", pid), ("state", WorkerState.IDLE), ("start_time", now), ("state_since", now)):
                off, st = _OFFSETS[name]
                st.pack_into(self._mm, base + off, value)
            self._owner[i] = pid
        return i

    def assign(self, index: int, pid: int) -> None:
        """Record the forked worker's pid (arbiter-local; the worker writes its own pid into the slot)."""
        with self._lock:
            self._owner[index] = pid

    def release(self, index: int) -> SlotSnapshot:
        """After reaping: final snapshot; fold its counters (pending tasks count as lost) into the totals."""
        snap = self.read(index)
        with self._lock:
            if self._owner[index] is None:
                return snap
            self.totals.add(snap, lost_pending=snap.pending_count)
            self._owner[index] = None
        return snap

    def count(self, name: str, n: int = 1) -> None:
        """Bump one of the arbiter's own counters in :class:`PoolTotals` (hard kills, rescued connections)."""
        with self._lock:
            setattr(self.totals, name, getattr(self.totals, name) + n)

    def slot(self, index: int) -> Slot:
        """Writer for ``index``; call it in the worker process after fork."""
        if not 0 <= index < self.size:
            raise IndexError(f"slot {index} out of range 0..{self.size - 1}")
        return Slot(self._mm, index)

    def count_slow(self, index: int) -> None:
        """Worker side, from the slowlog thread: one more slow request in slot ``index`` (see Slot.slow_request)."""
        off, st = _OFFSETS["slow_requests"]
        base = index * SLOT_SIZE + off
        st.pack_into(self._mm, base, st.unpack_from(self._mm, base)[0] + 1)

    def index_of(self, pid: int) -> int | None:
        with self._lock:
            for i, owner in enumerate(self._owner):
                if owner == pid:
                    return i
        return None

    # --- readers --------------------------------------------------------------------------------------
    def read(self, index: int) -> SlotSnapshot:
        base = index * SLOT_SIZE
        mm = self._mm
        raw = b""
        torn = True
        for _ in range(_READ_RETRIES):
            (s1,) = _SEQ.unpack_from(mm, base)
            if s1 & 1:
                time.sleep(0)
                continue
            raw = mm[base : base + _RECORD.size]
            (s2,) = _SEQ.unpack_from(mm, base)
            if s1 == s2:
                torn = False
                break
        if torn:
            raw = mm[base : base + _RECORD.size]
        v = dict(zip((n for n, _ in _FIELDS), _RECORD.unpack(raw), strict=True))
        pid = v["pid"] or (self._owner[index] or 0)
        return SlotSnapshot(
            index=index,
            pid=pid,
            state=WorkerState(v["state"]) if v["state"] in WorkerState._value2member_map_ else WorkerState.IDLE,
            start_time=v["start_time"],
            state_since=v["state_since"],
            requests=v["requests"],
            accepted=v["accepted"],
            method=_dec(v["method"]),
            uri=_dec(v["uri"]),
            query=_dec(v["query"]),
            script=_dec(v["script"]),
            content_length=v["content_length"],
            request_start=v["request_start"],
            request_duration=v["request_duration"],
            last_cpu=v["last_cpu"],
            last_memory=v["last_memory"],
            memory_peak=v["memory_peak"],
            memory_rss=v["memory_rss"],
            tasks_run=v["tasks_run"],
            tasks_failed=v["tasks_failed"],
            tasks_lost=v["tasks_lost"],
            background_seconds=v["background_seconds"],
            finishing_start=v["finishing_start"],
            deadline=v["deadline"],
            request_timeouts=v["request_timeouts"],
            background_timeouts=v["background_timeouts"],
            spilled_shutdown=v["spilled_shutdown"],
            spilled_saturated=v["spilled_saturated"],
            spilled_slow=v["spilled_slow"],
            spill_fallbacks=v["spill_fallbacks"],
            slow_requests=v["slow_requests"],
            pending_count=v["pending_count"],
            pending_names=_parse_pending(v["pending_names"], v["pending_count"]),
            torn=torn,
        )

    def snapshot(self) -> PoolSnapshot:
        with self._lock:
            used = [i for i, owner in enumerate(self._owner) if owner is not None]
            slots = tuple(self.read(i) for i in used)
            totals = PoolTotals(**vars(self.totals))
        return PoolSnapshot(taken_at=time.time(), slots=slots, totals=totals)

    def finishing(self, exclude: int = -1) -> tuple[int, int]:
        """(workers in after-response work, live workers), ``exclude``'s slot left out of both: two fields read
        per slot, no seqlock and no lock, so any process may call it (a worker deciding whether to spill; a torn
        read only miscounts one worker for one decision). Live: a pid, and not exiting."""
        mm, pid_off, state_off = self._mm, _OFFSETS["pid"], _OFFSETS["state"]
        busy = live = 0
        for base in range(0, self.size * SLOT_SIZE, SLOT_SIZE):
            if base == exclude * SLOT_SIZE or not pid_off[1].unpack_from(mm, base + pid_off[0])[0]:
                continue
            state = mm[base + state_off[0]]
            if state != _ENDING:
                live += 1
                busy += state == _FINISHING
        return busy, live

    def overdue(self, now: float | None = None) -> list[SlotSnapshot]:
        """Busy slots whose deadline (monotonic) has passed."""
        now = time.monotonic() if now is None else now
        return [s for s in self.snapshot().slots if s.deadline and s.deadline < now and s.state != WorkerState.IDLE]

    def close(self) -> None:
        self._mm.close()
