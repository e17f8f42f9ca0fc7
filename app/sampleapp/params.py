"""Strict, bounded request parameters: every numeric knob has a range, so no request can ask for hours of work."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

EMAIL_RE = re.compile(r"^[^@\s<>()\[\],;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$")
MAX_EMAIL_LEN = 254


class BadParam(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    default: int

    def parse(self, args: Mapping[str, str], name: str) -> int:
        raw = args.get(name)
        if raw is None or raw == "":
            return self.default
        if not re.fullmatch(r"[+-]?\d{1,12}", raw.strip()):
            raise BadParam(name, f"must be an integer between {self.low} and {self.high}, got {raw[:40]!r}")
        value = int(raw)
        if not self.low <= value <= self.high:
            raise BadParam(name, f"must be between {self.low} and {self.high}, got {value}")
        return value


def parse_choice(args: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    raw = args.get(name) or default
    if raw not in choices:
        raise BadParam(name, f"must be one of {', '.join(choices)}, got {raw[:40]!r}")
    return raw


def parse_email(raw: object) -> str:
    if raw is None or raw == "":
        raise BadParam("email", "is required (form field or JSON key 'email')")
    if not isinstance(raw, str):
        raise BadParam("email", "must be a string")
    email = raw.strip()
    if len(email) > MAX_EMAIL_LEN or not EMAIL_RE.fullmatch(email):
        raise BadParam("email", f"is not a valid address: {email[:60]!r}")
    return email


# /work: the load-test knobs. Upper bounds keep one request under ~6 minutes of total work.
# respond_ms reaches past the pool's response --timeout (30 s by default; `make faults` asks for timeout + 2 s)
# and stays below nginx's fastcgi_read_timeout (60 s).
RESPOND_MS = IntRange(0, 60_000, 0)
BACKGROUND_MS = IntRange(0, 60_000, 0)
TASKS = IntRange(0, 20, 1)
CPU = IntRange(0, 1, 0)
SPILL = IntRange(0, 1, 1)  # 0: these tasks never go to the spill queue (the load tests' "spill off" half)
MAX_BACKGROUND_TOTAL_MS = 300_000
# Memory a request leaves behind in its worker (a leaking app, for max_worker_memory): at most 4 MiB each.
LEAK_KB = IntRange(0, 4096, 0)

# /cart: how long the after-response work runs (and, with release=late, keeps the user's lock).
HOLD_MS = IntRange(0, 30_000, 200)
RELEASES = ("late", "early")

# /ledger?lost=N: how many of the latest lost tasks to list.
LOST_LIMIT = IntRange(1, 1000, 50)
