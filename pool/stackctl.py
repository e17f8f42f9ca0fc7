#!/usr/bin/env python3
"""Start, stop and inspect the stack: Docker Compose when an engine answers, else natively under supervisord.

    stackctl.py up|down|status|logs [--mode auto|docker|native]

Both modes use the same nginx config (nginx/), pool config (app/pool.conf.py -> pool/gunicorn.conf.py) and
ports, and `up` writes var/stack.json (contract: docs/architecture.md) for the load tests. Stdlib only.
Environment: MODE, PORT (8080), MAIL_PORT (8025), SMTP_PORT (2525, native), STACK_VAR (var/), COMPOSE.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HEALTH_TIMEOUT_S = float(os.environ.get("STACK_HEALTH_TIMEOUT_S", "180"))


class StackError(Exception):
    """A problem the user can fix; the message says how."""


def say(msg: str) -> None:
    print(f"stack: {msg}", flush=True)


# --- configuration ---------------------------------------------------------------------------------------------

class Config:
    def __init__(self) -> None:
        env = os.environ
        self.var = Path(env.get("STACK_VAR") or ROOT / "var").resolve()
        self.port = self._port("PORT", 8080)
        self.mail_port = self._port("MAIL_PORT", 8025)
        self.smtp_port = self._port("SMTP_PORT", 2525)
        self.redis_port = self._port("REDIS_PORT", 6379)  # native mode (docker keeps Redis on its network)
        self.stack_json = self.var / "stack.json"

    @staticmethod
    def _port(name: str, default: int) -> int:
        raw = os.environ.get(name) or str(default)
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise StackError(f"{name}={raw!r} is not a TCP port (1-65535)")
        return int(raw)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mail_url(self) -> str:
        return f"http://127.0.0.1:{self.mail_port}/messages"

    def read_state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.stack_json.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def write_state(self, state: dict[str, Any]) -> None:
        self.var.mkdir(parents=True, exist_ok=True)
        tmp = self.stack_json.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.stack_json)


def http_get(url: str, timeout: float = 3.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def check_ports(cfg: Config, names: dict[str, int]) -> None:
    taken = [f"{name}={port}" for name, port in names.items() if not port_free(port)]
    if taken:
        hint = " ".join(f"{n.split('=')[0]}={int(n.split('=')[1]) + 1}" for n in taken)
        raise StackError(
            f"port(s) already in use on 127.0.0.1: {', '.join(taken)}. Stop whatever holds them "
            f"(`ss -ltnp`), or pick others, e.g. `{hint} make up`."
        )


def urls(cfg: Config) -> dict[str, Any]:
    return {
        "base_url": cfg.base_url,
        "mail_url": cfg.mail_url,
        "status_url": f"{cfg.base_url}/pool-status",
        "background_timeout": background_timeout(),
        "timeout": response_timeout(),
        # What `up` ran with, so `make faults` can restart the same stack (down + up) after its `make down` row.
        "up_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("FCGIPOOL_") or k in UP_ENV_KEYS},
    }


def background_timeout() -> float | None:
    """The after-response budget the pool runs with: its env variable wins over the config file (fcgipool rule)."""
    raw = os.environ.get("FCGIPOOL_BACKGROUND_TIMEOUT")
    try:
        if raw:
            return float(raw)
        import runpy

        value = runpy.run_path(str(ROOT / "pool" / "gunicorn.conf.py")).get("background_timeout")
        return float(value) if value is not None else None
    except (OSError, ValueError, TypeError, SyntaxError):
        return None


UP_ENV_KEYS = ("PORT", "MAIL_PORT", "SMTP_PORT", "REDIS_PORT", "RQ_WORKERS", "STACK_VAR", "COMPOSE",
               "COMPOSE_PROJECT_NAME", "BASE_IMAGE")


def response_timeout() -> float | None:
    """The pool's response-phase --timeout: FCGIPOOL_TIMEOUT as pool/gunicorn.conf.py reads it (default 30)."""
    try:
        import runpy

        value = runpy.run_path(str(ROOT / "pool" / "gunicorn.conf.py")).get("timeout")
        return float(value) if value is not None else None
    except (OSError, ValueError, TypeError, SyntaxError):
        return None


