"""Requests through real nginx to a real fcgipool arbiter, with keep-conn on and off."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support import NginxServer, PoolProcess, fastcgi_site

APPS = Path(__file__).parent / "apps"
pytestmark = pytest.mark.nginx


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PoolProcess]:
    out = tmp_path_factory.mktemp("bgapp")
    with PoolProcess("bgapp:app", workers=2, app_dir=APPS, env={"BGAPP_DIR": str(out)}) as p:
        yield p


@pytest.fixture(scope="module", params=[True, False], ids=["keep-conn", "no-keep-conn"])
def nginx(request: pytest.FixtureRequest, pool: PoolProcess) -> Iterator[NginxServer]:
    with NginxServer(fastcgi_site(pool.bind, keep_conn=request.param), workers=2) as n:
        yield n


def test_hello(nginx: NginxServer) -> None:
    for _ in range(5):
        r = requests.get(nginx.url("/hello"), timeout=5)
        assert r.status_code == 200
        assert r.text == "hello\n"
        assert r.headers["Content-Type"] == "text/plain"


def test_post_body_round_trips(nginx: NginxServer) -> None:
    body = bytes(range(256)) * 4000  # ~1 MB, several STDIN records and nginx buffers
    r = requests.post(nginx.url("/echo"), data=body, timeout=10)
    assert r.status_code == 200
    assert r.content == body


def test_environ_from_nginx(nginx: NginxServer) -> None:
    r = requests.get(nginx.url("/env?a=1&b=%20x"), headers={"X-Custom": "v"}, timeout=5)
    env = json.loads(r.text)
    assert env["PATH_INFO"] == "/env"
    assert env["SCRIPT_NAME"] == ""
    assert env["QUERY_STRING"] == "a=1&b=%20x"
    assert env["REQUEST_METHOD"] == "GET"
    assert env["HTTP_X_CUSTOM"] == "v"
    assert env["wsgi.url_scheme"] == "http"
    assert "CONTENT_LENGTH" not in env
    assert "HTTP_CONTENT_LENGTH" not in env


def test_large_response(nginx: NginxServer) -> None:
    r = requests.get(nginx.url("/big?size=3000000"), timeout=10)
    assert r.status_code == 200
    assert len(r.content) == 3000000
    assert r.content[:16] == b"0123456789abcdef"


def test_app_error_is_500_and_worker_survives(nginx: NginxServer) -> None:
    r = requests.get(nginx.url("/error"), timeout=5)
    assert r.status_code == 500
    assert requests.get(nginx.url("/hello"), timeout=5).text == "hello\n"


def test_file_wrapper_through_nginx(nginx: NginxServer, tmp_path: Path) -> None:
    path = tmp_path / "download.bin"
    data = bytes(range(256)) * 2000  # 512 KB: more than one output buffer
    path.write_bytes(data)
    path.chmod(0o644)
    r = requests.get(nginx.url(f"/file?path={path}"), timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.content == data


def test_many_small_blocks_arrive_whole(nginx: NginxServer) -> None:
    r = requests.get(nginx.url("/pieces?n=300"), timeout=5)
    assert r.content == b"".join(f"{i:05d}\n".encode() for i in range(300))


@pytest.mark.slow
def test_each_response_leaves_the_worker_in_one_socket_write(tmp_path: Path) -> None:
    """Batching, counted in real syscalls: strace on the only worker while nginx (keep-conn) sends requests.

    /hello (one block) and /pieces (300 blocks of 6 bytes) must each cost exactly one write to the socket:
    headers, body, the end of STDOUT and END_REQUEST together.
    """
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (`apt-get install strace`): it counts the worker's syscalls")
    requests_sent = 20
    with (
        PoolProcess("bgapp:app", workers=1, app_dir=APPS, env={"BGAPP_DIR": str(tmp_path)}) as pool,
        NginxServer(fastcgi_site(pool.bind, keep_conn=True), workers=1) as nginx,
    ):
        requests.get(nginx.url("/hello"), timeout=5)  # warm up: imports, the kept connection
        (pid,) = pool.worker_pids()
        out = tmp_path / "strace.txt"
        tracer = subprocess.Popen(
            [strace, "-f", "-y", "-e", "trace=write,writev,send,sendto,sendmsg", "-o", str(out), "-p", str(pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert tracer.stderr is not None
            line = tracer.stderr.readline()
            if "attached" not in line:
                pytest.skip(f"strace cannot attach here (ptrace not permitted?): {line.strip()}")
            with requests.Session() as s:
                for i in range(requests_sent):
                    r = s.get(nginx.url("/pieces?n=300" if i % 2 else "/hello"), timeout=5)
                    assert r.status_code == 200
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(10)
    calls = [c for c in out.read_text().splitlines() if "socket:" in c or "UNIX" in c]
    print(f"{len(calls)} socket writes for {requests_sent} responses")
    assert len(calls) == requests_sent, "\n".join(calls[:40])
