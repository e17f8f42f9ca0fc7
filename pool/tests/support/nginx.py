"""Start a real nginx (Debian's nginx-light) with a given config in a private temp directory."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from .net import free_port, wait_for

NGINX_BIN = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
MISSING = (
    "nginx is not installed: these tests need Debian's nginx-light "
    "(`sudo apt-get install nginx-light`, or `make install-system`)"
)

# The CGI variables of Debian's /etc/nginx/fastcgi_params, spelled out so the tests do not depend on it.
FASTCGI_PARAMS = """
        fastcgi_param QUERY_STRING      $query_string;
        fastcgi_param REQUEST_METHOD    $request_method;
        fastcgi_param CONTENT_TYPE      $content_type;
        fastcgi_param CONTENT_LENGTH    $content_length;
        fastcgi_param SCRIPT_NAME       $fastcgi_script_name;
        fastcgi_param REQUEST_URI       $request_uri;
        fastcgi_param DOCUMENT_URI      $document_uri;
        fastcgi_param DOCUMENT_ROOT     $document_root;
        fastcgi_param SERVER_PROTOCOL   $server_protocol;
        fastcgi_param REQUEST_SCHEME    $scheme;
        fastcgi_param HTTPS             $https if_not_empty;
        fastcgi_param GATEWAY_INTERFACE CGI/1.1;
        fastcgi_param SERVER_SOFTWARE   nginx/$nginx_version;
        fastcgi_param REMOTE_ADDR       $remote_addr;
        fastcgi_param REMOTE_PORT       $remote_port;
        fastcgi_param SERVER_ADDR       $server_addr;
        fastcgi_param SERVER_PORT       $server_port;
        fastcgi_param SERVER_NAME       $server_name;
"""


def require_nginx() -> str:
    """The nginx binary, or skip the calling test with a message that says what to install."""
    if NGINX_BIN is None:
        import pytest

        pytest.skip(MISSING)
    return NGINX_BIN


# nginx retries a failed request on a new connection only if it is idempotent, unless told otherwise. The pool
# never closes a kept connection nginx may reuse (it passes idle ones between workers, docs/server-behaviour.md
# "The close race"), so the tests run with nginx's defaults; these lines are what a user could add to retry
# non-idempotent requests that failed on a reused connection (``retry_non_idempotent=True``).
RETRY_ON_STALE_CONNECTION = """
            fastcgi_next_upstream error timeout non_idempotent;
            fastcgi_next_upstream_tries 2;
            fastcgi_next_upstream_timeout 5s;
"""


def fastcgi_site(
    upstream: str,
    *,
    keep_conn: bool = True,
    keepalive: int = 16,
    retry_non_idempotent: bool = False,
    extra_location: str = "",
    extra_server: str = "",
) -> str:
    """An ``http {}`` body: one server on ``{port}`` passing everything to ``upstream`` over FastCGI.

    ``upstream`` is ``unix:/path`` or ``host:port``. ``keep_conn`` adds ``fastcgi_keep_conn on`` and an
    upstream ``keepalive`` cache (what production uses); otherwise one connection per request.
    ``retry_non_idempotent`` adds :data:`RETRY_ON_STALE_CONNECTION` (with keep-conn only).
    """
    cache = f"keepalive {keepalive};" if keep_conn else ""
    keep = "fastcgi_keep_conn on;" if keep_conn else ""
    if keep_conn and retry_non_idempotent:
        extra_location = RETRY_ON_STALE_CONNECTION + extra_location
    return f"""
    upstream pool {{
        server {upstream};
        {cache}
    }}
    server {{
        listen 127.0.0.1:{{port}};
        {extra_server}
        location / {{
            fastcgi_pass pool;
            {keep}
{FASTCGI_PARAMS}
            {extra_location}
        }}
    }}
"""


class NginxServer:
    """``with NginxServer(http_body, workers=2) as nginx: nginx.url("/")``.

    ``http_body`` goes inside ``http {}``; ``{port}`` in it is replaced by a free port. The master runs in
    the foreground (``daemon off``) under this process and is stopped (QUIT, then KILL) on exit.
    """

    def __init__(self, http_body: str, *, workers: int = 1, port: int | None = None, error_level: str = "info") -> None:
        self.http_body = http_body
        self.workers = workers
        self.port = port or free_port()
        self.error_level = error_level
        self.dir = Path(tempfile.mkdtemp(prefix="fcgipool-nginx-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def conf_path(self) -> Path:
        return self.dir / "nginx.conf"

    @property
    def error_log(self) -> Path:
        return self.dir / "error.log"

    @property
    def access_log(self) -> Path:
        return self.dir / "access.log"

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def render(self) -> str:
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
        d = self.dir
        body = self.http_body.replace("{port}", str(self.port))
        return f"""
{user}
worker_processes {self.workers};
error_log {d}/error.log {self.error_level};
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    fastcgi_temp_path {d}/fastcgi;
    proxy_temp_path {d}/proxy;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    {body}
}}
"""

    def start(self) -> NginxServer:
        binary = require_nginx()
        self.conf_path.write_text(self.render())
        check = subprocess.run([binary, "-t", "-q", "-p", str(self.dir), "-c", str(self.conf_path)],
                               capture_output=True, text=True)  # fmt: skip
        if check.returncode:
            raise RuntimeError(f"nginx rejected the test config:\n{check.stderr}\n{self.conf_path.read_text()}")
        self.proc = subprocess.Popen(
            [binary, "-p", str(self.dir), "-c", str(self.conf_path), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "stderr.log", "wb"),  # noqa: SIM115 - owned by the child
        )
        try:
            wait_for(self._listening, 10, f"nginx to listen on port {self.port}")
        except TimeoutError:
            self.stop()
            raise
        return self

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {self.proc.returncode}: {self.read_error_log()}")
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def read_error_log(self) -> str:
        text = ""
        for name in ("stderr.log", "error.log"):
            path = self.dir / name
            if path.exists():
                text += path.read_text(errors="replace")
        return text

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        time.sleep(0)

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> NginxServer:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
        if et is None:
            self.cleanup()
