"""Turn per-round measurements into rows, a text table, markdown, JSON and the target checks."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

# (server family, factor): fcgipool's best req/s must be at least factor x that family's best.
TARGETS = [("uwsgi", 1.1), ("flup", 2.0), ("gunicorn", 2.5)]
#: fcgipool's worker CPU per request may be at most this many times the Python floor's (minimal_fcgi.py)
CPU_FLOOR_FACTOR = 1.25
FLOOR_ROW = "minimal-keepconn"
#: the request log may add at most this share of CPU per request (issue 10), judged on the per-round pairs of the
#: two rows (they alternate within a round: a pair shares the machine's state; its difference is ±0.7 µs)
REQUEST_LOG_FACTOR = 1.03
LOG_ROW = "fcgipool-requestlog"
#: fewer paired rounds than this cannot judge a 3 % difference (one round's ratio is off by up to 10 %)
MIN_LOG_ROUNDS = 10


@dataclass
class Row:
    row: str
    server: str
    label: str
    status: str  # "ok", "failed" or "skipped"
    note: str = ""
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def _ok_rounds(self) -> list[dict[str, Any]]:
        return [r for r in self.rounds if r.get("status") == "ok"]

    def _median(self, key: str) -> float | None:
        values = [r[key] for r in self._ok_rounds() if r.get(key) is not None]
        return statistics.median(values) if values else None

    @property
    def rps(self) -> float | None:
        return self._median("rps")

    @property
    def spread(self) -> float | None:
        """(max - min) / median of req/s over the rounds, as a fraction."""
        values = [r["rps"] for r in self._ok_rounds()]
        if len(values) < 2 or not self.rps:
            return None
        return (max(values) - min(values)) / self.rps

    def summary(self) -> dict[str, Any]:
        ok = self._ok_rounds()
        return {
            "row": self.row,
            "server": self.server,
            "label": self.label,
            "status": self.status,
            "note": self.note,
            "rps": self.rps,
            "rps_all": [r["rps"] for r in ok],
            "spread": self.spread,
            "p50_ms": self._median("p50_ms"),
            "p99_ms": self._median("p99_ms"),
            "errors": sum(r["errors"] for r in ok),
            "nginx_errors": sum(r.get("nginx_errors", 0) for r in ok),
            "workers": self._median("worker_count"),
            "rss_sum_kib": self._median("rss_sum_kib"),
            "rss_per_worker_kib": self._median("rss_per_worker_kib"),
            "pss_sum_kib": self._median("pss_sum_kib"),
            "backend_cpu_us_per_req": self._median("backend_cpu_us_per_req"),
            "nginx_cpu_us_per_req": self._median("nginx_cpu_us_per_req"),
            "wrk_cpu_us_per_req": self._median("wrk_cpu_us_per_req"),
            "machine_busy": self._median("machine_busy"),
            "other_busy": self._median("other_busy"),
            "cpu_bound_rps": self._median("cpu_bound_rps"),
            "syscalls_per_req": self._median("syscalls_per_req"),
            "syscalls_top": next((r["syscalls_top"] for r in ok if r.get("syscalls_top")), None),
        }


def reference(rows: list[Row], preferred: str) -> Row | None:
    """The row every ratio is relative to: `preferred` if it ran, else any fcgipool row that ran."""
    ran = [r for r in rows if r.status == "ok" and r.rps]
    for row in ran:
        if row.row == preferred:
            return row
    return next((r for r in ran if r.server == "fcgipool"), None)


def targets(rows: list[Row], key: str = "rps") -> list[dict[str, Any]]:
    """Each target checked on the rows' median `key`: "rps" (measured) or "cpu_bound_rps" (estimate)."""
    values = {r.row: r.summary()[key] for r in rows if r.status == "ok"}
    ran = [r for r in rows if values.get(r.row)]
    unit = "req/s" if key == "rps" else "req/s CPU-bound"

    def best(server: str) -> Row | None:
        return max((r for r in ran if r.server == server), key=lambda r: values[r.row], default=None)

    ours = best("fcgipool")
    checks: list[dict[str, Any]] = []
    for server, factor in TARGETS:
        theirs = best(server)
        goal = f"fcgipool >= {factor:g}x {server}"
        if ours is None or theirs is None:
            missing = "fcgipool" if ours is None else server
            checks.append({"target": goal, "status": "n/a", "detail": f"{missing} did not run"})
            continue
        mine, other = values[ours.row], values[theirs.row]
        ratio = mine / other
        checks.append(
            {
                "target": goal,
                "status": "met" if ratio >= factor else "missed",
                "ratio": ratio,
                "ours": ours.row,
                "theirs": theirs.row,
                "detail": f"{ours.row} {mine:,.0f} vs {theirs.row} {other:,.0f} {unit} = {ratio:.2f}x",
            }
        )
    return checks


