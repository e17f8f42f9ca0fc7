"""How nginx 1.22 decides to cache a FastCGI connection, checked against the real binary.

fcgipool relies on this (fcgipool.server.NO_REUSE): nginx's fastcgi module caches the upstream connection
when END_REQUEST ends exactly at the end of what it read, and ignores a ``Connection: close`` response
header. Bytes after END_REQUEST (an empty FCGI_GET_VALUES_RESULT record) make it close the connection.
If a future nginx changes this, these tests say so.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest
import requests
from fcgipool.protocol import NEED_DATA, Connection, StdinEnd
from fcgipool.server import NO_REUSE
from support import NginxServer, fastcgi_site

pytestmark = pytest.mark.nginx


class ScriptedUpstream:
    """A FastCGI responder on a unix socket that answers every request the same way and logs connections."""

    def __init__(self, path: Path, extra_header: bytes = b"", trailer: bytes = b"") -> None:
        self.path = path
        self.extra_header = extra_header
        self.trailer = trailer
        self.requests_per_connection: list[int] = []
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        os.chmod(path, 0o777)
        self.sock.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.requests_per_connection.append(0)
            index = len(self.requests_per_connection) - 1
            threading.Thread(target=self._serve, args=(client, index), daemon=True).start()

    def _serve(self, client: socket.socket, index: int) -> None:
        conn = Connection()
        with client:
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    data = client.recv(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                elif isinstance(event, StdinEnd):
                    self.requests_per_connection[index] += 1
                    head = b"Status: 200 OK\r\nContent-Type: text/plain\r\n" + self.extra_header + b"\r\n"
                    client.sendall(conn.send_response(event.request_id, head + b"ok\n") + self.trailer)

    def close(self) -> None:
        self.sock.close()


def run(tmp_path: Path, **kwargs: bytes) -> list[int]:
    # Once (CI, full suite) the tally came back as [1] after four answered requests: an accounting miss of this
    # scripted upstream, not an nginx decision (that would show as [2, 1, 1] or similar). So wait for the tally
    # to account for every request, and take a second run only when it still does not.
    os.chmod(tmp_path, 0o755)
    for attempt in (1, 2):
        counts = _run_once(tmp_path / f"run{attempt}", **kwargs)
        if sum(counts) == 4:
            return counts
    return counts


def _run_once(tmp_path: Path, **kwargs: bytes) -> list[int]:
    tmp_path.mkdir()
    upstream = ScriptedUpstream(tmp_path / "up.sock", **kwargs)
    os.chmod(tmp_path, 0o755)
    try:
        site = fastcgi_site(f"unix:{upstream.path}", keep_conn=True)
        with NginxServer(site, workers=1) as nginx, requests.Session() as s:
            for _ in range(4):
                assert s.get(nginx.url("/x"), timeout=5).text == "ok\n"
                time.sleep(0.05)
            deadline = time.monotonic() + 3
            while sum(upstream.requests_per_connection) < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        upstream.close()
    return list(upstream.requests_per_connection)


def test_nginx_reuses_a_kept_connection(tmp_path: Path) -> None:
    assert run(tmp_path) == [4]


def test_nginx_ignores_connection_close_from_fastcgi(tmp_path: Path) -> None:
    assert run(tmp_path, extra_header=b"Connection: close\r\n") == [4]


def test_bytes_after_end_request_make_nginx_close_the_connection(tmp_path: Path) -> None:
    assert run(tmp_path, trailer=NO_REUSE) == [1, 1, 1, 1]
