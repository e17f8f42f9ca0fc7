"""Test application for the sizing tests: any path but ``/`` (``/work?answer_ms=&after_ms=``) sleeps
``answer_ms`` answering, then ``after_ms`` in an after-response task; the path is the route in the request log.
Sleeping, not computing, so the pool's workers are the bottleneck and not the test machine's two cores."""

from __future__ import annotations

import time
from urllib.parse import parse_qs

from fcgipool import background


def after_response(ms: float) -> None:
    time.sleep(ms / 1000)


def app(environ, start_response):  # type: ignore[no-untyped-def]
    q = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    environ["fcgipool.route"] = environ["PATH_INFO"]
    if environ["PATH_INFO"] != "/":
        time.sleep(float(q.get("answer_ms", "0")) / 1000)
        after = float(q.get("after_ms", "0"))
        if after > 0:
            background.add(after_response, after, name="after")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]
