"""What a fault cost, from the client's results, nginx's JSON access log, the app's ledger and the error logs.

Replays and percentiles are computed by the fcgipool rows' own functions (loadtest/faults/accounting.py), so
both sides of the comparison count the same way; the ledger here is app.php's file, not the sample app's.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from loadtest.faults import accounting as shared
from loadtest.faults.phpfpm.load import Result


def upstream_attempts(value: object) -> int:
    """How many times nginx sent a request upstream: the entries of ``$upstream_status``, counted exactly as
    the fcgipool rows count them (loadtest/faults/accounting.py: "a, b" and "a : b" separate tries, "-" is
    no answer and not counted)."""
    return len(shared.upstream_attempts(value))


def request_id(uri: object) -> str | None:
    """The ``id`` query parameter the load puts in every URI."""
    values = parse_qs(urlsplit(str(uri or "")).query).get("id")
    return values[0] if values else None


@dataclass
class Upstream:
    entries: int
    replays: int  # requests nginx sent upstream more than once
    attempts_by_id: dict[str, int]
    upstream_status_by_id: dict[str, str]
    status_by_id: dict[str, int]  # what nginx logged as its answer
    status_counts: dict[int, int]


def upstream(entries: Iterable[dict]) -> Upstream:
    rows = list(entries)
    attempts: dict[str, int] = {}
    statuses: dict[str, str] = {}
    answers: dict[str, int] = {}
    for row in rows:
        rid = request_id(row.get("uri"))
        if rid is not None:
            # a lone "-" is also what one attempt without an answer (the client gave up) leaves: nginx then
            # still logs the time it spent on the upstream
            sent = upstream_attempts(row.get("upstream_status"))
            attempts[rid] = sent or (1 if row.get("upstream_response_time") is not None else 0)
            statuses[rid] = str(row.get("upstream_status"))
            answers[rid] = int(row.get("status") or 0)
    return Upstream(
        entries=len(rows),
        replays=sum(1 for r in rows if shared.is_replay(r)),
        attempts_by_id=attempts,
        upstream_status_by_id=statuses,
        status_by_id=answers,
        status_counts=dict(sorted(Counter(int(r.get("status") or 0) for r in rows).items())),
    )


@dataclass
class Ledger:
    started: Counter = field(default_factory=Counter)  # id -> how many times its work started
    finished: Counter = field(default_factory=Counter)


def parse_ledger(text: str) -> Ledger:
    """Lines ``start|end ID PID UNIX_TIME`` written by app.php; anything else is ignored."""
    ledger = Ledger()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("start", "end"):
            (ledger.started if parts[0] == "start" else ledger.finished)[parts[1]] += 1
    return ledger


@dataclass
class Work:
    owed: int  # answered (2xx) requests that had after-response work
    finished: int
    lost_unreported: int  # owed but not finished: PHP-FPM reports nothing, so every one is lost silently
    started_not_finished: int
    never_started: int
    ran_twice: int  # work that started more than once (a replayed request)
    ran_for_failed: int  # work that started for a request whose client saw a failure


def work(results: Iterable[Result], ledger: Ledger) -> Work:
    results = list(results)
    owed = [r.rid for r in results if r.ok and r.bg_ms > 0]
    failed = {r.rid for r in results if not r.ok}
    unfinished = [rid for rid in owed if not ledger.finished[rid]]
    return Work(
        owed=len(owed),
        finished=len(owed) - len(unfinished),
        lost_unreported=len(unfinished),
        started_not_finished=sum(1 for rid in unfinished if ledger.started[rid]),
        never_started=sum(1 for rid in unfinished if not ledger.started[rid]),
        ran_twice=sum(1 for n in ledger.started.values() if n > 1),
        ran_for_failed=sum(1 for rid in failed if ledger.started[rid]),
    )


def failures_vs_nginx(results: Iterable[Result], up: Upstream) -> Counter:
    """Each failed request's kind next to the status nginx logged for it ("TimeoutError / nginx 200": the client
    got a truncated answer that nginx logged as a success; "/ nginx none": nginx logged nothing for it)."""
    pairs: Counter = Counter()
    for r in results:
        for kind in failures([r]):
            logged = up.status_by_id.get(r.rid)
            pairs[f"{kind} / nginx {logged if logged is not None else 'none'}"] += 1
    return pairs


def percentile(values: Iterable[float], q: float) -> float | None:
    """``q`` (0..1) percentile, as the fcgipool rows compute it; None when empty."""
    return shared.percentile(list(values), q)


def failures(results: Iterable[Result]) -> Counter:
    """Failed requests by kind: the HTTP status, or the connection error's type."""
    kinds: Counter = Counter()
    for r in results:
        if not r.ok:
            kinds[str(r.status) if r.status is not None else (r.error or "error").split(":")[0]] += 1
    return kinds


_NGINX = re.compile(r"^\S+ \S+ \[(\w+)\] \d+#\d+: (?:\*\d+ )?(.*?)(?:, client: .*)?$")
_FPM = re.compile(r"^\[[^\]]+\] (\w+): (.*)$")
_FPM_DEBUG_KEPT = re.compile(r"sending signal|exited|received SIG(?!CHLD)|still alive")  # the rest of debug is noise
_NUMBER = re.compile(r"(?<![A-Za-z0-9.])\d+(?:\.\d+)?(?![A-Za-z0-9])")


def _shape(message: str) -> str:
    """A log message with its numbers (pids, seconds, counts) replaced by N, so equal events group."""
    message = re.sub(r"\((\d+): ", r"(E\1: ", message)  # keep errnos: (104: Connection reset by peer)
    message = _NUMBER.sub("N", message)
    return re.sub(r"\(E(\d+): ", r"(\1: ", message)


def nginx_errors(text: str) -> Counter:
    """nginx's error log, one count per kind of message ("[level] message" with numbers as N)."""
    counts: Counter = Counter()
    for line in text.splitlines():
        m = _NGINX.match(line)
        if m:
            counts[f"[{m.group(1)}] {_shape(m.group(2))}"] += 1
    return counts


def fpm_events(text: str) -> Counter:
    """php-fpm's error log, one count per kind of message; request details and paths are dropped, and of the
    debug lines only signals and child exits are kept."""
    counts: Counter = Counter()
    for line in text.splitlines():
        m = _FPM.match(line)
        if m and (m.group(1) != "DEBUG" or _FPM_DEBUG_KEPT.search(m.group(2))):
            message = re.sub(r"^pid \d+, \w+\(\), line \d+: ", "", m.group(2))  # log_level = debug's prefix
            message = re.sub(r", script '[^']*' \(request: \"[^\"]*\"\)", "", message)
            message = re.sub(r"'/[^']*'", "'PATH'", message)
            message = re.sub(r'"/[^"]*"', '"PATH"', message)
            message = re.sub(r"execvp\(.*\)$", "execvp(...)", message)
            counts[f"{m.group(1)}: {_shape(message)}"] += 1
    return counts


def first_lines(text: str, pattern: str, limit: int = 3) -> list[str]:
    """Up to ``limit`` raw lines containing ``pattern``: evidence for the report."""
    return [line for line in text.splitlines() if pattern in line][:limit]
