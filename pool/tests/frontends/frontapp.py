"""WSGI app for the front-end tests: what the app saw, status and headers out, after-response work.

Run as ``frontapp:app`` with this directory as the app directory; side effects go to $FRONTAPP_DIR.

- ``/env/<anything>``: the str part of the environ and the body's length and SHA-256, as JSON
- ``/status``: ``418 I'm a teapot`` with headers a front end must pass on unchanged (two Set-Cookie)
- ``/task?ms=300&key=K``: answers at once, then sleeps ``ms`` in an after-response task that writes
  ``task-K`` (the time it finished) into $FRONTAPP_DIR
- ``/mixed?every=2``: every ``every``-th request of a worker has a (no-op) after-response task, so its
  connection is closed after END_REQUEST while the others stay kept: both paths under load
- ``/slow?s=5``: sleeps in the response phase (past the pool's ``--timeout``: the pool answers 504)
- ``/pid``, anything else: the worker's pid
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fcgipool import background

OUT = Path(os.environ.get("FRONTAPP_DIR", "/tmp"))
_COUNT = itertools.count(1)


def task_done(ms: int, key: str) -> None:
    time.sleep(ms / 1000)
    (OUT / f"task-{key}").write_text(f"{time.time()}\n")


def nothing() -> None:
    pass


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    q = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    status, headers = "200 OK", [("Content-Type", "text/plain")]
    if path.startswith("/env"):
        data = environ["wsgi.input"].read()
        seen = {k: v for k, v in environ.items() if isinstance(v, str)}
        seen["wsgi.input_terminated"] = str(environ.get("wsgi.input_terminated"))
        body = json.dumps({"environ": seen, "body_length": len(data), "body_sha256": hashlib.sha256(data).hexdigest()})
        headers = [("Content-Type", "application/json")]
        out = body.encode()
    elif path == "/status":
        status = "418 I'm a teapot"
        headers += [("X-Out", "one"), ("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; Path=/"),
                    ("Cache-Control", "no-store")]  # fmt: skip
        out = b"short and stout\n"
    elif path == "/task":
        key = q.get("key", "k")
        background.add(task_done, int(q.get("ms", "300")), key, name=f"task:{key}")
        out = f"queued {key}\n".encode()
    elif path == "/mixed":
        if next(_COUNT) % int(q.get("every", "2")) == 0:
            background.add(nothing, name="nothing")
        out = b"mixed\n"
    elif path == "/slow":
        time.sleep(float(q.get("s", "5")))
        out = b"slept\n"
    else:
        out = str(os.getpid()).encode()
    start_response(status, [*headers, ("Content-Length", str(len(out)))])
    return [out]
