"""Writes a run's report folder: raw CSV/JSON, PNG plots, report.md, a self-contained index.html, a summary."""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from pathlib import Path

from loadtest import plots, spillrun

REQUEST_COLUMNS = ["scenario", "step", "rate", "intended", "sent", "done", "latency_ms", "service_ms", "status",
                   "error", "bg_ms", "over_budget", "role", "release", "lock_wait_ms", "email", "method", "name"]
ACCESS_COLUMNS = ["time", "msec", "method", "uri", "status", "upstream_status", "request_time", "upstream_connect_time",
                  "upstream_header_time", "upstream_response_time"]
PLOT_TITLES = {
    "latency_vs_rate.png": "Latency percentiles vs arrival rate (exhaustion)",
    "workers_over_time.png": "Workers busy answering vs finishing over time",
    "listen_queue.png": "Listen queue over time",
    "lost_vs_budget.png": "Lost work vs background budget (timeout)",
    "lock_wait.png": "Lock wait: release=early vs release=late",
    "predicted_vs_measured.png": "Sizing model: each stable step's waits, measured vs predicted (with its interval)",
    "spill.png": "Spill off vs on past capacity: p99, where the tasks ran, the queue's depth",
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
    for name in results.get("stepped", []):
        prefix = "" if name == "exhaustion" else f"{name}_"
        made.append(plots.latency_vs_rate(sc[name], sc.get("baseline"), out / f"{prefix}latency_vs_rate.png", name))
        made.append(plots.waits_vs_model(sc[name]["model_points"], out / f"{prefix}predicted_vs_measured.png", name))
    if "timeout" in sc:
        rec = results.get("recommendations", {}).get("background_timeout", {}).get("value")
        made.append(plots.lost_vs_budget(sc["timeout"], rec, out / "lost_vs_budget.png"))
    if "lock" in sc:
        made.append(plots.lock_wait(sc["lock"], out / "lock_wait.png"))
    if "spill" in sc:
        made.append(plots.spill(sc["spill"], sampler_rows, out / "spill.png"))
    return [p for p in made if p]


def stepped_lines(name: str, e: dict) -> list[str]:
    normal = "" if e.get("normal", True) else " (not normal traffic: left out of the recommendations)"
    occ = f"{e['occupancy_s'] * 1000:.0f} ms" if e.get("occupancy_s") else "?"
    lines = [f"  {name:<11} occupancy {occ}/request ({e.get('service_source', '?')}) -> capacity "
             f"{e['expected_capacity']:.1f} req/s expected, {e['measured_capacity']} measured{normal}"]
    for s in e["steps"]:
        pred = f", model {s['predicted_p99_wait_ms']} ms" if s.get("predicted_p99_wait_ms") is not None else ""
        meas = f", wait p99 {s['measured_p99_wait_ms']} ms" if s.get("measured_p99_wait_ms") is not None else ""
        lines.append(f"              {s['phase']:<11} {s['arrival_rate']:6.1f}/s (u {s['utilization']}, "
                     f"{s['requests']} req): p99 {s['p99_ms']} ms, served {s['throughput']}/s{meas}{pred}, "
                     f"502/504 {s['status_502']}/{s['status_504']}, queue max {s['max_listen_queue']}")
    if cl := e.get("closed_loop"):
        lines.append(f"              closed loop ({cl['users']} users, {cl['rate']:g}/s offered): achieved "
                     f"{cl['throughput']}/s, p99 {cl['p99_ms']} ms — the queue it hides (coordinated omission)")
    if e.get("task_errors"):
        lines.append(f"              {e['task_errors']} task(s) raised (their requests still count)")
    return lines


def summary_lines(results: dict) -> list[str]:
    lines = [f"fcgipool load test — {results['workers']} workers, {results['mode']} stack at {results['base_url']}"]
    if results.get("locustfile"):
        lines.append(f"  scenarios from {results['locustfile']}; pool status from {results['status_url']}")
    sc = results["scenarios"]
    if b := sc.get("baseline"):
        lines.append(f"  baseline    {b['requests']} req at {b['rate']:g}/s: p50 {b['p50_ms']} ms, "
                     f"p99 {b['p99_ms']} ms, "
                     f"errors {b['errors']}")
    for name in results.get("stepped", []):
        lines += stepped_lines(name, sc[name])
    if sp := sc.get("spill"):
        lines += ["  spill       " + line for line in spillrun.summary_lines(sp)]
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
    lines.append("recommended settings (from normal traffic: " + (", ".join(results.get("normal", [])) or "none")
                 + "; predictions with their 95 % interval):")
    rec = results["recommendations"]
    flags = (("workers", "--workers"), ("timeout", "--timeout"), ("background_timeout", "--background-timeout"),
             ("fastcgi_read_timeout", "nginx fastcgi_read_timeout"))
    for key, flag in flags:
        if key in rec:
            lines.append(f"  {flag} {rec[key]['value']}  — {rec[key]['reason']}")
        elif key in rec.get("not_derived", {}):
            lines.append(f"  {flag}: not derived — {rec['not_derived'][key]}")
    return lines


def _iv(v: list | None, unit: str = "") -> str:
    if not v or v[0] is None:
        return "-"
    return f"{v[0]}{unit} [{v[1]}-{'inf' if v[2] is None else v[2]}]"


def step_table(name: str, e: dict) -> list[str]:
    md = [f"## {name}: steps", "",
          "| phase | rate | util | requests | throughput | p50 | p99 | p99 from actual send | mean queue | 502 | 504 |",
          "|" + "---|" * 11]
    for s in e["steps"]:
        md.append(f"| {s['phase']} | {s['arrival_rate']} | {s['utilization']} | {s['requests']} | {s['throughput']} "
                  f"| {s['p50_ms']} | {s['p99_ms']} | {s['send_p99_ms']} | {s['mean_listen_queue']} | "
                  f"{s['status_502']} | {s['status_504']} |")
    md += ["", f"### {name}: the model against each stable step", "",
           "Predicted: the model's value and the range 99.8 % of simulated runs of the same length give (the "
           "interval the check uses); measured: the value and its ~95 % confidence interval (batch means for P(wait) "
           "and the mean; order statistics for the quantiles, which treat the waits as independent, so they are "
           "narrower than the truth: the check does not use them).", "",
           "| step | quantity | requests | predicted [interval] | measured [CI] | verdict |",
           "|---|---|---|---|---|---|"]
    for p in e["model_points"]:
        unit = "" if p["quantity"] == "p_wait" else " ms"
        verdict = {True: "agrees", False: f"DISAGREES: {p['why']}", None: f"not judged: {p['why']}"}[p["agrees"]]
        md.append(f"| {p['label']} | {p['name']} | {p['requests']} | {_iv(p['predicted'], unit)} | "
                  f"{_iv(p.get('measured'), unit)} | {verdict} |")
    cal = e.get("calibration", {})
    if cal:
        c = cal.get("server") or cal.get("client")
        md += ["", f"Waits measured from {c['source']}; resolution {c['resolution_ms']} ms, a request counts as "
               f"waiting above {c['tau_ms']} ms (P(wait > tau) is compared), calibration noise "
               f"{c['false_wait']} subtracted.", ""]
    return md


def markdown(results: dict, images: list[Path]) -> str:
    md = ["# fcgipool load-test report", "", "How to read it: docs/loadtest.md (each plot, each check, each "
          "recommendation). Latency is measured from the intended send time (open loop) unless marked closed loop; "
          "'wait' is latency minus the unloaded latency of the same request.", "",
          "```", *summary_lines(results), "```", ""]
    for img in images:
        md += [f"## {PLOT_TITLES.get(img.name, img.stem)}", "", f"![{img.stem}]({img.name})", ""]
    for name in results.get("stepped", []):
        md += step_table(name, results["scenarios"][name])
    md += ["## Files", "", "- `results.json` — every number above", "- `requests.csv` — one row per request "
           "(latency from the intended send time)", "- `status.csv` — the pool status page, every second",
           "- `access.csv` — nginx's JSON access log lines of this run (empty without an access log)", ""]
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
    for name in results.get("stepped", []):  # the step and model tables, as in report.md
        parts.append("<pre>" + html.escape("\n".join(step_table(name, results["scenarios"][name]))) + "</pre>")
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
