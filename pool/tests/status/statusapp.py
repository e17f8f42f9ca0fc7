"""WSGI app for the status tests: after-response work, a slow view, a plain hello."""

from __future__ import annotations

import time
from urllib.parse import parse_qs

from fcgipool import background


def after_response_sleep(seconds: float) -> None:
    time.sleep(seconds)


def slow_app_function_for_slowlog(seconds: float) -> bytes:
    time.sleep(seconds)
    return b"slow done\n"


def app(environ, start_response):
    path = environ.get("PATH_INFO") or environ.get("SCRIPT_NAME") or "/"
    query = parse_qs(environ.get("QUERY_STRING", ""))
    seconds = float(query.get("s", ["0.5"])[0])
    if path.endswith("/busy"):
        background.add(after_response_sleep, seconds)
        body = b"answered; working afterwards\n"
    elif path.endswith("/slow"):
        body = slow_app_function_for_slowlog(seconds)
    else:
        body = b"hello\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
