"""Other FastCGI clients than nginx against a real pool: libfcgi's cgi-fcgi, raw sockets with bad input."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fcgipool.protocol import (
    FastCGIError,
    RecordType,
    decode_pairs,
    encode_begin_request,
    encode_pairs,
    encode_params,
    encode_record,
    encode_request,
    parse_records,
)
from support import PoolProcess, fcgi_request, parse_cgi_response

APPS = Path(__file__).parent / "apps"
CGI_FCGI = shutil.which("cgi-fcgi")


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PoolProcess]:
    out = tmp_path_factory.mktemp("clients")
    args = ["--max-body-size", "100k", "--max-params-size", "16k"]
    with PoolProcess("bgapp:app", workers=2, args=args, app_dir=APPS, env={"BGAPP_DIR": str(out)}) as p:
        yield p


def cgi_fcgi(pool: PoolProcess, env: dict[str, str], body: bytes = b"") -> tuple[int, list[tuple[str, str]], bytes]:
    if CGI_FCGI is None:
        pytest.skip("cgi-fcgi is not installed: `sudo apt-get install libfcgi-bin`")
    base = {"PATH": os.environ.get("PATH", ""), "REQUEST_METHOD": "GET", "SERVER_NAME": "cgi", "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.0", "QUERY_STRING": ""}  # fmt: skip
    base.update(env)
    if body:
        base["CONTENT_LENGTH"] = str(len(body))
    proc = subprocess.run(
        [CGI_FCGI, "-bind", "-connect", pool.socket_path], input=body, env=base, capture_output=True, timeout=20
    )
    assert proc.returncode == 0, proc.stderr
    return parse_cgi_response(proc.stdout)


def test_cgi_fcgi_get(pool: PoolProcess) -> None:
    status, headers, body = cgi_fcgi(pool, {"SCRIPT_NAME": "/hello", "REQUEST_URI": "/hello"})
    assert status == 200
    assert ("Content-Type", "text/plain") in headers
    assert body == b"hello\n"


def test_cgi_fcgi_post_body(pool: PoolProcess) -> None:
    payload = os.urandom(50_000)
    status, _, body = cgi_fcgi(pool, {"PATH_INFO": "/echo", "REQUEST_METHOD": "POST"}, payload)
    assert status == 200 and body == payload


def test_cgi_fcgi_lines_and_query(pool: PoolProcess) -> None:
    status, _, body = cgi_fcgi(pool, {"PATH_INFO": "/lines", "REQUEST_METHOD": "POST"}, b"one\ntwo\nthree")
    assert (status, body) == (200, b"4:one\n4:two\n5:three")


def test_cgi_fcgi_body_over_limit_is_413(pool: PoolProcess) -> None:
    status, _, _ = cgi_fcgi(pool, {"PATH_INFO": "/echo", "REQUEST_METHOD": "POST"}, b"x" * 200_000)
    assert status == 413


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "unsupported FastCGI version"),
        (encode_begin_request(1) + encode_params(1, {"A": "b"})[:5], "connection closed mid"),
        (encode_record(RecordType.STDIN, 1, b"x"), "before its BEGIN_REQUEST"),
        (encode_request(1, {"HTTP_COOKIE": "c" * 20_000}), "max_params_size"),
    ],
    ids=["http-not-fastcgi", "truncated", "stdin-before-begin", "params-too-large"],
)
def test_bad_input_closes_that_connection_and_the_worker_keeps_serving(
    pool: PoolProcess, data: bytes, reason: str
) -> None:
    before = pool.worker_pids()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(pool.socket_path)
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(65536) == b""  # closed without a response
    assert fcgi_request(pool.socket_path, {"PATH_INFO": "/hello"}).body == b"hello\n"
    assert pool.worker_pids() == before
    warnings = [line for line in pool.log_text().splitlines() if "closing FastCGI connection from unix:" in line]
    assert any(reason in line and "(pid " in line for line in warnings), warnings


def ask_values(socket_path: str, names: list[str]) -> tuple[dict[bytes, bytes], list[Any]]:
    """GET_VALUES for ``names`` plus an unknown record type on a fresh connection: (values, the other records)."""
    query = encode_record(RecordType.GET_VALUES, 0, encode_pairs(dict.fromkeys(names, "")))
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(socket_path)
        sock.sendall(query + encode_record(42, 0, b""))
        data = b""
        records: list[Any] = []
        while len(records) < 2:  # GET_VALUES_RESULT + UNKNOWN_TYPE, no request needed
            chunk = sock.recv(65536)
            assert chunk, "connection closed before both answers"
            data += chunk
            with contextlib.suppress(FastCGIError):  # a record still incomplete: read on
                records = parse_records(data)
    assert records[0].type == RecordType.GET_VALUES_RESULT
    return dict(decode_pairs(records[0].content)), records[1:]


def test_get_values_and_unknown_type_are_answered(pool: PoolProcess) -> None:
    values, rest = ask_values(pool.socket_path, ["FCGI_MPXS_CONNS", "X_UNKNOWN_NAME", "FCGI_MAX_CONNS"])
    assert values == {b"FCGI_MPXS_CONNS": b"0", b"FCGI_MAX_CONNS": b"2"}  # the unknown name is left out
    assert [r.type for r in rest] == [RecordType.UNKNOWN_TYPE]


def test_get_values_reports_the_most_workers_a_dynamic_pool_may_run(tmp_path: Path) -> None:
    args = ["--pm", "dynamic", "--pm-max-children", "3", "--pm-start-servers", "1",
            "--pm-min-spare-servers", "1", "--pm-max-spare-servers", "1"]  # fmt: skip
    with PoolProcess("bgapp:app", workers=1, args=args, app_dir=APPS, env={"BGAPP_DIR": str(tmp_path)}) as p:
        values, _ = ask_values(p.socket_path, ["FCGI_MAX_CONNS", "FCGI_MAX_REQS"])
    assert values == {b"FCGI_MAX_CONNS": b"3", b"FCGI_MAX_REQS": b"3"}


def test_keep_conn_client_reuses_one_connection(pool: PoolProcess) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(pool.socket_path)
        pids = set()
        for _ in range(5):
            r = fcgi_request(pool.socket_path, {"PATH_INFO": "/pid"}, keep_conn=True, sock=sock)
            assert r.status == 200
            pids.add(r.body)
    assert len(pids) == 1  # one connection, one worker
