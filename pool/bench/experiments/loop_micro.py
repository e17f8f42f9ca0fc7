"""CPU per request of a whole fcgipool worker loop in one process: no nginx, no arbiter, hot caches.

    .venv/bin/python pool/bench/experiments/loop_micro.py [--profile] [--request-log]

A forked client keeps CONNS FastCGI connections open (as nginx's upstream keepalive does) and sends the
request nginx sends for `GET /` on each in turn, waiting for each answer; this process runs the real
``fcgipool.serveloop.ServeLoop`` with a hand-off queue, a keeper row, a scoreboard slot and the clock thread,
for N requests, and reports its main thread's CPU time per request (``--request-log``: with the request log on,
written to a temporary file). The same for minimal_fcgi.py's worker loop.
Uses fcgipool internals: an experiment to re-run after changes to the hot path, not a test.
"""

import cProfile
import logging
import os
import pstats
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from fcgipool.handoff import HandoffQueue
from fcgipool.keeper import Keeper, KeptConns
from fcgipool.recorder import Recorder
from fcgipool.requestlog import RequestLog
from fcgipool.scoreboard import Scoreboard
from fcgipool.serveloop import ServeLoop
from fcgipool.settings import ServerSettings
from fcgipool.upkeep import Upkeep
from fcgipool.watchdog import Watchdog

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "apps"), str(HERE)]

from hello import app  # noqa: E402
from minimal_fcgi import serve as minimal_serve  # noqa: E402
from serve_micro import REQUEST  # noqa: E402

N = 40000
CONNS = 4


class Worker:
    """What ServeLoop and FastCGIConnection need from fcgipool.worker.FastCGIWorker."""

    def __init__(self, listener: socket.socket, slot: object) -> None:
        self.wsgi = app
        self.log = logging.getLogger("loop_micro")
        self.recorder = Recorder(slot)  # type: ignore[arg-type]
        self.watchdog = Watchdog()
        self.settings = ServerSettings(timeout=30.0)
        self.alive = True
        self.errors = sys.stderr
        self.request_log = RequestLog(tempfile.mktemp(suffix=".log")) if "--request-log" in sys.argv else None
        self.spill = None
        self.sockets = [listener]
        self.PIPE = os.pipe()
        self.upkeep = Upkeep(self.log)
        self.nr = 0

    def notify(self, now: float = 0.0) -> None:
        pass

    def is_parent_alive(self) -> bool:
        return True

    def request_served(self) -> None:
        self.nr += 1
        if self.nr >= N:
            self.alive = False

    def task_lost_hook(self) -> None:
        return None

    def pass_on(self, conn: object) -> bool:
        return self.loop.pass_on_served(conn)  # type: ignore[arg-type]


def client(path: str, n: int) -> None:
    conns = []
    for _ in range(CONNS):
        c = socket.socket(socket.AF_UNIX)
        c.connect(path)
        conns.append(c)
    i = 0
    try:
        while i < n + CONNS * 4:
            c = conns[i % CONNS]
            c.sendall(REQUEST)
            if not c.recv(65536):
                break
            i += 1
    except OSError:
        pass
    os._exit(0)


def run(serve_fn) -> float:  # type: ignore[no-untyped-def]
    path = tempfile.mktemp(suffix=".sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(64)
    pid = os.fork()
    if pid == 0:
        listener.close()
        client(path, N)
    start = time.thread_time()
    serve_fn(listener)
    used = time.thread_time() - start
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    listener.close()
    os.unlink(path)
    return used / N * 1e6


def fcgipool_loop(listener: socket.socket) -> None:
    board = Scoreboard(4)
    queue = HandoffQueue()
    keeper = Keeper(4, queue, logging.getLogger("keeper"))
    kept = KeptConns(keeper.table.row(0), keeper._wr)  # the keeper's end stays open: copies are queued there
    worker = Worker(listener, board.slot(board.acquire(0)))
    worker.watchdog.install()
    loop = worker.loop = ServeLoop(worker, queue=queue, kept=kept, handoff_after=0.1, check_every=1.0)  # type: ignore
    worker.keepconn = loop.policy
    worker.watchdog.watch_rounds(0.1, loop.on_reminder)
    if "--profile" in sys.argv:
        prof = cProfile.Profile(time.thread_time)
        prof.enable()
        loop.run(1000)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    else:
        loop.run(1000)
    worker.watchdog.close()
    if worker.request_log is not None:
        worker.request_log.close()
        Path(worker.request_log.path).unlink(missing_ok=True)


def minimal_loop(listener: socket.socket) -> None:
    import select

    held: dict[socket.socket, bytes] = {}
    served = 0
    while served < N:
        for sock in select.select([listener, *held], [], [])[0]:
            if sock is listener:
                sock, _ = listener.accept()
                held[sock] = b""
            _keep, rest = minimal_serve(sock, held[sock])
            served += 1
            held[sock] = rest
    for sock in held:
        sock.close()


def main() -> None:
    for _ in range(2):
        print(f"minimal_fcgi loop: {run(minimal_loop):.1f} us/request")
        print(f"fcgipool loop:     {run(fcgipool_loop):.1f} us/request")


if __name__ == "__main__":
    main()
