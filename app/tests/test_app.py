"""The sample app through Flask's test client, with a real SQLite ledger and a real SMTP sink (aiosmtpd)."""

from __future__ import annotations

import threading
import time

import pytest
from sampleapp.ledger import Ledger
from sampleapp.settings import Settings
from stack_testing import NO_SPILL, free_port, make_app


def ledger_kinds(client) -> dict:
    response = client.get("/ledger")
    assert response.status_code == 200
    return response.get_json()["kinds"]


def test_hello_is_plain_json_without_background_work(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.get_json()["hello"] == "fcgipool"
    assert ledger_kinds(client) == {}


def test_signup_form_accepts_sends_mail_and_records(client, mailsink):
    response = client.post("/signup", data={"email": "ada@example.com"})
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "accepted" and body["email"] == "ada@example.com"
    messages = mailsink.wait_for(1, to="ada@example.com")
    assert len(messages) == 1
    assert messages[0]["headers"]["X-Signup-Id"] == body["signup_id"]
    assert messages[0]["subject"].startswith("Welcome")
    kinds = ledger_kinds(client)
    assert kinds["welcome_mail"] == {"started": 1, "finished": 1, "failed": 0, "lost": 0, **NO_SPILL}
    assert kinds["record_signup"] == {"started": 1, "finished": 1, "failed": 0, "lost": 0, **NO_SPILL}
    assert client.get("/ledger").get_json()["signups"] == 1


def test_signup_json(client, mailsink):
    response = client.post("/signup", json={"email": "grace@example.com"})
    assert response.status_code == 202
    assert len(mailsink.wait_for(1, to="grace@example.com")) == 1


def test_signup_mail_failure_is_counted_as_failed(tmp_path):
    dead_smtp = Settings(data_dir=tmp_path / "data", smtp_port=free_port(), smtp_timeout_s=2)
    c = make_app(dead_smtp).test_client()
    assert c.post("/signup", data={"email": "nobody@example.com"}).status_code == 202
    kinds = c.get("/ledger").get_json()["kinds"]
    assert kinds["welcome_mail"] == {"started": 1, "finished": 0, "failed": 1, "lost": 0, **NO_SPILL}
    assert kinds["record_signup"]["finished"] == 1


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "status", "field"),
    [
        ("post", "/signup", {}, 400, "email"),
        ("post", "/signup", {"data": {"email": ""}}, 400, "email"),
        ("post", "/signup", {"data": {"email": "not-an-address"}}, 400, "email"),
        ("post", "/signup", {"data": {"email": "a@b"}}, 400, "email"),
        ("post", "/signup", {"data": {"email": "a@" + "b" * 300 + ".com"}}, 400, "email"),
        ("post", "/signup", {"json": ["a@b.c"]}, 400, "body"),
        ("post", "/signup", {"json": {"email": 42}}, 400, "email"),
        ("get", "/work?respond_ms=abc", {}, 400, "respond_ms"),
        ("get", "/work?respond_ms=-1", {}, 400, "respond_ms"),
        ("get", "/work?respond_ms=1.5", {}, 400, "respond_ms"),
        ("get", "/work?respond_ms=60001", {}, 400, "respond_ms"),
        ("get", "/work?background_ms=3600000", {}, 400, "background_ms"),
        ("get", "/work?tasks=21", {}, 400, "tasks"),
        ("get", "/work?cpu=2", {}, 400, "cpu"),
        ("get", "/work?spill=yes", {}, 400, "spill"),
        ("get", "/work?tasks=20&background_ms=60000", {}, 400, "tasks"),
        ("post", "/cart/bob?hold_ms=lots", {}, 400, "hold_ms"),
        ("post", "/cart/bob?hold_ms=30001", {}, 400, "hold_ms"),
        ("post", "/cart/bob?release=never", {}, 400, "release"),
        ("post", "/cart/bob%20smith", {}, 400, "user"),
        ("post", "/cart/..", {}, 400, "user"),
        ("post", "/cart/bob", {"json": {"item": ""}}, 400, "item"),
        ("get", "/no/such/route", {}, 404, None),
        ("get", "/signup", {}, 405, None),
    ],
)
def test_bad_input_gets_a_json_4xx_and_no_work(client, method, url, kwargs, status, field):
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == status
    assert response.is_json
    body = response.get_json()
    assert body["status"] == status and body["error"]
    if field:
        assert body["field"] == field
    assert ledger_kinds(client) == {}


