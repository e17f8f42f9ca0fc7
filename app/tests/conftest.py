"""Fixtures for the sample app and mail sink tests: a real mail sink process, a real SQLite ledger."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient

APP_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(APP_DIR))

from fcgipool import background  # noqa: E402
from sampleapp import create_app  # noqa: E402
from sampleapp.settings import Settings  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MailSink:
    def __init__(self, smtp_port: int, http_port: int, proc: subprocess.Popen[bytes]) -> None:
        self.smtp_port = smtp_port
        self.http_port = http_port
        self.proc = proc
        self.url = f"http://127.0.0.1:{http_port}"

    def messages(self, **params: str) -> list[dict]:
        response = requests.get(f"{self.url}/messages", params=params, timeout=5)
        response.raise_for_status()
        return response.json()["messages"]

    def wait_for(self, count: int, timeout: float = 10.0, **params: str) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            messages = self.messages(**params)
            if len(messages) >= count or time.monotonic() > deadline:
                return messages
            time.sleep(0.05)


def start_mailsink(tmp_path: Path, delay_ms: int = 0, store: Path | None = None) -> MailSink:
    smtp_port, http_port = free_port(), free_port()
    argv = [sys.executable, "-m", "mailsink", "--smtp-port", str(smtp_port), "--http-port", str(http_port),
            "--delay-ms", str(delay_ms)]
    if store is not None:
        argv += ["--store", str(store)]
    log = (tmp_path / f"mailsink-{http_port}.log").open("wb")
    proc = subprocess.Popen(argv, cwd=APP_DIR, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(APP_DIR)})
    sink = MailSink(smtp_port, http_port, proc)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{sink.url}/health", timeout=1).ok:
                return sink
        except requests.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"mail sink did not start: {(tmp_path / f'mailsink-{http_port}.log').read_text()}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def mailsink(tmp_path: Path) -> Iterator[MailSink]:
    sink = start_mailsink(tmp_path)
    yield sink
    stop(sink.proc)


@pytest.fixture
def settings(tmp_path: Path, mailsink: MailSink) -> Settings:
    return Settings(data_dir=tmp_path / "data", smtp_port=mailsink.smtp_port, smtp_timeout_s=5, lock_timeout_s=10)


class ServerLikeClient(FlaskClient):
    """Closes each response the way a WSGI server does, which is when background.wsgi runs the tasks."""

    def open(self, *args, **kwargs):  # type: ignore[override]
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


def make_app(settings: Settings):
    flask_app = create_app(settings)
    flask_app.test_client_class = ServerLikeClient
    # As sampleapp.wsgi does: outside fcgipool, after-response tasks run when the response is closed.
    flask_app.wsgi_app = background.wsgi(flask_app.wsgi_app)  # type: ignore[method-assign]
    return flask_app


@pytest.fixture
def app(settings: Settings):
    return make_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()
