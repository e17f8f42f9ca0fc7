"""PEP 3333 environ from CGI params: path split, defaults, duplicates, scheme, bodies without a length."""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Callable
from typing import Any

import pytest
from fcgipool.environ import BadRequestParams, body_length, build_environ, request_uri
from fcgipool.protocol import encode_request
from support.fcgi_client import FastCGIResponse
from test_pool_server import PARAMS, Exchange

NGINX = {  # what nginx's stock fastcgi_params send for GET /app/users/%C3%A9?x=1
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "/app/users/\xc3\xa9",
    "REQUEST_URI": "/app/users/%C3%A9?x=1",
    "DOCUMENT_URI": "/app/users/\xc3\xa9",
    "QUERY_STRING": "x=1",
    "CONTENT_TYPE": "",
    "CONTENT_LENGTH": "",
    "SERVER_NAME": "example.org",
    "SERVER_PORT": "443",
    "SERVER_PROTOCOL": "HTTP/2.0",
    "HTTPS": "on",
    "HTTP_HOST": "example.org",
    "HTTP_CONTENT_LENGTH": "",
}


def env(params: dict[str, str], root: str = "") -> dict[str, object]:
    return build_environ(dict(params), wsgi_input=io.BytesIO(), errors=sys.stderr, root=root)


def test_whole_path_becomes_path_info_latin1_bytes() -> None:
    e = env(NGINX)
    assert (e["SCRIPT_NAME"], e["PATH_INFO"]) == ("", "/app/users/\xc3\xa9")
    assert e["PATH_INFO"].encode("latin-1").decode("utf-8") == "/app/users/é"  # type: ignore[attr-defined]


def test_mount_point_from_script_name_env_var() -> None:
    e = env(NGINX, root="/app")
    assert (e["SCRIPT_NAME"], e["PATH_INFO"]) == ("/app", "/users/\xc3\xa9")
    other = env(dict(NGINX, DOCUMENT_URI="/other"), root="/app")
    assert (other["SCRIPT_NAME"], other["PATH_INFO"]) == ("", "/other")


def test_split_done_by_the_web_server_is_kept() -> None:
    e = env(dict(NGINX, SCRIPT_NAME="/index.py", PATH_INFO="/users"))
    assert (e["SCRIPT_NAME"], e["PATH_INFO"]) == ("/index.py", "/users")


def test_request_uri_decoded_when_no_document_uri() -> None:
    params = {k: v for k, v in NGINX.items() if k != "DOCUMENT_URI"}
    assert env(params)["PATH_INFO"] == "/app/users/\xc3\xa9"


def test_empty_and_duplicate_content_headers_removed() -> None:
    e = env(NGINX)
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH", "HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE"):
        assert key not in e


def test_scheme_and_wsgi_keys() -> None:
    e = env(NGINX)
    assert e["wsgi.url_scheme"] == "https"
    assert e["wsgi.version"] == (1, 0)
    assert e["wsgi.multiprocess"] is True and e["wsgi.multithread"] is False and e["wsgi.run_once"] is False
    assert env(dict(NGINX, HTTPS=""))["wsgi.url_scheme"] == "http"


def test_defaults_for_a_minimal_client() -> None:
    e = env({"PATH_INFO": "/x"})
    assert e["REQUEST_METHOD"] == "GET" and e["QUERY_STRING"] == "" and e["SERVER_PORT"] == "80"


MALFORMED = ["abc", "12a", "1e3", "+5", "- 1", "-", "--1", "\xb2"]  # "\xb2" is "²": isdigit() says yes, int() no


@pytest.mark.parametrize("value", MALFORMED, ids=repr)
def test_malformed_content_length_is_rejected(value: str) -> None:
    with pytest.raises(BadRequestParams, match=re.escape(f"CONTENT_LENGTH is not an integer: {value!r}")):
        body_length({"CONTENT_LENGTH": value})
    with pytest.raises(BadRequestParams, match=re.escape(f"CONTENT_LENGTH is not an integer: {value!r}")):
        env(dict(NGINX, CONTENT_LENGTH=value))


