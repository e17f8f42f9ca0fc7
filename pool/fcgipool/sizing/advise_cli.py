"""``fcgipool advise``: size the pool from its request log, without a load test.

    fcgipool advise --request-log /var/log/fcgipool/requests.log [--access-log /var/log/nginx/access.json]
                    [--p99-ms 100] [--memory-mb 2048] [--headroom 1.5] [--window 60] [--json]

Prints the recommended ``--workers``, ``--timeout``, ``--background-timeout``, nginx ``fastcgi_read_timeout`` and
memory, each with its reason, the routes that drive them, and, when the memory budget holds fewer workers than
needed, the wait that will cost and what to do. docs/request-log.md has an example.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
import time
from dataclasses import asdict
from typing import Any

from .advise import Advice, Options, advise
from .logs import LogError, ReadResult, match_waits, read_access_logs, read_request_logs

__all__ = ["main", "render"]

WIDTH = 116  # reasons wrapped to fit a terminal with the route table


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fcgipool advise",
        description="Size the pool from its request log (fcgipool --request-log PATH): workers, timeouts, memory.",
    )
    p.add_argument("--request-log", action="append", required=True, metavar="PATH",
                   help="the pool's request log; repeat it or use a quoted glob for rotated files")
    p.add_argument("--access-log", action="append", metavar="PATH",
                   help="nginx's JSON access log (log_format stack_json): arrival times and the waits it measured")
    p.add_argument("--p99-ms", type=float, default=100.0,
                   help="target p99 wait for a worker, ms (default 100)")
    p.add_argument("--memory-mb", type=float, help="memory budget for the whole pool, MB")
    p.add_argument("--headroom", type=float, default=1.5,
                   help="size for this many times the busiest rate (default 1.5)")
    p.add_argument("--window", type=float, default=60.0, help="seconds per busiest window (default 60)")
    p.add_argument("--kill-grace", type=float, default=2.0, help="the pool's --kill-grace, s (default 2)")
    p.add_argument("--seed", type=int, default=0, help="simulation seed (the advice is deterministic for a seed)")
    p.add_argument("--replications", type=int, default=40,
                   help="simulated runs per prediction (default 40; fewer is faster, the interval coarser)")
    p.add_argument("--json", action="store_true", help="one JSON document, for tools")
    return p  # fmt: skip


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.p99_ms < 0:
        parser.error("--p99-ms must be >= 0")
    if args.headroom <= 0:
        parser.error("--headroom must be > 0 (1 sizes for the busiest rate as logged)")
    if args.window <= 0:
        parser.error("--window must be > 0 seconds")
    if args.memory_mb is not None and args.memory_mb <= 0:
        parser.error("--memory-mb must be > 0")
    if args.replications < 2:
        parser.error("--replications must be >= 2")


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _skipped(name: str, read: ReadResult) -> list[str]:
    if not read.skipped:
        return []
    return [f"{read.skipped} of {read.lines} {name} lines skipped: " + "; ".join(read.reasons)
            + ("; ..." if read.skipped > len(read.reasons) else "")]  # fmt: skip


def _wrap(text: str, indent: str = "      ", more: str | None = None) -> str:
    return textwrap.fill(text, WIDTH, initial_indent=indent, subsequent_indent=more if more is not None else indent,
                         break_on_hyphens=False)  # fmt: skip


def _ms(seconds: float) -> str:
    return "inf" if math.isinf(seconds) else f"{seconds * 1000:.0f}"


def render(adv: Advice, opts: Options, files: list[str], notes: list[str]) -> str:
    """The advice as text: settings first (what to copy), then why, routes, the pool now, and warnings."""
    out = [f"fcgipool advise: {adv.requests} requests over {adv.span_s / 60:.1f} min from {', '.join(files)}"]
    peak = adv.windows[0]
    busiest = "; ".join(f"{_utc(w.start)} {w.rate:.1f} req/s ({w.requests})" for w in adv.windows)
    out.append(f"busiest {opts.window_s:g} s windows: {busiest}")
    out.append(f"sized for {adv.rate:.1f} req/s ({peak.rate:.1f} x headroom {opts.headroom:g}), occupancy "
               f"{adv.occupancy_mean_ms:.0f} ms mean (cs² {adv.cs2:.2f}, ca² {adv.ca2:.2f}) from "
               f"{adv.occupancy_sample} requests; target p99 wait for a worker {opts.p99_ms:g} ms")  # fmt: skip
    out.append("")
    names = {"workers": "--workers", "timeout": "--timeout", "background_timeout": "--background-timeout",
             "fastcgi_read_timeout": "fastcgi_read_timeout", "memory_mb": "memory (MB)"}  # fmt: skip
    for key, label in names.items():
        s = adv.settings.get(key)
        if s is None:
            continue
        out.append(f"  {label:<22} {s['value']}")
        out.append(_wrap(s["reason"]))
        p = adv.prediction
        if key == "workers" and p is not None and p.stable:
            out.append(_wrap(f"at {adv.workers} workers: P(wait) {p.p_wait.value:.2f}, mean wait "
                             f"{_ms(p.mean_wait_s.value)} ms, p90 {_ms(p.p90_wait_s.value)} ms; {p.notes}"))
    if adv.overload:
        ov = adv.overload
        out += ["", _wrap(f"OVERLOAD: {ov['summary']}.", "  "), "  what to do:"]
        out += [_wrap(f"- {fix}", "    ", "      ") for fix in ov["what_to_do"]]
    out += ["", "routes (heaviest first; worker = share of the pool's busy time):",
            f"  {'route':<28} {'requests':>8} {'worker':>6} {'answer p50/p99.9 ms':>20} {'after mean/p99.9 ms':>20} "
            f"{'tasks ok/failed/lost':>20} {'timeout':>7} {'bg budget':>9}"]  # fmt: skip
    for r in adv.routes:
        lost = r.tasks_lost_timeout + r.tasks_lost_other
        out.append(f"  {r.route[:28]:<28} {r.requests:>8} {r.worker_share:>6.0%} "
                   f"{f'{r.answer_p50_ms:.0f}/{r.answer_p999_ms:.0f}':>20} "
                   f"{f'{r.after_mean_ms:.0f}/{r.after_p999_ms:.0f}':>20} "
                   f"{f'{r.tasks_ok}/{r.tasks_failed}/{lost}':>20} {r.timeout_s:>6}s {r.background_timeout_s:>8}s")
    heavy = adv.routes[0] if adv.routes else None
    if heavy is not None and len(adv.routes) > 1 and heavy.worker_share >= 0.5:
        after = heavy.after_mean_ms / heavy.occupancy_mean_ms if heavy.occupancy_mean_ms else 0.0
        out.append(f"  {heavy.route} holds the workers {heavy.worker_share:.0%} of their busy time "
                   f"({after:.0%} of it after the response): it sets the pool's size")  # fmt: skip
    now = adv.now
    if now:
        line = (f"the pool now: {now['workers_seen']} workers served the busiest window, busy "
                f"{now['busy_share']:.0%} of it")
        if "predicted_p99_wait_s" in now:
            iv = now["predicted_p99_wait_s"]
            line += f"; predicted p99 wait {_ms(iv['value'])} ms [{_ms(iv['low'])}-{_ms(iv['high'])}]"
        if "measured_p99_wait_s" in now:
            m = now["measured_p99_wait_s"]
            line += (f"; measured by nginx {_ms(m['value'])} ms [{_ms(m['low'])}-{_ms(m['high'])}] "
                     f"({m['n']} requests)")  # fmt: skip
        out += ["", _wrap(line, "")]
    for w in [*adv.warnings, *notes]:
        out.append(_wrap(f"note: {w}", ""))
    return "\n".join(out) + "\n"


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    return x


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    opts = Options(p99_ms=args.p99_ms, memory_mb=args.memory_mb, headroom=args.headroom, window_s=args.window,
                   kill_grace_s=args.kill_grace, seed=args.seed, replications=args.replications)  # fmt: skip
    try:
        reqs = read_request_logs(args.request_log)
        access = read_access_logs(args.access_log) if args.access_log else None
        notes = _skipped("request log", reqs) + (_skipped("access log", access) if access else [])
        matched = match_waits(reqs.items, access.items) if access else []
        if access:
            notes.append(f"{len(matched)} of {len(reqs.items)} requests matched an access-log line")
        adv = advise(reqs.items, opts, access.items if access else (), matched)
    except (LogError, ValueError) as exc:
        print(f"fcgipool advise: {exc}", file=sys.stderr)
        return 2
    if args.json:
        doc = {"options": asdict(opts), "files": reqs.files, "skipped_lines": reqs.skipped, "notes": notes,
               **adv.as_dict()}  # fmt: skip
        json.dump(_jsonable(doc), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render(adv, opts, reqs.files, notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
