"""The running stack, as the fault rows poke it: signals, worker kills, the mail server, `make down`/`up`, the
pool's log, idle FastCGI connections. Native mode acts on processes and files under the stack's var/;
docker mode goes through the stack.json ``compose`` argv (pids on the status page are container pids).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from loadtest.stack import REPO, Stack, StackError, get_json, http_get

IDLE_SNIPPET = """
import socket, sys, time
held = []
for _ in range({count}):
    s = socket.socket(socket.AF_UNIX)
    s.connect({path!r})
    held.append(s)
print(len(held), flush=True)
time.sleep({hold})
"""
DOCKER_POOL_SOCKET = "/run/fcgipool/pool.sock"  # the pool's bind in docker mode (pool/gunicorn.conf.py)

DRAIN_CAP_S = 240.0  # the longest wait_idle waits for a draining spill queue


class Control:
    def __init__(self, stack_file: Path) -> None:
        self.stack_file = stack_file
        self.var_dir = stack_file.resolve().parent
        self.notes: list[str] = []
        self.reload()

    def reload(self) -> None:
        self.stack = Stack.load(self.stack_file)
        self.raw: dict = json.loads(self.stack_file.read_text())

    @property
    def mode(self) -> str:
        return self.stack.mode

    @property
    def timeout(self) -> float | None:
        value = self.raw.get("timeout")
        return float(value) if value else None

    @property
    def up_env(self) -> dict[str, str] | None:
        env = self.raw.get("up_env")
        return dict(env) if isinstance(env, dict) else None

    # --- reading -----------------------------------------------------------------------------------------
    def status(self, full: bool = False) -> dict:
        return self.stack.status(full=full)

    def processes(self) -> list[dict]:
        return list(self.status(full=True).get("processes") or [])

    def ledger_kinds(self) -> dict:
        return dict(self.stack.ledger().get("kinds") or {})

    def lost_tasks(self, limit: int = 1000) -> list[dict]:
        return list(get_json(self.stack.url(f"/ledger?lost={limit}")).get("lost_tasks") or [])

    def healthy(self) -> bool:
        try:
            http_get(self.stack.url("/"), timeout=3)
            self.status()
            return True
        except StackError:
            return False

    def wait_healthy(self, timeout: float) -> float | None:
        """Seconds until GET / and the status page answer again; None if they did not within ``timeout``."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.healthy():
                return time.monotonic() - start
            time.sleep(0.25)
        return None

    def wait_idle(self, timeout: float) -> bool:
        """No worker answering or finishing, nothing queued -- in the listen queue or the spill queue (a pool with
        spill whose queue does not answer is not idle: its tasks are still to run); tolerates a restarting pool.
        While the spill queue drains (its depth falls) the wait goes on, up to DRAIN_CAP_S in all: a signup load
        that spilled every mail leaves the queue's 4 workers minutes of 250 ms mails."""
        start = time.monotonic()
        deadline = start + timeout
        last_depth: int | None = None
        while time.monotonic() < deadline:
            try:
                st = self.status()
                queued = st.get("spill queue depth", 0)
                if int(st.get("active processes", 0)) == 0 and int(st.get("listen queue", 0)) == 0 and queued == 0:
                    return True
                if isinstance(queued, int) and queued > 0:
                    if last_depth is not None and queued < last_depth:
                        deadline = min(max(deadline, time.monotonic() + 10), start + DRAIN_CAP_S)
                    last_depth = queued
            except StackError:
                pass
            time.sleep(0.25)
        return False

    def settled_ledger(self, timeout: float) -> dict:
        """The ledger once the pool is idle and two reads 0.5 s apart agree (the arbiter's reports of a dead
        worker's tasks come when it reaps it, which may be just after the pool looks idle)."""
        if not self.wait_idle(timeout):
            raise StackError(f"the pool did not become idle within {timeout:.0f} s")
        last = self.ledger_kinds()
        for _ in range(20):
            time.sleep(1.0)  # longer than a queued task takes: the spill queue's last jobs end in between
            now = self.ledger_kinds()
            if now == last:
                return now
            last = now
        return last

    # --- signals and kills ---------------------------------------------------------------------------------
    def arbiter_pid(self) -> int | None:
        if self.mode == "docker":
            return 1  # the pool container's CMD is the arbiter
        try:
            return int(Path(self.stack.pool_pidfile or "").read_text().strip())
        except (OSError, ValueError):
            return None

    def signal_arbiter(self, sig: signal.Signals) -> None:
        if self.mode == "docker" and sig == signal.SIGTERM:
            # `docker kill -s TERM` (the stop signal) marks the container as stopped on purpose, and
            # restart: unless-stopped would leave it down; a TERM from inside is an exit docker restarts.
            self.pool_python(f"import os; os.kill(1, {int(sig)})")
            return
        self.stack.signal_pool(sig)

    def kill_worker(self, pid: int) -> None:
        if pid <= 1:  # 0 is this process's group (the whole CI run died of it once), -1 every process, 1 init
            raise ValueError(f"refusing to kill pid {pid}: not a worker's pid")
        if self.mode == "docker":
            self.pool_python(f"import os; os.kill({int(pid)}, 9)")
        else:
            os.kill(pid, signal.SIGKILL)

    def compose(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        if not self.stack.compose:
            raise StackError("stack.json has mode=docker but no 'compose' argv")
        return subprocess.run([*self.stack.compose, *args], cwd=REPO, env=self.stack_env()[0], capture_output=True,
                              text=True, check=check, timeout=timeout)

    def pool_python(self, code: str) -> None:
        self.compose("exec", "-T", "pool", "python3", "-c", code)

    # --- services beside the pool ------------------------------------------------------------------------------
    #: name -> (supervisord program, compose service)
    SERVICES = {"mail": ("mailsink", "mail"), "redis": ("redis", "redis")}

    def mail(self, action: str) -> None:
        """Stop or start the mail server (supervisord's ``mailsink`` natively, compose's ``mail``)."""
        self.service("mail", action)

    def service(self, name: str, action: str) -> None:
        """Stop or start a service of the stack (``mail``, ``redis``)."""
        program, service = self.SERVICES[name]
        if self.mode == "docker":
            self.compose(action, service)
            return
        self.supervisorctl(action, program)

    def supervisorctl(self, *args: str) -> str:
        ctl = Path(sys.prefix) / "bin" / "supervisorctl"
        ctl = ctl if ctl.exists() else REPO / ".venv" / "bin" / "supervisorctl"
        out = subprocess.run([str(ctl), "-c", str(REPO / "pool" / "supervisord.conf"), *args],
                             env=self.supervisor_env(), capture_output=True, text=True, timeout=60)
        if out.returncode != 0 or "ERROR" in out.stdout:
            raise StackError(f"supervisorctl {' '.join(args)} failed: {out.stdout.strip()} {out.stderr.strip()}")
        return out.stdout

    def kill_queue_worker(self) -> str:
        """SIGKILL one RQ worker of the spill queue, as the OOM killer would; returns which. supervisord starts it
        again; a container is started again here (docker takes a kill for a stop on purpose: no restart)."""
        if self.mode == "docker":
            ids = self.compose("ps", "-q", "rq-worker").stdout.split()
            if not ids:
                raise StackError("no rq-worker container is running")
            for action in (["kill", "--signal", "KILL"], ["start"]):
                subprocess.run(["docker", *action, ids[0]], check=True, capture_output=True, timeout=60)
            return f"container {ids[0][:12]}"
        pid = int(self.supervisorctl("pid", "rqworker:rqworker_00").strip() or 0)
        if pid <= 1:
            raise StackError(f"supervisorctl gave no pid for rqworker:rqworker_00 ({pid})")
        os.kill(pid, signal.SIGKILL)
        return f"pid {pid}"

    def supervisor_env(self) -> dict[str, str]:
        env, _ = self.stack_env()
        venv = REPO / ".venv" if (REPO / ".venv" / "bin" / "python").exists() else Path(sys.prefix)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        redis_port = env.get("REDIS_PORT") or "6379"
        return {**env, "STACK_ROOT": str(REPO), "STACK_VAR": str(self.var_dir), "STACK_VENV": str(venv),
                "NGINX_BIN": nginx, "MAIL_PORT": env.get("MAIL_PORT") or str(urlsplit(self.stack.mail_url).port),
                "SMTP_PORT": env.get("SMTP_PORT") or "2525",
                "REDIS_BIN": shutil.which("redis-server") or "redis-server", "REDIS_PORT": redis_port, "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
                "RQ_WORKERS": env.get("RQ_WORKERS") or "4"}  # fmt: skip

    # --- make down / make up --------------------------------------------------------------------------------
    def stack_env(self) -> tuple[dict[str, str], str]:
        """The environment `make up` ran with (stack.json ``up_env``), for restarting the same stack; and a
        note when the stack did not record it (then the current environment, with the stack's ports)."""
        env = dict(os.environ)
        up = self.up_env
        note = ""
        if up is None:
            note = "stack.json has no up_env (started before make faults existed): restarted with this environment"
            env["PORT"] = str(urlsplit(self.stack.base_url).port)
            env["MAIL_PORT"] = str(urlsplit(self.stack.mail_url).port)
        else:
            for key in [k for k in env if k.startswith("FCGIPOOL_") and k not in up]:
                del env[key]
            env.update(up)
        env["STACK_VAR"] = str(self.var_dir)
        env["MODE"] = self.mode
        return env, note

    def stackctl(self, command: str, timeout: float = 600) -> subprocess.CompletedProcess:
        env, note = self.stack_env()
        if note and note not in self.notes:
            self.notes.append(note)
        return subprocess.run([sys.executable, str(REPO / "pool" / "stackctl.py"), command], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=timeout)

    # --- the pool's log ------------------------------------------------------------------------------------
    @property
    def pool_log(self) -> Path:
        return self.var_dir / "log" / "fcgipool.log"

    def log_mark(self) -> float:
        """Where the pool's log is now: a byte offset natively, a time in docker mode."""
        if self.mode == "docker":
            return time.time()
        try:
            return float(self.pool_log.stat().st_size)
        except OSError:
            return 0.0

    def log_since(self, mark: float) -> str:
        if self.mode == "docker":
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mark - 1))
            return self.compose("logs", "--no-color", "--since", since, "pool", check=False).stdout
        try:
            with self.pool_log.open(encoding="utf-8", errors="replace") as fh:
                fh.seek(int(mark) if self.pool_log.stat().st_size >= mark else 0)
                return fh.read()
        except OSError:
            return ""

    # --- idle FastCGI connections ----------------------------------------------------------------------------
    def open_idle(self, count: int, hold: float) -> IdleConnections:
        return IdleConnections(self, count, hold)


