"""Experiment: fcgipool's worker, but keeping every idle kept connection instead of at most one.

    BENCH_FCGIPOOL_ARGS="--pythonpath $PWD/pool/bench/experiments --worker-class multikept.MultiKeptWorker" \\
        BENCH_ONLY=fcgipool-keepconn .venv/bin/python pool/bench/run.py

It drops fcgipool's guarantee that no request waits while a worker idles on another kept connection (a
request can now wait on a busy worker's connection while another worker is idle), so it is not a fix:
it measures what connection churn under saturation costs (see docs/benchmarks.md).
"""

import contextlib
import errno
import os
import select
from typing import Any

from fcgipool.keepconn import Outcome
from fcgipool.server import FastCGIConnection
from fcgipool.worker import FastCGIWorker
from gunicorn import util


class MultiKeptWorker(FastCGIWorker):
    def run(self) -> None:
        timeout = self.timeout or 0.5
        for sock in self.sockets:
            sock.setblocking(False)
        held: set[FastCGIConnection] = set()
        try:
            while self.alive:
                self.notify()
                if not self.is_parent_alive():
                    break
                buffered = next((c for c in held if c.has_buffered_request), None)
                if buffered is not None:
                    self._serve_held(buffered, held, fresh=False)
                    continue
                try:
                    ready = select.select([*self.sockets, self.PIPE[0], *held], [], [], timeout)[0]
                except OSError as exc:
                    if exc.errno == errno.EINTR:
                        continue
                    raise
                if self.PIPE[0] in ready:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.PIPE[0], 64)
                conns = [r for r in ready if isinstance(r, FastCGIConnection)]
                for conn in conns:
                    self._serve_held(conn, held, fresh=False)
                if conns:
                    continue
                for listener in self.sockets:
                    if listener in ready:
                        try:
                            client, addr = listener.accept()
                        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                            continue
                        util.close_on_exec(client)
                        self.recorder.accepted()
                        self._serve_held(FastCGIConnection(client, addr, self), held, fresh=True)
                        break
        finally:
            for conn in held:
                conn.close()

    def _serve_held(self, conn: FastCGIConnection, held: set[Any], *, fresh: bool) -> None:
        if conn.serve(fresh=fresh) is Outcome.KEPT and self.alive:
            held.add(conn)
        else:
            conn.close()
            held.discard(conn)
        self.recorder.idle()
