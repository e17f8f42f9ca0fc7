"""Writer side of the scoreboard: the worker's own slot (single writer, seqlock, no locks).

Hot paths write one fused ``pack_into`` per call between the two sequence bumps (see fcgipool.scoreboard). The
per-request writes (begin_request, reading, rest, end_response) are in C when it is built (``_cslot.SlotCore``,
fcgipool.speedups); :class:`PyHot` is the same in Python, the reference the C one is tested against.
"""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..speedups import load
from .layout import (
    _OFFSETS,
    _SEQ,
    _SEQ_OFF,
    METHOD_BYTES,
    PENDING_BYTES,
    QUERY_BYTES,
    SCRIPT_BYTES,
    SLOT_SIZE,
    URI_BYTES,
    WorkerState,
    _block,
    _enc,
    rss_bytes,
)

__all__ = ["PySlot", "Slot"]

_RSS_EVERY = 1.0  # seconds between /proc reads of the worker's RSS (a read costs about as much as a request's
#                   other scoreboard writes together); the wall clock's offset is taken then too
#: seconds between reads of the process's CPU time (CLOCK_PROCESS_CPUTIME_ID is a real syscall on some VMs: 16 %
#: of a worker's samples in one profile); the requests in between share what it used
_CPU_EVERY = 0.02

_BEGIN_OFF, _BEGIN = _block("state", "request_start")
_NAMES_OFF, _NAMES = _block("method", "script")
_STATE_OFF, _STATE = _block("state", "state_since")
_REST_OFF, _REST = _block("state", "deadline")
_END_OFF, _END = _block("requests", "memory_rss")
_REST_END_OFF, _REST_END = _block("state", "memory_rss")
_ACCEPTED_OFF, _ACCEPTED = _OFFSETS["accepted"]
# plain ints: hot paths
_IDLE, _READING, _RUNNING = int(WorkerState.IDLE), int(WorkerState.READING), int(WorkerState.RUNNING)
_ENC_CACHE_SIZE = 256  # distinct (method, uri, query, script) kept encoded; cleared when full


_HOT = ("_base", "_cpu0", "_cpu_at", "_cpu_each", "_cpu_n", "_deadline", "_length", "_mm", "_peak", "_requests", "_rss",
        "_rss_at", "_seq", "_start", "_t0", "_wall", "last", "wall0")  # fmt: skip
_NAMES_END = _NAMES_OFF + _NAMES.size


class _State:
    """What a slot's writes share: PyHot's ``__slots__`` and the C SlotCore's members, and the methods of each
    side that the other calls. Declared for the type checker only."""

    if TYPE_CHECKING:
        _mm: mmap.mmap
        _base: int
        _seq: int
        _t0: float
        _wall: float
        wall0: float
        _deadline: float
        _length: int
        _start: float
        _cpu0: float
        _cpu_at: float
        _cpu_each: float
        _cpu_n: int
        _rss_at: float
        _rss: int
        _peak: int
        _requests: int
        last: tuple[float, float]
        _accepted: int
        _enc_cache: dict[tuple[str, str, str, str], bytes]
        _pending: list[str]
        index: int

        def _attach(self, *layout: object) -> None: ...
        def _encode_names(self, method: str, uri: str, query: str, script: str) -> bytes: ...
        def _read_rss(self) -> int: ...
        def reading(self, deadline: float, t0: float = 0.0) -> None: ...
    else:
        __slots__ = ()


class PyHot(_State):
    """A slot's per-request writes in Python: the state they keep (``_HOT``) and four methods. The C
    ``SlotCore`` has the same attributes and methods; this is the reference it is tested against, and what
    runs without it."""

    __slots__ = (*_HOT, "_last_enc")

    def _attach(self, *layout: object) -> None:
        self._last_enc: bytes | None = None  # the C type takes the layout; Python reads it from the module

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
        enc = self._encode_names(method, uri, query, script)
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
            mm[base + _NAMES_OFF : base + _NAMES_END] = enc
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
        if now - self._rss_at >= _RSS_EVERY:
            self._rss = self._read_rss()
            self._rss_at = now
            self._wall = time.time() - now
        if cpu_seconds is None:
            self._cpu_n += 1
            if now - self._cpu_at >= _CPU_EVERY:
                cpu_now = time.process_time()
                self._cpu_each = (cpu_now - self._cpu0) / self._cpu_n
                self._cpu0, self._cpu_at, self._cpu_n = cpu_now, now, 0
            cpu_seconds = self._cpu_each
        memory = self._rss if memory_bytes is None else int(memory_bytes)
        peak = self._peak
        if memory > peak:
            peak = self._peak = memory
        requests = self._requests = self._requests + 1
        answer = now - self._t0 if self._t0 else 0.0
        cpu = float(cpu_seconds)
        self.last = (answer, cpu)
        mm, base = self._mm, self._base
        seq = self._seq + 1
        _SEQ.pack_into(mm, base, seq)
        # positional arguments, no *args: a call that unpacks a tuple took a slower path (~0.1 us)
        if rest:
            self._deadline = 0.0
            _REST_END.pack_into(mm, base + _REST_END_OFF, _IDLE, now + self._wall, 0.0, self._length, self._start,
                                requests, answer, cpu, memory, peak, self._rss)  # fmt: skip
        else:
            _END.pack_into(mm, base + _END_OFF, requests, answer, cpu, memory, peak, self._rss)
        self._seq = seq + 1
        _SEQ.pack_into(mm, base, seq + 1)
        return now


