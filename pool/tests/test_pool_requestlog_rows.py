"""The request log's batch in C (fcgipool._crequestlog.Rows) against the Python one (PyRows): the same rows give
the same bytes; a request's facts come from its slot, whichever kind it is."""

from __future__ import annotations

import os
import random

import pytest
from fcgipool.recorder import NullSlot
from fcgipool.requestlog import PyRows, RequestLog
from fcgipool.scoreboard import Scoreboard
from fcgipool.scoreboard.writer import PySlot, Slot

try:
    from fcgipool import _crequestlog
except ImportError:
    _crequestlog = None  # type: ignore[assignment]

needs_c = pytest.mark.skipif(_crequestlog is None, reason="the C rows are not built (see the first test)")


def test_the_c_rows_are_built_and_read_the_c_slot() -> None:
    if os.environ.get("FCGIPOOL_NO_EXTENSIONS"):
        pytest.skip("FCGIPOOL_NO_EXTENSIONS is set")
    assert _crequestlog is not None, "the C rows are not built: `make install-system`, then `make install`"
    assert _crequestlog.SLOT_FACTS == 1, "the C slot's capsule was not found: rows fall back to attribute lookups"


def _random_rows(seed: int, n: int) -> list[tuple]:
    rng = random.Random(seed)
    uris = ["/", "/work?n=1", "/cart/ada", "/é/ü?x=\u2603", '/q"uote\\', "/" + "x" * 300]
    routes = [None, "/cart/<user>", "/é"]
    statuses = ["200 OK", "404 Not Found", "202 Accepted", None, "bad"]
    outcomes = [None, None, None, [("mail", "ok")], [("a", "error:ValueError"), ('m"x', "lost:timeout")], []]
    start = 1795700000.0 + rng.random()
    rows = []
    for _ in range(n):
        start += rng.choice([0.0, 0.0004, 0.3, 1.7, -2.5])  # within a second, across seconds, stepped back
        answer = rng.choice([0.0, 0.0003124, 0.0004995, 0.0009996, 0.0123456, 31.0, rng.random()])
        cpu = rng.choice([0.0, 0.0000201, 0.0000005, rng.random() / 100])
        rows.append((rng.choice(["GET", "POST", "PUT"]), rng.choice(uris), rng.choice(routes), rng.choice(statuses),
                     rng.choice([0.0, 0.3, 12.3456789]), rng.choice(outcomes), start, (answer, cpu),
                     rng.choice([0, 21_000_000, 2**40])))  # fmt: skip
    return rows


def _format(rows_class: type, rows: list[tuple], tmp_path_name: str, keep_query: bool) -> bytes:
    log = RequestLog(tmp_path_name, keep_query=keep_query)
    batch = rows_class(len(rows))
    for row in rows:
        batch.append(row)
    return bytes(batch.format(log._prefix, log._tail, log._no_tasks))


@needs_c
@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("keep_query", [False, True])
def test_same_bytes_as_python(seed: int, keep_query: bool) -> None:
    rows = _random_rows(seed, 300)
    py = _format(PyRows, rows, "/dev/null", keep_query)
    c = _format(_crequestlog.Rows, rows, "/dev/null", keep_query)
    assert c == py
    assert py.count(b"\n") == 300


@needs_c
@pytest.mark.parametrize("kind", ["c", "python", "none"])
def test_add_reads_the_request_facts_from_any_slot(kind: str) -> None:
    sb = Scoreboard(1)
    slot = {"c": lambda: Slot(sb._mm, sb.acquire()), "python": lambda: PySlot(sb._mm, sb.acquire()),
            "none": NullSlot}[kind]()  # fmt: skip
    if kind != "none":
        slot.begin_request("GET", "/x", "", 0, t0=123.0)
        slot.end_response(cpu_seconds=0.0015, memory_bytes=1)
    expected = (slot.wall0, slot.last, slot.rss)
    for rows_class in (_crequestlog.Rows, PyRows):
        rows = rows_class(2)
        assert rows.add(slot, "GET", "/x", None, "200 OK", 0.5, None) is False
        assert rows.add(slot, "GET", "/x", None, "200 OK", 0.5, None) is True  # full: flush now
        line = bytes(rows.format(lambda *key: '"k":1', lambda after, outcomes: "", '"t":0')).split(b"\n")[0]
        assert len(rows) == 0
        assert f'"answer_ms":{expected[1][0] * 1000:.3f}'.encode() in line, (rows_class, line)
        assert f'"cpu_ms":{expected[1][1] * 1000:.3f},"rss":{expected[2]}}}'.encode() in line


