"""Limits through nginx: oversized bodies get 413, oversized params a closed connection and a logged reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support import NginxServer, PoolProcess, fastcgi_site

APPS = Path(__file__).parent / "apps"
pytestmark = pytest.mark.nginx


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PoolProcess]:
    out = tmp_path_factory.mktemp("limits")
    args = ["--max-body-size", "200k", "--max-params-size", "4k"]
    with PoolProcess("bgapp:app", workers=2, args=args, app_dir=APPS, env={"BGAPP_DIR": str(out)}) as p:
        yield p


@pytest.fixture(scope="module", params=[True, False], ids=["keep-conn", "no-keep-conn"])
def nginx(request: pytest.FixtureRequest, pool: PoolProcess) -> Iterator[NginxServer]:
    # nginx's own limits are wider than the pool's, so the pool's are the ones tested
    extra = "client_max_body_size 10m; large_client_header_buffers 4 32k;"
    with NginxServer(fastcgi_site(pool.bind, keep_conn=request.param, extra_server=extra), workers=2) as n:
        yield n


def test_body_over_max_body_size_is_413(nginx: NginxServer) -> None:
    r = requests.post(nginx.url("/echo"), data=b"x" * 500_000, timeout=10)
    assert r.status_code == 413
    # and the pool keeps serving, on the same kept connections
    assert requests.post(nginx.url("/echo"), data=b"y" * 1000, timeout=10).content == b"y" * 1000


def test_chunked_body_over_max_body_size_is_413(nginx: NginxServer) -> None:
    chunks = (b"z" * 50_000 for _ in range(10))  # Transfer-Encoding: chunked; nginx buffers it
    r = requests.post(nginx.url("/echo"), data=chunks, timeout=10)
    assert r.status_code == 413


def test_params_over_max_params_size_close_the_connection(nginx: NginxServer, pool: PoolProcess) -> None:
    r = requests.get(nginx.url("/hello"), headers={"Cookie": "c=" + "v" * 8000}, timeout=10)
    assert r.status_code == 502  # nginx: upstream closed the connection
    assert "max_params_size" in pool.log_text()
    assert "closing FastCGI connection from unix:" in pool.log_text()
    assert requests.get(nginx.url("/hello"), timeout=5).text == "hello\n"
