"""Shared-memory scoreboard: one fixed-size slot per worker, written by that worker, read by the arbiter.

The mmap is anonymous and MAP_SHARED, created by the arbiter before it forks, so every worker inherits it.
Each slot has exactly one writer (its worker). Writers never take a lock: they bump the slot's sequence
counter to an odd value, write, and bump it to even again (a seqlock). Readers copy the slot and retry while
the counter is odd or changed, so a worker that is stuck or killed mid-write can never block the arbiter;
after a bounded number of retries the reader returns the last copy flagged ``torn``.

Pool totals (accepted connections, requests, tasks, slow requests, memory peak) survive worker deaths: on
``release`` the arbiter folds the dead worker's counters into totals kept in the arbiter's own memory.
"""

from __future__ import annotations

import enum
import mmap
import os
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PENDING_BYTES", "PoolSnapshot", "PoolTotals", "Scoreboard", "Slot", "SlotSnapshot", "State", "rss_bytes"]


class State(enum.IntEnum):
    IDLE = 0
    READING = 1
    RUNNING = 2
    FINISHING = 3  # after-response work: the client has its response, the worker is still busy
    ENDING = 4

    @property
    def label(self) -> str:
        return _LABELS[self]


# Labels as the status page prints them; "Reading headers" is PHP-FPM's text for the reading stage.
_LABELS = {
    State.IDLE: "Idle",
    State.READING: "Reading headers",
    State.RUNNING: "Running",
    State.FINISHING: "Finishing",
    State.ENDING: "Ending",
}

METHOD_BYTES = 16
URI_BYTES = 512
QUERY_BYTES = 512
SCRIPT_BYTES = 256
PENDING_BYTES = 1024  # task names separated by NUL; the count field says how many there really are

# (name, struct format). Little-endian, no padding: offsets are computed below.
_FIELDS: list[tuple[str, str]] = [
    ("seq", "Q"),
    ("slow_requests", "Q"),  # 8-byte aligned: the slowlog thread bumps it with one store, outside the seqlock
    ("pid", "i"),
    ("start_time", "d"),  # wall clock, when the worker took the slot
    ("accepted", "Q"),
    # state .. memory_rss are contiguous, so a request costs two packs: begin_request writes state ..
    # request_start, end_response requests .. memory_rss (state .. memory_rss when the worker rests)
    ("state", "B"),
    ("state_since", "d"),  # wall clock of the last state change (idle time for the process managers)
    ("deadline", "d"),  # time.monotonic() value; 0 = none
    ("content_length", "q"),
    ("request_start", "d"),  # wall clock
    ("requests", "Q"),
    ("request_duration", "d"),  # seconds, of the last finished response phase
    ("last_cpu", "d"),  # CPU seconds of the last request's response phase (averaged over ~20 ms, see Slot)
    ("last_memory", "Q"),
    ("memory_peak", "Q"),
    ("memory_rss", "Q"),
    # method .. script: written only when they differ from the last request's (1.3 KB a pack)
    ("method", f"{METHOD_BYTES}s"),
    ("uri", f"{URI_BYTES}s"),
    ("query", f"{QUERY_BYTES}s"),
    ("script", f"{SCRIPT_BYTES}s"),
    ("tasks_run", "Q"),
    ("tasks_failed", "Q"),
    ("tasks_lost", "Q"),
    ("background_seconds", "d"),
    ("request_timeouts", "Q"),  # soft stops: the app interrupted at timeout, the request answered 504
    ("background_timeouts", "Q"),  # soft stops of after-response work at background_timeout
    ("spilled_shutdown", "Q"),  # after-response tasks handed to the spill queue, by reason (fcgipool.spill)
    ("spilled_saturated", "Q"),
    ("spilled_slow", "Q"),
    ("spill_fallbacks", "Q"),  # tasks that were to spill but ran in the pool: the queue was away
    ("finishing_start", "d"),  # wall clock, when the current after-response phase began
    ("pending_count", "I"),
    ("pending_names", f"{PENDING_BYTES}s"),
]