@needs_c
def test_misuse_is_refused_and_keeps_the_rows() -> None:
    with pytest.raises(ValueError):
        _crequestlog.Rows(0)
    rows = _crequestlog.Rows(1)
    rows.append(("GET", "/", None, "200 OK", 0.0, None, 1.0, (0.0, 0.0), 0))
    with pytest.raises(OverflowError, match="flush"):
        rows.append(("GET", "/", None, "200 OK", 0.0, None, 1.0, (0.0, 0.0), 0))
    with pytest.raises(TypeError):
        rows.add(NullSlot(), "GET")
    with pytest.raises(TypeError):
        rows.append(("GET", "/"))
    with pytest.raises(TypeError, match="str"):
        rows.format(lambda *key: b"bytes", lambda after, outcomes: "", "")
    with pytest.raises(ZeroDivisionError):
        rows.format(lambda *key: 1 / 0, lambda after, outcomes: "", "")
    assert len(rows) == 1, "a failed format keeps the batch"
    rows.clear()
    assert len(rows) == 0 and rows.format(lambda *key: "", lambda after, outcomes: "", "") == b""


@needs_c
def test_the_lines_are_lent_until_released() -> None:
    """format() returns a view of the rows' own buffer (no copy of ~80 kB per batch): the next batch is formatted
    into it, so it refuses while the last one's view is held, and goes on once it is released."""
    log = RequestLog("/dev/null")
    rows = _crequestlog.Rows(4)
    rows.append(("GET", "/a", None, "200 OK", 0.0, None, 1.0, (0.0, 0.0), 0))
    first = rows.format(log._prefix, log._tail, log._no_tasks)
    assert first.readonly and b'"uri":"/a"' in bytes(first)
    rows.append(("GET", "/b", None, "200 OK", 0.0, None, 1.0, (0.0, 0.0), 0))
    with pytest.raises(BufferError, match="release"):
        rows.format(log._prefix, log._tail, log._no_tasks)
    assert len(rows) == 1, "the refused batch is kept"
    first.release()
    assert b'"uri":"/b"' in bytes(rows.format(log._prefix, log._tail, log._no_tasks))


def _fresh(text: str | None) -> str | None:
    """An equal str that is another object, as a request's params decode to (a literal would be shared)."""
    return None if text is None else text.encode().decode()


@needs_c
def test_equal_keys_that_are_other_objects_share_one_prefix_call() -> None:
    """Each request brings its own method and URI objects: told apart by identity, every row would call prefix()
    (0.19 of 0.28 us a row, docs/benchmarks.md). Equal values share one call per batch."""
    calls: list[tuple] = []
    log = RequestLog("/dev/null")

    def prefix(*key: str | None) -> str:
        calls.append(key)
        return log._prefix(*key)

    sb = Scoreboard(1)
    slot = Slot(sb._mm, sb.acquire())
    rows = _crequestlog.Rows(600)
    keys = [("GET", "/", None, "200 OK"), ("POST", "/cart/ada", "/cart/<user>", "201 Created")]
    for i in range(600):
        assert rows.add(slot, *(_fresh(f) for f in keys[i % 7 == 0]), 0.0, None) is (i == 599)
    data = bytes(rows.format(prefix, log._tail, log._no_tasks))
    assert sorted(calls) == sorted(keys)
    assert data.count(b'"uri":"/cart/ada"') == 86 and data.count(b'"uri":"/",') == 514


@needs_c
def test_more_distinct_keys_than_kept_give_the_same_bytes() -> None:
    """40 keys cycling through a table of 16, each row with objects of its own: what PyRows writes."""
    keys = [(m, f"/r{i}", None if i % 3 else f"/r<{i}>", "200 OK") for i in range(20) for m in ("GET", "POST")]
    rows = [(*(_fresh(f) for f in keys[(i * 7) % 40 if i % 5 else 0]), 0.0, None, 1795700000.0 + i / 100,
             (0.0003, 0.00002), 21_000_000) for i in range(500)]  # fmt: skip
    assert _format(_crequestlog.Rows, rows, "/dev/null", False) == _format(PyRows, rows, "/dev/null", False)
