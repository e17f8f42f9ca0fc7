"""The C PARAMS decoder (fcgipool.protocol._cparams) against the pure-Python one, which is the reference."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tracemalloc

import pytest
from fcgipool import speedups
from fcgipool.protocol import RemoteProtocolError, encode_pairs, pairs
from hypothesis import given, settings
from hypothesis import strategies as st

try:
    from fcgipool.protocol import _cparams
except ImportError:  # the first test fails then, and says what to do
    _cparams = None  # type: ignore[assignment]

needs_c = pytest.mark.skipif(_cparams is None, reason="the C decoder is not built (see the first test)")

# what nginx sends for GET / in make bench (21 pairs), as a realistic stream
NGINX = {
    "QUERY_STRING": "",
    "REQUEST_METHOD": "GET",
    "CONTENT_TYPE": "",
    "CONTENT_LENGTH": "",
    "SCRIPT_NAME": "/",
    "REQUEST_URI": "/",
    "DOCUMENT_URI": "/",
    "DOCUMENT_ROOT": "/usr/share/nginx/html",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REQUEST_SCHEME": "http",
    "GATEWAY_INTERFACE": "CGI/1.1",
    "SERVER_SOFTWARE": "nginx/1.22.1",
    "REMOTE_ADDR": "127.0.0.1",
    "REMOTE_PORT": "51234",
    "SERVER_ADDR": "127.0.0.1",
    "SERVER_PORT": "8080",
    "SERVER_NAME": "localhost",
    "REDIRECT_STATUS": "200",
    "HTTP_HOST": "127.0.0.1:8080",
    "HTTP_USER_AGENT": "wrk",
    "HTTP_ACCEPT": "*/*",
}

latin1 = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=300)


def test_the_c_decoder_is_built_and_used() -> None:
    """`make install` builds it (gcc + the Python headers: `make install-system`); without it every request pays
    ~4 us more (docs/benchmarks.md), so a test environment that silently lost it fails here."""
    if os.environ.get("FCGIPOOL_NO_EXTENSIONS"):
        pytest.skip("FCGIPOOL_NO_EXTENSIONS is set")
    assert _cparams is not None, f"{speedups.describe()}: `make install-system`, then `make install`"
    assert pairs._c_decode_params is _cparams.decode_params
    assert speedups.all_built(), speedups.describe()


def test_no_extensions_switch_selects_the_python_twins() -> None:
    code = (
        "from fcgipool import speedups; from fcgipool.protocol import pairs; from fcgipool.scoreboard import writer\n"
        "print(pairs._c_decode_params is None, writer.Slot is writer.PySlot, speedups.describe())"
    )
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "FCGIPOOL_NO_EXTENSIONS": "1"},
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert out.startswith("True True pure-Python fallback"), out
    assert "fcgipool.protocol._cparams: off (FCGIPOOL_NO_EXTENSIONS is set)" in out
    assert "fcgipool.scoreboard._cslot: off (FCGIPOOL_NO_EXTENSIONS is set)" in out
    assert "make install-system" not in out  # switched off on purpose: nothing to fix


@needs_c
def test_nginx_request_matches_and_repeats() -> None:
    data = encode_pairs(NGINX)
    first = _cparams.decode_params(data)
    assert first == pairs.py_decode_params(data) == NGINX
    again = _cparams.decode_params(data)
    assert again == first and again is not first
    assert next(iter(again)) is next(iter(first)), "a repeated name comes from the cache"


@needs_c
@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(latin1, latin1), max_size=12))
def test_same_mapping_as_python(items: list[tuple[str, str]]) -> None:
    data = encode_pairs(items)
    assert _cparams.decode_params(data) == pairs.py_decode_params(data) == dict(items)


@needs_c
def test_long_lengths_high_bytes_and_duplicates() -> None:
    items = [("A", "x" * 127), ("B", "y" * 128), ("N" * 300, "\xe9\xff\x80" * 70_000), ("", ""), ("A", "later wins")]
    data = encode_pairs(items)
    assert _cparams.decode_params(data) == pairs.py_decode_params(data) == dict(items)
    # a 4-byte length may encode a short part: legal, and what some clients send
    odd = b"\x80\x00\x00\x01" + b"\x80\x00\x00\x02" + b"Kvv"
    assert _cparams.decode_params(odd) == pairs.py_decode_params(odd) == {"K": "vv"}


@needs_c
def test_cache_collisions_never_mix_strings() -> None:
    """More distinct strings than cache slots, same lengths (the likeliest to collide): every one comes back right,
    before and after the cache is cleared."""
    rng = random.Random(7)
    values = [f"{rng.getrandbits(40):012x}" for _ in range(5000)]
    streams = [encode_pairs({"REMOTE_PORT": v, v: "n"}) for v in values]
    for _ in range(2):
        for v, data in zip(values, streams, strict=True):
            assert _cparams.decode_params(data) == {"REMOTE_PORT": v, v: "n"}
        _cparams.cache_clear()


_TRUNCATED = encode_pairs([("SCRIPT_NAME", "/x"), ("N" * 130, "v")])
_FIRST_PAIR = 2 + len("SCRIPT_NAME") + 2  # a cut there leaves one whole pair: valid


@needs_c
@pytest.mark.parametrize("cut", [c for c in range(1, len(_TRUNCATED)) if c != _FIRST_PAIR])
def test_truncated_returns_none_and_python_raises(cut: int) -> None:
    data = _TRUNCATED
    assert _cparams.decode_params(data[:cut]) is None
    with pytest.raises(RemoteProtocolError, match="truncated"):
        pairs.decode_params(data[:cut])


@needs_c
def test_any_buffer_and_bad_argument() -> None:
    data = encode_pairs(NGINX)
    assert _cparams.decode_params(memoryview(data)) == NGINX
    assert _cparams.decode_params(bytearray(data)) == NGINX
    with pytest.raises(TypeError):
        _cparams.decode_params("QUERY_STRING")  # type: ignore[arg-type]


@needs_c
def test_no_leak() -> None:
    """Strings that miss the cache (a new port each time) and strings too long for it are all freed."""
    streams = [encode_pairs({**NGINX, "REMOTE_PORT": str(port), "HTTP_COOKIE": "c" * 500}) for port in range(3000)]
    for data in streams:  # warm: the cache holds its slots from here on
        _cparams.decode_params(data)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(5):
            for data in streams:
                _cparams.decode_params(data)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # 15,000 decodes of ~1.4 KB each: a leak of one string per decode would be over 700 KB
    assert grown < 200_000, grown
