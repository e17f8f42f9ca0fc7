"""nginx + php-fpm started from a temp dir for one fault, signalled, and always stopped.

Ideas from pool/bench (backends.py, nginx.py, procs.py): each program leads its own process group, configs are
rendered into the run dir, nginx runs as the current user with its pid and temp files there.
"""

from __future__ import annotations

import contextlib
import getpass
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from loadtest import accesslog

HERE = Path(__file__).resolve().parent
INSTALL_HINT = "apt-get install -y php8.2-fpm nginx-light"


class Unavailable(RuntimeError):
    """php-fpm or nginx is not installed: the PHP-FPM side of the fault suite cannot run here."""


class StackError(RuntimeError):
    """nginx or php-fpm rejected its config or did not come up."""


def _which(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
        if found:
            return found
    return None


def missing() -> str | None:
    """Why the harness cannot run here (what to install), or None when it can."""
    lacking = [name for name, found in (("php-fpm8.2", _which("php-fpm8.2", "php-fpm")),
                                        ("nginx", _which("nginx"))) if not found]
    if not lacking:
        return None
    return f"{' and '.join(lacking)} not found: install with `{INSTALL_HINT}` (as root)"


def executables() -> tuple[str, str]:
    """(php-fpm, nginx), or Unavailable saying what to install."""
    reason = missing()
    if reason:
        raise Unavailable(reason)
    return _which("php-fpm8.2", "php-fpm") or "", _which("nginx") or ""


def versions() -> dict[str, str]:
    fpm, nginx = executables()
    out = {}
    for key, argv in (("php-fpm", [fpm, "-v"]), ("nginx", [nginx, "-v"])):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        out[key] = ((done.stdout or done.stderr).strip().splitlines() or ["?"])[0]
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def render(template: str, **values: object) -> str:
    """Fill @@name@@ placeholders; every one must be given (nginx's own $variables are left alone)."""
    text = template
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", str(value))
    left = sorted(set(re.findall(r"@@(\w+)@@", text)))
    if left:
        raise KeyError(f"placeholders not filled: {left}")
    return text


@dataclass(frozen=True)
class Settings:
    keep_conn: bool = True
    children: int = 0  # 0: the stack's default, 2 x cores
    max_requests: int = 0
    request_terminate_timeout: str = "0"
    process_control_timeout: str = "0"
    log_level: str = "notice"
    nginx_workers: str = "auto"  # like nginx/nginx.conf.template
    keepalive: int = 32  # upstream keepalive, as in nginx/nginx.conf.template

    @property
    def pool_size(self) -> int:
        return self.children or 2 * (os.cpu_count() or 1)


def nginx_config(settings: Settings, prefix: Path, sock: Path, port: int) -> str:
    if settings.keep_conn:
        upstream = (f"        keepalive {settings.keepalive};\n        keepalive_requests 1000;\n"
                    "        keepalive_timeout 10s;")
        keep = "            fastcgi_keep_conn on;"
    else:
        upstream = "        # no keepalive: a new FastCGI connection per request (the common php-fpm set-up)"
        keep = "            # fastcgi_keep_conn off (nginx's default)"
    # As root, nginx's workers would run as `nobody` and could not write the temp dir (pool/bench/nginx.py).
    user = f"user {getpass.getuser()};" if os.geteuid() == 0 else "# (not root: workers run as the current user)"
    return render((HERE / "nginx.conf").read_text(), user_directive=user, nginx_workers=settings.nginx_workers,
                  prefix=prefix, socket=sock, port=port, app_dir=HERE, upstream_keepalive=upstream, keep_conn=keep)


def fpm_config(settings: Settings, run_dir: Path, sock: Path) -> str:
    return render((HERE / "php-fpm.conf").read_text(), run_dir=run_dir, socket=sock, user=getpass.getuser(),
                  children=settings.pool_size, max_requests=settings.max_requests,
                  request_terminate_timeout=settings.request_terminate_timeout,
                  process_control_timeout=settings.process_control_timeout, log_level=settings.log_level)


def _ppid(pid: int) -> tuple[int, str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0]


def children_of(pid: int) -> list[int]:
    """Live (non-zombie) direct children of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _ppid(int(entry))) is not None and stat[0] == pid and stat[1] != "Z":
            found.append(int(entry))
    return sorted(found)


class Stack:
    """One php-fpm master and one nginx in ``run_dir`` (a fresh directory)."""

    def __init__(self, settings: Settings, run_dir: Path):
        self.settings = settings
        self.run_dir = run_dir
        self.socket = run_dir / "php-fpm.sock"
        self.port = free_port()
        self.fpm: subprocess.Popen[bytes] | None = None
        self.nginx: subprocess.Popen[bytes] | None = None

    # --- files the faults read ---------------------------------------------------------------------------
    @property
    def access_log(self) -> Path:
        return self.run_dir / "access.log"

    @property
    def ledger(self) -> Path:
        return self.run_dir / "ledger.txt"

    def text(self, name: str) -> str:
        try:
            return (self.run_dir / name).read_text(errors="replace")
        except OSError:
            return ""

    def access_entries(self) -> list[dict]:
        return accesslog.read_from(str(self.access_log), 0)

    # --- start / stop ------------------------------------------------------------------------------------
    def start(self) -> Stack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        fpm_exe, nginx_exe = executables()
        for sub in ("client_body", "fastcgi", "proxy", "uwsgi", "scgi"):
            (self.run_dir / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        self.ledger.touch()
        fpm_conf = self.run_dir / "php-fpm.conf"
        fpm_conf.write_text(fpm_config(self.settings, self.run_dir, self.socket))
        nginx_conf = self.run_dir / "nginx.conf"
        nginx_conf.write_text(nginx_config(self.settings, self.run_dir, self.socket, self.port))
        base = [nginx_exe, "-p", str(self.run_dir), "-c", str(nginx_conf), "-e", str(self.run_dir / "error.log")]
        check = subprocess.run([*base, "-t", "-q"], capture_output=True, text=True, timeout=30, check=False)
        if check.returncode != 0:
            raise StackError(f"nginx rejected {nginx_conf}:\n{check.stderr.strip()}")
        argv = [fpm_exe, "--nodaemonize", "--fpm-config", str(fpm_conf)]
        if os.geteuid() == 0:
            argv.append("--allow-to-run-as-root")
        self.fpm = self._spawn(argv, "php-fpm.out")
        self.nginx = self._spawn([*base, "-g", "daemon off;"], "nginx.out")
        self._wait_ready()

    def _spawn(self, argv: list[str], out: str) -> subprocess.Popen[bytes]:
        with open(self.run_dir / out, "ab") as log:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=self.run_dir, start_new_session=True)

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in (("php-fpm", self.fpm), ("nginx", self.nginx)):
                if proc is None or proc.poll() is not None:
                    raise StackError(f"{name} exited at start:\n{self.text('php-fpm.log')[-2000:]}"
                                     f"{self.text('php-fpm.out')[-1000:]}{self.text('error.log')[-2000:]}")
            if len(self.children()) >= self.settings.pool_size and self._probe():
                return
            time.sleep(0.05)
        raise StackError(f"nginx + php-fpm did not answer within {timeout} s:\n{self.text('php-fpm.log')[-2000:]}")

    def _probe(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/app.php?id=probe")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def stop(self) -> None:
        for proc, sig in ((self.nginx, signal.SIGQUIT), (self.fpm, signal.SIGQUIT)):
            if proc is not None:
                _stop_group(proc, sig)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- faults ------------------------------------------------------------------------------------------
    @property
    def master_pid(self) -> int:
        assert self.fpm is not None
        return self.fpm.pid

    def children(self) -> list[int]:
        return children_of(self.master_pid) if self.fpm is not None and self.fpm.poll() is None else []

    def signal_master(self, sig: int) -> None:
        os.kill(self.master_pid, sig)

    def wait_generation(self, old: list[int], timeout: float = 10.0) -> list[int]:
        """After a reload: wait until a full set of children none of which is in ``old`` runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.children()
            if len(now) >= self.settings.pool_size and not set(now) & set(old):
                return now
            time.sleep(0.02)
        log = self.text("php-fpm.log")[-1500:]
        raise StackError(f"php-fpm did not replace its children within {timeout} s:\n{log}")

    def wait_master_exit(self, timeout: float = 10.0) -> int | None:
        assert self.fpm is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.fpm.wait(timeout=timeout)
        return None

    def open_silent(self, count: int) -> list[socket.socket]:
        """``count`` connections to the FPM socket that send nothing (the caller closes them)."""
        conns = []
        for _ in range(count):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(2)
            sock.connect(str(self.socket))
            conns.append(sock)
        return conns


def _stop_group(proc: subprocess.Popen[bytes], sig: int, grace: float = 5.0) -> None:
    """Signal the process group ``proc`` leads, wait, then SIGKILL what is left (pool/bench/procs.py)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