def print_urls(cfg: Config, mode: str) -> None:
    u = urls(cfg)
    say(f"ready ({mode} mode):")
    print(f"  app          {u['base_url']}/            curl -d email=you@example.com {u['base_url']}/signup")
    print(f"  ledger       {u['base_url']}/ledger")
    print(f"  pool status  {u['status_url']}?full   (make status)")
    print(f"  mail         {u['mail_url']}")
    print(f"  state        {cfg.stack_json}")


# --- docker mode -----------------------------------------------------------------------------------------------

def compose_command() -> list[str] | None:
    override = os.environ.get("COMPOSE")
    if override:
        return override.split()
    if shutil.which("docker") and run_ok(["docker", "compose", "version"]):
        return ["docker", "compose"]
    if shutil.which("docker-compose") and run_ok(["docker-compose", "version"]):
        return ["docker-compose"]
    return None


def run_ok(argv: list[str], timeout: float = 15) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def docker_answers() -> bool:
    return shutil.which("docker") is not None and run_ok(["docker", "info"], timeout=20)


def compose_argv(base: list[str]) -> list[str]:
    files = [ROOT / "docker-compose.yml", ROOT / "docker-compose.override.yml"]
    argv = [*base, "-p", os.environ.get("COMPOSE_PROJECT_NAME", "fcgipool")]
    for f in files:
        if f.exists():
            argv += ["-f", str(f)]
    return argv


def docker_env(cfg: Config) -> dict[str, str]:
    return {**os.environ, "PORT": str(cfg.port), "MAIL_PORT": str(cfg.mail_port),
            "STACK_LOG_DIR": str(cfg.var / "docker" / "log")}


def docker_up(cfg: Config) -> None:
    base = compose_command()
    if base is None:
        raise StackError("no `docker compose` or `docker-compose` found; install one, or run `MODE=native make up`")
    argv = compose_argv(base)
    env = docker_env(cfg)
    log_dir = cfg.var / "docker" / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    # nginx in the container is an unprivileged user with another uid: it must be able to write its logs here.
    log_dir.chmod(0o1777)
    running = subprocess.run([*argv, "ps", "-q"], cwd=ROOT, env=env, capture_output=True, text=True).stdout.split()
    if not running:
        check_ports(cfg, {"PORT": cfg.port, "MAIL_PORT": cfg.mail_port})
    say(f"mode docker ({' '.join(base)}): building images (first time: a few minutes)")
    subprocess.run([*argv, "build"], cwd=ROOT, env=env, check=True)
    up = [*argv, "up", "-d", "--remove-orphans", "--scale", f"rq-worker={os.environ.get('RQ_WORKERS') or 4}"]
    if base[:2] == ["docker", "compose"]:
        up.append("--wait")  # v2 waits for healthchecks itself; v1 is polled below
    if subprocess.run(up, cwd=ROOT, env=env).returncode:
        subprocess.run([*argv, "logs", "--tail=30"], cwd=ROOT, env=env)
        raise StackError("`up` failed (an unhealthy dependency?); the logs above say why, then run `make down`")
    wait_docker_healthy(argv, env)
    # the pool writes its request log into the same host folder (docker-compose.yml), unless told otherwise
    requests = "" if os.environ.get("FCGIPOOL_REQUEST_LOG") is not None else str(log_dir / "requests.log")
    cfg.write_state({"mode": "docker", **urls(cfg), "access_log": str(log_dir / "access.log"), "compose": argv,
                     "request_log": requests})
    print_urls(cfg, "docker")


def wait_docker_healthy(argv: list[str], env: dict[str, str]) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        ids = subprocess.run([*argv, "ps", "-q"], cwd=ROOT, env=env, capture_output=True, text=True).stdout.split()
        if ids:
            out = subprocess.run(
                ["docker", "inspect", "-f", "{{.Name}} {{if .State.Health}}{{.State.Health.Status}}"
                 "{{else}}{{.State.Status}}{{end}}", *ids], capture_output=True, text=True,
            ).stdout
            states = dict(line.split(" ", 1) for line in out.strip().splitlines() if " " in line)
            if states and all(s == "healthy" for s in states.values()):
                say("all services healthy: " + ", ".join(n.strip("/") for n in states))
                return
            if any(s in {"unhealthy", "exited", "dead"} for s in states.values()):
                break
        time.sleep(1)
    subprocess.run([*argv, "logs", "--tail=30"], cwd=ROOT, env=env)
    raise StackError(f"services not healthy: {states}; see the logs above (`make logs`), then `make down`")


