"""The C parts and their pure-Python twins through a real pool behind nginx: the same environ, the same request log
line, and a start log that says which run (fcgipool.speedups)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from fcgipool.status import cli as status_cli
from support import NginxServer, PoolProcess, fastcgi_site, wait_for

APPS = Path(__file__).parent / "apps"


def _serve(tmp_path: Path, pure: bool) -> tuple[dict[str, Any], dict[str, Any], str, dict[str, Any]]:
    log_path = tmp_path / f"requests-{pure}.log"
    env = {"BGAPP_DIR": str(tmp_path), **({"FCGIPOOL_NO_EXTENSIONS": "1"} if pure else {})}
    headers = {"X-Long": "v" * 3000, "X-Latin": "caf\xe9".encode("latin-1").decode("latin-1"), "X-Empty": ""}
    with (
        PoolProcess("bgapp:app", workers=1, app_dir=APPS, env=env, args=["--request-log", str(log_path)],
                    status=True) as pool,  # fmt: skip
        NginxServer(fastcgi_site(pool.bind, keep_conn=True), workers=1) as nginx,
        requests.Session() as web,
    ):
        for _ in range(3):  # on a kept connection: the decoder's cache is hit from the second request on
            reply = web.get(nginx.url("/env?q=%C3%A9&x=1"), headers=headers, timeout=5)
            assert reply.status_code == 200
        environ = reply.json()
        assert web.get(nginx.url("/user/ada"), timeout=5).status_code == 200
        entries = wait_for(lambda: [x for x in _lines(log_path) if x["uri"] != "/"] or None, 5, "the log lines")
        code, _, body = status_cli.fetch(f"unix:{pool.status_socket}", query="json&full")
        assert code == 200, body
        proc = json.loads(body)["processes"][0]
        start_log = pool.log_text()
    return environ, entries[-1], start_log, proc


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@pytest.mark.parametrize("pure", [False, True], ids=["c", "python"])
def test_both_serve_the_same_through_nginx_and_say_which_runs(tmp_path: Path, pure: bool) -> None:
    environ, last, start_log, proc = _serve(tmp_path, pure)
    assert environ["HTTP_X_LONG"] == "v" * 3000  # a 4-byte length, longer than the C cache keeps
    assert environ["HTTP_X_LATIN"] == "caf\xe9" and environ["HTTP_X_EMPTY"] == ""
    assert environ["QUERY_STRING"] == "q=%C3%A9&x=1" and environ["REQUEST_METHOD"] == "GET"
    assert (last["uri"], last["route"], last["status"]) == ("/user/ada", "/user/<name>", 200)
    assert last["cpu_ms"] >= 0 and last["rss"] > 0 and last["answer_ms"] > 0
    assert proc["requests"] >= 4 and proc["last request memory"] > 0
    if pure:
        assert "pure-Python fallback" in start_log and "FCGIPOOL_NO_EXTENSIONS is set" in start_log
        assert "C speedups in use" not in start_log
    else:
        assert "C speedups in use: fcgipool.protocol._cparams, fcgipool.scoreboard._cslot, fcgipool._crequestlog" \
            in start_log  # fmt: skip
