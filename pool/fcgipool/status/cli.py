"""``fcgipool status``: print the pool status by asking the arbiter's status listener over FastCGI.

    fcgipool status [--json | --xml | --openmetrics | --html] [--full] [--status-listen ADDR] [--status-path PATH]

The address and path default to the ``status_listen``/``status_path`` settings from ``-c CONFIG`` or the
``FCGIPOOL_STATUS_LISTEN``/``FCGIPOOL_STATUS_PATH`` environment variables, so it reads exactly what nginx
serves at ``/pool-status``.
"""

from __future__ import annotations

import argparse
import os
import runpy
import socket
import sys
from typing import Any

from .. import protocol
from ..config_status import StatusListen, StatusPath
from .address import parse_address

__all__ = ["StatusError", "fetch", "main"]


class StatusError(Exception):
    """The status listener could not be reached or answered with an error."""


def fetch(
    address: str, path: str = StatusPath.default, query: str = "", timeout: float = 5.0, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """One FastCGI request to ``address``; returns (HTTP status, headers, body)."""
    family, addr = parse_address(address)
    params = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": path,
        "DOCUMENT_URI": path,
        "REQUEST_URI": path + (f"?{query}" if query else ""),
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": "fcgipool-status-cli",
    }
    request = protocol.encode_request(1, [(k.encode(), v.encode()) for k, v in params.items()])
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(addr)
            sock.sendall(request)
            chunks = []
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
    except OSError as exc:
        raise StatusError(
            f"cannot reach the status listener at {address}: {exc.strerror or exc}. Is fcgipool running with "
            "--status-listen set to this address?"
        ) from exc
    stdout = bytearray()
    ended = False
    try:
        for rec in protocol.parse_records(b"".join(chunks)):
            if rec.type == protocol.RecordType.STDOUT:
                stdout += rec.content
            elif rec.type == protocol.RecordType.END_REQUEST:
                ended = True
    except protocol.FastCGIError as exc:
        raise StatusError(f"bad answer from {address}: {exc}") from exc
    if not ended:
        raise StatusError(f"{address} closed the connection before the response was complete")
    head, _, body = bytes(stdout).partition(b"\r\n\r\n")
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    code = int(headers.get("status", "200").split()[0])
    return code, headers, body


def _defaults(config: str | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if config:
        path = config[len("python:") :] if config.startswith("python:") else config
        try:
            values = {k: v for k, v in runpy.run_path(path).items() if not k.startswith("__")}
        except (OSError, SyntaxError) as exc:
            raise StatusError(f"cannot read config {config}: {exc}") from exc
    # the settings' own environment variables and defaults, as the pool reads them
    return {s.name: os.environ.get(s.env or "") or values.get(s.name, s.default) for s in (StatusListen, StatusPath)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fcgipool status", description="Print the pool's status page.")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON (PHP-FPM's keys)")
    fmt.add_argument("--xml", action="store_true", help="XML (PHP-FPM's ?xml layout)")
    fmt.add_argument("--openmetrics", action="store_true", help="OpenMetrics / Prometheus exposition")
    fmt.add_argument("--html", action="store_true", help="HTML page")
    parser.add_argument("--full", action="store_true", help="add one entry per worker process")
    parser.add_argument("-c", "--config", help="gunicorn config file to read status_listen/status_path from")
    parser.add_argument("--status-listen", help="status listener address (unix:/path or HOST:PORT)")
    parser.add_argument("--status-path", help=f"status page path (default {StatusPath.default})")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer")
    args = parser.parse_args(argv)
    try:
        defaults = _defaults(args.config)
        address = args.status_listen or defaults["status_listen"]
        if not address:
            parser.error("no status listener: pass --status-listen ADDR, -c CONFIG or set FCGIPOOL_STATUS_LISTEN")
        try:
            parse_address(address)
        except ValueError as exc:
            parser.error(str(exc))
        query = "&".join(
            name
            for name, on in (
                ("json", args.json),
                ("xml", args.xml),
                ("openmetrics", args.openmetrics),
                ("html", args.html),
                ("full", args.full),
            )
            if on
        )
        code, _, body = fetch(address, args.status_path or defaults["status_path"], query, timeout=args.timeout)
    except StatusError as exc:
        print(f"fcgipool status: {exc}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(body if body.endswith(b"\n") else body + b"\n")
    sys.stdout.flush()
    if code != 200:
        print(f"fcgipool status: the listener answered HTTP {code}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