def cost_targets(rows: list[Row]) -> list[dict[str, Any]]:
    """What a request costs fcgipool's keep-conn row: CPU against the Python floor, syscalls against uWSGI's
    keep-conn row (the lowest of its rows); and what the request log adds to it."""
    s = {r.row: r.summary() for r in rows if r.status == "ok"}
    ours = s.get("fcgipool-keepconn")
    checks: list[dict[str, Any]] = []

    def check(goal: str, mine: float | None, theirs: float | None, theirs_row: str, limit: float, unit: str) -> None:
        if mine is None or theirs is None or not theirs:
            missing = "fcgipool-keepconn" if mine is None else theirs_row
            checks.append({"target": goal, "status": "n/a", "detail": f"{missing} has no measurement"})
            return
        ratio = mine / theirs
        checks.append(
            {
                "target": goal,
                "status": "met" if ratio <= limit else "missed",
                "ratio": ratio,
                "detail": f"fcgipool-keepconn {mine:.2f} vs {theirs_row} {theirs:.2f} {unit} = {ratio:.2f}x",
            }
        )

    floor = s.get(FLOOR_ROW, {})
    check(
        f"fcgipool CPU/request <= {CPU_FLOOR_FACTOR:g}x {FLOOR_ROW}",
        ours and ours["backend_cpu_us_per_req"], floor.get("backend_cpu_us_per_req"), FLOOR_ROW,
        CPU_FLOOR_FACTOR, "us",
    )  # fmt: skip
    uwsgi = s.get("uwsgi-keepconn", {})
    check(
        "fcgipool syscalls/request <= uwsgi-keepconn",
        ours and ours["syscalls_per_req"], uwsgi.get("syscalls_per_req"), "uwsgi-keepconn", 1.0, "syscalls/req",
    )  # fmt: skip
    checks.append(request_log_target(rows))
    return checks


def request_log_target(rows: list[Row]) -> dict[str, Any]:
    """The request log's CPU per request against the same pool without it: the median over rounds of each round's
    ratio (the rows run back to back within a round)."""
    goal = f"request log CPU/request <= {REQUEST_LOG_FACTOR:g}x fcgipool-keepconn"
    by_name = {r.row: r for r in rows if r.status == "ok"}
    logged, plain = by_name.get(LOG_ROW), by_name.get("fcgipool-keepconn")
    if logged is None or plain is None:
        return {"target": goal, "status": "n/a", "detail": f"run BENCH_ONLY=fcgipool-keepconn,{LOG_ROW} "
                "BENCH_ROUNDS=20 (one round's ratio is off by up to 10 %; the median of 20 by ~1 %)"}  # fmt: skip
    key = "backend_cpu_us_per_req"
    on = {r["round"]: r[key] for r in logged._ok_rounds() if r.get(key)}
    off = {r["round"]: r[key] for r in plain._ok_rounds() if r.get(key)}
    ratios = [on[n] / off[n] for n in sorted(on.keys() & off.keys())]
    if not ratios:
        return {"target": goal, "status": "n/a", "detail": "no round measured both rows"}
    ratio = statistics.median(ratios)
    if len(ratios) < MIN_LOG_ROUNDS:
        return {"target": goal, "status": "n/a", "ratio": ratio,
                "detail": f"median {ratio:.3f}x of only {len(ratios)} rounds: too few to judge 3 %; run "
                          f"BENCH_ONLY=fcgipool-keepconn,{LOG_ROW} BENCH_ROUNDS=20"}  # fmt: skip
    return {
        "target": goal,
        "status": "met" if ratio <= REQUEST_LOG_FACTOR else "missed",
        "ratio": ratio,
        "detail": f"median of {len(ratios)} rounds' {LOG_ROW} / fcgipool-keepconn = {ratio:.3f}x "
                  f"({min(ratios):.3f} .. {max(ratios):.3f})",
    }  # fmt: skip


COLUMNS = [
    "row",
    "req/s",
    "vs ref",
    "spread",
    "p50 ms",
    "p99 ms",
    "errors",
    "nginx err",
    "workers",
    "RSS sum MiB",
    "RSS/worker MiB",
    "RSS vs ref",
    "CPU us/req",
    "syscalls/req",
    "other CPU",
    "CPU-bound req/s",
]


