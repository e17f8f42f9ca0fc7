"""The scoreboard's binary layout: one fixed-size slot per worker, its fields, offsets and text encoding.

Shared by the writer (fcgipool.scoreboard.writer, in the worker) and the reader (fcgipool.scoreboard.reader, in
the arbiter); see fcgipool.scoreboard for the seqlock both follow.
"""

from __future__ import annotations

import enum
import os
import struct

__all__ = ["METHOD_BYTES", "PENDING_BYTES", "QUERY_BYTES", "SCRIPT_BYTES", "SLOT_SIZE", "URI_BYTES", "WorkerState",
           "rss_bytes"]  # fmt: skip


class WorkerState(enum.IntEnum):
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
    WorkerState.IDLE: "Idle",
    WorkerState.READING: "Reading headers",
    WorkerState.RUNNING: "Running",
    WorkerState.FINISHING: "Finishing",
    WorkerState.ENDING: "Ending",
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


def _block(first: str, last: str) -> tuple[int, struct.Struct]:
    """Offset and Struct of the contiguous fields first..last, for writing them with one pack_into."""
    names = [n for n, _ in _FIELDS]
    chunk = _FIELDS[names.index(first) : names.index(last) + 1]
    return _OFFSETS[first][0], struct.Struct("<" + "".join(f for _, f in chunk))


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
