"""Test application for the pool tests: plain responses, bodies, after-response tasks, lost tasks.

Side effects go to files in $BGAPP_DIR so tests (another process) can observe them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from urllib.parse import parse_qs

from fcgipool import background

OUT = Path(os.environ.get("BGAPP_DIR", "/tmp"))
_LEAKED: list[bytes] = []  # /leak keeps memory here for good: a worker that leaks


def where() -> str:
    """Where this code runs: "queue" inside an RQ job (the spill queue's worker), else "pool"."""
    try:
        from rq import get_current_job
    except ImportError:
        return "pool"
    return "queue" if get_current_job() is not None else "pool"


def mark(name: str, **data: object) -> None:
    """Record a side effect: one JSON line in $BGAPP_DIR/marks.log."""
    line = json.dumps({"mark": name, "t": time.time(), "pid": os.getpid(), "where": where(), **data})
    with open(OUT / "marks.log", "a") as f:
        f.write(line + "\n")


def on_task_lost(server: object, task: object) -> None:
    """The ``on_task_lost`` hook as an app sets it: the pool's, and the spill queue's (FCGIPOOL_ON_TASK_LOST)."""
    mark(
        "task_lost",
        key=getattr(task, "name", ""),
        reason=getattr(task, "reason", ""),
        uri=getattr(task, "request_uri", ""),
        started=getattr(task, "started", None),
        by=type(server).__name__,
    )


def sleep_task(ms: int, key: str) -> None:
    time.sleep(ms / 1000)
    mark("task_done", key=key)


def hold_task(key: str) -> None:
    """Runs until the test creates $BGAPP_DIR/release-<key> (60 s at most): a worker busy for as long as a test
    needs, however slow the machine."""
    end = time.monotonic() + 60
    while not (OUT / f"release-{key.partition(':')[0]}").exists() and time.monotonic() < end:
        time.sleep(0.05)
    mark("task_done", key=key)


def failing_task(key: str) -> None:
    mark("failing_started", key=key)
    raise RuntimeError(f"task {key} failed on purpose")


def stubborn_task(key: str) -> None:
    """Ignores the soft timeout: catches BaseException and keeps sleeping."""
    mark("stubborn_started", key=key)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            time.sleep(0.05)
        except BaseException:  # the point of this task
            mark("stubborn_ignored_interrupt", key=key)


def busy_c_task(key: str) -> None:
    """Loops in C where Python never runs signal handlers."""
    mark("busy_started", key=key)
    sum(range(10**12))


def respond_slowly(seconds: float, *, stubborn: bool) -> None:
    """Sleep in the response phase; ``stubborn`` ignores the pool's soft stop (RequestTimeout) as well."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            time.sleep(min(left, 0.05) if stubborn else left)
        except BaseException:
            if not stubborn:
                raise


def chain_task(key: str, depth: int) -> None:
    mark("chain", key=key, depth=depth)
    if depth > 0:
        background.add(chain_task, key, depth - 1, name=f"chain:{depth - 1}")


def app(environ, start_response):  # type: ignore[no-untyped-def]
    path = environ["PATH_INFO"]
    q = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    key = q.get("key", "k")
    status, body = "200 OK", b"ok\n"
    if path == "/hello":
        body = b"hello\n"
    elif path == "/task":
        for i in range(int(q.get("n", "1"))):
            background.add(sleep_task, int(q.get("ms", "300")), f"{key}:{i}", name=f"sleep:{key}:{i}")
        body = f"queued {key}\n".encode()
    elif path == "/tasks":
        # a comma-separated plan: sleep<ms> | hold | fail | stubborn | busy | chain<n>
        for i, step in enumerate(q.get("plan", "").split(",")):
            name = f"{step}#{i}"
            if step.startswith("sleep"):
                background.add(sleep_task, int(step[5:] or 300), f"{key}:{i}", name=name)
            elif step == "hold":
                background.add(hold_task, f"{key}:{i}", name=name)
            elif step == "fail":
                background.add(failing_task, f"{key}:{i}", name=name)
            elif step == "stubborn":
                background.add(stubborn_task, f"{key}:{i}", name=name)
            elif step == "busy":
                background.add(busy_c_task, f"{key}:{i}", name=name)
            elif step.startswith("chain"):
                background.add(chain_task, key, int(step[5:] or 2), name=name)
        if q.get("status"):
            status = q["status"]
        if q.get("sleep"):  # response phase outlasting --timeout: the tasks above never start
            try:
                respond_slowly(float(q["sleep"]), stubborn=q.get("stubborn") == "1")
            finally:
                mark("response_finally", key=key)
    elif path == "/lambda":  # refused at once when spill is on (a queue's worker cannot import a lambda)
        background.add(lambda: mark("lambda_ran", key=key), name="lambda")
    elif path == "/finish":
        start_response("200 OK", [("Content-Type", "text/plain")])
        background.finish_request()
        time.sleep(int(q.get("ms", "300")) / 1000)
        mark("after_finish", key=key)
        return [b"dropped after finish_request\n", b"dropped too\n"]
    elif path == "/echo":
        data = environ["wsgi.input"].read()
        body = data
    elif path == "/lines":
        body = b"".join(f"{len(line)}:".encode() + line for line in environ["wsgi.input"])
    elif path == "/env":
        env = {k: v for k, v in environ.items() if isinstance(v, str)}
        body = json.dumps(env, sort_keys=True).encode()
    elif path == "/big":
        size = int(q.get("size", "1000000"))
        body = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    elif path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Accel-Buffering", "no")])
        return (f"chunk {i}\n".encode() for i in range(int(q.get("n", "3"))))
    elif path == "/pieces":  # many small blocks: the worker still sends them in one write
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"{i:05d}\n".encode() for i in range(int(q.get("n", "200"))))
    elif path == "/file":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(q["path"], "rb"), 4096)
    elif path == "/error":
        raise RuntimeError("application error on purpose")
    elif path == "/sleep":
        time.sleep(float(q.get("s", "1")))
    elif path.startswith("/user/"):  # a route with a parameter, named for the request log
        environ["fcgipool.route"] = "/user/<name>"
        body = path[6:].encode()
    elif path == "/pid":
        body = str(os.getpid()).encode()
    elif path == "/leak":  # keep ``kb`` KiB for the rest of this worker's life (touched, so it is resident)
        _LEAKED.append(b"x" * (1024 * int(q.get("kb", "1024"))))
        body = str(os.getpid()).encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
