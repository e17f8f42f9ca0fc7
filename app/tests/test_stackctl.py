"""stackctl.py's error paths: each says what to do (no stack started here)."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("stackctl", ROOT / "pool" / "stackctl.py")
assert spec and spec.loader
stackctl = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stackctl)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("ensure, package", [
    (lambda: stackctl.ensure_nginx(), "nginx-light"),
    (lambda: stackctl.ensure_debian("redis-server", "redis-server"), "redis-server"),
])
def test_a_missing_program_says_how_to_install(monkeypatch, ensure, package):
    monkeypatch.setattr(stackctl, "find_program", lambda name, *paths: None)
    monkeypatch.setattr(stackctl.os, "geteuid", lambda: 1000)
    with pytest.raises(stackctl.StackError, match=f"apt-get install {package}"):
        ensure()


def test_taken_port_is_named_with_a_way_out(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        env = {**os.environ, "STACK_VAR": str(tmp_path), "MODE": "native", "PORT": str(port),
               # the others free: a stack started with `make up` may hold their defaults
               **{name: str(free_port()) for name in ("MAIL_PORT", "SMTP_PORT", "REDIS_PORT")}}
        result = subprocess.run([sys.executable, str(ROOT / "pool" / "stackctl.py"), "up"], env=env,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"PORT={port}" in result.stderr and "already in use" in result.stderr
    assert f"PORT={port + 1} make up" in result.stderr
    assert not (tmp_path / "stack.json").exists()


@pytest.mark.parametrize("value", ["http", "0", "70000"])
def test_bad_port_value(monkeypatch, value):
    monkeypatch.setenv("PORT", value)
    with pytest.raises(stackctl.StackError, match="not a TCP port"):
        stackctl.Config()


def test_status_without_a_stack(tmp_path, monkeypatch):
    monkeypatch.setenv("STACK_VAR", str(tmp_path))
    assert stackctl.main(["status"]) == 2


def test_down_without_a_stack_is_a_no_op(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STACK_VAR", str(tmp_path))
    monkeypatch.setattr(stackctl, "docker_answers", lambda: False)
    assert stackctl.main(["down"]) == 0
    assert "nothing left running" in capsys.readouterr().out


def test_background_timeout_env_wins_over_the_config_file(monkeypatch):
    monkeypatch.setenv("FCGIPOOL_BACKGROUND_TIMEOUT", "2.5")
    assert stackctl.background_timeout() == 2.5
    monkeypatch.delenv("FCGIPOOL_BACKGROUND_TIMEOUT")
    from runpy import run_path

    production = run_path(str(ROOT / "pool" / "gunicorn.conf.py"))
    assert stackctl.background_timeout() == float(production["background_timeout"])


def test_stack_json_urls_follow_the_ports(monkeypatch, tmp_path):
    monkeypatch.setenv("STACK_VAR", str(tmp_path))
    monkeypatch.setenv("PORT", "9090")
    monkeypatch.setenv("MAIL_PORT", "9025")
    u = stackctl.urls(stackctl.Config())
    assert u["base_url"] == "http://127.0.0.1:9090"
    assert u["mail_url"] == "http://127.0.0.1:9025/messages"
    assert u["status_url"] == "http://127.0.0.1:9090/pool-status"


def test_stack_json_records_the_timeout_and_the_environment_it_was_started_with(monkeypatch, tmp_path):
    # make faults restarts the same stack after its `make down` row, and needs the pool's --timeout.
    monkeypatch.setenv("STACK_VAR", str(tmp_path))
    monkeypatch.setenv("FCGIPOOL_TIMEOUT", "7")
    monkeypatch.setenv("FCGIPOOL_MAX_WORKER_MEMORY", "120")
    monkeypatch.setenv("PORT", "9090")
    monkeypatch.setenv("UNRELATED_SECRET", "x")
    u = stackctl.urls(stackctl.Config())
    assert u["timeout"] == 7.0
    assert u["up_env"]["FCGIPOOL_MAX_WORKER_MEMORY"] == "120" and u["up_env"]["PORT"] == "9090"
    assert "UNRELATED_SECRET" not in u["up_env"]
    monkeypatch.delenv("FCGIPOOL_TIMEOUT")
    assert stackctl.urls(stackctl.Config())["timeout"] == 30.0
