"""The mail sink: real SMTP in (aiosmtpd), JSON out, messages stored across restarts."""

from __future__ import annotations

import smtplib
import time
from email.message import EmailMessage

import pytest
import requests
from mailsink.__main__ import parse_args
from mailsink.api import route
from mailsink.store import MessageStore
from stack_testing import start_mailsink, stop


def send(port: int, to: str, subject: str = "hi") -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", to, subject
    msg.set_content("body text")
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
        smtp.send_message(msg)


def test_messages_arrive_and_filter(mailsink):
    send(mailsink.smtp_port, "x@example.com", "one")
    send(mailsink.smtp_port, "y@example.com", "two")
    everything = mailsink.messages()
    assert [m["subject"] for m in everything] == ["one", "two"]
    assert "body" not in everything[0]
    assert [m["subject"] for m in mailsink.messages(to="Y@example.com")] == ["two"]
    assert [m["subject"] for m in mailsink.messages(since_id=str(everything[0]["id"]))] == ["two"]
    one = requests.get(f"{mailsink.url}/messages/{everything[0]['id']}", timeout=5).json()
    assert one["body"].strip() == "body text"
    assert requests.delete(f"{mailsink.url}/messages", timeout=5).json() == {"deleted": 2}
    assert mailsink.messages() == []


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/nope", 404), ("POST", "/messages", 405), ("GET", "/messages/abc", 400),
    ("GET", "/messages/999", 404), ("GET", "/messages?since_id=x", 400),
])
def test_api_errors_are_json(mailsink, method, path, status):
    response = requests.request(method, f"{mailsink.url}{path}", timeout=5)
    assert response.status_code == status
    assert response.json()["error"]


def test_delay_holds_the_smtp_client(tmp_path):
    sink = start_mailsink(tmp_path, delay_ms=300)
    try:
        t0 = time.perf_counter()
        send(sink.smtp_port, "z@example.com")
        assert time.perf_counter() - t0 >= 0.3
        assert sink.messages()[0]["delivery_ms"] >= 300
    finally:
        stop(sink.proc)


def test_store_survives_restart(tmp_path):
    store_file = tmp_path / "mail" / "messages.jsonl"
    sink = start_mailsink(tmp_path, store=store_file)
    send(sink.smtp_port, "keep@example.com")
    stop(sink.proc)
    sink = start_mailsink(tmp_path, store=store_file)
    try:
        assert [m["rcpt_tos"] for m in sink.messages()] == [["keep@example.com"]]
        send(sink.smtp_port, "next@example.com")
        assert [m["id"] for m in sink.messages()] == [1, 2]
    finally:
        stop(sink.proc)


def test_store_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": 1, "rcpt_tos": ["a@b.c"]}\n{"id": 2, "rcp')
    store = MessageStore(path)
    assert len(store) == 1 and store.next_id() == 2


def test_store_is_bounded():
    store = MessageStore(max_messages=3)
    for _ in range(5):
        store.add({"id": store.next_id(), "rcpt_tos": []})
    assert [m["id"] for m in store.list()] == [3, 4, 5]
    assert route(store, "GET", "/health") == (200, {"status": "ok", "messages": 3})


def test_bad_delay_is_refused():
    with pytest.raises(SystemExit):
        parse_args(["--delay-ms", "-5"])


def test_store_write_failure_keeps_nothing_half_stored(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = MessageStore(blocker / "messages.jsonl")  # parent is a file: the write must fail
    with pytest.raises(OSError):
        store.add({"id": store.next_id(), "rcpt_tos": []})
    assert len(store) == 0