def docker_down(cfg: Config, state: dict[str, Any] | None, volumes: bool = False) -> None:
    argv = (state or {}).get("compose")
    if not argv:
        base = compose_command()
        if base is None:
            return
        argv = compose_argv(base)
    subprocess.run([*argv, "down", "--remove-orphans", "--timeout", "40", *(["--volumes"] if volumes else [])],
                   cwd=ROOT, env=docker_env(cfg), check=True)


# --- native mode -----------------------------------------------------------------------------------------------

def venv_dir() -> Path:
    candidate = ROOT / ".venv"
    return candidate if (candidate / "bin" / "python").exists() else Path(sys.prefix)


def find_program(name: str, *paths: str) -> str | None:
    return shutil.which(name) or next((p for p in paths if os.access(p, os.X_OK)), None)


def ensure_debian(program: str, package: str, *paths: str) -> str:
    """``program`` from Debian's ``package``: found, or installed with apt-get when we are root."""
    found = find_program(program, *paths)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say(f"{program} not found: installing Debian's {package} (apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", package]
        if subprocess.run(install, env=env).returncode:
            subprocess.run(["apt-get", "update"], env=env, check=True)
            subprocess.run(install, env=env, check=True)
        found = find_program(program, *paths)
        if found:
            return found
    raise StackError(
        f"native mode needs {program} and it is not installed. Install it with `sudo apt-get install {package}` "
        "(or `sudo make install-system`), or install Docker and use `make up`."
    )


def ensure_nginx() -> str:
    return ensure_debian("nginx", "nginx-light", "/usr/sbin/nginx")


def request_log(default: Path) -> str:
    """The pool's request log (fcgipool --request-log): on in the stack unless FCGIPOOL_REQUEST_LOG says otherwise."""
    return os.environ.get("FCGIPOOL_REQUEST_LOG", str(default))


def native_env(cfg: Config, nginx: str, redis: str) -> dict[str, str]:
    redis_url = f"redis://127.0.0.1:{cfg.redis_port}/0"
    return {
        **os.environ,
        "FCGIPOOL_REQUEST_LOG": request_log(cfg.var / "log" / "requests.log"),
        # after-response work spills to Redis + RQ (docs/spill.md) unless FCGIPOOL_SPILL_TO says otherwise
        "FCGIPOOL_SPILL_TO": os.environ.get("FCGIPOOL_SPILL_TO", redis_url),
        "REDIS_URL": redis_url,
        "REDIS_PORT": str(cfg.redis_port),
        "REDIS_BIN": redis,
        "RQ_WORKERS": os.environ.get("RQ_WORKERS") or "4",
        "STACK_ROOT": str(ROOT),
        "STACK_VAR": str(cfg.var),
        "STACK_VENV": str(venv_dir()),
        "NGINX_BIN": nginx,
        "MAIL_PORT": str(cfg.mail_port),
        "SMTP_PORT": str(cfg.smtp_port),
    }


def render_nginx(cfg: Config, env: dict[str, str]) -> Path:
    conf = cfg.var / "nginx" / "nginx.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    render_env = {
        **env,
        "NGINX_LISTEN": f"127.0.0.1:{cfg.port}",
        "NGINX_RUN_DIR": str(cfg.var / "nginx" / "run"),
        "NGINX_ERROR_LOG": str(cfg.var / "log" / "nginx-error.log"),
        "NGINX_ACCESS_LOG": str(cfg.var / "log" / "nginx-access.log"),
        "FCGIPOOL_SOCKET": str(cfg.var / "run" / "pool.sock"),
        "FCGIPOOL_STATUS_SOCKET": str(cfg.var / "run" / "status.sock"),
        # Started as root, nginx would drop its workers to `nobody`, who may not open the pool's 0660 socket.
        "NGINX_USER": "root" if os.geteuid() == 0 else "",
    }
    subprocess.run([str(ROOT / "nginx" / "render.sh"), str(conf)], env=render_env, check=True)
    test = subprocess.run([env["NGINX_BIN"], "-t", "-q", "-c", str(conf), "-e", render_env["NGINX_ERROR_LOG"]],
                          capture_output=True, text=True)
    if test.returncode:
        raise StackError(f"nginx rejected the rendered config {conf}:\n{test.stderr}")
    return conf


