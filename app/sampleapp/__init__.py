"""Flask sample app whose after-response work is real: mail over SMTP, a SQLite ledger, a per-user file lock."""

from sampleapp.app import create_app

__all__ = ["create_app"]
