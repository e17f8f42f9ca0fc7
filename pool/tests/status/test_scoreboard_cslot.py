"""The scoreboard slot's per-request writes in C (fcgipool.scoreboard._cslot) against the Python ones (PyHot):
the same calls leave the same bytes in the slot."""

from __future__ import annotations

import os

import pytest
from fcgipool.scoreboard import Scoreboard, WorkerState
from fcgipool.scoreboard.layout import _OFFSETS, SLOT_SIZE
from fcgipool.scoreboard.writer import PySlot, Slot

try:
    from fcgipool.scoreboard import _cslot
except ImportError:
    _cslot = None  # type: ignore[assignment]

needs_c = pytest.mark.skipif(_cslot is None, reason="the C slot is not built (see the first test)")
# fields measured by the slot itself (the clock moves between the two slots' calls), and when each was taken
_MEASURED = ("request_duration", "last_cpu", "seq", "start_time", "state_since", "request_start")
_CLOSE = 0.05  # seconds: the same clock read by the two slots one call apart


def test_the_c_slot_is_built_and_used() -> None:
    if os.environ.get("FCGIPOOL_NO_EXTENSIONS"):
        pytest.skip("FCGIPOOL_NO_EXTENSIONS is set")
    assert _cslot is not None, "the C slot is not built: `make install-system`, then `make install`"
    assert issubclass(Slot, _cslot.SlotCore)


def _pair() -> tuple[Scoreboard, PySlot, Slot]:
    sb = Scoreboard(2)
    py, c = PySlot(sb._mm, sb.acquire(), pid=1), Slot(sb._mm, sb.acquire(), pid=1)
    for slot in (py, c):  # the same wall-clock offset, and no RSS read from /proc in between
        slot._wall, slot._rss_at, slot._rss = 1_000_000.0, float("inf"), 4096
    return sb, py, c


def _bytes(sb: Scoreboard, slot: PySlot | Slot, *, masked: tuple[str, ...] = _MEASURED) -> bytes:
    raw = bytearray(sb._mm[slot.index * SLOT_SIZE : (slot.index + 1) * SLOT_SIZE])
    for name in masked:
        off, st = _OFFSETS[name]
        raw[off : off + st.size] = bytes(st.size)
    return bytes(raw)


def _same(sb: Scoreboard, py: PySlot, c: Slot) -> None:
    assert _bytes(sb, py) == _bytes(sb, c)
    assert (py._seq, py._requests, py._deadline, py._length, py.rss) == (
        c._seq, c._requests, c._deadline, c._length, c.rss)  # fmt: skip
    a, b = sb.read(py.index), sb.read(c.index)
    for name in ("state_since", "request_start", "request_duration", "last_cpu"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), abs=_CLOSE), name
    assert py.wall0 == pytest.approx(c.wall0, abs=_CLOSE)


@needs_c
def test_same_bytes_for_the_same_calls() -> None:
    sb, py, c = _pair()
    _same(sb, py, c)
    steps = [
        ("begin_request", ("GET", "/", "", 0), {"t0": 100.0}),
        ("end_response", (), {"cpu_seconds": 0.25, "memory_bytes": 10_000, "rest": True}),
        ("reading", (250.5,), {"t0": 150.0}),
        ("begin_request", ("POST", "/signup", "a=1", 42), {"script": "/app.py", "deadline": 300.0, "t0": 160.0}),
        ("end_response", (0.5, 20_000), {}),
        ("rest", (), {}),
        ("begin_request", ("GET", "/" + "é" * 600, "q" * 700, -5, "s"), {}),  # cut to size; negative length: 0
        ("end_response", (), {"memory_bytes": 5}),  # peak stays 20,000
        ("begin_request", ("GET", "/", "", 0, "", None, 170.0), {}),
        ("end_response", (), {"rest": True}),
    ]
    for name, args, kwargs in steps:
        out_py = getattr(py, name)(*args, **kwargs)
        out_c = getattr(c, name)(*args, **kwargs)
        assert type(out_py) is type(out_c), name
        _same(sb, py, c)
        assert py.last == pytest.approx(c.last, abs=_CLOSE) and isinstance(c.last, tuple)
    snap = sb.read(c.index)
    assert (snap.requests, snap.state, snap.memory_peak, snap.uri) == (4, WorkerState.IDLE, 20_000, "/")


@needs_c
def test_names_are_written_only_when_they_change() -> None:
    sb, _, c = _pair()
    calls: list[tuple[str, ...]] = []
    encode = c._encode_names

    def counting(*key: str) -> bytes:
        calls.append(key)
        return encode(*key)

    c._attach({n: off for n, (off, _) in _OFFSETS.items()}, len(encode("", "", "", "")), SLOT_SIZE, 0.02, 1.0,
              counting, c._read_rss)  # fmt: skip
    uri = "/work"
    c.begin_request("GET", uri, "", 0)
    c.begin_request("GET", uri, "", 0)  # the same objects: no call, no copy
    assert len(calls) == 1
    c.begin_request("GET", "".join(["/wo", "rk"]), "", 0)  # equal, another object: encoded (from the cache)
    c.begin_request("GET", "/other", "", 0)
    assert len(calls) == 3 and sb.read(c.index).uri == "/other"


@needs_c
def test_errors_leave_the_slot_consistent() -> None:
    sb, _, c = _pair()
    c.begin_request("GET", "/", "", 0)
    seq = c._seq
    with pytest.raises(TypeError):
        c.begin_request("GET", "/", "", "twelve")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        c.begin_request("GET", "/", "", 0, colour="red")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        c.begin_request("GET", "/", "")  # type: ignore[call-arg]
    with pytest.raises(AttributeError):
        c.begin_request(None, "/x", "", 0)  # type: ignore[arg-type]  # _enc() fails before any write
    with pytest.raises(TypeError):
        c.end_response(rest=True, colour=1)  # type: ignore[call-arg]
    c._rss_at = float("-inf")
    c._attach({n: off for n, (off, _) in _OFFSETS.items()}, len(c._encode_names("", "", "", "")), SLOT_SIZE, 0.02,
              1.0, c._encode_names, lambda: 1 / 0)  # fmt: skip
    with pytest.raises(ZeroDivisionError):
        c.end_response()
    assert c._seq == seq and c._seq % 2 == 0 and not sb.read(c.index).torn
    assert sb.read(c.index).requests == 0


@needs_c
def test_unattached_and_bad_layout_are_refused() -> None:
    core = _cslot.SlotCore()
    with pytest.raises(RuntimeError, match="_attach"):
        core.rest()
    with pytest.raises(RuntimeError, match="_mm"):
        core._attach({}, 1, SLOT_SIZE, 0.02, 1.0, len, len)
    sb = Scoreboard(1)
    core._mm, core._base = sb._mm, 0
    with pytest.raises(KeyError, match="seq"):
        core._attach({}, 1, SLOT_SIZE, 0.02, 1.0, len, len)
    offsets = {n: off for n, (off, _) in _OFFSETS.items()}
    with pytest.raises(ValueError, match="names block"):
        core._attach(offsets, SLOT_SIZE, SLOT_SIZE, 0.02, 1.0, len, len)
    core._attach(offsets, 16, SLOT_SIZE, 0.02, 1.0, len, len)
    core._base = SLOT_SIZE  # the second slot of a one-slot scoreboard
    with pytest.raises(ValueError, match="outside the scoreboard"):
        core.rest()
    sb.close()
