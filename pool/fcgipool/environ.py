"""PEP 3333 environ from FastCGI PARAMS.

The web server's CGI variables become the environ as they are (latin-1 str, as PEP 3333 wants); then the
gaps are filled: ``SCRIPT_NAME``/``PATH_INFO`` (nginx's stock ``fastcgi_params`` sends the whole path as
SCRIPT_NAME and no PATH_INFO), empty ``CONTENT_LENGTH``/``CONTENT_TYPE`` removed (and a negative
``CONTENT_LENGTH``: a body of unknown length), ``HTTP_CONTENT_*`` duplicates dropped, and the ``wsgi.*`` keys
added.
"""

from __future__ import annotations

import os
import sys
from typing import Any
from urllib.parse import unquote_to_bytes

from gunicorn.http.wsgi import FileWrapper

# The wsgi.* keys that are the same for every request.
_WSGI_CONSTANTS = {
    "wsgi.version": (1, 0),
    "wsgi.multithread": False,
    "wsgi.run_once": False,
    "wsgi.file_wrapper": FileWrapper,
    "wsgi.input_terminated": True,
}


class BadRequestParams(ValueError):
    """PARAMS that cannot form a valid request (for example a malformed CONTENT_LENGTH)."""


def script_root() -> str:
    """Mount point of the app, from the SCRIPT_NAME environment variable (gunicorn's convention)."""
    root = os.environ.get("SCRIPT_NAME", "").rstrip("/")
    return root


def body_length(params: dict[str, str]) -> int | None:
    """The request body's length from CONTENT_LENGTH, or None: the body runs to the end of STDIN.

    Missing, empty or negative means the web server does not know the length: Caddy sends ``-1`` for a chunked
    request (nginx, Apache, lighttpd and HAProxy buffer such a body and send its size). Anything else that is
    not a decimal integer raises :class:`BadRequestParams` (a 400). ``isdecimal``, not ``isdigit``: ``"²"`` is a
    digit that ``int()`` refuses.
    """
    text = params.get("CONTENT_LENGTH", "").strip()
    if text.isdecimal():
        return int(text)
    if not text or (text[0] == "-" and text[1:].isdecimal()):
        return None
    raise BadRequestParams(f"CONTENT_LENGTH is not an integer: {params['CONTENT_LENGTH']!r}")


def _request_path(params: dict[str, str]) -> str:
    """The decoded request path: nginx's $document_uri, else REQUEST_URI without the query, decoded."""
    path = params.get("DOCUMENT_URI")
    if path:
        return path
    uri = params.get("REQUEST_URI")
    if uri:
        return unquote_to_bytes(uri.split("?", 1)[0]).decode("latin-1")
    return params.get("SCRIPT_NAME", "") or "/"


def build_environ(
    params: dict[str, str],
    *,
    wsgi_input: Any,
    errors: Any,
    root: str = "",
    multiprocess: bool = True,
) -> dict[str, Any]:
    """The WSGI environ for one request. Raises :class:`BadRequestParams` on an invalid CONTENT_LENGTH.

    Straight-line code: the loop over the required keys and a second CONTENT_LENGTH parse were a third of
    its ~2 us per request (``pool/bench/experiments/loop_micro.py``)."""
    env: dict[str, Any] = dict(params)
    env.update(_WSGI_CONSTANTS)
    get = env.get
    # keys PEP 3333 requires, with defaults for a web server that does not send them
    if not get("REQUEST_METHOD"):
        env["REQUEST_METHOD"] = "GET"
    if "QUERY_STRING" not in env:
        env["QUERY_STRING"] = ""
    if not get("SERVER_NAME"):
        env["SERVER_NAME"] = "localhost"
    if not get("SERVER_PORT"):
        env["SERVER_PORT"] = "80"
    if not get("SERVER_PROTOCOL"):
        env["SERVER_PROTOCOL"] = "HTTP/1.0"
    # duplicates of CONTENT_TYPE/CONTENT_LENGTH that nginx passes along with the other headers
    env.pop("HTTP_CONTENT_TYPE", None)
    env.pop("HTTP_CONTENT_LENGTH", None)
    if get("CONTENT_TYPE") == "":
        del env["CONTENT_TYPE"]
    text = get("CONTENT_LENGTH")
    if text == "":  # nginx sends an empty one with every GET
        del env["CONTENT_LENGTH"]
        text = None
    # a plain "123" is kept as it is; anything else ("", " 12", "012", "-1") is parsed and rewritten
    if text is not None and not (text.isascii() and text.isdecimal() and (text[0] != "0" or len(text) == 1)):
        length = body_length(env)
        if length is None:
            del env["CONTENT_LENGTH"]  # the app reads wsgi.input to its end (wsgi.input_terminated)
        else:
            env["CONTENT_LENGTH"] = str(length)

    if not get("PATH_INFO"):
        # No split from the web server: the whole decoded path is PATH_INFO below the configured root.
        path = _request_path(params)
        if root and (path == root or path.startswith(root + "/")):
            env["SCRIPT_NAME"], env["PATH_INFO"] = root, path[len(root) :]
        else:
            env["SCRIPT_NAME"], env["PATH_INFO"] = "", path
    elif get("SCRIPT_NAME") == "/":
        env["SCRIPT_NAME"] = ""

    https = get("REQUEST_SCHEME") == "https" or get("HTTPS", "").lower() in ("on", "1")
    env["wsgi.url_scheme"] = "https" if https else "http"
    env["wsgi.input"] = wsgi_input
    env["wsgi.errors"] = errors if errors is not None else sys.stderr
    env["wsgi.multiprocess"] = multiprocess
    return env


def request_uri(params: dict[str, str]) -> str:
    """What the status page and logs show for the request: REQUEST_URI, else the path and query."""
    uri = params.get("REQUEST_URI")
    if uri:
        return uri
    path = params.get("DOCUMENT_URI") or params.get("SCRIPT_NAME", "") + params.get("PATH_INFO", "")
    query = params.get("QUERY_STRING")
    return f"{path}?{query}" if query else path
