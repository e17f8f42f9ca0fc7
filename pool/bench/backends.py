"""The servers under test: how to start each on a unix socket with N workers, and nginx's pass directive.

Every backend serves apps/hello.py (php-fpm: apps/hello.php, same bytes) on a unix socket, runs
`workers` worker processes under one master, and is reached through the shared nginx; only the pass
block differs between rows.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from string import Template

from bench.settings import BENCH_DIR

APPS_DIR = BENCH_DIR / "apps"
NGINX_CONF_DIR = Path("/etc/nginx")  # Debian's fastcgi_params and uwsgi_params


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    cwd: Path = APPS_DIR
    stop_signal: int = signal.SIGTERM
    env_extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Backend:
    row: str  # unique row id, also the nginx upstream name
    server: str  # the server family, for BENCH_ONLY and the targets
    label: str
    protocol: str  # "fastcgi", "http" or "uwsgi"
    keep_conn: bool
    find: Callable[[], str | None]  # the executable, or None when not installed
    missing_hint: str
    launch: Callable[[str, Path, int, Path], Launch]  # (executable, socket, workers, run_dir)
    version: Callable[[str], str]
    default: bool = True  # part of a plain `make bench`; other rows run only when BENCH_ONLY names them

    def pass_block(self, conf_dir: Path = NGINX_CONF_DIR) -> str:
        indent = " " * 12
        if self.protocol == "fastcgi":
            lines = [
                f"include {conf_dir}/fastcgi_params;",
                "fastcgi_param SCRIPT_FILENAME $document_root/hello.php;",
                f"fastcgi_keep_conn {'on' if self.keep_conn else 'off'};",
                f"fastcgi_pass {self.row};",
            ]
        elif self.protocol == "http":
            lines = [
                "proxy_http_version 1.1;",
                'proxy_set_header Connection "";',
                "proxy_set_header Host $host;",
                f"proxy_pass http://{self.row};",
            ]
        elif self.protocol == "uwsgi":
            lines = [f"include {conf_dir}/uwsgi_params;", f"uwsgi_pass {self.row};"]
        else:
            raise ValueError(f"unknown protocol {self.protocol!r}")
        return "\n".join(indent + line for line in lines)


def _venv_or_path(name: str) -> Callable[[], str | None]:
    def find() -> str | None:
        beside = Path(sys.executable).parent / name
        if beside.exists():
            return str(beside)
        return shutil.which(name)

    return find


def _find_php_fpm() -> str | None:
    for name in ("php-fpm8.2", "php-fpm"):
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
        if found:
            return found
    return None


def _find_flup() -> str | None:
    try:
        metadata.version("flup")
    except metadata.PackageNotFoundError:
        return None
    return sys.executable


def _dist_version(dist: str) -> Callable[[str], str]:
    def version(_exe: str) -> str:
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            return f"{dist} (unknown version)"

    return version


def _command_version(*args: str) -> Callable[[str], str]:
    def version(exe: str) -> str:
        try:
            done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{Path(exe).name} (version unknown: {exc})"
        lines = (done.stdout or done.stderr).strip().splitlines()
        return f"{Path(exe).name} {lines[0]}" if lines else Path(exe).name

    return version


# gunicorn 27 opens a control socket at ~/.gunicorn/gunicorn.ctl by default: a benchmark run must not take
# it over from a pool that is already running there.
_GUNICORN_COMMON = ["--no-control-socket"]


def _fcgipool(exe: str, sock: Path, workers: int, run_dir: Path) -> Launch:
    return Launch([exe, "--bind", f"unix:{sock}", "--workers", str(workers), *_GUNICORN_COMMON, "hello:app"])


def _fcgipool_request_log(exe: str, sock: Path, workers: int, run_dir: Path) -> Launch:
    """fcgipool with its request log on (docs/request-log.md): what one JSON line per request costs."""
    launch = _fcgipool(exe, sock, workers, run_dir)
    launch.argv[1:1] = ["--request-log", str(run_dir / "requests.log")]
    return launch


def _gunicorn(protocol: str) -> Callable[[str, Path, int, Path], Launch]:
    def launch(exe: str, sock: Path, workers: int, run_dir: Path) -> Launch:
        argv = [exe, "--bind", f"unix:{sock}", "--workers", str(workers), "--worker-class", "sync", *_GUNICORN_COMMON]
        if protocol != "http":
            argv += ["--protocol", protocol]
        return Launch([*argv, "hello:app"])

    return launch


def _flup(exe: str, sock: Path, workers: int, run_dir: Path) -> Launch:
    return Launch([exe, str(APPS_DIR / "flup_server.py"), str(sock), str(workers)])


def _minimal(exe: str, sock: Path, workers: int, run_dir: Path) -> Launch:
    return Launch([exe, str(BENCH_DIR / "experiments" / "minimal_fcgi.py"), str(sock), str(workers)])


def _uwsgi(exe: str, sock: Path, workers: int, run_dir: Path) -> Launch:
    argv = [
        exe,
        "--master",
        f"--processes={workers}",
        f"--fastcgi-socket={sock}",
        "--chmod-socket=666",
        f"--pythonpath={APPS_DIR}",
        "--module=hello:app",
        "--need-app",
        "--disable-logging",  # no per-request log line, like every other backend here
        "--die-on-term",
    ]
    return Launch(argv, stop_signal=signal.SIGINT)


def _php_fpm(exe: str, sock: Path, workers: int, run_dir: Path) -> Launch:
    conf = run_dir / f"php-fpm-{sock.stem}.conf"
    template = Template((APPS_DIR / "php-fpm.conf").read_text())
    conf.write_text(template.substitute(run_dir=run_dir, socket=sock, workers=workers, user=getpass.getuser()))
    argv = [exe, "--nodaemonize", "--fpm-config", str(conf)]
    if os.geteuid() == 0:
        argv.append("--allow-to-run-as-root")
    return Launch(argv)


_UWSGI_HINT = (
    "uWSGI is not installed: `make bench-deps` or `.venv/bin/pip install uwsgi` (compiles; needs gcc and python3-dev)"
)
_PHP_HINT = "php-fpm is not installed: `apt-get install php8.2-fpm`"


def _fcgi_rows(server: str, label: str, find, hint, launch, version) -> list[Backend]:
    return [
        Backend(f"{server}-keepconn", server, f"{label}, keep-conn on", "fastcgi", True, find, hint, launch, version),
        Backend(server, server, f"{label}, keep-conn off", "fastcgi", False, find, hint, launch, version),
    ]


def all_backends() -> list[Backend]:
    """Every row, the reference row (fcgipool with keep-conn) first."""
    gunicorn = _venv_or_path("gunicorn")
    gunicorn_hint = "gunicorn is not installed: `make install`"
    return [
        *_fcgi_rows(
            "fcgipool",
            "fcgipool (FastCGI)",
            _venv_or_path("fcgipool"),
            "the fcgipool command is missing: `make install` (pip install -e pool)",
            _fcgipool,
            _dist_version("fcgipool"),
        ),
        # fcgipool with its request log: BENCH_ONLY=fcgipool-keepconn,fcgipool-requestlog compares the two
        Backend(
            "fcgipool-requestlog",
            "fcgipool",
            "fcgipool (FastCGI), keep-conn on, request log on",
            "fastcgi",
            True,
            _venv_or_path("fcgipool"),
            "the fcgipool command is missing: `make install`",
            _fcgipool_request_log,
            _dist_version("fcgipool"),
            default=False,
        ),
        *_fcgi_rows(
            "uwsgi",
            "uWSGI --fastcgi-socket",
            _venv_or_path("uwsgi"),
            _UWSGI_HINT,
            _uwsgi,
            _command_version("--version"),
        ),
        Backend(
            "gunicorn-http",
            "gunicorn",
            "gunicorn sync, HTTP (proxy_pass)",
            "http",
            False,
            gunicorn,
            gunicorn_hint,
            _gunicorn("http"),
            _dist_version("gunicorn"),
        ),
        Backend(
            "gunicorn-uwsgi",
            "gunicorn",
            "gunicorn sync, --protocol uwsgi (uwsgi_pass)",
            "uwsgi",
            False,
            gunicorn,
            gunicorn_hint,
            _gunicorn("uwsgi"),
            _dist_version("gunicorn"),
        ),
        *_fcgi_rows(
            "flup",
            "flup fcgi_fork (prefork)",
            _find_flup,
            "flup is not installed: `make install`",
            _flup,
            _dist_version("flup"),
        ),
        *_fcgi_rows("php-fpm", "php-fpm, pm static", _find_php_fpm, _PHP_HINT, _php_fpm, _command_version("-v")),
        # Not a server: the floor for a Python FastCGI worker (experiments/minimal_fcgi.py). With keep-conn it
        # runs by default (fcgipool's CPU per request is held to 1.25x it); without, when BENCH_ONLY names it
        *(
            replace(row, default=row.keep_conn)
            for row in _fcgi_rows(
                "minimal",
                "experiments/minimal_fcgi.py (Python floor, not a server)",
                lambda: sys.executable,
                "",
                _minimal,
                lambda _exe: f"minimal_fcgi.py on Python {sys.version.split()[0]}",
            )
        ),
    ]


REFERENCE_ROW = "fcgipool-keepconn"


def select(backends: list[Backend], only: tuple[str, ...]) -> list[Backend]:
    """The rows named in BENCH_ONLY (by row id or server family); all default rows when it is empty."""
    if not only:
        return [b for b in backends if b.default]
    known = {b.row for b in backends} | {b.server for b in backends}
    unknown = [name for name in only if name not in known]
    if unknown:
        raise ValueError(f"BENCH_ONLY names unknown rows {unknown}; known: {sorted(known)}")
    return [b for b in backends if b.row in only or b.server in only]
