"""Writes a run's report folder: raw CSV/JSON, PNG plots, report.md, a self-contained index.html, a summary."""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from pathlib import Path

from loadtest import plots

REQUEST_COLUMNS = ["scenario", "step", "rate", "intended", "sent", "done", "latency_ms", "service_ms", "status",
                   "error", "bg_ms", "over_budget", "role", "release", "lock_wait_ms", "email"]
ACCESS_COLUMNS = ["time", "msec", "method", "uri", "status", "upstream_status", "request_time", "upstream_connect_time",
                  "upstream_header_time", "upstream_response_time"]
PLOT_TITLES = {
    "latency_vs_rate.png": "Latency percentiles vs arrival rate (exhaustion)",
    "workers_over_time.png": "Workers busy answering vs finishing over time",
    "listen_queue.png": "Listen queue over time",
    "lost_vs_budget.png": "Lost work vs background budget (timeout)",
    "lock_wait.png": "Lock wait: release=early vs release=late",
    "predicted_vs_measured.png": "Sizing model: predicted vs measured p99 wait",
}


def _clean(obj):
    """JSON-safe copy without the raw sample lists (those are in requests.csv)."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items() if not k.endswith("samples_s") and k not in ("samples",)}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})


def make_plots(out: Path, results: dict, sampler_rows: list[dict]) -> list[Path]:
    sc = results["scenarios"]
    made = [plots.workers_over_time(sampler_rows, out / "workers_over_time.png"),
            plots.listen_queue(sampler_rows, out / "listen_queue.png")]
    if "exhaustion" in sc:
        made.append(plots.latency_vs_rate(sc["exhaustion"], sc.get("baseline"), out / "latency_vs_rate.png"))
        made.append(plots.predicted_vs_measured(sc["exhaustion"]["model_points"], out / "predicted_vs_measured.png",
                                                "exhaustion: p99 wait, model vs measurement"))
    if "timeout" in sc:
        rec = results.get("recommendations", {}).get("background_timeout", {}).get("value")
        made.append(plots.lost_vs_budget(sc["timeout"], rec, out / "lost_vs_budget.png"))
    if "lock" in sc:
        made.append(plots.lock_wait(sc["lock"], out / "lock_wait.png"))
    return [p for p in made if p]


def summary_lines(results: dict) -> list[str]:
    lines = [f"fcgipool load test — {results['workers']} workers, {results['mode']} stack at {results['base_url']}"]
    sc = results["scenarios"]
    if b := sc.get("baseline"):
        lines.append(f"  baseline    {b['requests']} req at {b['rate']:g}/s: p50 {b['p50_ms']} ms, "
                     f"p99 {b['p99_ms']} ms, "
                     f"errors {b['errors']}")
    if e := sc.get("exhaustion"):
        lines.append(f"  exhaustion  occupancy {e['occupancy_s'] * 1000:.0f} ms/request -> capacity "
                     f"{e['expected_capacity']:.1f} req/s expected, {e['measured_capacity']} measured")
        for s in e["steps"]:
            lines.append(f"              {s['arrival_rate']:6.1f}/s: p99 {s['p99_ms']} ms, served "
                         f"{s['throughput']}/s, wait p99 {s['measured_p99_wait_ms']} ms vs model "
                         f"{s['predicted_p99_wait_ms']} ms, 502/504 {s['status_502']}/{s['status_504']}, "
                         f"queue max {s['max_listen_queue']}")
        if cl := e.get("closed_loop"):
            lines.append(f"              closed loop ({cl['users']} users, {cl['rate']:g}/s offered): achieved "
                         f"{cl['throughput']}/s, p99 {cl['p99_ms']} ms — the queue it hides (coordinated omission)")
    if t := sc.get("timeout"):
        lines.append(f"  timeout     budget {t['budget_s']:g} s ({t.get('budget_source', '?')}): "
                     f"lost {t['ledger_lost']} (ledger) / {t['pool_lost']} "
                     f"(pool) / {t['sent_over_budget']} sent over budget, of {t['tasks_sent']}")
        if t.get("note"):
            lines.append(f"              note: {t['note']}")
    if lk := sc.get("lock"):
        lines.append(f"  lock        follow-up waits p50: late {lk['late']['p50_ms']} ms, "
                     f"early {lk['early']['p50_ms']} "
                     f"ms (hold {lk['hold_ms']} ms)")
    if s := sc.get("signup"):
        lines.append(f"  signup      {s['signups_accepted']} accepted, {s['mail_arrived']} mails arrived, "
                     f"{s['mail_missing']} missing")
    if n := results.get("nginx"):
        lines.append(f"  nginx       {n['requests']} requests logged: 502 {n['status_502']}, 504 {n['status_504']}, "
                     f"upstream response p99 {n['upstream_response_p99_s']} s; worker RSS max "
                     f"{results.get('rss_mb_per_worker')} MB")
    if sp := results.get("status_page_ms"):
        lines.append(f"  status      {sp['samples']} polls of /pool-status?json&full: p50 {sp['p50']} ms, "
                     f"max {sp['max']} ms, {sp['errors']} failed (served outside the worker pool: it answers "
                     "when the pool is full)")
    for name, why in results.get("skipped", {}).items():
        lines.append(f"  {name:<11} SKIPPED: {why}")
    lines.append("checks:")
    for c in results["checks"]:
        mark = {True: "PASS", False: "FAIL", None: "n/a "}[c["ok"]]
        lines.append(f"  [{mark}] {c['name']}: {c['detail']}")
    lines.append("recommended settings:")
    rec = results["recommendations"]
    flags = (("workers", "--workers"), ("timeout", "--timeout"), ("background_timeout", "--background-timeout"),
             ("fastcgi_read_timeout", "nginx fastcgi_read_timeout"))
    for key, flag in flags:
        if key in rec:
            lines.append(f"  {flag} {rec[key]['value']}  — {rec[key]['reason']}")
    return lines


def markdown(results: dict, images: list[Path]) -> str:
    md = ["# fcgipool load-test report", "", "How to read it: docs/loadtest.md (each plot, each check, each "
          "recommendation). Latency is measured from the intended send time (open loop) unless marked closed loop; "
          "'wait' is latency minus the unloaded latency of the same request.", "",
          "```", *summary_lines(results), "```", ""]
    for img in images:
        md += [f"## {PLOT_TITLES.get(img.name, img.stem)}", "", f"![{img.stem}]({img.name})", ""]
    if e := results["scenarios"].get("exhaustion"):
        md += ["## Exhaustion steps", "",
               "| rate | throughput | p50 | p99 | p99 from actual send | wait p99 measured | wait p99 model "
               "| P(wait) measured | P(wait) model | mean queue | 502 | 504 |",
               "|" + "---|" * 12]
        for s in e["steps"]:
            md.append(f"| {s['arrival_rate']} | {s['throughput']} | {s['p50_ms']} | {s['p99_ms']} | {s['send_p99_ms']}"
                      f" | {s['measured_p99_wait_ms']} | {s['predicted_p99_wait_ms']} | {s['measured_p_wait']} | "
                      f"{s['predicted_p_wait']} | {s['mean_listen_queue']} | {s['status_502']} | {s['status_504']} |")
        md += ["", "Where the model does not agree within 25 %, the reason is given in the checks above.", ""]
    md += ["## Files", "", "- `results.json` — every number above", "- `requests.csv` — one row per request "
           "(latency from the intended send time)", "- `status.csv` — the pool status page, every second",
           "- `access.csv` — nginx's JSON access log lines of this run", ""]
    return "\n".join(md)


def index_html(results: dict, images: list[Path]) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>fcgipool load-test report</title>",
             "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}pre{background:#f4f4f4;"
             "padding:1em;white-space:pre-wrap}img{max-width:100%}.ok{color:green}.bad{color:#b00}.na{color:#777}</style>",
             "</head><body><h1>fcgipool load-test report</h1>"]
    parts.append("<ul>")
    for c in results["checks"]:
        cls = {True: "ok", False: "bad", None: "na"}[c["ok"]]
        mark = {True: "PASS", False: "FAIL", None: "n/a"}[c["ok"]]
        parts.append(f"<li class='{cls}'><b>{mark}</b> {html.escape(c['name'])}: "
                     f"{html.escape(c['detail'])}</li>")
    parts.append("</ul><pre>" + html.escape("\n".join(summary_lines(results))) + "</pre>")
    for img in images:
        data = base64.b64encode(img.read_bytes()).decode()
        parts.append(f"<h2>{html.escape(PLOT_TITLES.get(img.name, img.stem))}</h2>"
                     f"<img alt='{img.stem}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write(out: Path, results: dict, requests: list[dict], sampler, access: list[dict]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "requests.csv", requests, REQUEST_COLUMNS)
    sampler.write_csv(out / "status.csv")
    write_csv(out / "access.csv", access, ACCESS_COLUMNS)
    (out / "results.json").write_text(json.dumps(_clean(results), indent=2, default=str))
    images = make_plots(out, results, sampler.rows)
    (out / "report.md").write_text(markdown(results, images))
    (out / "index.html").write_text(index_html(results, images))
    return images
