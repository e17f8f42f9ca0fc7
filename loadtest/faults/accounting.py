"""The arithmetic of a fault row, without any I/O: replays from nginx's access log, the tasks answered requests
owe, what the ledger accounted for, and how many are left unreported. Tested in loadtest/tests/test_faults.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qs, urlsplit

from loadtest.faults.load import Result

EVENTS = ("finished", "failed", "lost")  # the ways a started task ends in the ledger
WHERE = ("spilled", "ran_in_queue")
OWED_KINDS = ("record_signup", "welcome_mail", "work")
SIGNUP_KINDS = ("record_signup", "welcome_mail")


def upstream_attempts(value: object) -> list[str]:
    """nginx's $upstream_status: one entry per try, "a, b" for tries within one upstream and "a : b" across
    internal redirects; "-" where no upstream answered. Every number is one time the request went to the pool."""
    if value is None:
        return []
    return [p.strip() for p in re.split(r"[,:]", str(value)) if p.strip() and p.strip() != "-"]


def is_replay(line: Mapping) -> bool:
    """nginx sent this request to the pool more than once."""
    return len(upstream_attempts(line.get("upstream_status"))) > 1


def marker_seq(uri: object, tag: str) -> int | None:
    """The sequence number in ``fault=<tag>-<seq>``, if ``uri`` carries this row's marker."""
    m = re.search(rf"[?&]fault={re.escape(tag)}-(\d+)(?:&|$)", str(uri or ""))
    return int(m.group(1)) if m else None


def own_lines(lines: Iterable[Mapping], tag: str) -> list[Mapping]:
    return [line for line in lines if marker_seq(line.get("uri"), tag) is not None]


def answered(result: Result) -> bool:
    return 200 <= result.status < 300


def owed_tasks(results: Iterable[Result]) -> dict[str, int]:
    """After-response tasks the answered requests owe: a signup (202) two, a /work (200) ``tasks`` (default 1)."""
    owed = dict.fromkeys(OWED_KINDS, 0)
    for r in results:
        if not answered(r):
            continue
        url = urlsplit(r.path)
        if url.path == "/signup":
            for kind in SIGNUP_KINDS:
                owed[kind] += 1
        elif url.path == "/work":
            owed["work"] += int(parse_qs(url.query).get("tasks", ["1"])[0])
    return owed


def ledger_delta(before: Mapping[str, Mapping[str, int]], after: Mapping[str, Mapping[str, int]]) -> dict:
    """Per kind and event, what the ledger counted in between (the ``kinds`` of GET /ledger)."""
    out: dict[str, dict[str, int]] = {}
    for kind in set(before) | set(after):
        b, a = before.get(kind, {}), after.get(kind, {})
        # spilled / ran_in_queue: where the tasks went (docs/spill.md); they end as finished, failed or lost too
        out[kind] = {ev: int(a.get(ev, 0)) - int(b.get(ev, 0)) for ev in ("started", *EVENTS, *WHERE)}
    return out


def lost_of_unanswered(lost_tasks: Iterable[Mapping], tags: Iterable[str], results: Iterable[Result],
                       since: float) -> dict[str, int]:
    """Lost-task reports (GET /ledger?lost) for requests of these rows that got no 2xx: a worker killed while
    answering reports the tasks it had queued, but the client owes nothing for a failed request."""
    failed = {(tag, r.seq) for tag in tags for r in results if not answered(r)}
    out: dict[str, int] = {}
    for t in lost_tasks:
        if float(t.get("at") or 0) < since:
            continue
        for tag in tags:
            seq = marker_seq(t.get("request_uri"), tag)
            if seq is not None and (tag, seq) in failed:
                out[t["kind"]] = out.get(t["kind"], 0) + 1
    return out


def unreported(owed: Mapping[str, int], delta: Mapping[str, Mapping[str, int]],
               not_owed: Mapping[str, int] | None = None) -> tuple[int, int, dict[str, int]]:
    """(unreported, over-counted, per kind): owed - Δ(finished + failed + lost) per kind, after taking out
    reports for requests that owe nothing. Per kind, so an extra report of one kind cannot hide a missing one
    of another; over-counted (the ledger saw more than was owed: a task reported twice, or traffic that was
    not this row's) is returned separately instead of being netted against the missing ones."""
    not_owed = not_owed or {}
    per_kind: dict[str, int] = {}
    missing = extra = 0
    for kind in sorted(set(owed) | set(delta)):
        if kind not in OWED_KINDS:
            continue
        seen = sum(delta.get(kind, {}).get(ev, 0) for ev in EVENTS) - not_owed.get(kind, 0)
        gap = owed.get(kind, 0) - seen
        per_kind[kind] = gap
        missing += max(0, gap)
        extra += max(0, -gap)
    return missing, extra, per_kind


def failed_requests(results: Iterable[Result], ok: tuple[int, ...] = (200, 202)) -> list[Result]:
    return [r for r in results if r.status not in ok]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def status_counts(results: Iterable[Result]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in results:
        key = str(r.status) if r.status else (r.error.split(":")[0] or "error")
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))
