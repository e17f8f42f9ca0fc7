"""Start Apache httpd, lighttpd, Caddy or HAProxy (Debian's packages) in front of a pool's unix socket.

Each runs the example config of ``docs/frontends/<name>/`` unchanged: the examples read the pool's socket
(``FCGIPOOL_SOCKET``) and, where the example owns the listener, the address (``FRONTEND_LISTEN``) from the
environment, which every one of these servers expands itself. What an example leaves to the distribution's
main config (modules, pid file, logs, the user to run as) is written here into a private temp directory.

    with PoolProcess("frontapp:app", app_dir=...) as pool, Caddy(pool.socket_path) as caddy:
        requests.get(caddy.url("/"))
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import ClassVar

from .net import free_port, wait_for
from .nginx import NginxServer, fastcgi_site

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "docs" / "frontends"


def _find(*names: str) -> str | None:
    """The first of ``names`` on PATH or in /usr/sbin (not on a non-root user's PATH on Debian)."""
    for name in names:
        for found in (shutil.which(name), f"/usr/sbin/{name}"):
            if found and os.access(found, os.X_OK):
                return found
    return None


class FrontEnd:
    """One web server in the foreground under this process, on ``127.0.0.1:{port}``; stopped on exit."""

    name: ClassVar[str]
    package: ClassVar[str]  # the Debian package
    binaries: ClassVar[tuple[str, ...]]

    def __init__(self, socket_path: str, *, port: int | None = None) -> None:
        self.socket_path = socket_path
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"fcgipool-{self.name}-"))
        os.chmod(self.dir, 0o755)  # workers may run as another user
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def binary(cls) -> str | None:
        return _find(*cls.binaries)

    @classmethod
    def missing(cls) -> str | None:
        """Why the tests of this front end cannot run here, or None."""
        if cls.binary() is None:
            return (f"{cls.name} is not installed: these tests need Debian's {cls.package} "
                    f"(`sudo apt-get install {cls.package}`, or `make install-system`)")  # fmt: skip
        return None

    def exe(self) -> str:
        binary = self.binary()
        assert binary is not None, self.missing()
        return binary

    @property
    def example(self) -> Path:
        return EXAMPLES / self.name

    @property
    def listen(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        return f"http://{self.listen}{path}"

    def environment(self) -> dict[str, str]:
        return {**os.environ, "FCGIPOOL_SOCKET": self.socket_path, "FRONTEND_LISTEN": self.listen}

    # --- what each server defines -----------------------------------------------------------------------------
    def write_config(self) -> None:
        raise NotImplementedError

    def check_command(self) -> list[str] | None:
        """A config test (``-t``) run before the start, so a bad example fails with the server's own words."""
        return None

    def command(self) -> list[str]:
        raise NotImplementedError

    # --- running ----------------------------------------------------------------------------------------------
    def start(self) -> FrontEnd:
        if reason := self.missing():
            import pytest

            pytest.skip(reason)
        self.write_config()
        env = self.environment()
        check = self.check_command()
        if check:
            done = subprocess.run(check, capture_output=True, text=True, env=env, timeout=30)
            if done.returncode:
                raise RuntimeError(f"{self.name} rejected the config ({' '.join(check)}):\n{done.stdout}{done.stderr}")
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.dir,
            env=env,
            stdout=open(self.dir / "stdout.log", "wb"),  # noqa: SIM115 - owned by the child
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for(self._listening, 15, f"{self.name} to listen on {self.listen}")
        except BaseException:
            self.stop()
            raise
        return self

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_text()}")
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def log_text(self) -> str:
        return "".join(
            f"--- {p.name}\n{p.read_text(errors='replace')}" for p in sorted(self.dir.glob("*.log")) if p.stat().st_size
        )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> FrontEnd:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
        if et is None:
            self.cleanup()


def _unprivileged() -> tuple[str, str] | None:
    """User and group for the workers when we are root (Apache refuses to serve as root): Debian's nobody."""
    return ("nobody", "nogroup") if os.geteuid() == 0 else None