def pid_alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    try:
        # A zombie has exited; only its parent has not collected it yet.
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return None
    except (OSError, IndexError):
        pass
    return pid


def native_up(cfg: Config) -> None:
    supervisord = venv_dir() / "bin" / "supervisord"
    if not supervisord.exists():
        raise StackError(f"{supervisord} not found: run `make install` first")
    nginx = ensure_nginx()
    env = native_env(cfg, nginx, ensure_debian("redis-server", "redis-server", "/usr/bin/redis-server"))
    if pid_alive(cfg.var / "run" / "supervisord.pid"):
        say("native stack already running; checking health")
    else:
        check_ports(cfg, {"PORT": cfg.port, "MAIL_PORT": cfg.mail_port, "SMTP_PORT": cfg.smtp_port,
                          "REDIS_PORT": cfg.redis_port})  # fmt: skip
        for sub in ("run", "log", "data/mail", "data/redis"):
            (cfg.var / sub).mkdir(parents=True, exist_ok=True)
        (cfg.var / "run").chmod(0o750)
        for stale in ("pool.sock", "status.sock"):
            (cfg.var / "run" / stale).unlink(missing_ok=True)
        render_nginx(cfg, env)
        say(f"mode native (supervisord, nginx {nginx}, no Docker engine needed)")
        subprocess.run([str(supervisord), "-c", str(ROOT / "pool" / "supervisord.conf")], env=env, check=True)
        deadline = time.monotonic() + 15
        while not pid_alive(cfg.var / "run" / "supervisord.pid"):  # written once it has daemonised
            if time.monotonic() > deadline:
                raise StackError(f"supervisord did not start; see {cfg.var}/log/supervisord.log")
            time.sleep(0.1)
    wait_native_healthy(cfg)
    cfg.write_state({
        "mode": "native", **urls(cfg), "access_log": str(cfg.var / "log" / "nginx-access.log"),
        "pool_pidfile": str(cfg.var / "run" / "pool.pid"), "fastcgi_socket": str(cfg.var / "run" / "pool.sock"),
        "request_log": env["FCGIPOOL_REQUEST_LOG"], "spill_to": env["FCGIPOOL_SPILL_TO"], "redis_url": env["REDIS_URL"],
    })
    print_urls(cfg, "native")


def wait_native_healthy(cfg: Config) -> None:
    checks = {"nginx + pool": f"{cfg.base_url}/", "status listener": f"{cfg.base_url}/pool-ping",
              "mail sink": f"http://127.0.0.1:{cfg.mail_port}/health", "redis": f"redis:{cfg.redis_port}"}
    deadline = time.monotonic() + min(HEALTH_TIMEOUT_S, 90)
    pending = dict(checks)
    while pending and time.monotonic() < deadline:
        for name, url in list(pending.items()):
            try:
                if (redis_answers(cfg.redis_port) if url.startswith("redis:") else http_get(url, timeout=2)[0] == 200):
                    del pending[name]
            except OSError:
                pass
        if pending:
            if not pid_alive(cfg.var / "run" / "supervisord.pid") or gave_up(cfg):
                break
            time.sleep(0.3)
    if pending:
        tail_logs(cfg, lines=15)
        native_down(cfg)
        raise StackError(f"not healthy: {', '.join(pending)}; the log tails above say why (full logs: {cfg.var}/log)")
    say("all services healthy: " + ", ".join(checks))


