"""Start a real ``fcgipool`` arbiter (gunicorn + FastCGIWorker + PoolArbiter) on a unix socket."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from .fcgi_client import fcgi_request
from .net import wait_for

REPO = Path(__file__).resolve().parents[3]


class PoolProcess:
    """``with PoolProcess("bgapp:app", workers=2, app_dir=...) as pool: pool.socket_path``.

    Runs ``python -m fcgipool.cli`` with ``--bind unix:<tmp>/pool.sock`` plus ``args``; ``env`` is added
    to the environment, ``app_dir`` is put on PYTHONPATH and used as the working directory. ``start()``
    returns once ``workers`` workers have booted and a FastCGI request (GET_VALUES-free: a plain
    ``wait_path`` GET) is answered. The combined log is in :attr:`log_path`.
    """

    def __init__(
        self,
        app: str,
        *,
        workers: int = 1,
        args: list[str] | tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        app_dir: str | Path | None = None,
        wait_path: str | None = "/",
        start_timeout: float = 20.0,
        status: bool = False,
    ) -> None:
        self.app = app
        self.workers = workers
        self.args = list(args)
        self.env = dict(env or {})
        self.app_dir = Path(app_dir) if app_dir else None
        self.wait_path = wait_path
        self.start_timeout = start_timeout
        self.dir = Path(tempfile.mkdtemp(prefix="fcgipool-pool-"))
        os.chmod(self.dir, 0o755)  # nginx workers may run as another user
        self.socket_path = str(self.dir / "pool.sock")
        self.status_socket = str(self.dir / "status.sock") if status else None  # --status-listen
        self.log_path = self.dir / "pool.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bind(self) -> str:
        return f"unix:{self.socket_path}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "fcgipool.cli",
            "--bind", self.bind,
            "--workers", str(self.workers),
            "--umask", "0",
            "--control-socket", str(self.dir / "gunicorn.ctl"),
            *(["--status-listen", f"unix:{self.status_socket}"] if self.status_socket else []),
            *self.args,
            self.app,
        ]  # fmt: skip

    def start(self) -> PoolProcess:
        env = dict(os.environ)
        env.update(self.env)
        paths = [str(REPO / "pool")]
        if self.app_dir:
            paths.insert(0, str(self.app_dir))
        env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env.setdefault("PYTHONUNBUFFERED", "1")
        log = open(self.log_path, "wb")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            self.command(),
            cwd=str(self.app_dir or self.dir),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        try:
            wait_for(self._ready, self.start_timeout, f"fcgipool to boot {self.workers} worker(s)")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"fcgipool exited with {self.proc.returncode}:\n{self.log_text()}")
        if len(self.worker_pids()) < self.workers or not os.path.exists(self.socket_path):
            return False
        if self.wait_path is None:
            return True
        fcgi_request(self.socket_path, {"PATH_INFO": self.wait_path, "REQUEST_URI": self.wait_path}, timeout=5)
        return True

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def worker_pids(self) -> list[int]:
        """Live children of the arbiter (its workers)."""
        if self.proc is None:
            return []
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == self.proc.pid and fields[0] != "Z":
                pids.append(int(entry))
        return sorted(pids)

    def status(self) -> dict[str, Any]:
        """The status page as JSON (start the pool with ``status=True``)."""
        from fcgipool.status import cli as status_cli

        assert self.status_socket, "PoolProcess(status=True) runs the status listener"
        code, _, body = status_cli.fetch(f"unix:{self.status_socket}", query="json")
        assert code == 200, body
        return dict(json.loads(body))

    def log_count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log_text()))

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.proc = proc  # keep for returncode/log inspection
        self._stopped = True
        return proc.returncode

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PoolProcess:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        if et is None:
            self.cleanup()