@pytest.mark.parametrize("value", ["-1", " -1 ", "-42", None, "", "  "], ids=repr)
def test_unknown_content_length_means_read_to_the_end(value: str | None) -> None:
    """Negative (Caddy's -1 for a chunked request), missing or empty: the body runs to the end of STDIN."""
    params = {k: v for k, v in NGINX.items() if k != "CONTENT_LENGTH"}
    if value is not None:
        params["CONTENT_LENGTH"] = value
    assert body_length(params) is None
    e = env(params)
    assert "CONTENT_LENGTH" not in e
    assert e["wsgi.input_terminated"] is True


def test_known_content_length_is_kept_stripped() -> None:
    params = dict(NGINX, CONTENT_LENGTH=" 12 ")
    assert body_length(params) == 12
    assert env(params)["CONTENT_LENGTH"] == "12"
    assert body_length({"CONTENT_LENGTH": "0"}) == 0


@pytest.mark.parametrize(("sent", "seen"), [("12", "12"), ("0", "0"), ("012", "12"), ("00", "0"), (" 7", "7"),
                                             ("\uff11\uff12", "12")])  # fmt: skip
def test_content_length_reaches_the_app_in_one_spelling(sent: str, seen: str) -> None:
    """A plain decimal is passed on as it is (no parse on the hot path); any other spelling int() accepts -- leading
    zeros, spaces, full-width digits -- is rewritten, so apps see what PEP 3333 apps expect."""
    assert env(dict(NGINX, CONTENT_LENGTH=sent))["CONTENT_LENGTH"] == seen


def serve(length: str | None, body: bytes) -> tuple[FastCGIResponse, list[dict[str, Any]]]:
    """One POST through the server (no web server): what the client gets, and what the app saw."""
    seen: list[dict[str, Any]] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        data = environ["wsgi.input"].read()
        seen.append({"length": environ.get("CONTENT_LENGTH"), "terminated": environ["wsgi.input_terminated"],
                     "body": data})  # fmt: skip
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{len(data)}".encode()]

    params = dict(PARAMS, REQUEST_METHOD="POST", CONTENT_TYPE="application/octet-stream")
    if length is None:
        del params["CONTENT_LENGTH"]
    else:
        params["CONTENT_LENGTH"] = length
    ex = Exchange(app, encode_request(1, params, body), read_until_end=False)
    ex.run()
    assert ex.response is not None
    return ex.response, seen


@pytest.mark.parametrize("length", ["-1", None, ""], ids=["minus-one", "missing", "empty"])
def test_body_without_a_length_is_read_to_the_end_of_stdin(length: str | None) -> None:
    body = bytes(range(256)) * 800  # 200 kB: several STDIN records
    response, seen = serve(length, body)
    assert response.status == 200 and response.body == str(len(body)).encode()
    assert seen == [{"length": str(len(body)), "terminated": True, "body": body}]


def test_empty_body_with_minus_one() -> None:
    response, seen = serve("-1", b"")
    assert response.status == 200
    assert seen == [{"length": None, "terminated": True, "body": b""}]


@pytest.mark.parametrize("length", ["abc", "\xb2"], ids=repr)
def test_non_numeric_content_length_is_400_without_calling_the_app(length: str) -> None:
    response, seen = serve(length, b"hello")
    assert response.status == 400
    assert json.loads(response.body)["error"] == f"CONTENT_LENGTH is not an integer: {length!r}"
    assert seen == []


def test_request_uri_for_logs() -> None:
    assert request_uri(NGINX) == "/app/users/%C3%A9?x=1"
    assert request_uri({"SCRIPT_NAME": "", "PATH_INFO": "/a", "QUERY_STRING": "b=1"}) == "/a?b=1"