class _Slot(_State):
    """Writer side of one slot, all but the per-request writes (those come from PyHot or the C SlotCore). Only
    the worker that owns the slot may hold one (single writer)."""

    __slots__ = ()
    def __init__(self, mm: mmap.mmap, index: int, *, pid: int | None = None) -> None:
        self._mm = mm
        self.index = index
        self._base = index * SLOT_SIZE
        (seq,) = _SEQ.unpack_from(mm, self._base + _SEQ_OFF)
        self._seq = seq + (seq & 1)  # a previous owner killed mid-write leaves it odd
        self._pending = []
        self._t0 = 0.0
        # process CPU time at the last read; the requests ended since share what was used from there (idle time
        # uses none): one read per _CPU_EVERY, not per request
        self._cpu0 = time.process_time()
        self._cpu_at = time.monotonic()
        self._cpu_n = 0
        self._cpu_each = 0.0
        self._wall = time.time() - time.monotonic()  # wall clock = monotonic + this (refreshed once a second)
        # what the slot says now for the fields end_response rewrites when the worker rests (one pack)
        self._deadline = self._get("deadline")
        self._length = self._get("content_length")
        self._start = self._get("request_start")
        # (method, uri, query, script) -> their encoded block: a pool serves the same few URIs over and over
        self._enc_cache = {}
        # single writer: the counters live here and are copied out, never read back from the mmap
        self._requests = self._get("requests")
        self._accepted = self._get("accepted")
        self._peak = self._get("memory_peak")
        self._rss = 0
        self._rss_at = -_RSS_EVERY
        self.wall0 = 0.0  # time.time() when the current request began (the request log's "time")
        self.last = (0.0, 0.0)  # the last response phase: (seconds, CPU seconds)
        offsets = {name: off for name, (off, _) in _OFFSETS.items()}
        self._attach(offsets, _NAMES.size, SLOT_SIZE, _CPU_EVERY, _RSS_EVERY, self._encode_names, self._read_rss)
        self._write(pid=os.getpid() if pid is None else pid)

    @property
    def rss(self) -> int:
        return self._rss

    def cpu_mark(self) -> float:
        """The worker's poll waited: the next request's CPU counts from here, and its end reads the CPU clock
        whatever the 20 ms between samples say. Without it a request after an idle spell was charged the loop's
        idle wake-ups (2,261 % "last request cpu" on a status page), or, marked but not read, 0. Two clock reads
        per wait, and under load a poll rarely waits. Returns the monotonic clock it read."""
        self._cpu0 = time.process_time()
        now = time.monotonic()
        self._cpu_at = now - _CPU_EVERY
        self._cpu_n = 0
        return now

    def _read_rss(self) -> int:
        return rss_bytes()

    def _encode_names(self, method: str, uri: str, query: str, script: str) -> bytes:
        """The method .. script block as bytes (cut to their sizes), from a cache of the recent ones."""
        key = (method, uri, query, script)
        enc = self._enc_cache.get(key)
        if enc is None:
            enc = _NAMES.pack(_enc(method, METHOD_BYTES), _enc(uri, URI_BYTES), _enc(query, QUERY_BYTES),
                              _enc(script, SCRIPT_BYTES))  # fmt: skip
            if len(self._enc_cache) >= _ENC_CACHE_SIZE:
                self._enc_cache.clear()
            self._enc_cache[key] = enc
        return enc

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

    def conn_accepted(self) -> None:
        mm, base = self._mm, self._base
        seq = self._seq + 1
        self._accepted += 1
        _SEQ.pack_into(mm, base, seq)
        _ACCEPTED.pack_into(mm, base + _ACCEPTED_OFF, self._accepted)
        self._seq = seq + 1
        _SEQ.pack_into(mm, base, seq + 1)

    def set_state(self, state: WorkerState) -> None:
        if state == WorkerState.READING:
            self.reading(self._deadline)
            return
        now = time.time()
        if state == WorkerState.FINISHING:
            self._write(state=state, state_since=now, finishing_start=now)
        else:
            mm, base = self._mm, self._base
            seq = self._seq + 1
            _SEQ.pack_into(mm, base, seq)
            _STATE.pack_into(mm, base + _STATE_OFF, state, now)
            self._seq = seq + 1
            _SEQ.pack_into(mm, base, seq + 1)

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


_EXTRA = ("_accepted", "_enc_cache", "_pending", "index")


class PySlot(_Slot, PyHot):
    """A slot written by Python only (no C compiler where fcgipool was installed, or FCGIPOOL_NO_EXTENSIONS)."""

    __slots__ = _EXTRA


_cslot = load("fcgipool.scoreboard._cslot")
if TYPE_CHECKING:
    Slot = PySlot  # the C one has the same attributes and methods
elif _cslot is not None:

    class CSlot(_Slot, _cslot.SlotCore):
        """A slot whose per-request writes are in C (``_cslot.SlotCore``)."""

        __slots__ = _EXTRA

    Slot = CSlot
else:
    Slot = PySlot
