"""`python -m mailsink`: run the SMTP sink and its HTTP API until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

from aiosmtpd.smtp import SMTP

from mailsink.api import serve
from mailsink.smtp import StoringHandler
from mailsink.store import MessageStore


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="mailsink", description=__doc__)
    p.add_argument("--smtp-host", default=env("MAILSINK_SMTP_HOST", "127.0.0.1"))
    p.add_argument("--smtp-port", type=int, default=int(env("MAILSINK_SMTP_PORT", "2525")))
    p.add_argument("--http-host", default=env("MAILSINK_HTTP_HOST", "127.0.0.1"))
    p.add_argument("--http-port", type=int, default=int(env("MAILSINK_HTTP_PORT", "8025")))
    p.add_argument("--store", type=Path, default=env("MAILSINK_STORE") or None,
                   help="JSON-lines file the messages are appended to (default: memory only)")
    p.add_argument("--delay-ms", type=int, default=int(env("MAILSINK_DELAY_MS", "250")),
                   help="wait this long before accepting each message, like a real mail server (default 250)")
    p.add_argument("--max-messages", type=int, default=int(env("MAILSINK_MAX_MESSAGES", "10000")))
    args = p.parse_args(argv)
    if not 0 <= args.delay_ms <= 60_000:
        p.error(f"--delay-ms must be between 0 and 60000, got {args.delay_ms}")
    return args


async def run(args: argparse.Namespace) -> None:
    store = MessageStore(args.store, args.max_messages)
    handler = StoringHandler(store, args.delay_ms)
    loop = asyncio.get_running_loop()
    smtp_server = await loop.create_server(
        lambda: SMTP(handler, hostname="mailsink", ident="fcgipool mailsink"), args.smtp_host, args.smtp_port
    )
    http_server = await serve(store, args.http_host, args.http_port)
    logging.info("SMTP on %s:%d, HTTP API on http://%s:%d/messages (delay %d ms, %d stored)",
                 args.smtp_host, args.smtp_port, args.http_host, args.http_port, args.delay_ms, len(store))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in (smtp_server, http_server):
        server.close()
    logging.info("stopped")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    main()