def test_oversized_body_is_413_json(client):
    response = client.post("/signup", data={"email": "a@b.co", "pad": "x" * 70_000})
    assert response.status_code == 413
    assert response.get_json()["status"] == 413


def test_work_runs_its_tasks_after_the_response(client):
    response = client.get("/work?respond_ms=5&background_ms=10&tasks=3")
    assert response.status_code == 200
    assert response.get_json()["tasks"] == 3
    assert ledger_kinds(client)["work"] == {"started": 3, "finished": 3, "failed": 0, "lost": 0, **NO_SPILL}


def test_work_cpu_burns_for_the_requested_time(client):
    t0 = time.perf_counter()
    assert client.get("/work?background_ms=50&tasks=2&cpu=1").status_code == 200
    assert time.perf_counter() - t0 >= 0.1  # inline under the test client: the tasks ran before we got here
    assert ledger_kinds(client)["work"]["finished"] == 2


def test_cart_counts_items_per_user(client):
    for expected in (1, 2):
        response = client.post("/cart/alice?hold_ms=0", json={"item": "book"})
        assert response.status_code == 200
        assert response.get_json()["items"] == expected
        assert float(response.headers["X-Lock-Wait-Ms"]) >= 0
    assert client.post("/cart/bob?hold_ms=0").get_json()["items"] == 1


def _overlapping_cart_requests(app, release: str, hold_ms: int) -> float:
    """First request holds/doesn't hold alice's lock for hold_ms after its response; return the second's wait."""
    first_started = threading.Event()

    def first() -> None:
        c = app.test_client()
        first_started.set()
        # Under the test client the after-response task runs in close(), in this thread: the lock is held meanwhile.
        c.post(f"/cart/alice?hold_ms={hold_ms}&release={release}")

    t = threading.Thread(target=first)
    t.start()
    first_started.wait()
    time.sleep(0.1)
    response = app.test_client().post("/cart/alice?hold_ms=0")
    t.join()
    assert response.status_code == 200
    return float(response.headers["X-Lock-Wait-Ms"])


def test_cart_release_late_makes_the_next_request_wait(app):
    waited = _overlapping_cart_requests(app, "late", 600)
    assert 300 <= waited <= 1500


def test_cart_release_early_does_not(app):
    waited = _overlapping_cart_requests(app, "early", 600)
    assert waited < 100


def test_ledger_exposes_lost_tasks_from_the_hook(client, settings, monkeypatch):
    from fcgipool.lost import LostTask
    from sampleapp.hooks import on_task_lost

    monkeypatch.setenv("SAMPLEAPP_DATA_DIR", str(settings.data_dir))
    on_task_lost(None, LostTask("work", "timeout", "/work?background_ms=9000", pid=1234, started=True))
    on_task_lost(None, LostTask("welcome_mail", "not_started", "/signup", pid=1234))
    body = client.get("/ledger?lost").get_json()
    assert body["kinds"]["work"]["lost"] == 1
    assert body["totals"]["lost"] == 2
    assert {(t["kind"], t["reason"], t["pid"]) for t in body["lost_tasks"]} == {
        ("work", "timeout", 1234), ("welcome_mail", "not_started", 1234)}


def test_hook_logs_instead_of_raising(tmp_path, monkeypatch):
    from fcgipool.lost import LostTask
    from sampleapp.hooks import on_task_lost

    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("SAMPLEAPP_DATA_DIR", str(blocker))  # a file, not a directory: the ledger cannot open

    logged = []

    class Server:
        class log:
            @staticmethod
            def exception(*args):
                logged.append(args)

    on_task_lost(Server(), LostTask("work", "killed"))
    assert logged and "work" in logged[0]


def test_tracked_failure_is_reraised_and_counted(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite3")

    def boom():
        raise RuntimeError("smtp down")

    with pytest.raises(RuntimeError):
        ledger.tracked("mail", boom)()
    assert ledger.summary()["kinds"]["mail"] == {"started": 1, "finished": 0, "failed": 1, "lost": 0, **NO_SPILL}


def test_tracked_interruption_is_left_to_the_lost_hook(tmp_path):
    from fcgipool.background import BackgroundTimeout

    ledger = Ledger(tmp_path / "l.sqlite3")

    def interrupted():
        raise BackgroundTimeout()

    with pytest.raises(BackgroundTimeout):
        ledger.tracked("work", interrupted)()
    # started, not failed: the pool reports it lost and the hook counts it once.
    assert ledger.summary()["kinds"]["work"] == {"started": 1, "finished": 0, "failed": 0, "lost": 0, **NO_SPILL}