_RECORD = struct.Struct("<" + "".join(fmt for _, fmt in _FIELDS))
_OFFSETS: dict[str, tuple[int, struct.Struct]] = {}
_off = 0
for _name, _fmt in _FIELDS:
    _st = struct.Struct("<" + _fmt)
    _OFFSETS[_name] = (_off, _st)
    _off += _st.size
assert _off == _RECORD.size and _OFFSETS["slow_requests"][0] % 8 == 0
SLOT_SIZE = (_RECORD.size + 63) // 64 * 64  # cache-line aligned slots
_SEQ_OFF, _SEQ = _OFFSETS["seq"]
_READ_RETRIES = 1000
_RSS_EVERY = 1.0  # seconds between /proc reads of the worker's RSS (a read costs about as much as a request's
#                   other scoreboard writes together); the wall clock's offset is taken then too
#: seconds between reads of the process's CPU time (CLOCK_PROCESS_CPUTIME_ID is a real syscall on some VMs: 16 %
#: of a worker's samples in one profile); the requests in between share what it used
_CPU_EVERY = 0.02


def _block(first: str, last: str) -> tuple[int, struct.Struct]:
    """Offset and Struct of the contiguous fields first..last, for writing them with one pack_into."""
    names = [n for n, _ in _FIELDS]
    chunk = _FIELDS[names.index(first) : names.index(last) + 1]
    return _OFFSETS[first][0], struct.Struct("<" + "".join(f for _, f in chunk))


_BEGIN_OFF, _BEGIN = _block("state", "request_start")
_NAMES_OFF, _NAMES = _block("method", "script")
_STATE_OFF, _STATE = _block("state", "state_since")
_REST_OFF, _REST = _block("state", "deadline")
_END_OFF, _END = _block("requests", "memory_rss")
_REST_END_OFF, _REST_END = _block("state", "memory_rss")
_ACCEPTED_OFF, _ACCEPTED = _OFFSETS["accepted"]
_IDLE, _READING, _RUNNING = int(State.IDLE), int(State.READING), int(State.RUNNING)  # plain ints: hot paths
_ENC_CACHE_SIZE = 256  # distinct (method, uri, query, script) kept encoded; cleared when full


def _enc(text: str, size: int) -> bytes:
    data = text.encode("utf-8", "replace")
    if len(data) <= size:
        return data
    # cut on a character boundary so the reader never sees half a code point
    return data[:size].decode("utf-8", "ignore").encode("utf-8")


