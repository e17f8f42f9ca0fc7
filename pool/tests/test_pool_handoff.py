"""Idle kept connections are passed between workers (fcgipool.handoff), never closed while the pool runs.

Each test holds a kept connection idle in a worker, makes that worker let go of it (it takes a new connection,
it exits after max_requests, the pool reloads) and then sends a request on it: before the hand-off queue the
worker closed it and that request failed (nginx's EPIPE/ECONNRESET, "The close race").
"""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

from fcgipool.handoff import HandoffQueue, Parking
from fcgipool.status import cli as status_cli
from support import PoolProcess, fcgi_request, wait_for

APPS = Path(__file__).parent / "apps"
PID = {"PATH_INFO": "/pid", "REQUEST_URI": "/pid"}


def pid_on(pool: PoolProcess, sock: socket.socket | None = None, kept: bool = True) -> tuple[int, socket.socket]:
    """One keep-conn request for the serving worker's pid; returns it and the connection.

    ``kept``: the worker keeps the connection (no trailing no-reuse marker after END_REQUEST)."""
    if sock is None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(pool.socket_path)
    r = fcgi_request(pool.socket_path, PID, keep_conn=True, sock=sock)
    assert r.status == 200 and (not r.trailing) == kept, r
    return int(r.body), sock


def test_queue_passes_a_socket_with_its_unread_data() -> None:
    q = HandoffQueue()
    a, b = socket.socketpair()
    try:
        assert q.take() is None and q.pending() == 0
        assert q.give(a, 30000, inode=77, idle_since=12.5)
        a.close()  # the giver's copy: the socket lives on in the queue
        b.sendall(b"request")  # written while nobody holds it
        assert q.pending() == 1
        got = q.take()
        assert got is not None and q.pending() == 0 and q.take() is None
        taken, note, inode, idle_since = got
        assert (note, inode, idle_since) == (30000, 77, 12.5)
        with taken:
            assert taken.recv(100) == b"request"
            taken.sendall(b"answer")
            assert b.recv(100) == b"answer"
    finally:
        b.close()
        q.close()


def test_idle_connection_survives_its_worker_taking_a_new_one() -> None:
    with PoolProcess("bgapp:app", workers=1, app_dir=APPS, wait_path=None) as pool:
        first, kept = pid_on(pool)
        with kept:
            for _ in range(3):  # each new connection makes the only worker let go of the idle one
                other, new = pid_on(pool)
                new.close()
                again, _ = pid_on(pool, kept)
                assert first == other == again


def test_idle_connection_survives_max_requests_recycling() -> None:
    with PoolProcess("bgapp:app", workers=1, args=["--max-requests", "3"], app_dir=APPS, wait_path=None) as pool:
        old, kept = pid_on(pool)  # request 1 of the worker
        with kept:
            pid_on(pool)[1].close()  # 2
            pid_on(pool, kept=False)[1].close()  # 3: ends with the no-reuse marker; the worker exits, passing
            # the idle kept connection on
            wait_for(lambda: pool.worker_pids() and old not in pool.worker_pids(), 10, "the worker to be replaced")
            new, _ = pid_on(pool, kept)
            assert new != old, "the request was served by the recycled worker"


def test_idle_connection_survives_a_reload() -> None:
    with PoolProcess("bgapp:app", workers=2, app_dir=APPS, wait_path=None) as pool:
        kept_conns = [pid_on(pool) for _ in range(2)]
        old = set(pool.worker_pids())
        pool.signal(signal.SIGHUP)
        wait_for(lambda: len(p := set(pool.worker_pids())) == 2 and not p & old, 15, "the new generation")
        for _, sock in kept_conns:
            with sock:
                pid, _ = pid_on(pool, sock)
                assert pid not in old


def test_parking_spots_a_request_and_drops_closed_connections() -> None:
    """ondemand with no worker: the arbiter watches queued connections; only a request on one is demand."""
    q = HandoffQueue()
    parking = Parking(q)
    (a, b), (c, d) = socket.socketpair(), socket.socketpair()
    try:
        for s in (a, c):
            assert q.give(s, 7)
            s.close()
        assert not parking.check() and len(parking) == 2 and q.pending() == 0  # idle: parked, no demand
        d.close()  # nginx closed one: the arbiter closes it too
        b.sendall(b"request")
        assert parking.check() and len(parking) == 0 and q.pending() == 1  # back in the queue for a worker
        got = q.take()
        assert got is not None and got[1] == 7
        with got[0] as taken:
            assert taken.recv(100) == b"request"
    finally:
        b.close()
        q.close()


def test_ondemand_with_no_worker_serves_a_request_on_a_kept_connection(tmp_path: Path) -> None:
    """The last worker stops (idle timeout) holding a kept connection: the arbiter parks it, counts it on the
    status page, and spawns a worker when a request arrives on it."""
    status_sock = f"unix:{tmp_path}/status.sock"

    def waiting() -> int:
        code, _, body = status_cli.fetch(status_sock, query="json")
        assert code == 200
        return int(json.loads(body)["kept connections waiting"])

    args = ["--status-listen", status_sock, "--pm", "ondemand", "--pm-max-children", "1",
            "--pm-process-idle-timeout", "0.5"]  # fmt: skip
    with PoolProcess("bgapp:app", workers=0, args=args, app_dir=APPS, wait_path=None) as pool:
        first, kept = pid_on(pool)
        with kept:
            wait_for(lambda: not pool.worker_pids(), 10, "the idle worker to stop")
            assert wait_for(lambda: waiting() == 1, 5, "the kept connection to be counted")
            pid, _ = pid_on(pool, kept)
            assert pid != first and pid in pool.worker_pids()
            assert waiting() == 0
