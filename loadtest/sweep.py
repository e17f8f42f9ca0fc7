"""`python -m loadtest sizing`: sweep worker counts x arrival rates on the running stack (resized with
TTIN/TTOU between steps, never restarted), compare the model's predictions with the measurements, and
recommend a worker count for a target rate, p99 wait and memory budget.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import json
import math
import sys
from pathlib import Path

from loadtest import accesslog, analysis, model, plots, report
from loadtest.results import Agreement, LocustView, SweepCalibration, SweepPoint, SweepResults
from loadtest.runner import Run, RunConfig, new_report_dir
from loadtest.stack import Stack

SWEEP_COLUMNS = ["workers", "offered_rate", "arrival_rate", "throughput", "utilization", "requests", "errors",
                 "error_rate", "predicted_error_rate", "measured_p99_wait_ms", "predicted_p99_wait_ms",
                 "measured_mean_queue", "predicted_mean_queue", "measured_p_wait", "predicted_p_wait", "agrees"]


def _ints(raw: str) -> list[int]:
    return [int(x) for x in raw.split(",") if x.strip()]


def _step(run: Run, label: str, rate: float, seconds: float) -> tuple[list[dict], LocustView]:
    cfg = run.cfg
    params = {"rate": rate, "respond_ms": cfg.respond_ms, "background_ms": cfg.background_ms, "drain": 60.0}
    return run.drive("exhaustion", label, params, seconds)


def calibrate(run: Run, workers: int, seconds: float) -> SweepCalibration:
    """One light step (load ~0.4): occupancy, its variability and the client's unloaded latency."""
    occ_guess = (run.cfg.respond_ms + run.cfg.background_ms + 5) / 1000
    rate = round(0.4 * workers / occ_guess, 2)
    st0 = run.stack.status()
    offset = accesslog.log_size(run.stack.access_log)
    rows, view = _step(run, f"calibrate@{rate:g}/s", rate, seconds)
    delta = analysis.status_delta(st0, run.stack.status())
    answer = accesslog.upstream_times(accesslog.read_from(run.stack.access_log, offset), "/work", view.start,
                                      view.start + seconds)
    ratio = analysis.background_ratio(rows, delta["background seconds"])
    return analysis.measure_occupancy(rate, rows, ratio, answer or None)


MIN_REQUESTS = 400  # a p99 from fewer rests on a handful of samples


def measure_point(run: Run, workers: int, load: float, cal: SweepCalibration, seconds: float) -> SweepPoint:
    rate = round(load * workers / cal.occupancy_s, 2)
    # slow points run longer (up to 3x) so that every p99 rests on a few samples
    seconds = min(max(seconds, MIN_REQUESTS / rate), 3 * seconds)
    label = f"w{workers}@{rate:g}/s"
    rows, view = _step(run, label, rate, seconds)
    p = analysis.measure_step(rows, label, view.start, seconds, workers, cal, run.sampler.rows)
    p.offered_rate, p.occupancy_s, p.seconds = rate, cal.occupancy_s, seconds
    p.measured_mean_queue = p.mean_listen_queue
    if not p.stable:
        p.predicted_p99_wait_ms = math.inf
    pred = p.predicted_p99_wait_ms if p.predicted_p99_wait_ms is not None else math.inf
    p.agrees = model.relative_error(pred, p.measured_p99_wait_ms) <= analysis.AGREE if p.stable else None
    if p.agrees is False:
        p.why = analysis.disagreement_reason(p, pred, p.measured_p99_wait_ms, cal.occupancy_s, seconds)
    return p


def run(args: argparse.Namespace, out: Path | None) -> tuple[Path, SweepResults]:
    stack = Stack.load(args.stack_file)
    cfg = RunConfig(target_p99_ms=args.p99_ms, memory_mb=args.memory_mb, out_dir=out or new_report_dir())
    r = Run(cfg, stack)
    original = r.workers
    counts = _ints(args.workers) if args.workers else sorted({max(2, original - 2), original, original + 2})
    loads = [float(x) for x in args.loads.split(",") if x.strip()]
    points: list[SweepPoint] = []
    r.sampler.start()
    try:
        stack.wait_idle(30)
        cal = calibrate(r, original, args.step_seconds)
        for workers in counts:
            print(f"resizing the pool to {workers} workers (TTIN/TTOU)", file=sys.stderr)
            stack.resize(workers)
            r.workers = workers
            stack.wait_idle(30)
            for load in loads:
                points.append(measure_point(r, workers, load, cal, args.step_seconds))
    finally:
        if stack.workers() != original:
            stack.resize(original)
        r.sampler.stop()
    rss = r._rss()
    target = args.target_rps or max(p.throughput for p in points)
    need = model.smallest_workers(target, cal.occupancy_s, args.p99_ms / 1000, ca2=1.0, cs2=cal.cs2)
    cap = model.memory_cap(args.memory_mb, rss, reserve_mb=rss) if rss else None
    results = SweepResults(calibration=cal, points=points, workers_swept=counts, loads=loads, rss_mb=rss,
                           original_workers=original, target_rps=target, p99_ms=args.p99_ms, memory_mb=args.memory_mb,
                           needed_workers=need, memory_cap=cap,
                           recommended_workers=need if cap is None or need is None else min(need, cap),
                           agreement=Agreement.of(points))
    write(cfg.out_dir, results, r)
    return cfg.out_dir, results


def write(out: Path, res: SweepResults, r: Run) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "sweep.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, SWEEP_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(p.to_dict(clean=False) for p in res.points)
    r.sampler.write_csv(out / "status.csv")
    report.write_csv(out / "requests.csv", r.requests, report.REQUEST_COLUMNS)
    (out / "results.json").write_text(json.dumps(res.to_dict(), indent=2))
    images = [plots.predicted_vs_measured(res.points, out / "predicted_vs_measured.png", "sizing sweep: p99 wait"),
              plots.sweep_curves(res, out / "sweep_wait_vs_rate.png"),
              plots.sweep_panels(res.points, out / "sweep_predicted_vs_measured.png"),
              plots.workers_over_time(r.sampler.rows, out / "workers_over_time.png")]
    images = [i for i in images if i]
    lines = res.summary_lines()
    md = ["# fcgipool sizing sweep", "", "```", *lines, "```", ""]
    md += [f"![{i.stem}]({i.name})\n" for i in images]
    (out / "report.md").write_text("\n".join(md))
    body = [f"<h1>fcgipool sizing sweep</h1><pre>{html.escape(chr(10).join(lines))}</pre>"]
    for i in images:
        body.append(f"<img style='max-width:100%' alt='{i.stem}' src='data:image/png;base64,"
                    f"{base64.b64encode(i.read_bytes()).decode()}'>")
    (out / "index.html").write_text("<!doctype html><html><head><meta charset='utf-8'><title>sizing</title></head>"
                                    "<body style='font-family:sans-serif;max-width:1000px;margin:auto'>"
                                    + "\n".join(body) + "</body></html>")
