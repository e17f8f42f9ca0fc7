"""WSGI app for the keep-conn hand-off tests: every response names the worker (pid) that served it.

``/pid`` answers at once; ``/slow?s=0.6`` sleeps first; ``/bg?s=0.6`` answers at once and then sleeps in an
after-response task. On import it creates ``$PIDAPP_DIR/booted-<pid>``: the app is loaded in a worker's
``init_process``, right before its main loop, so a test can tell when a new worker is about to serve.

Run as ``support.pidapp:app`` with ``pool/tests`` as the app directory.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fcgipool import background

if os.environ.get("PIDAPP_DIR"):
    (Path(os.environ["PIDAPP_DIR"]) / f"booted-{os.getpid()}").touch()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    q = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    seconds = float(q.get("s", "0.6"))
    if path == "/slow":
        time.sleep(seconds)
    elif path == "/bg":
        background.add(time.sleep, seconds, name="bg-sleep")
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def booted(directory: Path) -> set[int]:
    """Pids of the workers that have loaded the app so far."""
    return {int(p.name.split("-", 1)[1]) for p in directory.glob("booted-*")}
