"""Pool tests: make the shared helpers importable as ``support`` from every test directory under pool/tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from support.redisq import RedisServer, require_redis  # noqa: E402 - importable once HERE is on the path


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """A real Redis on a free port (skips without redis-server or RQ), stopped and removed afterwards."""
    require_redis()
    with RedisServer() as server:
        yield server
