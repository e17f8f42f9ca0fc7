"""The welcome mail, sent over real SMTP by an after-response task."""

from __future__ import annotations

import smtplib
import time
from email.message import EmailMessage
from email.utils import format_datetime, localtime, make_msgid


def build_welcome(sender: str, to: str, signup_id: str, requested_at: float) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = "Welcome to the fcgipool sample app"
    msg["Date"] = format_datetime(localtime())
    msg["Message-ID"] = make_msgid(domain="fcgipool.example")
    # Lets anyone (and the tests) see that the mail left after the response: compare with the mail's arrival.
    msg["X-Signup-Id"] = signup_id
    msg["X-Signup-Requested-At"] = f"{requested_at:.6f}"
    msg.set_content(
        "Hello!\n\nThis mail was sent after your signup request had already been answered,\n"
        "by an fcgipool after-response task.\n"
    )
    return msg


def send_welcome(host: str, port: int, timeout_s: float, sender: str, to: str, signup_id: str,
                 requested_at: float) -> float:
    """Send the mail; return the seconds it took (the SMTP round trips the client did not wait for)."""
    start = time.perf_counter()
    with smtplib.SMTP(host, port, timeout=timeout_s) as smtp:
        smtp.send_message(build_welcome(sender, to, signup_id, requested_at))
    return time.perf_counter() - start
