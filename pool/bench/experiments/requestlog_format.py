"""CPU per row of the request log's formatting (`Rows.format`: the C batch when built, and `PyRows`, its Python
twin) alone, and of filling the batch from Python plus a whole flush to /dev/null, in the worker's batches of
FLUSH_ROWS (2,048) rows.

    .venv/bin/python pool/bench/experiments/requestlog_format.py [rows] [repeats] [--mixed] [--fresh]

`--mixed`: the rows cycle through four URIs (an app's routes mixed under load; each URI one object, as the C params
decoder's string cache hands them out), so consecutive rows rarely share their (method, uri, route, status).

Rows like the ones fcgipool.server appends for a hello-world `GET /` at ~33,000 req/s: start times 30 µs apart,
answer ~0.3 ms, CPU ~20 µs, RSS ~21 MB (read once a second); the method and URI the same objects from row to row, as
the C params decoder's string cache hands them out (`--fresh`: a new method string per row, as the Python decoder
makes them); new rows for every repeat. Prints min and median of the repeats, in µs per row.
"""

import random
import statistics
import sys
import time
from collections.abc import Callable

from fcgipool import requestlog
from fcgipool.requestlog import FLUSH_ROWS, PyRows, RequestLog

URIS = ["/", "/cart/ada", "/signup", "/work"] if "--mixed" in sys.argv else ["/"]
FRESH = "--fresh" in sys.argv


def rows(n: int, seed: int) -> list:
    rnd = random.Random(seed)
    start = 1795702203.0 + rnd.random()
    out = []
    second, rss = -1, 0
    for _ in range(n):
        start += 0.00003 + rnd.random() * 0.000002
        answer, cpu = 0.0003 + rnd.random() * 0.0001, 0.00002 + rnd.random() * 0.00001
        if int(start) != second:  # the scoreboard reads the RSS once a second: one int object meanwhile
            second, rss = int(start), 21_000_000 + 4096 * rnd.randrange(8)
        method = b"GET".decode("latin-1") if FRESH else "GET"
        out.append((method, URIS[rnd.randrange(len(URIS))], None, "200 OK", 0.0, None, start,
                    (answer, cpu), rss))
    return out


def timed(fn: Callable[[list], float | None], n: int, repeats: int) -> tuple[float, float]:
    """``fn``'s CPU per row over fresh rows: the time it returns, else all of it."""
    per_row = []
    for seed in range(repeats):
        data = rows(n, seed)
        t0 = time.thread_time()
        counted = fn(data)
        per_row.append((time.thread_time() - t0 if counted is None else counted) / n * 1e6)
    return min(per_row), statistics.median(per_row)


def measure(label: str, rows_class: type, n: int, repeats: int) -> None:
    log = RequestLog("/dev/null")
    log.rows = rows_class(FLUSH_ROWS)
    batches = range(0, n, FLUSH_ROWS)  # a worker formats and writes FLUSH_ROWS rows at a time

    def fill(data: list, start: int) -> None:
        for row in data[start : start + FLUSH_ROWS]:
            log.rows.append(row)

    def format_rows(data: list) -> float:
        spent = 0.0
        for start in batches:
            fill(data, start)
            t0 = time.thread_time()
            log.rows.format(log._prefix, log._tail, log._no_tasks).release()
            spent += time.thread_time() - t0
        return spent

    def flush(data: list) -> None:
        for start in batches:
            fill(data, start)
            log.flush()

    fill(rows(FLUSH_ROWS, 99), 0)
    log.flush()  # warm up
    for name, fn in (("format", format_rows), ("fill + flush to /dev/null", flush)):
        low, mid = timed(fn, n, repeats)
        print(f"{label + ' ' + name + ':':34} min {low:.3f}  median {mid:.3f} us/row")


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 100_000
    repeats = int(args[1]) if len(args) > 1 else 9
    if requestlog.Rows is PyRows:
        print("the C rows are not built: Python only")
    else:
        measure("C", requestlog.Rows, n, repeats)
    measure("Python", PyRows, n, repeats)


if __name__ == "__main__":
    main()
