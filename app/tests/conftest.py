"""Fixtures for the sample app and mail sink tests: a real mail sink process, a real SQLite ledger."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sampleapp.settings import Settings
from stack_testing import MailSink, make_app, start_mailsink, stop


@pytest.fixture
def mailsink(tmp_path: Path) -> Iterator[MailSink]:
    sink = start_mailsink(tmp_path)
    yield sink
    stop(sink.proc)


@pytest.fixture
def settings(tmp_path: Path, mailsink: MailSink) -> Settings:
    return Settings(data_dir=tmp_path / "data", smtp_port=mailsink.smtp_port, smtp_timeout_s=5, lock_timeout_s=10)


@pytest.fixture
def app(settings: Settings):
    return make_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()
