"""The keeper, without processes: copies in, a dead worker's row read, idle connections passed on, the one in
progress shut down, hang-ups dropped, connections nobody lists found. Through nginx: test_pool_faults.py."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import pytest
from fcgipool import keeper as keeper_mod
from fcgipool.handoff import HandoffQueue
from fcgipool.keeper import Keeper, KeptConns, inode_of
from support import wait_for


@pytest.fixture
def keeper() -> Iterator[Keeper]:
    queue = HandoffQueue()
    k = Keeper(4, queue, logging.getLogger("test.keeper"))
    k.start()
    yield k
    k.stop()
    queue.close()


def worker_side(k: Keeper, index: int) -> KeptConns:
    return KeptConns(k.table.row(index), k._wr)


def test_a_dead_workers_idle_connections_are_passed_on_and_its_request_in_progress_ends(keeper: Keeper) -> None:
    side = worker_side(keeper, 1)
    idle_nginx, idle_pool = socket.socketpair()
    busy_nginx, busy_pool = socket.socketpair()
    with idle_nginx, busy_nginx:
        idle = side.copy(idle_pool, 30000)
        busy = side.copy(busy_pool, 30000)
        assert idle == inode_of(idle_pool) and busy == inode_of(busy_pool)
        side.serving(busy)
        side.unhold(busy)
        idle_pool.close()  # the worker dies: its descriptors close with it
        busy_pool.close()
        idle_nginx.sendall(b"a request written while the worker dies")
        assert keeper.worker_gone(1, 4242) == 1
        taken = keeper.queue.take()
        assert taken is not None and (taken.inode, taken.note) == (idle, 30000)
        with taken.sock:
            assert taken.sock.recv(100) == b"a request written while the worker dies"
        busy_nginx.settimeout(5)
        assert busy_nginx.recv(100) == b"", "the request in progress must fail now, not at nginx's read timeout"
        assert keeper.table.read(1) == (0, [])


def test_a_held_connection_taken_up_stays_listed_and_is_shut_down_if_its_worker_dies(keeper: Keeper) -> None:
    """take_up() makes a held connection current without unlisting it (one store per request): the keeper must
    still end it, never pass it on mid-request. Fails if worker_gone() passed on what is listed and current."""
    side = worker_side(keeper, 2)
    nginx, pool = socket.socketpair()
    with nginx:
        inode = side.copy(pool, 30000)
        side.take_up(inode)
        assert keeper.table.read(2) == (inode, [inode])
        pool.close()
        assert keeper.worker_gone(2, 4243) == 0
        assert keeper.queue.take() is None
        nginx.settimeout(5)
        assert nginx.recv(100) == b""
    other_nginx, other = socket.socketpair()
    with other_nginx, other:
        inode = side.copy(other, 0)
        side.take_up(inode)
        side.put_down(inode, rescuable=False)
        assert keeper.table.read(2) == (0, [inode | keeper_mod._CLOSE_ON_DEATH])
        side.take_up(inode)
        side.leave(inode)  # passed on or closed after its request: unlisted, not current
        assert keeper.table.read(2) == (0, [])


def test_a_copy_is_dropped_when_nginx_closes_the_connection(keeper: Keeper) -> None:
    side = worker_side(keeper, 0)
    nginx, pool = socket.socketpair()
    with pool:
        side.copy(pool, 0)
        wait_for(lambda: len(keeper) == 1, 5, "the keeper to receive the copy")
        nginx.close()
        wait_for(lambda: len(keeper) == 0, 5, "the keeper to drop the copy of a closed connection")


def test_a_worker_that_closes_a_connection_shuts_it_down_for_nginx(keeper: Keeper) -> None:
    """The keeper's copy must never keep a connection open that the pool has closed: shutdown() ends it."""
    from fcgipool.server import FastCGIConnection, ServerSettings

    class Host:
        settings = ServerSettings()
        log = logging.getLogger("test")
        request_log = None

    nginx, pool = socket.socketpair()
    with nginx:
        conn = FastCGIConnection(pool, None, Host())  # type: ignore[arg-type]
        conn.inode = worker_side(keeper, 2).copy(pool, 0)
        wait_for(lambda: len(keeper) == 1, 5, "the copy")
        conn.close()
        nginx.settimeout(5)
        assert nginx.recv(10) == b""
        wait_for(lambda: len(keeper) == 0, 5, "the keeper to drop its copy")


def test_a_connection_nobody_lists_after_a_death_is_passed_on(keeper: Keeper, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker killed between unlisting a connection and giving it away leaves it with nobody: after three
    checks the keeper passes it on."""
    monkeypatch.setattr(keeper_mod, "ORPHAN_CHECK_EVERY", 0.1)
    side = worker_side(keeper, 3)
    nginx, pool = socket.socketpair()
    with nginx:
        inode = side.copy(pool, 5)
        side.unhold(inode)  # unlisted ...
        pool.close()  # ... and killed before it reached the queue
        assert keeper.worker_gone(3, 4343) == 0
        t0 = time.monotonic()
        taken = wait_for(lambda: keeper.queue.take(), 10, "the orphan to be passed on")
        assert taken.inode == inode and time.monotonic() - t0 >= 0.2
        taken.sock.close()


def test_a_listed_connection_is_never_taken_as_an_orphan(keeper: Keeper, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keeper_mod, "ORPHAN_CHECK_EVERY", 0.05)
    keeper.live_slots = lambda: [0]
    alive, dead = worker_side(keeper, 0), worker_side(keeper, 1)
    a_nginx, a_pool = socket.socketpair()
    with a_nginx, a_pool:
        alive.copy(a_pool, 0)  # held by a live worker
        keeper.worker_gone(1, 1)  # another worker dies: the checks run
        del dead
        time.sleep(0.6)
        assert keeper.queue.pending() == 0, "a connection a live worker holds was passed on"
