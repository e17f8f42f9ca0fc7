"""The floor for a Python FastCGI worker: ~80 lines, keep-conn, nothing else. Not a server.

    python minimal_fcgi.py SOCKET WORKERS

It serves pool/bench/apps/hello.py with WORKERS forked processes, each selecting over the listener and
*every* connection it holds. No timeouts, limits, error handling, scoreboard or after-response work; it
only shows what the bare protocol costs in Python (row `minimal-keepconn`, run with BENCH_ONLY=minimal).
"""

import os
import select
import socket
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "apps"))
from hello import app

HEADER = struct.Struct("!BBHHBx")
BEGIN, END, PARAMS, STDIN, STDOUT = 1, 3, 4, 5, 6
ENVIRON = {
    "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http",
    "wsgi.errors": sys.stderr,
    "wsgi.multithread": False,
    "wsgi.multiprocess": True,
    "wsgi.run_once": False,
}


def pairs(buf: bytes) -> dict[str, str]:
    i, out = 0, {}
    while i < len(buf):
        lengths = []
        for _ in range(2):
            n = buf[i]
            if n & 0x80:
                n = struct.unpack_from("!I", buf, i)[0] & 0x7FFFFFFF
                i += 4
            else:
                i += 1
            lengths.append(n)
        n, v = lengths
        out[buf[i : i + n].decode("latin-1")] = buf[i + n : i + n + v].decode("latin-1")
        i += n + v
    return out


def serve(conn: socket.socket, buf: bytes) -> tuple[bool, bytes]:
    """One request; (keep the connection, bytes read beyond it)."""
    params, rid, keep = b"", 0, False
    while True:
        while len(buf) < 8 or len(buf) < 8 + HEADER.unpack_from(buf)[3] + HEADER.unpack_from(buf)[4]:
            data = conn.recv(65536)
            if not data:
                return False, b""
            buf += data
        _, kind, rid, clen, plen = HEADER.unpack_from(buf)
        body, buf = buf[8 : 8 + clen], buf[8 + clen + plen :]
        if kind == BEGIN:
            keep = bool(body[2] & 1)
        elif kind == PARAMS:
            params += body
        elif kind == STDIN and clen == 0:
            break
    environ = {**pairs(params), **ENVIRON, "wsgi.input": None}
    started = []
    body = b"".join(app(environ, lambda status, headers, exc_info=None: started.append((status, headers))))
    status, headers = started[0]
    head = "".join([f"Status: {status}\r\n", *(f"{k}: {v}\r\n" for k, v in headers), "\r\n"])
    out = head.encode("latin-1") + body
    pad = -len(out) % 8
    conn.sendall(
        HEADER.pack(1, STDOUT, rid, len(out), pad) + out + b"\0" * pad
        + HEADER.pack(1, STDOUT, rid, 0, 0) + HEADER.pack(1, END, rid, 8, 0) + b"\0" * 8
    )  # fmt: skip
    return keep, buf


def worker(listener: socket.socket) -> None:
    held: dict[socket.socket, bytes] = {}
    while True:
        for sock in select.select([listener, *held], [], [])[0]:
            if sock is listener:
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    continue
                sock.setblocking(True)
                held[sock] = b""
            try:
                keep, rest = serve(sock, held[sock])
            except OSError:
                keep, rest = False, b""
            if keep:
                held[sock] = rest
            else:
                sock.close()
                held.pop(sock, None)


def main() -> None:
    path, workers = sys.argv[1], int(sys.argv[2])
    Path(path).unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    os.chmod(path, 0o777)
    listener.listen(1024)
    listener.setblocking(False)
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            worker(listener)
        children.append(pid)
    for _ in children:
        os.wait()  # SIGTERM ends the master; the benchmark stops the whole process group


if __name__ == "__main__":
    main()
