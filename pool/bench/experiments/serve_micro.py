"""CPU per request of fcgipool's connection code in one process: no nginx, no other processes, hot caches.

    .venv/bin/python pool/bench/experiments/serve_micro.py [--profile]

Sends the FastCGI request nginx sends for `GET /` over a socketpair to `fcgipool.server.FastCGIConnection`
(keep-conn) and reads the response, N times; subtracts the bare socket ping-pong. The same for
minimal_fcgi.py's `serve`. Uses fcgipool internals (FastCGIConnection and what it needs from its worker):
an experiment to re-run after changes to server.py / protocol/, not a test.
"""

import cProfile
import logging
import pstats
import socket
import sys
import time
from pathlib import Path

from fcgipool.protocol.records import encode_request
from fcgipool.recorder import Recorder
from fcgipool.requestlog import RequestLog
from fcgipool.scoreboard import Scoreboard
from fcgipool.server import FastCGIConnection, ServerSettings
from fcgipool.watchdog import Watchdog

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "apps"), str(HERE)]

from hello import app  # noqa: E402
from minimal_fcgi import serve as minimal_serve  # noqa: E402

# What nginx sends for `GET /` with Debian's fastcgi_params plus SCRIPT_FILENAME and a Host header.
PARAMS = {
    "QUERY_STRING": "", "REQUEST_METHOD": "GET", "CONTENT_TYPE": "", "CONTENT_LENGTH": "",
    "SCRIPT_NAME": "/", "REQUEST_URI": "/", "DOCUMENT_URI": "/", "DOCUMENT_ROOT": str(HERE.parent / "apps"),
    "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_SCHEME": "http", "GATEWAY_INTERFACE": "CGI/1.1",
    "SERVER_SOFTWARE": "nginx/1.22.1", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "51234", "REMOTE_USER": "",
    "SERVER_ADDR": "127.0.0.1", "SERVER_PORT": "40001", "SERVER_NAME": "", "REDIRECT_STATUS": "200",
    "SCRIPT_FILENAME": str(HERE.parent / "apps" / "hello.php"), "HTTP_HOST": "127.0.0.1:40001",
}  # fmt: skip
REQUEST = encode_request(1, PARAMS, keep_conn=True)
N = 20000


class Host:
    """What FastCGIConnection needs from its worker (fcgipool.server.Host)."""

    def __init__(self, slot: object, request_log: RequestLog | None = None) -> None:
        self.wsgi = app
        self.request_log = request_log
        self.spill = None
        self.log = logging.getLogger("serve_micro")
        self.recorder = Recorder(slot)  # type: ignore[arg-type]
        self.watchdog = Watchdog()
        self.settings = ServerSettings()
        self.alive = True
        self.errors = sys.stderr

    def notify(self) -> None:
        pass

    def request_served(self) -> None:
        pass

    def task_lost_hook(self) -> None:
        return None


def per_request(fn, n: int = N) -> float:
    start = time.thread_time()
    for _ in range(n):
        fn()
    return (time.thread_time() - start) / n * 1e6


def main() -> None:
    client, server = socket.socketpair()
    response = b"x" * 120

    def ping_pong() -> None:
        client.sendall(REQUEST)
        server.recv(65536)
        server.sendall(response)
        client.recv(65536)

    def fcgipool_request(conn: FastCGIConnection) -> None:
        client.sendall(REQUEST)
        conn.serve(fresh=True)
        conn.host.recorder.idle()
        client.recv(65536)

    leftover = [b""]

    def minimal_request() -> None:
        client.sendall(REQUEST)
        leftover[0] = minimal_serve(server, leftover[0])[1]
        client.recv(65536)

    board = Scoreboard(1)
    slot = board.slot(board.acquire(0))
    bare = FastCGIConnection(server, None, Host(None))
    scored = FastCGIConnection(server, None, Host(slot))
    per_request(lambda: fcgipool_request(scored), 2000)  # warm up
    floor = per_request(ping_pong)
    print(f"socket ping-pong (subtracted below): {floor:.1f} us")
    print(f"minimal_fcgi serve:                  {per_request(minimal_request) - floor:.1f} us/request")
    print(f"fcgipool, no scoreboard:             {per_request(lambda: fcgipool_request(bare)) - floor:.1f} us/request")
    scored_us = per_request(lambda: fcgipool_request(scored)) - floor
    print(f"fcgipool with its scoreboard slot:   {scored_us:.1f} us/request")
    log = RequestLog("/dev/null")
    logged = FastCGIConnection(server, None, Host(slot, log))

    def logged_request() -> None:
        fcgipool_request(logged)  # the server writes the rows out itself when 512 wait

    logged_us = per_request(logged_request) - floor
    print(f"... and its request log (/dev/null): {logged_us:.1f} us/request ({logged_us - scored_us:+.1f})")
    if "--profile" in sys.argv:
        prof = cProfile.Profile()
        prof.enable()
        per_request(lambda: fcgipool_request(scored))
        prof.disable()
        stats = pstats.Stats(prof)
        stats.sort_stats("tottime").print_stats(25)
        print(f"Python function calls per request: {stats.total_calls / N:.0f}")  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
