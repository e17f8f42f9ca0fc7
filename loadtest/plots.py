"""The report's PNG plots (matplotlib, Agg backend). Each function returns the file it wrote, or None."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from loadtest import model
from loadtest.results import Baseline, Lock, ModelPoint, Spill, Stepped, SweepPoint, SweepResults, Timeout

DPI = 110


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _num(rows: list[dict], col: str) -> list[float | None]:
    return [float(r[col]) if r.get(col) not in ("", None) else None for r in rows]


def _phases(ax, rows: list[dict]) -> None:
    """Shade and name each scenario (label) along the time axis."""
    spans: list[list] = []
    for r in rows:
        label = str(r.get("label", "")).split(":")[0].split("@")[0]
        if spans and spans[-1][0] == label:
            spans[-1][2] = r["t"]
        else:
            spans.append([label, r["t"], r["t"]])
    for i, (label, a, b) in enumerate(spans):
        if not label:
            continue
        if i % 2 == 0:
            ax.axvspan(a, b, color="0.93", zorder=0)
        ax.text((a + b) / 2, 1.0, label, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=7)


def latency_vs_rate(exh: Stepped, baseline: Baseline | None, path: Path, name: str = "exhaustion") -> Path | None:
    steps = [s for s in exh.steps if s.latency.requests]
    if not steps:
        return None
    x = [s.arrival_rate for s in steps]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for key, style, label in (("p50_ms", "o-", "p50"), ("p90_ms", "s-", "p90"), ("p99_ms", "^-", "p99")):
        ax.plot(x, [max(0.1, getattr(s.latency, key) or 0.1) for s in steps], style,
                label=f"{label} (open loop, from intended send)")
    if cl := exh.closed_loop:
        ax.plot([cl.throughput], [max(0.1, cl.latency.p99_ms or 0.1)], "X", color="k", ms=9,
                label=f"p99 closed loop ({cl.users} locust users at {cl.rate:g}/s offered; "
                      f"plotted at its {cl.throughput:.1f}/s achieved)")
        ax.plot([cl.throughput], [max(0.1, cl.latency.p50_ms or 0.1)], "x", color="k", ms=8, label="p50 closed loop")
    ax.axvline(exh.expected_capacity, color="red", ls=":", label=f"workers / occupancy = "
               f"{exh.expected_capacity:.1f} req/s")
    if measured := exh.capacity.measured_capacity:
        ax.axvline(measured, color="green", ls="-.", label=f"measured capacity = {measured:.1f} req/s")
    if baseline and (base_p50 := baseline.latency.p50_ms):
        ax.axhline(base_p50, color="0.7", lw=0.8, label=f"baseline p50 (GET /) {base_p50:.1f} ms")
    ax.set_yscale("log")
    ax.set_xlabel("arrival rate (req/s)")
    ax.set_ylabel("latency (ms, log)")
    ax.set_title(f"{name}: latency vs arrival rate ({exh.workers} workers)")
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def workers_over_time(rows: list[dict], path: Path) -> Path | None:
    rows = [r for r in rows if r.get("answering") not in ("", None)]
    if not rows:
        return None
    t = [r["t"] for r in rows]
    ans = _num(rows, "answering")
    fin = _num(rows, "finishing")
    fig, ax = plt.subplots(figsize=(9, 3.6))
    ax.stackplot(t, ans, fin, labels=["busy answering", "busy finishing (after the response)"],
                 colors=["tab:blue", "tab:orange"], step="post", alpha=0.85)
    ax.step(t, _num(rows, "total"), where="post", color="k", lw=1, label="workers")
    _phases(ax, rows)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("workers")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("workers busy answering vs finishing (pool status, every second)", pad=14)
    return _save(fig, path)


def listen_queue(rows: list[dict], path: Path) -> Path | None:
    rows = [r for r in rows if r.get("listen_queue") not in ("", None)]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.step([r["t"] for r in rows], _num(rows, "listen_queue"), where="post", color="tab:red")
    _phases(ax, rows)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("connections queued")
    ax.set_title("listen queue (connections nginx opened that no worker has accepted yet)", pad=14)
    return _save(fig, path)


def lost_vs_budget(timeout: Timeout, recommended: float | None, path: Path) -> Path | None:
    bg = timeout.background_samples_s
    if not bg:
        return None
    top = max(max(bg), timeout.budget_s) * 1.1
    budgets = [top * i / 200 for i in range(1, 201)]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(budgets, [model.lost_share(bg, b) * 100 for b in budgets],
            label="expected share lost (measured background-time distribution)")
    if timeout.measured_lost_share is not None:
        ax.plot([timeout.budget_s], [timeout.measured_lost_share * 100], "ro", ms=8,
                label=f"measured at the pool's budget ({timeout.ledger_lost} lost / "
                      f"{timeout.ledger_started} started, ledger)")
    if recommended:
        ax.axvline(recommended, color="green", ls="--", label=f"recommended --background-timeout {recommended:g} s")
    ax.set_xlabel("background budget (s)")
    ax.set_ylabel("after-response work lost (%)")
    ax.set_title("lost work vs background budget")
    ax.legend(fontsize=7)
    return _save(fig, path)


def lock_wait(lock: Lock, path: Path) -> Path | None:
    early, late = lock.early.samples, lock.late.samples
    if not early and not late:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.boxplot([early or [0], late or [0]], showfliers=True)
    ax.set_xticks([1, 2], [f"release=early\n(n={len(early)})", f"release=late\n(n={len(late)})"])
    ax.axhline(lock.hold_ms, color="red", ls=":", label=f"hold_ms = {lock.hold_ms}")
    ax.set_ylabel("follow-up request's X-Lock-Wait-Ms")
    ax.set_title("session lock: the same user's next request")
    ax.legend(fontsize=7)
    return _save(fig, path)


def spill(sp: Spill, rows: list[dict], path: Path) -> Path | None:
    """Three panels: p99 against load (spill off / on), where each step's tasks ran, the queue's depth."""
    steps = sp.steps
    if not steps:
        return None
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 4))
    for half, color in (("off", "tab:red"), ("on", "tab:green")):
        own = [s for s in steps if s.spill == half and s.latency.p99_ms is not None]
        a1.plot([s.load for s in own], [s.latency.p99_ms for s in own], "o-", color=color, label=f"spill {half}")
    ref_step = sp.step("off", min(sp.loads))
    ref = ref_step.latency.p99_ms if ref_step else None
    if ref:
        a1.axhline(2 * ref, color="0.4", ls=":", label="2x unloaded p99")
    a1.set_yscale("log")
    a1.set_xlabel("arrival rate / the pool's capacity running every task itself")
    a1.set_ylabel("request p99 latency (ms)")
    a1.legend(fontsize=7)
    labels = [f"{s.spill}\n{s.load:g}x" for s in steps]
    in_pool = [s.tasks.in_pool for s in steps]
    queued = [s.tasks.ran_in_queue for s in steps]
    lost = [s.tasks.lost for s in steps]
    xs = range(len(steps))
    a2.bar(xs, in_pool, color="tab:blue", label="ran in the pool")
    a2.bar(xs, queued, bottom=in_pool, color="tab:orange", label="ran in the queue")
    a2.bar(xs, lost, bottom=[p + q for p, q in zip(in_pool, queued, strict=True)], color="black", label="lost")
    a2.set_xticks(list(xs), labels, fontsize=7)
    a2.set_ylabel("tasks")
    a2.legend(fontsize=7)
    mine = [r for r in rows if str(r.get("label", "")).startswith("spill-") and r.get("spill_depth") not in ("", None)]
    if mine:
        t0 = mine[0]["t"]
        a3.plot([r["t"] - t0 for r in mine], [int(r["spill_depth"]) for r in mine], color="tab:orange")
        _phases(a3, [{**r, "t": r["t"] - t0} for r in mine])
    a3.set_xlabel("seconds into the scenario")
    a3.set_ylabel("spill queue depth (jobs waiting)")
    return _save(fig, path)


def waits_vs_model(points: list[ModelPoint], path: Path, name: str) -> Path | None:
    """One panel per quantity: each judged step's measured value against the prediction and its interval."""
    judged = [p for p in points if p.measured and p.predicted[0] is not None]
    if not judged:
        return None
    keys = [k for k in ("p_wait", "mean_wait_s", "p90_wait_s", "p99_wait_s") if any(p.quantity == k for p in judged)]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        mine = [p for p in judged if p.quantity == key]
        x = list(range(len(mine)))
        pred = [p.predicted[0] for p in mine]
        lo = [p.predicted[0] - (p.predicted[1] or 0) for p in mine]
        hi = [(p.predicted[2] if p.predicted[2] is not None else p.predicted[0]) - p.predicted[0] for p in mine]
        ax.errorbar(x, pred, yerr=[lo, hi], fmt="s", color="0.4", capsize=4, label="predicted (interval)")
        for i, p in enumerate(mine):
            ax.plot(i, p.measured[0], "o", color="tab:green" if p.agrees else "tab:red")
        ax.set_xticks(x, [f"{p.rate:.0f}/s" for p in mine], fontsize=7)
        ax.set_title(mine[0].name + ("" if key == "p_wait" else " (ms)"), fontsize=9)
        ax.set_ylim(bottom=0)
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{name}: measured (green agrees, red does not) vs the model's interval for a run of that length",
                 fontsize=9)
    return _save(fig, path)


