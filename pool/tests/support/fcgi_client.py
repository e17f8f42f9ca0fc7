"""A minimal blocking FastCGI client (the web server's side), for tests and health checks."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from fcgipool.protocol import RecordType, encode_request, parse_records
from fcgipool.protocol.records import HEADER


@dataclass
class FastCGIResponse:
    stdout: bytes
    stderr: bytes
    app_status: int
    protocol_status: int
    trailing: bytes = b""  # bytes received after END_REQUEST
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def parse_cgi_response(stdout: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    head, sep, body = stdout.partition(b"\r\n\r\n")
    if not sep:
        head, _, body = stdout.partition(b"\n\n")
    status = 200
    headers: list[tuple[str, str]] = []
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.strip()[:3])
        else:
            headers.append((name, value.strip()))
    return status, headers, body


def _connect(address: str | tuple[str, int], timeout: float) -> socket.socket:
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(address)
    return sock


def read_response(sock: socket.socket, request_id: int = 1) -> FastCGIResponse:
    """Read records until END_REQUEST for ``request_id``; keeps any bytes that follow it in ``trailing``."""
    buf = b""
    out, err = [], []
    while True:
        while len(buf) >= 8:
            _, rtype, rid, clen, plen = HEADER.unpack_from(buf, 0)
            total = 8 + clen + plen
            if len(buf) < total:
                break
            content, buf = buf[8 : 8 + clen], buf[total:]
            if rtype == RecordType.STDOUT and rid == request_id:
                out.append(content)
            elif rtype == RecordType.STDERR and rid == request_id:
                err.append(content)
            elif rtype == RecordType.END_REQUEST and rid == request_id:
                app_status = int.from_bytes(content[:4], "big")
                stdout = b"".join(out)
                status, headers, body = parse_cgi_response(stdout) if stdout else (0, [], b"")
                return FastCGIResponse(stdout, b"".join(err), app_status, content[4], buf, status, headers, body)
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before END_REQUEST ({len(buf)} bytes pending)")
        buf += chunk


def fcgi_request(
    address: str | tuple[str, int],
    params: dict[str, str] | None = None,
    stdin: bytes = b"",
    *,
    keep_conn: bool = False,
    timeout: float = 10.0,
    sock: socket.socket | None = None,
) -> FastCGIResponse:
    """One request; ``address`` is a unix socket path or (host, port). Reuses ``sock`` if given."""
    base = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "test",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
    }
    base.update(params or {})
    if stdin and "CONTENT_LENGTH" not in base:
        base["CONTENT_LENGTH"] = str(len(stdin))
    own = sock is None
    conn = _connect(address, timeout) if sock is None else sock
    try:
        conn.sendall(encode_request(1, base, stdin, keep_conn=keep_conn))
        return read_response(conn)
    finally:
        if own:
            conn.close()


__all__ = ["FastCGIResponse", "fcgi_request", "parse_cgi_response", "parse_records", "read_response"]
