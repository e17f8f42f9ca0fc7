"""The Flask app: five endpoints whose after-response work is real (see README, "What you will see")."""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

from fcgipool import background
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from sampleapp import params, tasks
from sampleapp.ledger import Ledger, LedgerUnavailable
from sampleapp.locks import LockTimeout, UserLock
from sampleapp.settings import Settings
from sampleapp.work import leak, spend


def error(status: int, message: str, **extra: Any) -> Response:
    response = jsonify({"error": message, "status": status, **extra})
    response.status_code = status
    return response


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings()
    app = Flask(__name__)
    # Bodies here are tiny; nginx enforces the same order of magnitude (client_max_body_size).
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    app.json.sort_keys = False  # type: ignore[attr-defined]
    ledger = Ledger(settings.ledger_path)
    ledger_path = str(settings.ledger_path)  # what the tasks get: the spill queue's worker opens the same file
    app.extensions["sampleapp.ledger"] = ledger
    app.extensions["sampleapp.settings"] = settings

    @app.before_request
    def name_the_route() -> None:
        # the pool's request log groups by route ("/cart/<user>"), not by URI (fcgipool.server.ROUTE_KEY)
        rule = request.url_rule
        request.environ["fcgipool.route"] = rule.rule if rule is not None else "(no route)"

    @app.errorhandler(params.BadParam)
    def bad_param(exc: params.BadParam) -> Response:
        return error(400, exc.message, field=exc.field)

    @app.errorhandler(LedgerUnavailable)
    def ledger_unavailable(exc: LedgerUnavailable) -> Response:
        # A full disk is the operator's to fix; say so instead of a 500 with a traceback.
        app.logger.error("%s", exc)
        response = error(503, str(exc))
        response.headers["Retry-After"] = "30"
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return error(exc.code or 500, exc.description or exc.name)

    # POST too: a baseline for POST load (a POST is never resent by nginx, so its failures are all visible)
    @app.route("/", methods=["GET", "POST"])
    def hello() -> Response:
        return jsonify({"hello": "fcgipool", "pid": os.getpid()})

    @app.post("/signup")
    def signup() -> tuple[Response, int]:
        if request.is_json:
            body = request.get_json(silent=True)
            if not isinstance(body, dict):
                raise params.BadParam("body", "must be a JSON object like {\"email\": \"a@b.c\"}")
            raw = body.get("email")
        else:
            raw = request.form.get("email")
        email = params.parse_email(raw)
        signup_id = uuid.uuid4().hex
        requested_at = time.time()
        background.add(tasks.record_signup, ledger_path, signup_id, email, name="record_signup")
        background.add(
            tasks.welcome_mail, ledger_path,
            settings.smtp_host, settings.smtp_port, settings.smtp_timeout_s, settings.mail_from,
            email, signup_id, requested_at,
            name="welcome_mail",
        )  # fmt: skip
        return jsonify({"status": "accepted", "email": email, "signup_id": signup_id}), 202

    @app.get("/work")
    def work() -> Response:
        args = request.args
        respond_ms = params.RESPOND_MS.parse(args, "respond_ms")
        background_ms = params.BACKGROUND_MS.parse(args, "background_ms")
        n_tasks = params.TASKS.parse(args, "tasks")
        cpu = params.CPU.parse(args, "cpu") == 1
        may_spill = params.SPILL.parse(args, "spill") == 1
        leak_kb = params.LEAK_KB.parse(args, "leak_kb")
        if background_ms * n_tasks > params.MAX_BACKGROUND_TOTAL_MS:
            raise params.BadParam(
                "tasks", f"tasks * background_ms must be at most {params.MAX_BACKGROUND_TOTAL_MS} ms"
            )
        spend(respond_ms, cpu=False)
        leaked_kb = leak(leak_kb)
        for _ in range(n_tasks):
            background.add(tasks.work, ledger_path, background_ms, cpu, name="work", spill=may_spill)
        return jsonify({
            "respond_ms": respond_ms, "background_ms": background_ms, "tasks": n_tasks, "cpu": cpu, "pid": os.getpid(),
            **({"leaked_kb": leaked_kb} if leak_kb else {}),
        })

    @app.post("/cart/<user>")
    def cart(user: str) -> Response:
        hold_ms = params.HOLD_MS.parse(request.args, "hold_ms")
        release = params.parse_choice(request.args, "release", params.RELEASES, "late")
        try:
            lock = UserLock(settings.lock_dir, user)
        except ValueError:
            raise params.BadParam("user", "must be 1-64 characters of A-Z a-z 0-9 _ . -") from None
        try:
            waited_ms = lock.acquire(settings.lock_timeout_s)
        except LockTimeout as exc:
            response = error(503, str(exc))
            response.headers["Retry-After"] = "1"
            return response
        try:
            items = _add_to_cart(settings, user, request.get_json(silent=True))
        except BaseException:
            lock.release()
            raise
        if release == "early":
            # The session_write_close() fix: the lock is gone before the client has its answer.
            lock.release()
            background.add(tasks.cart, ledger_path, hold_ms, name="cart")
        else:
            # Like PHP sessions left open: the after-response work keeps the user's lock for hold_ms.
            # the lock object lives in this worker: this task never goes to the spill queue
            background.add(ledger.tracked("cart", _hold_then_release), lock, hold_ms, name="cart", spill=False)
        response = jsonify({
            "user": user, "items": items, "release": release, "hold_ms": hold_ms, "lock_wait_ms": round(waited_ms, 1),
        })
        response.headers["X-Lock-Wait-Ms"] = f"{waited_ms:.1f}"
        return response

    @app.get("/ledger")
    def ledger_view() -> Response:
        summary = ledger.summary()
        if request.args.get("lost") is not None:
            # ?lost: the last 50 lost tasks; ?lost=N: the last N (the fault suite matches them to its requests).
            summary["lost_tasks"] = ledger.lost_tasks(limit=params.LOST_LIMIT.parse(request.args, "lost"))
        return jsonify(summary)

    return app


def _hold_then_release(lock: UserLock, hold_ms: int) -> None:
    try:
        spend(hold_ms)
    finally:
        lock.release()


def _add_to_cart(settings: Settings, user: str, body: Any) -> int:
    """The session write done under the lock: read, append, write back atomically."""
    item = body.get("item", "widget") if isinstance(body, dict) else "widget"
    if not isinstance(item, str) or not 0 < len(item) <= 100:
        raise params.BadParam("item", "must be a string of 1-100 characters")
    path = settings.cart_dir / f"{user}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        cart = json.loads(path.read_text())
    except FileNotFoundError:
        cart = {"items": []}
    cart["items"].append(item)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cart))
    tmp.replace(path)
    return len(cart["items"])
