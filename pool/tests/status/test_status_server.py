"""The arbiter's status listener over real sockets: our client, cgi-fcgi, keep-conn, bad input."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time

import pytest
from fcgipool import protocol
from fcgipool.scoreboard import Scoreboard, WorkerState
from fcgipool.status import cli as status_cli
from fcgipool.status.listener import StatusServer
from fcgipool.status.monitor import PoolMonitor


@pytest.fixture
def server(tmp_path):
    sb = Scoreboard(2)
    slot = sb.slot(sb.acquire(pid=os.getpid()))
    slot.begin_request("GET", "/busy", "", 0)
    slot.end_response()
    slot.set_state(WorkerState.FINISHING)
    mon = PoolMonitor(sb, lambda: [], pool="www", process_manager=lambda: "static", max_children=lambda: 2)
    samples = []
    srv = StatusServer(mon, f"unix:{tmp_path}/status.sock", on_sample=samples.append, interval=0.05)
    srv.start()
    srv.samples = samples
    yield srv
    srv.stop()


def test_status_ping_and_404(server):
    addr = server.address
    code, headers, body = status_cli.fetch(addr, "/pool-status", "json&full")
    assert code == 200 and headers["content-type"] == "application/json"
    data = json.loads(body)
    assert data["finishing processes"] == 1 and data["processes"][0]["request uri"] == "/busy"
    assert status_cli.fetch(addr, "/pool-ping")[2] == b"pong"
    code, _, body = status_cli.fetch(addr, "/elsewhere")
    assert code == 404 and b"/pool-status" in body
    code, headers, body = status_cli.fetch(addr, "/pool-ping", method="HEAD")
    assert code == 200 and body == b"" and headers["content-length"] == "4"


def test_samples_periodically_without_requests(server):
    time.sleep(0.3)
    assert len(server.samples) >= 3


def test_keep_conn_serves_several_requests_on_one_connection(server):
    path = server.address[5:]
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        for rid in (1, 2, 3):
            s.sendall(protocol.encode_request(rid, {"DOCUMENT_URI": "/pool-ping"}, keep_conn=True))
            buf = b""
            while not buf.endswith(protocol.encode_end_request(rid, 0, 0)[-16:]):
                buf += s.recv(4096)
            assert b"pong" in buf


def test_malformed_input_closes_only_that_connection(server, caplog):
    path = server.address[5:]
    with caplog.at_level("WARNING"), socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(b"\x07garbage-not-fastcgi")
        s.settimeout(2)
        while s.recv(4096):  # closed by the listener (reading until EOF; a timeout fails the test)
            pass
    assert status_cli.fetch(server.address, "/pool-ping")[2] == b"pong"
    warnings = [r.getMessage() for r in caplog.records if "closing connection from" in r.getMessage()]
    assert warnings and f"unix:{path} (pid {os.getpid()})" in warnings[0] and "version" in warnings[0], warnings


@pytest.mark.skipif(not shutil.which("cgi-fcgi"), reason="cgi-fcgi (libfcgi-bin) not installed")
def test_cgi_fcgi_client_reads_the_page(server):
    env = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/pool-status", "QUERY_STRING": "", "PATH": os.environ["PATH"]}
    out = subprocess.run(
        ["cgi-fcgi", "-bind", "-connect", server.address[5:]], env=env, capture_output=True, timeout=10, check=True
    ).stdout.decode()
    assert "pool:                 www" in out and "finishing processes:  1" in out


def test_cli_prints_status_and_explains_unreachable_listener(server, tmp_path, capsys):
    assert status_cli.main(["--status-listen", server.address, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pool"] == "www"
    assert status_cli.main(["--status-listen", f"unix:{tmp_path}/nothing.sock"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the status listener" in err and "--status-listen" in err
    with pytest.raises(SystemExit):
        status_cli.main(["--status-listen", "nonsense"])


def test_listener_address_in_use_is_a_clear_error(server):
    other = StatusServer(server.monitor, server.address)
    with pytest.raises(RuntimeError, match="cannot listen for status on unix:"):
        other.start()
