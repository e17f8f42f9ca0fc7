"""CPU per row of the request log's formatting (`Rows.format`: the C batch when built, and `PyRows`, its Python
twin), and of a whole flush to /dev/null, in the worker's batches of FLUSH_ROWS (512) rows.

    .venv/bin/python pool/bench/experiments/requestlog_format.py [rows] [repeats]

Rows like the ones fcgipool.server appends for a hello-world `GET /` at ~33,000 req/s: start times 30 µs apart,
answer ~0.3 ms, CPU ~20 µs, RSS ~21 MB (read once a second), the method a fresh string (decoded from the FastCGI
params, its hash not yet computed); new rows for every repeat. Prints min and median of the repeats, in µs per row.
"""

import random
import statistics
import sys
import time
from collections.abc import Callable

from fcgipool import requestlog
from fcgipool.requestlog import FLUSH_ROWS, PyRows, RequestLog


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
        out.append((b"GET".decode("latin-1"), "/", None, "200 OK", 0.0, None, start, (answer, cpu), rss))
    return out


def timed(fn: Callable[[list], object], n: int, repeats: int) -> tuple[float, float]:
    per_row = []
    for seed in range(repeats):
        data = rows(n, seed)
        t0 = time.thread_time()
        fn(data)
        per_row.append((time.thread_time() - t0) / n * 1e6)
    return min(per_row), statistics.median(per_row)


def measure(label: str, rows_class: type, n: int, repeats: int) -> None:
    log = RequestLog("/dev/null")
    log.rows = rows_class(FLUSH_ROWS)
    batches = range(0, n, FLUSH_ROWS)  # a worker formats and writes FLUSH_ROWS rows at a time

    def fill(data: list, start: int) -> None:
        for row in data[start : start + FLUSH_ROWS]:
            log.rows.append(row)

    def format_rows(data: list) -> None:
        for start in batches:
            fill(data, start)
            log.rows.format(log._prefix, log._tail, log._no_tasks)

    def flush(data: list) -> None:
        for start in batches:
            fill(data, start)
            log.flush()

    fill(rows(FLUSH_ROWS, 99), 0)
    log.flush()  # warm up
    for name, fn in (("fill + format", format_rows), ("fill + flush to /dev/null", flush)):
        low, mid = timed(fn, n, repeats)
        print(f"{label + ' ' + name + ':':34} min {low:.3f}  median {mid:.3f} us/row")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 9
    if requestlog.Rows is PyRows:
        print("the C rows are not built: Python only")
    else:
        measure("C", requestlog.Rows, n, repeats)
    measure("Python", PyRows, n, repeats)


if __name__ == "__main__":
    main()
