"""The SMTP side: an aiosmtpd handler that stores each message, optionally after a delay (a slow mail server)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from mailsink.store import MessageStore, parse_message

log = logging.getLogger("mailsink.smtp")


class StoringHandler:
    def __init__(self, store: MessageStore, delay_ms: int = 0) -> None:
        self.store = store
        self.delay_ms = delay_ms

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        start = time.perf_counter()
        if self.delay_ms:
            # Real mail servers take time to accept a message; this is the work the client must not wait for.
            await asyncio.sleep(self.delay_ms / 1000.0)
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        message = parse_message(raw, envelope.mail_from, envelope.rcpt_tos, self.store.next_id(),
                                (time.perf_counter() - start) * 1000.0)
        self.store.add(message)
        log.info("stored message %d from %s to %s: %s", message["id"], envelope.mail_from,
                 ",".join(envelope.rcpt_tos), message["subject"])
        return "250 Message accepted for delivery"
