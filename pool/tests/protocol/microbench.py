"""Micro-benchmark of the protocol hot path (not a test): parse a captured nginx request, answer it.

    .venv/bin/python pool/tests/protocol/microbench.py [seconds]

Prints requests/second for one core with no I/O: the protocol's ceiling, to compare with the end-to-end
numbers of `make bench`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from fcgipool.protocol import NEED_DATA, Connection, RequestStarted, StdinData, StdinEnd, encode_request

HERE = Path(__file__).parent
NGINX_GET = (HERE / "vectors" / "nginx_get_plain.bin").read_bytes()
BODY = b"Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!"


def one_request_per_connection(data: bytes) -> None:
    conn = Connection()
    conn.receive_data(data)
    rid = 0
    while (ev := conn.next_event()) is not NEED_DATA:
        if isinstance(ev, RequestStarted):
            rid = ev.request_id
        elif isinstance(ev, StdinEnd):
            conn.send_response(rid, BODY)
            break
    conn.data_to_send()


def keep_conn(conn: Connection, data: bytes) -> None:
    conn.receive_data(data)
    rid = 0
    while (ev := conn.next_event()) is not NEED_DATA:
        if isinstance(ev, RequestStarted):
            rid = ev.request_id
        elif isinstance(ev, StdinEnd):
            conn.send_response(rid, BODY)
            break


def upload(data: bytes) -> int:
    conn = Connection()
    conn.receive_data(data)
    total = 0
    while (ev := conn.next_event()) is not NEED_DATA:
        if isinstance(ev, StdinData):
            total += len(ev.data)
        elif isinstance(ev, StdinEnd):
            break
    return total


def rate(fn, seconds: float) -> float:  # type: ignore[no-untyped-def]
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(1000):
            fn()
        n += 1000
    return n / elapsed


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    kept = Connection()
    kept_request = bytearray(NGINX_GET)
    kept_request[10] = 1  # BEGIN_REQUEST flags: FCGI_KEEP_CONN
    big = encode_request(1, {"REQUEST_METHOD": "POST"}, b"x" * (1 << 20))
    fresh = rate(lambda: one_request_per_connection(NGINX_GET), seconds)
    reused = rate(lambda: keep_conn(kept, bytes(kept_request)), seconds)
    mb = rate(lambda: upload(big), seconds) * len(big) / 1e6
    print(f"nginx GET ({len(NGINX_GET)} B) + 13 B response, new Connection each: {fresh:,.0f} req/s")
    print(f"same, keep-conn Connection reused:                      {reused:,.0f} req/s")
    print(f"1 MiB POST body through next_event():                  {mb:,.0f} MB/s")


if __name__ == "__main__":
    main()
