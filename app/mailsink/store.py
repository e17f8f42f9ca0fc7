"""Stored messages: in memory, bounded, optionally appended to a JSON-lines file that survives restarts."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

MAX_BODY_CHARS = 10_000


def parse_message(raw: bytes, mail_from: str, rcpt_tos: list[str], msg_id: int, delivery_ms: float) -> dict[str, Any]:
    msg = message_from_bytes(raw, policy=policy.default)
    body = msg.get_body(preferencelist=("plain", "html"))
    text = body.get_content() if body is not None else ""
    return {
        "id": msg_id,
        "received_at": time.time(),
        "mail_from": mail_from,
        "rcpt_tos": list(rcpt_tos),
        "subject": str(msg.get("Subject", "")),
        "headers": {key: str(value) for key, value in msg.items()},
        "size": len(raw),
        "delivery_ms": round(delivery_ms, 1),
        "body": text[:MAX_BODY_CHARS],
    }


class MessageStore:
    def __init__(self, path: Path | None = None, max_messages: int = 10_000) -> None:
        self.path = path
        self.max_messages = max_messages
        self._messages: deque[dict[str, Any]] = deque(maxlen=max_messages)
        self._next_id = 1
        self._lock = threading.Lock()
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        with path.open(encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    message = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line after a crash: skip it, keep the rest
                self._messages.append(message)
                self._next_id = max(self._next_id, int(message.get("id", 0)) + 1)

    def next_id(self) -> int:
        with self._lock:
            msg_id = self._next_id
            self._next_id += 1
            return msg_id

    def add(self, message: dict[str, Any]) -> None:
        with self._lock:
            # Disk first: if it fails the SMTP client gets an error and the message is not half-stored.
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(message) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            self._messages.append(message)

    def list(self, to: str | None = None, since_id: int = 0, with_body: bool = False) -> list[dict[str, Any]]:
        with self._lock:
            selected = [m for m in self._messages if m["id"] > since_id]
        if to:
            selected = [m for m in selected if any(to.lower() == r.lower() for r in m["rcpt_tos"])]
        if not with_body:
            selected = [{k: v for k, v in m.items() if k != "body"} for m in selected]
        return selected

    def get(self, msg_id: int) -> dict[str, Any] | None:
        with self._lock:
            return next((m for m in self._messages if m["id"] == msg_id), None)

    def clear(self) -> int:
        with self._lock:
            n = len(self._messages)
            self._messages.clear()
            if self.path is not None and self.path.exists():
                self.path.write_text("")
            return n

    def __len__(self) -> int:
        return len(self._messages)
