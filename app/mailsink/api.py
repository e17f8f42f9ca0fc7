"""The JSON HTTP API: GET /messages, GET /messages/<id>, DELETE /messages, GET /health. Stdlib asyncio only."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

from mailsink.store import MessageStore

log = logging.getLogger("mailsink.http")
MAX_HEAD = 16 * 1024
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 431: "Headers Too Large"}


def route(store: MessageStore, method: str, target: str) -> tuple[int, dict[str, Any]]:
    url = urlsplit(target)
    query = parse_qs(url.query)
    path = url.path.rstrip("/") or "/"
    if path == "/health":
        return 200, {"status": "ok", "messages": len(store)}
    if path == "/messages":
        if method == "DELETE":
            return 200, {"deleted": store.clear()}
        if method != "GET":
            return 405, {"error": f"{method} not allowed on /messages; use GET or DELETE"}
        try:
            since_id = int(query.get("since_id", ["0"])[0])
        except ValueError:
            return 400, {"error": "since_id must be an integer"}
        messages = store.list(to=query.get("to", [None])[0], since_id=since_id, with_body="body" in query)
        return 200, {"count": len(messages), "messages": messages}
    if path.startswith("/messages/"):
        if method != "GET":
            return 405, {"error": f"{method} not allowed; use GET"}
        try:
            msg_id = int(path.removeprefix("/messages/"))
        except ValueError:
            return 400, {"error": "message id must be an integer"}
        message = store.get(msg_id)
        if message is None:
            return 404, {"error": f"no message {msg_id}"}
        return 200, message
    return 404, {"error": f"unknown path {url.path}; try GET /messages"}


async def handle(store: MessageStore, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                return
            except asyncio.LimitOverrunError:
                await respond(writer, 431, {"error": "request head too large"}, keep_alive=False)
                return
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                await respond(writer, 400, {"error": "malformed request line"}, keep_alive=False)
                return
            method, target, version = parts
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
            length = int(headers.get("content-length", "0") or 0)
            if length:
                await reader.readexactly(min(length, MAX_HEAD))  # no endpoint takes a body; drain it
            keep_alive = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
            status, body = route(store, method, target)
            await respond(writer, status, body, keep_alive, head_only=method == "HEAD")
            if not keep_alive:
                return
    finally:
        writer.close()


async def respond(writer: asyncio.StreamWriter, status: int, body: dict[str, Any], keep_alive: bool,
                  head_only: bool = False) -> None:
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    ).encode()
    writer.write(head if head_only else head + payload)
    await writer.drain()


async def serve(store: MessageStore, host: str, port: int) -> asyncio.Server:
    return await asyncio.start_server(lambda r, w: handle(store, r, w), host, port, limit=MAX_HEAD)
