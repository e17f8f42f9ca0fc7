"""Runtime settings of the sample app, read from the environment once per app (12-factor style)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def data_dir_from_env() -> Path:
    # One directory holds the ledger, the lock files and the carts: in docker it is a volume, natively var/data.
    return Path(os.environ.get("SAMPLEAPP_DATA_DIR", "var/data")).resolve()


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=data_dir_from_env)
    smtp_host: str = field(default_factory=lambda: os.environ.get("SMTP_HOST", "127.0.0.1"))
    smtp_port: int = field(default_factory=lambda: _env_int("SMTP_PORT", 2525))
    smtp_timeout_s: int = field(default_factory=lambda: _env_int("SMTP_TIMEOUT_S", 10))
    mail_from: str = field(default_factory=lambda: os.environ.get("MAIL_FROM", "welcome@fcgipool.example"))
    # A request waiting longer than this for a user's lock gets 503 instead of tying up a worker forever.
    lock_timeout_s: int = field(default_factory=lambda: _env_int("LOCK_TIMEOUT_S", 60))

    @property
    def ledger_path(self) -> Path:
        return self.data_dir / "ledger.sqlite3"

    @property
    def lock_dir(self) -> Path:
        return self.data_dir / "locks"

    @property
    def cart_dir(self) -> Path:
        return self.data_dir / "carts"