def _dec(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process from /proc (0 when unavailable)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


@dataclass(frozen=True)
class SlotSnapshot:
    index: int
    pid: int
    state: State
    start_time: float
    state_since: float
    requests: int
    accepted: int
    method: str
    uri: str
    query: str
    script: str
    content_length: int
    request_start: float
    request_duration: float
    last_cpu: float
    last_memory: int
    memory_peak: int
    memory_rss: int
    tasks_run: int
    tasks_failed: int
    tasks_lost: int
    background_seconds: float
    finishing_start: float
    deadline: float
    request_timeouts: int
    background_timeouts: int
    slow_requests: int
    pending_count: int
    pending_names: tuple[str, ...]
    spilled_shutdown: int = 0
    spilled_saturated: int = 0
    spilled_slow: int = 0
    spill_fallbacks: int = 0
    torn: bool = False  # the writer was mid-write for every retry (stuck or killed while writing)

    @property
    def pending_truncated(self) -> bool:
        """True when more tasks are pending than names fit in the slot."""
        return self.pending_count > len(self.pending_names)

    @property
    def busy(self) -> bool:
        return self.state in (State.READING, State.RUNNING, State.FINISHING)

    def current_duration(self, now: float | None = None) -> float:
        """Elapsed response-phase seconds while reading/running, otherwise the last request's duration."""
        if self.state in (State.READING, State.RUNNING) and self.request_start:
            return max(0.0, (time.time() if now is None else now) - self.request_start)
        return self.request_duration


#: slot counters the arbiter keeps adding up after their worker is gone (besides the ones PoolTotals.add names)
_FOLDED = ("request_timeouts", "background_timeouts", "spilled_shutdown", "spilled_saturated", "spilled_slow",
           "spill_fallbacks")  # fmt: skip


@dataclass
class PoolTotals:
    """Counters of workers that are gone, kept by the arbiter."""

    accepted: int = 0
    requests: int = 0
    tasks_run: int = 0
    tasks_failed: int = 0
    tasks_lost: int = 0
    background_seconds: float = 0.0
    slow_requests: int = 0
    memory_peak: int = 0
    request_timeouts: int = 0
    background_timeouts: int = 0
    spilled_shutdown: int = 0
    spilled_saturated: int = 0
    spilled_slow: int = 0
    spill_fallbacks: int = 0
    # arbiter-only counters (no slot has them): hard kills past a deadline, connections of dead workers rescued
    request_kills: int = 0
    background_kills: int = 0
    connections_rescued: int = 0

    def add(self, s: SlotSnapshot, lost_pending: int = 0) -> None:
        self.accepted += s.accepted
        self.requests += s.requests
        self.tasks_run += s.tasks_run
        self.tasks_failed += s.tasks_failed
        self.tasks_lost += s.tasks_lost + lost_pending
        self.background_seconds += s.background_seconds
        self.slow_requests += s.slow_requests
        self.memory_peak = max(self.memory_peak, s.memory_peak)
        for name in _FOLDED:
            setattr(self, name, getattr(self, name) + getattr(s, name))


@dataclass(frozen=True)
class PoolSnapshot:
    """Live slots plus totals: counters are retained totals + live slots' counters."""

    taken_at: float
    slots: tuple[SlotSnapshot, ...]
    totals: PoolTotals = field(default_factory=PoolTotals)

    def count(self, *states: State) -> int:
        return sum(1 for s in self.slots if s.state in states)

    @property
    def idle(self) -> int:
        return self.count(State.IDLE)

    @property
    def active(self) -> int:
        return self.count(State.READING, State.RUNNING, State.FINISHING)

    @property
    def finishing(self) -> int:
        return self.count(State.FINISHING)

    def _sum(self, name: str) -> int | float:
        return getattr(self.totals, name) + sum(getattr(s, name) for s in self.slots)

    @property
    def accepted(self) -> int:
        return int(self._sum("accepted"))

    @property
    def requests(self) -> int:
        return int(self._sum("requests"))

    @property
    def tasks_run(self) -> int:
        return int(self._sum("tasks_run"))

    @property
    def tasks_failed(self) -> int:
        return int(self._sum("tasks_failed"))

    @property
    def tasks_lost(self) -> int:
        return int(self._sum("tasks_lost"))

    @property
    def background_seconds(self) -> float:
        return float(self._sum("background_seconds"))

    @property
    def slow_requests(self) -> int:
        return int(self._sum("slow_requests"))

    @property
    def memory_peak(self) -> int:
        return max([self.totals.memory_peak, *(s.memory_peak for s in self.slots)])

    def total(self, name: str) -> int:
        """A counter over the pool: the retained totals of gone workers plus every live slot's."""
        return int(self._sum(name))

    @property
    def request_timeouts(self) -> int:
        return self.total("request_timeouts")

    @property
    def background_timeouts(self) -> int:
        return self.total("background_timeouts")


class Slot:
    """Writer side of one slot. Only the worker that owns the slot may hold one (single writer)."""

    __slots__ = (
        "_accepted",
        "_base",
        "_cpu0",
        "_cpu_at",
        "_cpu_each",
        "_cpu_n",
        "_deadline",
        "_enc_cache",
        "_last_enc",
        "_length",
        "_mm",
        "_peak",
        "_pending",
        "_requests",
        "_rss",
        "_rss_at",
        "_seq",
        "_start",
        "_t0",
        "_wall",
        "index",
        "last",
        "wall0",
    )

    def __init__(self, mm: mmap.mmap, index: int, *, pid: int | None = None) -> None:
        self._mm = mm
        self.index = index
        self._base = index * SLOT_SIZE
        (seq,) = _SEQ.unpack_from(mm, self._base + _SEQ_OFF)
        self._seq = seq + (seq & 1)  # a previous owner killed mid-write leaves it odd
        self._pending: list[str] = []
        self._t0 = 0.0
        # process CPU time at the last read; the requests ended since share what was used from there (idle time
        # uses none): one read per _CPU_EVERY, not per request
        self._cpu0 = time.process_time()
        self._cpu_at = time.monotonic()
        self._cpu_n = 0
        self._cpu_each = 0.0
        self._wall = time.time() - time.monotonic()  # wall clock = monotonic + this (refreshed once a second)
        self._last_enc: tuple[bytes, ...] | None = None
        # what the slot says now for the fields end_response rewrites when the worker rests (one pack)
        self._deadline = self._get("deadline")
        self._length = self._get("content_length")
        self._start = self._get("request_start")
        # (method, uri, query, script) -> their encoded fields: a pool serves the same few URIs over and over
        self._enc_cache: dict[tuple[str, str, str, str], tuple[bytes, bytes, bytes, bytes]] = {}
        # single writer: the counters live here and are copied out, never read back from the mmap
        self._requests = self._get("requests")
        self._accepted = self._get("accepted")
        self._peak = self._get("memory_peak")
        self._rss = 0
        self._rss_at = -_RSS_EVERY
        self.wall0 = 0.0  # time.time() when the current request began (the request log's "time")
        self.last = (0.0, 0.0)  # the last response phase: (seconds, CPU seconds)
        self._write(pid=os.getpid() if pid is None else pid)

    @property
    def rss(self) -> int:
        return self._rss

    def _write(self, **values: object) -> None:
        mm, base = self._mm, self._base
        seq = self._seq + 1
        _SEQ.pack_into(mm, base, seq)
        for name, value in values.items():
            off, st = _OFFSETS[name]
            st.pack_into(mm, base + off, value)
        self._seq = seq + 1
        _SEQ.pack_into(mm, base, seq + 1)

    def _get(self, name: str) -> Any:
        off, st = _OFFSETS[name]
        return st.unpack_from(self._mm, self._base + off)[0]

    # --- connection / request lifecycle (hot paths: one fused pack per call) ----------------------------
    def conn_accepted(self) -> None:
        mm, base = self._mm, self._base
        seq = self._seq + 1
        self._accepted += 1
        _SEQ.pack_into(mm, base, seq)
        _ACCEPTED.pack_into(mm, base + _ACCEPTED_OFF, self._accepted)
        self._seq = seq + 1
        _SEQ.pack_into(mm, base, seq + 1)

    def begin_request(
        self,
        method: str,
        uri: str,
        query: str,
        content_length: int,
        script: str = "",
        deadline: float | None = None,
        t0: float = 0.0,
    ) -> None:
        """The response phase starts (at ``t0``, monotonic, if the caller read the clock already); ``deadline``
        (if given) is written in the same seqlock write."""
        t0 = self._t0 = t0 or time.monotonic()
        now = self.wall0 = t0 + self._wall
        key = (method, uri, query, script)
        enc = self._enc_cache.get(key)
        if enc is None:
            enc = (
                _enc(method, METHOD_BYTES),
                _enc(uri, URI_BYTES),
                _enc(query, QUERY_BYTES),
                _enc(script, SCRIPT_BYTES),
            )
            if len(self._enc_cache) >= _ENC_CACHE_SIZE:
                self._enc_cache.clear()
            self._enc_cache[key] = enc
        if deadline is not None:
            self._deadline = float(deadline)
        self._length = content_length if content_length > 0 else 0
        self._start = now
        mm, base = self._mm, self._base
        seq = self._seq + 1
        _SEQ.pack_into(mm, base, seq)
        _BEGIN.pack_into(mm, base + _BEGIN_OFF, _RUNNING, now, self._deadline, self._length, now)
        if enc is not self._last_enc:
            self._last_enc = enc
            _NAMES.pack_into(mm, base + _NAMES_OFF, *enc)
        self._seq = seq + 1
        _SEQ.pack_into(mm, base, seq + 1)

    def reading(self, deadline: float, t0: float = 0.0) -> None:
        """State READING (a request is being read, since ``t0``, monotonic, if the caller read the clock) and
        the arbiter's ``deadline``, in one seqlock write."""
        t0 = self._t0 = t0 or time.monotonic()
        now = self._start = t0 + self._wall
        self._deadline, self._length = float(deadline), 0
        mm, base = self._mm, self._base
        seq = self._seq + 1
        _SEQ.pack_into(mm, base, seq)
        _BEGIN.pack_into(mm, base + _BEGIN_OFF, _READING, now, self._deadline, 0, now)
        self._seq = seq + 1
        _SEQ.pack_into(mm, base, seq + 1)

    def rest(self) -> float:
        """State IDLE and no deadline (back to gunicorn's heartbeat), in one seqlock write. After after-response
        work only (a plain request rests in end_response): its CPU is not the next request's. Returns the
        monotonic clock it read."""
        self._cpu0 = time.process_time()
        self._cpu_at = time.monotonic()
        self._cpu_n = 0
        self._deadline = 0.0
        mm, base = self._mm, self._base
        seq = self._seq + 1
        _SEQ.pack_into(mm, base, seq)
        _REST.pack_into(mm, base + _REST_OFF, _IDLE, self._cpu_at + self._wall, 0.0)
        self._seq = seq + 1
        _SEQ.pack_into(mm, base, seq + 1)
        return self._cpu_at

    def set_state(self, state: State) -> None:
        if state == State.READING:
            self.reading(self._deadline)
            return
        now = time.time()
        if state == State.FINISHING:
            self._write(state=state, state_since=now, finishing_start=now)
        else:
            mm, base = self._mm, self._base
            seq = self._seq + 1
            _SEQ.pack_into(mm, base, seq)
            _STATE.pack_into(mm, base + _STATE_OFF, state, now)
            self._seq = seq + 1
            _SEQ.pack_into(mm, base, seq + 1)

    def end_response(
        self, cpu_seconds: float | None = None, memory_bytes: int | None = None, *, rest: bool = False
    ) -> float:
        """The response phase is over (END_REQUEST sent). Counts the request; ``rest``: and, in the same write,
        what :meth:`rest` writes (no after-response work follows); otherwise the state is left to the caller.
        Returns the monotonic clock it read (the worker's "now" till the next read).

        Without arguments, CPU is this process's CPU time since begin_request and memory is the RSS (read
        from /proc at most once a second).
        """
        now = time.monotonic()
        if cpu_seconds is None:
            self._cpu_n += 1
            if now - self._cpu_at >= _CPU_EVERY:
                cpu_now = time.process_time()
                self._cpu_each = (cpu_now - self._cpu0) / self._cpu_n
                self._cpu0, self._cpu_at, self._cpu_n = cpu_now, now, 0
            cpu_seconds = self._cpu_each
        if now - self._rss_at >= _RSS_EVERY:
            self._rss_at = now
            self._rss = rss_bytes()
            self._wall = time.time() - now
        memory = self._rss if memory_bytes is None else int(memory_bytes)
        self._peak = max(self._peak, memory)
        self._requests += 1
        last = self.last = (now - self._t0 if self._t0 else 0.0, float(cpu_seconds))
        mm, base = self._mm, self._base
        seq = self._seq + 1
        _SEQ.pack_into(mm, base, seq)
        if rest:
            self._deadline = 0.0
            _REST_END.pack_into(mm, base + _REST_END_OFF, _IDLE, now + self._wall, 0.0, self._length, self._start,
                                self._requests, *last, memory, self._peak, self._rss)  # fmt: skip
        else:
            _END.pack_into(mm, base + _END_OFF, self._requests, *last, memory, self._peak, self._rss)
        self._seq = seq + 1
        _SEQ.pack_into(mm, base, seq + 1)
        return now

    def set_deadline(self, monotonic: float) -> None:
        """0 = none. The arbiter kills a worker still busy past its deadline."""
        self._deadline = float(monotonic)
        self._write(deadline=self._deadline)

    # --- after-response tasks -------------------------------------------------------------------------
    def set_pending(self, names: Iterable[str]) -> None:
        self._pending = list(names)
        self._write(**self._pending_values())

    def _pending_values(self) -> dict[str, object]:
        buf = bytearray()
        for name in self._pending:
            raw = _enc(name, PENDING_BYTES - 1).replace(b"\0", b"?")
            if len(buf) + len(raw) + 1 > PENDING_BYTES:
                break  # truncated: pending_count still says how many there are
            buf += raw + b"\0"
        return {"pending_count": len(self._pending), "pending_names": bytes(buf)}

    def task_finished(self, name: str, ok: bool, seconds: float) -> None:
        if name in self._pending:
            self._pending.remove(name)
        values = self._pending_values()
        values["tasks_run"] = self._get("tasks_run") + 1
        values["background_seconds"] = self._get("background_seconds") + float(seconds)
        if not ok:
            values["tasks_failed"] = self._get("tasks_failed") + 1
        self._write(**values)

    def task_spilled(self, name: str, reason: str) -> None:
        """Handed to the spill queue: off the pending list (a later death does not report it lost), counted."""
        if name in self._pending:
            self._pending.remove(name)
        counter = f"spilled_{reason}"
        self._write(**{counter: self._get(counter) + 1}, **self._pending_values())

    def tasks_lost(self, names: list[str]) -> None:
        """The worker itself gave up on these tasks and reported them: counted, and off the pending list (a name
        that is not pending, such as the app's own code after finish_request(), is only counted)."""
        if not names:
            return
        for name in names:
            if name in self._pending:
                self._pending.remove(name)
        self._write(tasks_lost=self._get("tasks_lost") + len(names), **self._pending_values())

    def bump(self, name: str) -> None:
        """One more of a slot counter (``request_timeouts``, ``spilled_slow``, ``spill_fallbacks``, ...)."""
        self._write(**{name: self._get(name) + 1})

    def count_timeout(self, phase: str) -> None:
        """One more soft stop (``phase`` "request" or "background")."""
        self.bump(f"{phase}_timeouts")

    def slow_request(self) -> None:
        """Count a slow request. Safe from the worker's slowlog thread: it is this field's only writer and
        the store is one aligned 8-byte write, so it stays outside the seqlock the request thread uses."""
        off, st = _OFFSETS["slow_requests"]
        st.pack_into(self._mm, self._base + off, self._get("slow_requests") + 1)


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
            for name, value in (("pid", pid), ("state", State.IDLE), ("start_time", now), ("state_since", now)):
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
            state=State(v["state"]) if v["state"] in State._value2member_map_ else State.IDLE,
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

    def overdue(self, now: float | None = None) -> list[SlotSnapshot]:
        """Busy slots whose deadline (monotonic) has passed."""
        now = time.monotonic() if now is None else now
        return [s for s in self.snapshot().slots if s.deadline and s.deadline < now and s.state != State.IDLE]

    def close(self) -> None:
        self._mm.close()
