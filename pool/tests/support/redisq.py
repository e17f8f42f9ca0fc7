"""A real Redis (Debian's redis-server) and a real ``rq worker`` for the spill tests, each in a temp directory."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

from .net import free_port, wait_for

REDIS_BIN = shutil.which("redis-server")
MISSING = "redis-server is not installed: `apt-get install redis-server` (or make install-system)"


def require_redis() -> str:
    if REDIS_BIN is None:
        import pytest

        pytest.skip(MISSING)
    try:
        import rq  # noqa: F401
    except ImportError:
        import pytest

        pytest.skip("RQ is not installed: `make install` (requirements-dev.txt)")
    return REDIS_BIN


class RedisServer:
    """``with RedisServer() as redis: redis.url``; :meth:`stop` / :meth:`start` again on the same port."""

    def __init__(self, port: int | None = None, *, persist: bool = False) -> None:
        self.port = port or free_port()
        self.persist = persist  # an append-only file, as the stack's Redis keeps: a restart keeps the jobs
        self.dir = Path(tempfile.mkdtemp(prefix="fcgipool-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = require_redis()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
             "--appendonly", "yes" if self.persist else "no", "--protected-mode", "yes"],
            stdout=open(self.dir / "redis.log", "wb"),  # noqa: SIM115 - owned by the child
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(self._answers, 10, f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(10)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RQWorker:
    """``rq worker`` on ``queue`` with ``app_dir`` importable (the jobs are the app's functions)."""

    def __init__(self, url: str, app_dir: Path, env: dict[str, str] | None = None, queue: str = "fcgipool",
                 worker_class: str = "fcgipool.spill.rqworker.Worker", worker_ttl: int = 16) -> None:  # fmt: skip
        self.url, self.app_dir, self.queue, self.worker_class = url, app_dir, queue, worker_class
        self.worker_ttl = worker_ttl  # an idle worker waits worker_ttl - 15 s for a job (at least 1) between chores
        self.env = dict(env or {})
        self.log_path = Path(tempfile.mkstemp(prefix="fcgipool-rq-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RQWorker:
        rq = Path(sys.executable).with_name("rq")
        path = os.pathsep.join([str(self.app_dir), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, **self.env, "PYTHONPATH": path}
        self.proc = subprocess.Popen(
            [str(rq), "worker", "-w", self.worker_class, "--url", self.url, "--with-scheduler",
             "--worker-ttl", str(self.worker_ttl), self.queue],
            cwd=self.app_dir, env=env, stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
            start_new_session=True,
        )  # fmt: skip
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # warm shutdown: the job in hand finishes
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def __enter__(self) -> RQWorker:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
