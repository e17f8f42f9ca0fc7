"""What a worker has imported (issue 12): every module the arbiter imports is in each worker's RSS, so the ones
taken out of the worker path must stay out. Module lists, not sizes: a size threshold would be flaky."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
from fcgipool import heap, lazyimports
from support import PoolProcess, fcgi_request

APPS = Path(__file__).parent / "apps"

#: pulled in by ``xml.sax.saxutils`` when fcgipool.status.formats used it for XML escaping: 1.7 MiB per worker
NOT_IMPORTED = ("xml.sax", "urllib.request", "http.client", "email.message", "email.feedparser")


def test_worker_keeps_deferred_modules_deferred_and_never_imports_the_status_pages_extras() -> None:
    with PoolProcess("modulesapp:app", workers=1, app_dir=APPS, args=["--no-control-socket"]) as pool:
        for _ in range(3):  # a request served, then the listing
            assert fcgi_request(pool.socket_path).status == 200
        listing = fcgi_request(pool.socket_path).body.decode()
    modules = dict(line.split(" ") for line in listing.splitlines())
    assert modules["fcgipool.worker"] == "loaded" and modules["fcgipool.arbiter"] == "loaded"
    assert [name for name in NOT_IMPORTED if name in modules] == []
    # a second plain ``import`` of a deferred module would have run it (fcgipool.lazyimports)
    assert {name: modules.get(name) for name in lazyimports.DEFERRED} == dict.fromkeys(lazyimports.DEFERRED, "deferred")
    assert "html.entities" not in modules and "email._parseaddr" not in modules


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_heap_trim_finds_malloc_trim_on_glibc() -> None:
    heap.trim()
    assert heap._trim is not None
