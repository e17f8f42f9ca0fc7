"""Requests through real nginx to a real fcgipool arbiter, with keep-conn on and off."""

from __future__ import annotations

import json
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
