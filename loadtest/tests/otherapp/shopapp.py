"""shopapp — a tiny WSGI shop that is not the sample app: the load test's bring-your-own-app test target.

It does its own after-response work through `fcgipool.background`, like any user app would:

| route | answer | after the response |
| --- | --- | --- |
| `GET /` | the front page, at once | nothing |
| `GET /search?q=` | results after ~SHOPAPP_SEARCH_MS (30 ms) | nothing |
| `POST /orders` (JSON) | 202 at once | a receipt: ~SHOPAPP_RECEIPT_MS (200 ms, x 0.5-1.5), a line in receipts.log |
| `POST /import` | 202 at once | a bulk import: ~SHOPAPP_IMPORT_MS (1500 ms); long on purpose |

Files go to $SHOPAPP_DIR. Plain WSGI, no framework: the contract is only `from fcgipool import background`.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
import uuid
from pathlib import Path

from fcgipool import background

OUT = Path(os.environ.get("SHOPAPP_DIR") or tempfile.gettempdir())
SEARCH_MS = float(os.environ.get("SHOPAPP_SEARCH_MS", "30"))
RECEIPT_MS = float(os.environ.get("SHOPAPP_RECEIPT_MS", "200"))
IMPORT_MS = float(os.environ.get("SHOPAPP_IMPORT_MS", "1500"))


def write_receipt(order_id: str, items: int) -> None:
    time.sleep(RECEIPT_MS / 1000 * random.uniform(0.5, 1.5))  # stands for rendering and mailing a PDF
    with open(OUT / "receipts.log", "a") as fh:
        fh.write(json.dumps({"order": order_id, "items": items, "t": time.time()}) + "\n")


def import_batch(batch_id: str) -> None:
    time.sleep(IMPORT_MS / 1000 * random.uniform(0.8, 1.2))
    with open(OUT / "imports.log", "a") as fh:
        fh.write(json.dumps({"batch": batch_id, "t": time.time()}) + "\n")


def _json(start_response, status: str, body: dict) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def app(environ, start_response):
    path = environ.get("PATH_INFO") or "/"
    method = environ.get("REQUEST_METHOD", "GET")
    environ["fcgipool.route"] = path  # the request log groups by it (fcgipool advise)
    if method == "GET" and path == "/":
        return _json(start_response, "200 OK", {"shop": "open"})
    if method == "GET" and path == "/search":
        time.sleep(SEARCH_MS / 1000 * random.uniform(0.8, 1.2))
        return _json(start_response, "200 OK", {"results": []})
    if method == "POST" and path in ("/orders", "/import"):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        try:
            body = json.loads(environ["wsgi.input"].read(length) or b"{}") if length else {}
        except ValueError:
            return _json(start_response, "400 Bad Request", {"error": "body is not JSON"})
        ident = uuid.uuid4().hex[:12]
        if path == "/orders":
            background.add(write_receipt, ident, int(body.get("items", 1)), name="receipt")
        else:
            background.add(import_batch, ident, name="import")
        return _json(start_response, "202 Accepted", {"id": ident})
    return _json(start_response, "404 Not Found", {"error": f"no route {method} {path}"})