def predicted_vs_measured(points: list[SweepPoint], path: Path, title: str) -> Path | None:
    """The judged points' p99 wait, predicted against measured; the grey band is ±25 %."""
    pts = [(p.label, p.predicted_p99_wait_ms, p.measured_p99_wait_ms, p.agrees) for p in points
           if p.agrees is not None and p.predicted_p99_wait_ms is not None and p.measured_p99_wait_ms is not None]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(5.6, 5))
    hi = max(max(pred, meas) for _, pred, meas, _ in pts) * 1.2 or 1
    ax.plot([0, hi], [0, hi], "k-", lw=0.8)
    ax.fill_between([0, hi], [0, hi * 0.75], [0, hi * 1.25], color="0.9", label="within 25 %")
    for label, pred, meas, ok in pts:
        ax.plot(meas, pred, "o", color="tab:green" if ok else "tab:red")
        ax.annotate(label, (meas, pred), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("measured p99 wait (ms)")
    ax.set_ylabel("predicted p99 wait (ms)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def sweep_curves(res: SweepResults, path: Path) -> Path | None:
    """p99 wait against rate for each worker count: the model's curve and the measured points."""
    cal, pts = res.calibration, res.points
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, workers in enumerate(sorted({p.workers for p in pts})):
        color = f"C{i}"
        cap = workers / cal.occupancy_s
        rates = [cap * k / 100 for k in range(5, 98)]
        ax.plot(rates, [model.predict(workers, r, cal.occupancy_s, 1.0, cal.cs2).wait_quantile * 1000
                        for r in rates], "-", color=color, label=f"{workers} workers: model")
        mine = [p for p in pts if p.workers == workers]
        ax.plot([p.arrival_rate for p in mine], [p.measured_p99_wait_ms for p in mine], "o", color=color,
                label=f"{workers} workers: measured")
    ax.set_xlabel("arrival rate (req/s)")
    ax.set_ylabel("p99 wait for a worker (ms)")
    ax.set_ylim(bottom=0)
    top = max((p.measured_p99_wait_ms for p in pts if math.isfinite(p.measured_p99_wait_ms)), default=100)
    ax.set_ylim(0, top * 2 + 10)
    ax.set_title("sizing sweep: p99 wait vs rate (Erlang C + Allen-Cunneen)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def sweep_panels(points: list[SweepPoint], path: Path) -> Path | None:
    """Predicted against measured: p99 wait, mean listen queue, error rate (one dot per sweep point)."""
    if not points:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    pairs = (("measured_p99_wait_ms", "predicted_p99_wait_ms", "p99 wait (ms)"),
             ("measured_mean_queue", "predicted_mean_queue", "mean queue (requests)"),
             ("error_rate", "predicted_error_rate", "error rate"))
    for ax, (meas, pred, name) in zip(axes, pairs, strict=True):
        xy = [(m, q) for m, q in ((getattr(p, meas), getattr(p, pred)) for p in points)
              if m is not None and q is not None and math.isfinite(q)]
        hi = max([max(a, b) for a, b in xy] + [1e-3]) * 1.2
        if xy and all(a == 0 and b == 0 for a, b in xy):
            ax.text(0.5, 0.5, f"all {len(xy)} points 0:\nnone measured, none predicted", ha="center",
                    transform=ax.transAxes, fontsize=9)
            ax.set_xticks([0])
            ax.set_yticks([0])
        ax.plot([0, hi], [0, hi], "k-", lw=0.8)
        ax.fill_between([0, hi], [0, hi * 0.75], [0, hi * 1.25], color="0.9")
        ax.plot([a for a, _ in xy], [b for _, b in xy], "o")
        ax.set_xlim(0, hi)
        ax.set_ylim(0, hi)
        ax.set_xlabel(f"measured {name}")
        ax.set_ylabel(f"predicted {name}")
    fig.suptitle("sizing sweep: model vs measurement (grey: within 25 %)")
    return _save(fig, path)
