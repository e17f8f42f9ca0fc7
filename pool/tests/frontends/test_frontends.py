"""The same checks through every supported front end (Apache httpd, lighttpd, Caddy, HAProxy), each started
from Debian's package with the example config of docs/frontends/<name>/, in front of one real pool; nginx,
configured as the other tests run it, is the reference (docs/frontends.md).

A front end whose package is missing is skipped with what to install. Timing assertions have wide margins:
they show behaviour (a response does not wait for its 300 ms task), not speed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from support import PoolProcess, wait_for
from support.frontends import FRONTENDS, FrontEnd

HERE = Path(__file__).resolve().parent
POOL_TIMEOUT = 1  # --timeout of the pool: /slow outlives it
pytestmark = pytest.mark.slow  # a few seconds per front end


@pytest.fixture(scope="module")
def outdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("frontapp")
    out.chmod(0o777)
    return out


@pytest.fixture(scope="module")
def pool(outdir: Path) -> Iterator[PoolProcess]:
    args = ["--timeout", str(POOL_TIMEOUT)]
    with PoolProcess("frontapp:app", workers=2, args=args, app_dir=HERE, env={"FRONTAPP_DIR": str(outdir)}) as p:
        yield p


@pytest.fixture(scope="module", params=FRONTENDS, ids=[f.name for f in FRONTENDS])
def front(request: pytest.FixtureRequest, pool: PoolProcess) -> Iterator[FrontEnd]:
    cls: type[FrontEnd] = request.param
    if reason := cls.missing():
        pytest.skip(reason)
    with cls(pool.socket_path) as f:
        yield f
        errors = [line for line in f.log_text().splitlines()
                  if not line.startswith("--- ") and (" error" in line.lower() or "[error]" in line)]  # fmt: skip
        assert not errors, f"{f.name} logged errors:\n" + "\n".join(errors[:20])


def environ_of(r: requests.Response) -> dict[str, Any]:
    assert r.status_code == 200, (r.status_code, r.text[:500])
    return dict(r.json())


def test_get_with_path_query_and_headers(front: FrontEnd) -> None:
    r = requests.get(front.url("/env/a%20b/caf%C3%A9?x=1&y=%20z&x=2"), headers={"X-Custom": "v1"}, timeout=5)
    seen = environ_of(r)
    env = seen["environ"]
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/env/a b/caf\xc3\xa9")  # PEP 3333: latin-1 of the bytes
    assert env["QUERY_STRING"] == "x=1&y=%20z&x=2"
    assert env["REQUEST_METHOD"] == "GET"
    assert env["HTTP_X_CUSTOM"] == "v1"
    assert env["SERVER_PORT"] == str(front.port)
    assert env["wsgi.url_scheme"] == "http"
    assert env.get("CONTENT_LENGTH") in (None, "0") and seen["body_length"] == 0


def test_post_200kb(front: FrontEnd) -> None:
    body = os.urandom(200 * 1024)
    r = requests.post(front.url("/env/upload"), data=body, headers={"Content-Type": "application/x-test"}, timeout=10)
    seen = environ_of(r)
    assert (seen["body_length"], seen["body_sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
    assert seen["environ"]["CONTENT_LENGTH"] == str(len(body))
    assert seen["environ"]["CONTENT_TYPE"] == "application/x-test"


def curl_chunked(front: FrontEnd, path: Path) -> tuple[int, str]:
    """POST the file at ``path`` with ``Transfer-Encoding: chunked`` (no Content-Length): status and body."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed (`apt-get install curl`, or `make install-system`)")
    done = subprocess.run(
        [curl, "-sS", "--max-time", "10", "-H", "Transfer-Encoding: chunked", "-H", "Content-Type: application/x-test",
         "--data-binary", f"@{path}", "-o", "-", "-w", "\n%{http_code}", front.url("/env/chunked")],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    body, _, code = done.stdout.rpartition("\n")
    return int(code), body


# Small enough for HAProxy, which must hold a chunked body whole in its buffer (docs/frontends.md)
CHUNKED_SIZE = 12 * 1024


def test_chunked_upload(front: FrontEnd, tmp_path: Path) -> None:
    """curl sends the body chunked, without Content-Length; Caddy passes CONTENT_LENGTH=-1 (issue 14)."""
    data = os.urandom(CHUNKED_SIZE)
    (tmp_path / "body").write_bytes(data)
    code, text = curl_chunked(front, tmp_path / "body")
    assert code == 200, text[:500]
    seen = json.loads(text)
    assert (seen["body_length"], seen["body_sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert seen["environ"]["wsgi.input_terminated"] == "True"


# What each does with a 2 MiB chunked body (docs/frontends.md): HAProxy's FastCGI mux refuses a chunked body larger
# than its buffer with 400; Caddy streams it past its 1 MiB request buffer with CONTENT_LENGTH=-1; nginx (up to
# client_max_body_size), Apache and lighttpd buffer it and send its length
LARGE_CHUNKED_STATUS = {"haproxy": 400}


def test_large_chunked_upload(front: FrontEnd, tmp_path: Path) -> None:
    data = os.urandom(2 * 1024 * 1024)
    (tmp_path / "body").write_bytes(data)
    code, text = curl_chunked(front, tmp_path / "body")
    expected = LARGE_CHUNKED_STATUS.get(front.name, 200)
    assert code == expected, text[:500]
    if expected == 200:
        seen = json.loads(text)
        assert (seen["body_length"], seen["body_sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
        assert seen["environ"]["CONTENT_LENGTH"] == str(len(data))  # what the pool read, for Caddy's -1 too


def test_status_and_headers_out(front: FrontEnd) -> None:
    r = requests.get(front.url("/status"), timeout=5)
    assert r.status_code == 418
    assert r.headers["X-Out"] == "one"
    assert r.headers["Cache-Control"] == "no-store"
    assert r.raw.headers.getlist("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert r.cookies.get_dict() == {"a": "1", "b": "2"}
    assert r.content == b"short and stout\n"


def test_after_response_task_does_not_delay_the_response(front: FrontEnd, outdir: Path) -> None:
    key = f"{front.name}-fast"
    requests.get(front.url("/pid"), timeout=5)  # warm up: connections, imports
    t0, wall = time.monotonic(), time.time()
    r = requests.get(front.url(f"/task?ms=400&key={key}"), timeout=5)
    elapsed = time.monotonic() - t0
    assert r.status_code == 200 and r.text == f"queued {key}\n"
    print(f"{front.name}: response with a 400 ms task in {1000 * elapsed:.1f} ms")
    assert elapsed < 0.2, f"the response took {elapsed:.3f} s: it waited for its 400 ms task"
    assert not (outdir / f"task-{key}").exists(), "the task finished before the response"
    done = wait_for(lambda: (outdir / f"task-{key}").exists(), 5, "the task")
    assert done and float((outdir / f"task-{key}").read_text()) - wall >= 0.35


def test_no_request_waits_behind_a_finishing_worker(front: FrontEnd) -> None:
    """php-src #10335: the request after one with after-response work must not wait for that work."""
    with requests.Session() as s:
        s.get(front.url("/pid"), timeout=5)
        for i in range(5):
            first = s.get(front.url(f"/task?ms=300&key={front.name}-behind{i}"), timeout=5)
            assert first.status_code == 200
            t0 = time.monotonic()
            r = s.post(front.url("/pid"), data=b"x", timeout=5)  # POST: no front end resends it
            elapsed = time.monotonic() - t0
            assert r.status_code == 200, (r.status_code, r.text[:300])
            assert elapsed < 0.15, f"request {i} after a request with a 300 ms task took {elapsed:.3f} s"
            time.sleep(0.35)  # both workers idle again


def test_request_past_the_pool_timeout_is_the_pools_504(front: FrontEnd, pool: PoolProcess) -> None:
    """The pool stops the request at its --timeout and answers 504 itself; the front end passes that on."""
    before = pool.log_count(r"GET /slow\?s=5: still running after timeout")
    t0 = time.monotonic()
    r = requests.get(front.url("/slow?s=5"), timeout=10)
    elapsed = time.monotonic() - t0
    assert r.status_code == 504, (r.status_code, r.text[:300])
    assert "the request ran longer than the pool's timeout" in r.text  # the pool's body, not the front end's page
    assert POOL_TIMEOUT <= elapsed < POOL_TIMEOUT + 1.5
    wait_for(lambda: pool.log_count(r"GET /slow\?s=5: still running after timeout") == before + 1, 5, "the pool log")
    time.sleep(0.3)
    assert pool.log_count(r"GET /slow\?s=5: still running after timeout") == before + 1, "the request was resent"


def test_wrk_without_errors(front: FrontEnd) -> None:
    """2 s of POSTs on 4 connections; every other request of a worker has after-response work, so the pool
    closes its connection after END_REQUEST while the others are kept (for the keep-conn front ends)."""
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (`apt-get install wrk`, or `make install-system`)")
    sys.path.insert(0, str(HERE.parents[1]))  # pool/: the bench harness runs and parses wrk
    from bench import wrk

    result = wrk.run(front.url("/mixed?every=2"), duration=2, connections=4, threads=1, method="POST")
    print(f"{front.name}: wrk {result.requests} requests, {result.rps:.0f}/s, p99 {result.p99_ms:.1f} ms, "
          f"errors {result.errors}")  # fmt: skip
    assert result.error_count == 0, result.errors
    assert result.requests >= 200, f"only {result.requests} requests in 2 s"
