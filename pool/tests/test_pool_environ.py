"""PEP 3333 environ from CGI params: path split, defaults, duplicates, scheme."""

from __future__ import annotations

import io
import sys

import pytest
from fcgipool.environ import BadRequestParams, build_environ, request_uri

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


@pytest.mark.parametrize("value", ["-1", "12a", "1e3"])
def test_malformed_content_length_is_rejected(value: str) -> None:
    with pytest.raises(BadRequestParams, match="CONTENT_LENGTH"):
        env(dict(NGINX, CONTENT_LENGTH=value))


def test_request_uri_for_logs() -> None:
    assert request_uri(NGINX) == "/app/users/%C3%A9?x=1"
    assert request_uri({"SCRIPT_NAME": "", "PATH_INFO": "/a", "QUERY_STRING": "b=1"}) == "/a?b=1"
