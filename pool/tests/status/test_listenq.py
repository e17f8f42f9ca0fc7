"""Listen queue measurement on real sockets (no root needed)."""

from __future__ import annotations

import os
import socket

import pytest
from fcgipool import listenq
from support.unprivileged import passes_unprivileged


@pytest.fixture
def unix_listener(tmp_path):
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(tmp_path / "l.sock"))
    s.listen(7)
    yield s
    s.close()


def test_unix_socket_queue_and_backlog(unix_listener):
    assert listenq.listen_queue(unix_listener) == listenq.ListenQueue(queue=0, backlog=7)
    clients = []
    for _ in range(3):
        c = socket.socket(socket.AF_UNIX)
        c.connect(unix_listener.getsockname())
        clients.append(c)
    assert listenq.listen_queue(unix_listener) == listenq.ListenQueue(queue=3, backlog=7)
    conn, _ = unix_listener.accept()
    assert listenq.listen_queue(unix_listener).queue == 2
    for c in [conn, *clients]:
        c.close()


def test_tcp_socket_queue_and_backlog():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(9)
    clients = [socket.create_connection(s.getsockname()) for _ in range(4)]
    assert listenq.listen_queue(s) == listenq.ListenQueue(queue=4, backlog=9)
    for c in clients:
        c.close()
    s.close()


def test_gunicorn_style_wrapper_and_total(unix_listener):
    class Wrapped:
        sock = unix_listener

    c = socket.socket(socket.AF_UNIX)
    c.connect(unix_listener.getsockname())
    assert listenq.listen_queue(Wrapped()).queue == 1
    assert listenq.total([Wrapped(), unix_listener]) == listenq.ListenQueue(queue=2, backlog=14)
    c.close()


def test_unmeasurable_sockets_say_none_not_zero():
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    assert listenq.listen_queue(udp) is None
    connected = socket.socketpair()
    # not a listener: netlink has it, but no TCP listener state → None for TCP; unix gives its rqueue
    tcp = socket.socket()
    assert listenq.tcp_listen_queue(tcp) is None
    assert listenq.total([udp, tcp]) is None
    for s in (udp, tcp, *connected):
        s.close()


def test_works_without_privileges():
    """sock_diag needs no capability: measure from a child that dropped root (or already runs unprivileged)."""

    def measure() -> bool:
        name = f"\0fcgipool-listenq-test-{os.getpid()}"
        s = socket.socket(socket.AF_UNIX)
        s.bind(name)
        s.listen(5)
        c = socket.socket(socket.AF_UNIX)
        c.connect(name)
        return listenq.listen_queue(s) == listenq.ListenQueue(queue=1, backlog=5)

    assert passes_unprivileged(measure)
