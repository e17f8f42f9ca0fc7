"""The benchmark's own nginx: a temp prefix, one server block per backend, started and always stopped."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from string import Template

from bench import procs
from bench.backends import APPS_DIR, NGINX_CONF_DIR, Backend
from bench.settings import BENCH_DIR


class NginxError(RuntimeError):
    """nginx is missing, rejects the generated config, or does not start."""


def find_nginx() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise NginxError("nginx is not installed: `apt-get install nginx-light` (or `make install-system`)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def render(
    rows: list[tuple[Backend, Path, int]],
    prefix: Path,
    *,
    nginx_workers: int,
    keepalive: int,
    conf_dir: Path = NGINX_CONF_DIR,
) -> str:
    """nginx.conf for `rows` of (backend, its socket, its listen port)."""
    server_tpl = Template((BENCH_DIR / "server.conf.template").read_text())
    servers = "".join(
        server_tpl.substitute(
            row=b.row,
            label=b.label,
            socket=sock,
            keepalive=keepalive,
            port=port,
            **{"pass": b.pass_block(conf_dir)},
        )
        for b, sock, port in rows
    )
    # As root, nginx's workers would run as `nobody` and could not reach the sockets in our temp dir.
    user = f"user {getpass.getuser()};" if os.geteuid() == 0 else "# (not root: workers run as the current user)"
    return Template((BENCH_DIR / "nginx.conf.template").read_text()).substitute(
        user_directive=user,
        nginx_workers=nginx_workers,
        prefix=prefix,
        apps_dir=APPS_DIR,
        servers=servers.rstrip() + "\n",
    )


def version(exe: str) -> str:
    done = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=10, check=False)
    return (done.stderr or done.stdout).strip()


def start(exe: str, prefix: Path, config: str, ports: list[int], timeout: float = 10.0) -> procs.Group:
    for sub in ("client_body", "fastcgi", "proxy", "uwsgi", "scgi"):
        (prefix / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(config)
    base = [exe, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    check = subprocess.run([*base, "-t", "-q"], capture_output=True, text=True, timeout=30, check=False)
    if check.returncode != 0:
        raise NginxError(f"nginx rejected {conf}:\n{check.stderr.strip()}")
    group = procs.start("nginx", [*base, "-g", "daemon off;"], prefix / "nginx.out", stop_signal=signal.SIGQUIT)
    deadline = time.monotonic() + timeout
    pending = set(ports)
    while pending and time.monotonic() < deadline:
        if not group.alive():
            raise NginxError(f"nginx exited at start:\n{group.log_tail()}")
        for port in list(pending):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    pending.discard(port)
        time.sleep(0.05)
    if pending:
        group.stop()
        raise NginxError(f"nginx did not listen on {sorted(pending)} within {timeout} s:\n{group.log_tail()}")
    return group