class Apache(FrontEnd):
    name = "apache"
    package = "apache2"
    binaries = ("apache2", "httpd")
    MODULES = Path("/usr/lib/apache2/modules")

    def write_config(self) -> None:
        d, user = self.dir, _unprivileged()
        (d / "httpd.conf").write_text(f"""
# What Debian's apache2.conf, ports.conf and mods-enabled/ provide; the example adds the rest.
LoadModule mpm_event_module {self.MODULES}/mod_mpm_event.so
LoadModule authn_core_module {self.MODULES}/mod_authn_core.so
LoadModule authz_core_module {self.MODULES}/mod_authz_core.so
LoadModule proxy_module {self.MODULES}/mod_proxy.so
LoadModule proxy_fcgi_module {self.MODULES}/mod_proxy_fcgi.so
{f"User {user[0]}" if user else ""}
{f"Group {user[1]}" if user else ""}
ServerName 127.0.0.1
Listen {self.listen}
DefaultRuntimeDir {d}
PidFile {d}/httpd.pid
ErrorLog {d}/error.log
LogLevel warn
# two children with 8 threads each: two connection caches, like a small production server
StartServers 2
ServerLimit 2
ThreadsPerChild 8
ThreadLimit 8
MaxRequestWorkers 16
Include {self.example}/fcgipool.conf
""")

    def check_command(self) -> list[str]:
        return [self.exe(), "-t", "-d", str(self.dir), "-f", str(self.dir / "httpd.conf")]

    def command(self) -> list[str]:
        return [self.exe(), "-d", str(self.dir), "-f", str(self.dir / "httpd.conf"), "-DFOREGROUND"]


class Lighttpd(FrontEnd):
    name = "lighttpd"
    package = "lighttpd"
    binaries = ("lighttpd",)

    def write_config(self) -> None:
        d, user = self.dir, _unprivileged()
        (d / "docroot").mkdir()
        if user:  # lighttpd opens its error log after it has become that user
            (d / "error.log").touch()
            shutil.chown(d / "error.log", *user)
        (d / "lighttpd.conf").write_text(f"""
# What Debian's lighttpd.conf provides; the example adds the rest.
server.document-root = "{d}/docroot"
server.bind = "127.0.0.1"
server.port = {self.port}
server.pid-file = "{d}/lighttpd.pid"
server.errorlog = "{d}/error.log"
{f'server.username = "{user[0]}"' if user else ""}
{f'server.groupname = "{user[1]}"' if user else ""}
include "{self.example}/fcgipool.conf"
""")

    def check_command(self) -> list[str]:
        return [self.exe(), "-tt", "-f", str(self.dir / "lighttpd.conf")]

    def command(self) -> list[str]:
        return [self.exe(), "-D", "-f", str(self.dir / "lighttpd.conf")]


class Caddy(FrontEnd):
    name = "caddy"
    package = "caddy"
    binaries = ("caddy",)

    def environment(self) -> dict[str, str]:
        d = self.dir
        # its admin API on a free port; its autosave and certificate storage in the temp directory
        return {**super().environment(), "CADDY_ADMIN": f"127.0.0.1:{free_port()}", "HOME": str(d),
                "XDG_CONFIG_HOME": str(d / "config"), "XDG_DATA_HOME": str(d / "data")}  # fmt: skip

    def write_config(self) -> None:
        pass  # the example is a whole Caddyfile

    def command(self) -> list[str]:
        caddyfile = str(self.example / "Caddyfile")
        # stdout.log collects its log (stderr); no `caddy validate` first: `run` fails as fast on a bad file
        return [self.exe(), "run", "--adapter", "caddyfile", "--config", caddyfile]


class HAProxy(FrontEnd):
    name = "haproxy"
    package = "haproxy"
    binaries = ("haproxy",)

    def write_config(self) -> None:
        user = _unprivileged()
        (self.dir / "global.cfg").write_text(f"""
# What Debian's haproxy.cfg provides (without its chroot: docs/frontends.md#haproxy); the example adds the rest.
global
    pidfile {self.dir}/haproxy.pid
    {f"user {user[0]}" if user else ""}
    {f"group {user[1]}" if user else ""}
    nbthread 2
""")

    def files(self) -> list[str]:
        return ["-f", str(self.dir / "global.cfg"), "-f", str(self.example / "haproxy.cfg")]

    def check_command(self) -> list[str]:
        return [self.exe(), "-c", "-q", *self.files()]

    def command(self) -> list[str]:
        return [self.exe(), "-db", *self.files()]


class Nginx(FrontEnd):
    """The reference: nginx as the other tests run it (keep-conn, an upstream keepalive cache, 2 workers)."""

    name = "nginx"
    package = "nginx-light"
    binaries = ("nginx",)

    def __init__(self, socket_path: str, *, port: int | None = None) -> None:
        super().__init__(socket_path, port=port)
        site = fastcgi_site(f"unix:{socket_path}", extra_server="client_max_body_size 8m;")  # 1m by default
        self.server = NginxServer(site, workers=2, port=self.port, error_level="warn")

    def start(self) -> FrontEnd:
        self.server.start()  # skips with what to install when nginx is missing
        return self

    def stop(self) -> None:
        self.server.stop()

    def log_text(self) -> str:
        return self.server.read_error_log()

    def cleanup(self) -> None:
        self.server.cleanup()
        super().cleanup()


FRONTENDS: list[type[FrontEnd]] = [Nginx, Apache, Lighttpd, Caddy, HAProxy]
