"""Helpers for the app/ tests (a uniquely named module: every test folder here has its own conftest.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from fcgipool import background
from flask.testing import FlaskClient
from sampleapp import create_app
from sampleapp.settings import Settings

APP_DIR = Path(__file__).resolve().parents[1]  # on sys.path via pytest's `pythonpath` setting


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

#: a ledger kind's counts for a task that never went to the spill queue
NO_SPILL = {"spilled": 0, "ran_in_queue": 0}