LEGEND = (
    "vs ref: ratio to the reference row; spread: (max - min) / median of req/s over the rounds; "
    "errors: failed requests as wrk saw them; nginx err: error lines in nginx's log (nginx resends a GET that "
    "failed on a kept connection, so wrk does not see it); "
    "RSS: VmRSS of the worker processes after the run; CPU us/req: CPU time of the backend (master + workers) "
    "per request; syscalls/req: system calls of the backend's processes per request, counted by strace -c in an "
    "extra run of BENCH_SYSCALLS seconds in the first round; "
    "other CPU: share of the machine's CPU used by processes outside the benchmark during the run "
    "(noise from other work on a shared machine); CPU-bound req/s: CPUs / CPU time per request of backend + "
    "nginx + wrk, the throughput if the row had every CPU of the machine busy for itself (an upper bound; "
    "steadier than req/s on a shared machine, too high for a row that leaves CPUs idle)"
)


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def table_rows(rows: list[Row], ref: Row | None) -> list[list[str]]:
    ref_summary = ref.summary() if ref else None
    out = []
    for row in rows:
        s = row.summary()
        if row.status != "ok":
            out.append([row.row, row.status, *["-"] * (len(COLUMNS) - 2)])
            continue
        rps_ratio = rss_ratio = None
        if ref_summary and ref_summary["rps"]:
            rps_ratio = s["rps"] / ref_summary["rps"]
        if ref_summary and ref_summary["rss_sum_kib"] and s["rss_sum_kib"] is not None:
            rss_ratio = s["rss_sum_kib"] / ref_summary["rss_sum_kib"]
        out.append(
            [
                row.row,
                _fmt(s["rps"], ",.0f"),
                _fmt(rps_ratio, ".2f", "x"),
                _fmt(None if s["spread"] is None else s["spread"] * 100, ".1f", "%"),
                _fmt(s["p50_ms"], ".2f"),
                _fmt(s["p99_ms"], ".2f"),
                str(s["errors"]),
                str(s["nginx_errors"]),
                _fmt(s["workers"], ".0f"),
                _fmt(None if s["rss_sum_kib"] is None else s["rss_sum_kib"] / 1024, ".1f"),
                _fmt(None if s["rss_per_worker_kib"] is None else s["rss_per_worker_kib"] / 1024, ".1f"),
                _fmt(rss_ratio, ".2f", "x"),
                _fmt(s["backend_cpu_us_per_req"], ".1f"),
                _fmt(s["syscalls_per_req"], ".2f"),
                _fmt(None if s["other_busy"] is None else s["other_busy"] * 100, ".0f", "%"),
                _fmt(s["cpu_bound_rps"], ",.0f"),
            ]
        )
    return out


def text_table(rows: list[Row], ref: Row | None) -> str:
    body = table_rows(rows, ref)
    widths = [max(len(COLUMNS[i]), *(len(r[i]) for r in body)) for i in range(len(COLUMNS))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(COLUMNS), line(["-" * w for w in widths]), *(line(r) for r in body)])


def markdown_table(rows: list[Row], ref: Row | None) -> str:
    body = table_rows(rows, ref)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join([" --- "] + [" ---: "] * (len(COLUMNS) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def notes(rows: list[Row]) -> list[str]:
    return [f"{r.row} ({r.label}): {r.status}: {r.note}" for r in rows if r.note]


def markdown(meta: dict[str, Any], rows: list[Row], ref: Row | None) -> str:
    settings = meta["settings"]
    out = [
        f"# fcgipool benchmark, {meta['started_at']}",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']['nproc']} CPUs ({meta['machine']['cpu']}), {meta['machine']['kernel']}, "
        f"load average before {meta['machine']['loadavg_before']}, after {meta.get('loadavg_after', '-')}  ",
        f"wrk: {settings['method']} /, {settings['connections']} connections, {settings['threads']} threads, "
        f"{settings['duration']} s "
        f"after a {settings['warmup']} s warm-up, {settings['rounds']} round(s); "
        f"{settings['workers']} workers per backend; nginx {settings['nginx_workers']} worker(s), "
        f"upstream keepalive {settings['upstream_keepalive']}  ",
        f"Reference row for ratios: {ref.row if ref else 'none (fcgipool did not run)'}",
        "",
        markdown_table(rows, ref),
        "",
        LEGEND,
        "",
        "Targets:",
        "",
        *[f"- {t['target']}: **{t['status']}** ({t['detail']})" for t in meta["targets"]],
        "",
        "The same targets on the CPU-bound estimate:",
        "",
        *[f"- {t['target']}: **{t['status']}** ({t['detail']})" for t in meta.get("targets_cpu_bound", [])],
        "",
        "What a request costs:",
        "",
        *[f"- {t['target']}: **{t['status']}** ({t['detail']})" for t in meta.get("targets_cost", [])],
        "",
        "Most frequent syscalls per request (strace -c):",
        "",
        *[
            f"- {r.row}: " + ", ".join(f"{name} {n:g}" for name, n in top.items())
            for r in rows
            if (top := r.summary()["syscalls_top"])
        ],
        "",
        "Versions:",
        "",
        *[f"- {name}: {v}" for name, v in meta["versions"].items()],
    ]
    if notes(rows):
        out += ["", "Notes:", "", *[f"- {n}" for n in notes(rows)]]
    return "\n".join(out) + "\n"
