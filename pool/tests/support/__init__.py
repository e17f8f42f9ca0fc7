"""Shared test helpers: real nginx, a real fcgipool arbiter, a minimal FastCGI client, free ports.

    from tests.support import NginxServer, PoolProcess, fastcgi_site, fcgi_request

    with PoolProcess("bgapp:app", workers=2, app_dir=APPS) as pool, \\
         NginxServer(fastcgi_site(pool.socket_path, keep_conn=True)) as nginx:
        requests.get(nginx.url("/hello"))
"""

from .fcgi_client import FastCGIResponse, fcgi_request, parse_cgi_response
from .net import free_port, wait_for
from .nginx import NGINX_BIN, NginxServer, fastcgi_site, require_nginx
from .pool import PoolProcess

__all__ = [
    "NGINX_BIN",
    "FastCGIResponse",
    "NginxServer",
    "PoolProcess",
    "fastcgi_site",
    "fcgi_request",
    "free_port",
    "parse_cgi_response",
    "require_nginx",
    "wait_for",
]
