"""shopapp behind its own nginx + fcgipool (the pool tests' helpers), for the load test's TARGET= runs.

    python -m loadtest.tests.otherapp.serve [--port 8390] [--workers 4]     # Ctrl-C or SIGTERM stops both

It prints the target, the status URL and the two logs to pass on:
    make loadtest TARGET=http://127.0.0.1:8390 LOCUSTFILE=loadtest/example_locustfile.py \\
        REQUEST_LOG=<dir>/requests.log ACCESS_LOG=<dir>/access.json.log
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO / "pool" / "tests"))  # the pool tests' helpers, importable as `support`

from support import NginxServer, PoolProcess, fastcgi_site  # noqa: E402

# the stack's JSON access log format (nginx/nginx.conf.template), so the load test can read upstream times
LOG_FORMAT = """
    log_format stack_json escape=json
        '{"time":"$time_iso8601","msec":$msec,"method":"$request_method","uri":"$request_uri",'
        '"status":$status,"request_time":$request_time,'
        '"upstream_connect_time":"$upstream_connect_time","upstream_header_time":"$upstream_header_time",'
        '"upstream_response_time":"$upstream_response_time","upstream_status":"$upstream_status"}';
"""


@contextlib.contextmanager
def running(workers: int = 4, port: int | None = None, background_timeout: float = 5.0,
            keep: bool = False) -> Iterator[dict]:
    """shopapp in fcgipool (static pool, request log on) behind nginx (keep-conn, status page, JSON access log);
    its folder (logs, receipts) is removed afterwards unless ``keep``."""
    out = Path(tempfile.mkdtemp(prefix="shopapp-"))
    try:
        yield from _serve(out, workers, port, background_timeout)
    finally:
        if not keep:
            shutil.rmtree(out, ignore_errors=True)


def _serve(out: Path, workers: int, port: int | None, background_timeout: float) -> Iterator[dict]:
    out.chmod(0o755)  # nginx's workers may run as another user
    args = ["--request-log", str(out / "requests.log"), "--background-timeout", str(background_timeout)]
    with PoolProcess("shopapp:app", workers=workers, args=args, app_dir=HERE, env={"SHOPAPP_DIR": str(out)},
                     status=True) as pool:
        status = f"""
        location = /pool-status {{
            access_log off;
            fastcgi_pass unix:{pool.status_socket};
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param DOCUMENT_URI $document_uri;
            fastcgi_param REQUEST_URI $request_uri;
        }}
        access_log {out}/access.json.log stack_json;
"""
        body = LOG_FORMAT + fastcgi_site(pool.bind, keep_conn=True, extra_server=status)
        with NginxServer(body, workers=1, port=port) as nginx:
            yield {"target": nginx.url("").rstrip("/"), "status_url": nginx.url("/pool-status"),
                   "request_log": str(out / "requests.log"), "access_log": str(out / "access.json.log"),
                   "dir": str(out), "workers": workers}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.tests.otherapp.serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8390)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--background-timeout", type=float, default=5.0)
    args = p.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with running(args.workers, args.port, args.background_timeout, keep=True) as info:
        print(json.dumps(info, indent=2), flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
