"""Keep-conn under plain gunicorn (``gunicorn -k fcgipool.worker.FastCGIWorker``: no PoolArbiter, so no hand-off
queue): a worker holds one kept connection and lets go of it when it takes another -- a request already sent on
it is served first and ends it with the no-reuse marker (docs/server-behaviour.md, "Fairness without a queue").
"""

from __future__ import annotations

import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fcgipool.protocol import RecordType, encode_request, parse_records
from support import FastCGIResponse, PoolProcess, fcgi_request

TESTS = Path(__file__).parent  # the app directory: gunicorn imports support.pidapp from here


class PlainGunicorn(PoolProcess):
    def command(self) -> list[str]:
        return [sys.executable, "-m", "gunicorn", "-k", "fcgipool.worker.FastCGIWorker", "--bind", self.bind,
                "--workers", str(self.workers), "--umask", "0", *self.args, self.app]  # fmt: skip


def request(path: str, query: str = "") -> bytes:
    params = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
              "REQUEST_URI": f"{path}?{query}" if query else path, "SERVER_NAME": "test", "SERVER_PORT": "80",
              "SERVER_PROTOCOL": "HTTP/1.1"}  # fmt: skip
    return encode_request(1, params, keep_conn=True)


def read_to_end(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_request_waiting_on_the_held_connection_is_served_last_on_it(tmp_path: Path) -> None:
    """The worker serves a kept connection's slow request; meanwhile a second request is sent on that connection
    and a new connection sends one. The next poll round reports both; taking the new connection, the worker
    first serves the request waiting on the one it holds, ending that connection with the marker."""
    env = {"PIDAPP_DIR": str(tmp_path)}
    with PlainGunicorn("support.pidapp:app", workers=1, app_dir=TESTS, env=env) as pool, ThreadPoolExecutor(2) as ex, \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as held, \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:  # fmt: skip
        for sock in (held, other):
            sock.settimeout(10)
        held.connect(pool.socket_path)
        held.sendall(request("/slow", "s=0.5"))
        answers = ex.submit(read_to_end, held)
        time.sleep(0.2)  # the slow request is read and running: the next one waits in the socket
        held.sendall(request("/pid"))
        other.connect(pool.socket_path)
        new: FastCGIResponse = ex.submit(fcgi_request, pool.socket_path, {"PATH_INFO": "/pid"}, keep_conn=True,
                                         sock=other).result(timeout=10)  # fmt: skip
        records = parse_records(answers.result(timeout=10))  # read to EOF: the connection was ended
        ends = [i for i, r in enumerate(records) if r.type == RecordType.END_REQUEST]
        assert len(ends) == 2, f"{len(ends)} responses on the held connection: {records}"
        assert records[ends[0] + 1].type == RecordType.STDOUT, "the first response ended the connection"
        assert [r.type for r in records[ends[1] + 1 :]] == [RecordType.GET_VALUES_RESULT], (
            "the request waiting on the held connection did not end it with the no-reuse marker"
        )
        assert new.status == 200 and not new.trailing, new  # the new connection is the one kept now
        log = pool.log_text()
        assert "Traceback" not in log and "closing FastCGI connection" not in log, log[-3000:]