def redis_answers(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
        conn.sendall(b"PING\r\n")
        return conn.recv(16).startswith(b"+PONG")


def gave_up(cfg: Config) -> bool:
    """supervisord stopped restarting a program that keeps failing: no point waiting for health."""
    try:
        return "entered FATAL state" in (cfg.var / "log" / "supervisord.log").read_text()
    except FileNotFoundError:
        return False


def native_down(cfg: Config) -> None:
    pidfile = cfg.var / "run" / "supervisord.pid"
    pid = pid_alive(pidfile)
    if pid is None:
        return
    say(f"stopping supervisord (pid {pid}); running after-response work may take up to 40 s to finish")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and pid_alive(pidfile) == pid:
        time.sleep(0.2)
    if pid_alive(pidfile) == pid:
        raise StackError(f"supervisord (pid {pid}) did not stop within 90 s; see {cfg.var}/log/supervisord.log")
    for leftover in ("pool.pid", "../nginx/run/nginx.pid"):
        other = pid_alive(cfg.var / "run" / leftover)
        if other:
            raise StackError(f"process {other} ({leftover}) still running after supervisord stopped")


def tail_logs(cfg: Config, lines: int = 50) -> None:
    for log in sorted((cfg.var / "log").glob("*.log")):
        if log.name == "nginx-access.log":
            continue  # health probes only; the error log says why they failed
        content = log.read_text(errors="replace").splitlines()[-lines:]
        if content:
            print(f"==> {log} <==")
            print("\n".join(content))


# --- commands --------------------------------------------------------------------------------------------------

def choose_mode(requested: str) -> str:
    if requested in {"docker", "native"}:
        return requested
    if docker_answers() and compose_command():
        return "docker"
    say("no Docker engine answers (`docker info` failed: not installed, not running, or no permission): "
        "using native mode")
    return "native"


def cmd_up(cfg: Config, mode: str) -> None:
    state = cfg.read_state()
    if state and state.get("mode") not in {None, mode} and mode != "auto":
        raise StackError(f"a {state['mode']} stack is up ({cfg.stack_json}); run `make down` first")
    chosen = state["mode"] if state and mode == "auto" else choose_mode(mode)
    docker_up(cfg) if chosen == "docker" else native_up(cfg)


def cmd_down(cfg: Config, mode: str, volumes: bool = False) -> None:
    state = cfg.read_state()
    modes = [state["mode"]] if state and mode == "auto" else ([mode] if mode != "auto" else ["native", "docker"])
    for m in modes:
        if m == "native":
            native_down(cfg)
        elif m == "docker" and (state or docker_answers()):
            docker_down(cfg, state, volumes)
    cfg.stack_json.unlink(missing_ok=True)
    say("down: nothing left running")


def cmd_status(cfg: Config, full: bool) -> None:
    state = cfg.read_state()
    if not state:
        raise StackError("the stack is not up (no var/stack.json); run `make up`")
    url = state["status_url"] + ("?full" if full else "")
    code, body = http_get(url)
    print(f"mode {state['mode']} · {url} -> HTTP {code}")
    print(body.rstrip())
    print(f"ledger: {http_get(state['base_url'] + '/ledger')[1].strip()}")


def cmd_logs(cfg: Config, follow: bool) -> None:
    state = cfg.read_state() or {}
    if state.get("mode") == "docker":
        argv = [*state["compose"], "logs", "--tail=50", *(["-f"] if follow else [])]
        subprocess.run(argv, cwd=ROOT, env=docker_env(cfg))
        return
    logs = sorted(str(p) for p in (cfg.var / "log").glob("*.log"))
    if not logs:
        raise StackError(f"no logs in {cfg.var}/log yet; run `make up`")
    subprocess.run(["tail", "-n", "30", *(["-F"] if follow else []), *logs])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="stackctl.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["up", "down", "status", "logs"])
    p.add_argument("--mode", choices=["auto", "docker", "native"], default=os.environ.get("MODE") or "auto")
    p.add_argument("--full", action="store_true", help="status: per-process table")
    p.add_argument("--follow", action="store_true", help="logs: keep following")
    p.add_argument("--volumes", action="store_true", help="down: also delete the docker volumes (ledger, mail)")
    args = p.parse_args(argv)
    try:
        cfg = Config()
        if args.command == "up":
            cmd_up(cfg, args.mode)
        elif args.command == "down":
            cmd_down(cfg, args.mode, args.volumes)
        elif args.command == "status":
            cmd_status(cfg, args.full)
        else:
            cmd_logs(cfg, args.follow)
    except StackError as exc:
        print(f"stack: error: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"stack: error: {' '.join(map(str, exc.cmd))} exited with {exc.returncode}", file=sys.stderr)
        return exc.returncode or 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `make status | head`
        sys.stderr.close()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