class IdleConnections:
    """``count`` connections to the pool's FastCGI socket that send nothing, held for ``hold`` seconds (or until
    :meth:`close`). Native: from this process; docker: a python3 inside the pool container."""

    def __init__(self, ctl: Control, count: int, hold: float) -> None:
        self.held: list[socket.socket] = []
        self.proc: subprocess.Popen | None = None
        self.opened = 0
        self.error = ""
        if ctl.mode == "docker":
            code = IDLE_SNIPPET.format(count=count, path=DOCKER_POOL_SOCKET, hold=hold)
            self.proc = subprocess.Popen([*ctl.stack.compose, "exec", "-T", "pool", "python3", "-c", code], cwd=REPO,
                                         env=ctl.stack_env()[0], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True)
            line = self.proc.stdout.readline() if self.proc.stdout else ""
            self.opened = int(line) if line.strip().isdigit() else 0
            if not self.opened:
                self.error = f"compose exec opened no connection: {self.proc.stderr.read() if self.proc.stderr else ''}"
            return
        path = ctl.raw.get("fastcgi_socket")
        if not path:
            self.error = "stack.json has no 'fastcgi_socket' (start the stack again with this checkout's make up)"
            return
        for _ in range(count):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)
            try:
                s.connect(path)
            except OSError as exc:
                s.close()
                self.error = f"connect {path}: {exc}"
                break
            self.held.append(s)
        self.opened = len(self.held)

    def close(self) -> None:
        for s in self.held:
            s.close()
        self.held.clear()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
