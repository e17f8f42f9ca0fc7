"""Writes a run's report folder: raw CSV/JSON, PNG plots, report.md, a self-contained index.html, a summary."""

from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path

from loadtest import plots
from loadtest.results import Baseline, Lock, RunResults, Spill, Timeout

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


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})


def make_plots(out: Path, results: RunResults, sampler_rows: list[dict]) -> list[Path]:
    made = [plots.workers_over_time(sampler_rows, out / "workers_over_time.png"),
            plots.listen_queue(sampler_rows, out / "listen_queue.png")]
    for name, sc in results.stepped_scenarios():
        prefix = "" if name == "exhaustion" else f"{name}_"
        made.append(plots.latency_vs_rate(sc, results.one(Baseline), out / f"{prefix}latency_vs_rate.png", name))
        made.append(plots.waits_vs_model(sc.model_points, out / f"{prefix}predicted_vs_measured.png", name))
    if timeout := results.one(Timeout):
        setting = results.recommendations and results.recommendations.background_timeout
        rec = setting.value if setting else None
        made.append(plots.lost_vs_budget(timeout, rec, out / "lost_vs_budget.png"))
    if lock := results.one(Lock):
        made.append(plots.lock_wait(lock, out / "lock_wait.png"))
    if spill := results.one(Spill):
        made.append(plots.spill(spill, sampler_rows, out / "spill.png"))
    return [p for p in made if p]


def markdown(results: RunResults, images: list[Path]) -> str:
    md = ["# fcgipool load-test report", "", "How to read it: docs/loadtest.md (each plot, each check, each "
          "recommendation). Latency is measured from the intended send time (open loop) unless marked closed loop; "
          "'wait' is latency minus the unloaded latency of the same request.", "",
          "```", *results.summary_lines(), "```", ""]
    for img in images:
        md += [f"## {PLOT_TITLES.get(img.name, img.stem)}", "", f"![{img.stem}]({img.name})", ""]
    for name, sc in results.stepped_scenarios():
        md += sc.table_lines(name)
    md += ["## Files", "", "- `results.json` — every number above", "- `requests.csv` — one row per request "
           "(latency from the intended send time)", "- `status.csv` — the pool status page, every second",
           "- `access.csv` — nginx's JSON access log lines of this run (empty without an access log)", ""]
    return "\n".join(md)


def index_html(results: RunResults, images: list[Path]) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>fcgipool load-test report</title>",
             "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}pre{background:#f4f4f4;"
             "padding:1em;white-space:pre-wrap}img{max-width:100%}.ok{color:green}.bad{color:#b00}.na{color:#777}</style>",
             "</head><body><h1>fcgipool load-test report</h1>"]
    parts.append("<ul>")
    for c in results.checks:
        cls = {True: "ok", False: "bad", None: "na"}[c.ok]
        parts.append(f"<li class='{cls}'><b>{c.mark.strip()}</b> {html.escape(c.name)}: {html.escape(c.detail)}</li>")
    parts.append("</ul><pre>" + html.escape("\n".join(results.summary_lines())) + "</pre>")
    for name, sc in results.stepped_scenarios():  # the step and model tables, as in report.md
        parts.append("<pre>" + html.escape("\n".join(sc.table_lines(name))) + "</pre>")
    for img in images:
        data = base64.b64encode(img.read_bytes()).decode()
        parts.append(f"<h2>{html.escape(PLOT_TITLES.get(img.name, img.stem))}</h2>"
                     f"<img alt='{img.stem}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write(out: Path, results: RunResults, requests: list[dict], sampler, access: list[dict]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "requests.csv", requests, REQUEST_COLUMNS)
    sampler.write_csv(out / "status.csv")
    write_csv(out / "access.csv", access, ACCESS_COLUMNS)
    (out / "results.json").write_text(json.dumps(results.to_dict(), indent=2, default=str))
    images = make_plots(out, results, sampler.rows)
    (out / "report.md").write_text(markdown(results, images))
    (out / "index.html").write_text(index_html(results, images))
    return images
