"""`python -m loadtest run`: every scenario against the running stack, then the report.

Scenarios run one after another on an idle pool; before and after each one the ledger and the pool's
counters are read, so each scenario's lost work is its own.
"""

from __future__ import annotations

import math
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from loadtest import accesslog, analysis, model
from loadtest.driver import run_user
from loadtest.sampler import Sampler
from loadtest.scenarios import USERS, Recorder
from loadtest.stack import REPO, Stack, StackError

SCENARIOS = ("baseline", "exhaustion", "timeout", "lock", "signup")
# default seconds per scenario: about three minutes in all, with drains and the mail check
DEFAULT_DURATION = {"baseline": 15, "exhaustion": 64, "timeout": 20, "lock": 15, "signup": 20}
SMOKE_DURATION = {"baseline": 4, "exhaustion": 12, "timeout": 6, "lock": 5, "signup": 6}
# (offered load / estimated capacity, share of the scenario's time): the busier stable steps get more time,
# so their p99 rests on more samples; the overload step needs only long enough to build a queue
EXHAUSTION_STEPS = ((0.5, 0.22), (0.65, 0.28), (0.8, 0.31), (1.3, 0.19))
SMOKE_STEPS = ((0.6, 0.5), (1.3, 0.5))


@dataclass
class RunConfig:
    scenarios: list[str] = field(default_factory=lambda: list(SCENARIOS))
    duration: float | None = None  # seconds per scenario (None: the defaults above)
    rate: float | None = None  # baseline's open-loop rate and the recommendation's target rate
    smoke: bool = False
    budget: float | None = None  # pool's --background-timeout, if the stack does not say
    respond_ms: int = 20
    background_ms: int = 60  # mean; short enough for ~40 req/s at 4 workers: enough samples for a p99
    hold_ms: int = 300
    target_p99_ms: float = 100.0
    memory_mb: float = 2048.0
    out_dir: Path | None = None
    stack_file: str | None = None
    seed: int = 1

    def seconds(self, name: str) -> float:
        if self.duration:
            return self.duration
        return (SMOKE_DURATION if self.smoke else DEFAULT_DURATION)[name]


def new_report_dir(base: Path | None = None) -> Path:
    base = base or REPO / "loadtest" / "reports"
    path = base / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path.mkdir(parents=True, exist_ok=True)
    return path


class Run:
    def __init__(self, cfg: RunConfig, stack: Stack) -> None:
        self.cfg = cfg
        self.stack = stack
        self.out = cfg.out_dir or new_report_dir()
        self.run_id = uuid.uuid4().hex[:8]
        self.sampler = Sampler(stack)
        self.requests: list[dict] = []
        self.results: dict = {"scenarios": {}, "skipped": {}}
        self.workers = stack.workers()

    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    # --- one scenario = snapshots around a locust run -------------------------------------------------------
    def drive(self, name: str, label: str, params: dict, duration: float, users: int = 1) -> tuple[list, dict]:
        rec = Recorder()
        self.sampler.label = label
        params = {"scenario": name, "step": label, "run_id": self.run_id, "seed": self.cfg.seed, **params,
                  "duration": duration}
        started = time.time()
        locust_view = run_user(USERS[name], self.stack.base_url, params, rec, users=users, duration=duration,
                               label=label, sampler=self.sampler)
        self.sampler.label = f"{label}:drain"
        if not self.stack.wait_idle(timeout=max(30.0, (self.cfg.budget or 0) * 3)):
            self.log(f"warning: pool still busy after {label}")
        locust_view["start"], locust_view["duration"] = started, duration
        self.requests.extend(rec.rows)
        return rec.rows, locust_view

    def snapshot(self) -> tuple[dict, dict]:
        return self.stack.ledger(), self.stack.status()

    def baseline(self) -> dict:
        rate = self.cfg.rate or 30.0
        rows, view = self.drive("baseline", "baseline", {"rate": rate}, self.cfg.seconds("baseline"))
        return {"rate": rate, **analysis.latency_summary(rows), "locust": view}

    def exhaustion(self, base_ms: float) -> dict:
        bg = self.cfg.background_ms
        est_occ = (self.cfg.respond_ms + bg + base_ms) / 1000
        est_cap = self.workers / est_occ
        plan = SMOKE_STEPS if self.cfg.smoke else EXHAUSTION_STEPS
        total_s = self.cfg.seconds("exhaustion")
        before_st = self.stack.status()
        log_offset = accesslog.log_size(self.stack.access_log)
        steps = []
        for load, share in plan:
            step_s = round(total_s * share, 1)
            rate = round(est_cap * load, 2)
            label = f"exhaustion@{rate:g}/s"
            params = {"rate": rate, "respond_ms": self.cfg.respond_ms, "background_ms": bg, "drain": 60.0}
            rows, view = self.drive("exhaustion", label, params, step_s)
            steps.append({"label": label, "rate": rate, "duration": step_s, "start": view["start"], "rows": rows,
                          "locust": view})
            if len(steps) == 1:  # plan the other steps from the occupancy the light step measured
                ratio = analysis.background_ratio(rows, analysis.status_delta(before_st, self.stack.status())[
                    "background seconds"])
                occ = analysis.measure_occupancy(rows, ratio)["occupancy_s"]
                est_cap = self.workers / occ if occ > 0 else est_cap
        # the top step once more, closed loop, as a default locust run would measure it
        top = steps[-1]
        users = self.workers * 2
        closed_s = max(4.0, step_s / 2)
        params = {"rate": top["rate"], "users": users, "respond_ms": self.cfg.respond_ms, "background_ms": bg}
        label = f"closed-loop@{top['rate']:g}/s"
        rows, view = self.drive("exhaustion-closed", label, params, closed_s, users=users)
        closed = {"rate": top["rate"], "users": users, "duration": closed_s, **analysis.latency_summary(rows),
                  "throughput": round(analysis.step_throughput(rows, view["start"] + closed_s * 0.2,
                                                               view["start"] + closed_s), 3)}
        delta = analysis.status_delta(before_st, self.stack.status())
        ratio = analysis.background_ratio([r for s in [*steps, {"rows": rows}] for r in s["rows"]],
                                          delta["background seconds"])
        light = steps[0]
        answer = accesslog.upstream_times(accesslog.read_from(self.stack.access_log, log_offset), "/work",
                                          light["start"], light["start"] + light["duration"])
        out = analysis.analyse_exhaustion(steps, self.workers, ratio, self.sampler.rows, answer or None)
        out.update(closed_loop=closed, estimated_capacity_before=round(est_cap, 2), pool_delta=delta,
                   locust=[s["locust"] for s in steps])
        return out

    def timeout(self, budget: float) -> dict:
        # mean requested time ≈ 0.7 x budget: aim at half the pool busy, but send at least one request per
        # worker (a long budget allows only a few requests in the scenario's time)
        duration = self.cfg.seconds("timeout")
        rate = round(max(0.5 * self.workers / (0.7 * budget + 0.05), self.workers / duration), 2)
        led0, st0 = self.snapshot()
        params = {"rate": rate, "budget_s": budget, "respond_ms": 10, "drain": budget * 3 + 30, "max_bg_ms": 60_000}
        rows, view = self.drive("timeout", f"timeout@{rate:g}/s", params, duration)
        time.sleep(0.5)  # the arbiter records lost tasks when it reaps; give the hook a moment
        led1, st1 = self.snapshot()
        out = analysis.analyse_timeout(rows, budget, analysis.ledger_delta(led0, led1),
                                       analysis.status_delta(st0, st1))
        out.update(rate=rate, locust=view, ledger_delta=analysis.ledger_delta(led0, led1))
        if budget > 5:
            out["note"] = (f"the stack's budget is {budget:g} s, so few requests fit in {duration:g} s; start it "
                           "with FCGIPOOL_BACKGROUND_TIMEOUT=2 for a statistically useful run")
        return out

    def lock(self) -> dict:
        users = max(1, min(4, self.workers // 2))
        rows, view = self.drive("lock", "lock", {"hold_ms": self.cfg.hold_ms}, self.cfg.seconds("lock"), users=users)
        return {**analysis.analyse_lock(rows, self.cfg.hold_ms), "users": users, "locust": view}

    def signup(self) -> dict:
        led0, _ = self.snapshot()
        rows, view = self.drive("signup", "signup", {}, self.cfg.seconds("signup"), users=5)
        accepted = [r["email"] for r in rows if r.get("email") and r["status"] == 202]
        deadline = time.time() + (10 if self.cfg.smoke else 30)
        text = self.stack.mail_text()
        while any(e not in text for e in accepted) and time.time() < deadline:
            time.sleep(1)
            text = self.stack.mail_text()
        led1, _ = self.snapshot()
        return {**analysis.analyse_signup(rows, text, analysis.ledger_delta(led0, led1)), "locust": view}

    # --- the whole run ----------------------------------------------------------------------------------------
    def execute(self) -> dict:
        cfg = self.cfg
        budget, budget_source = self.stack.background_budget(cfg.budget)
        cfg.budget = budget
        log_offset = accesslog.log_size(self.stack.access_log)
        self.results.update(run_id=self.run_id, started=time.time(), workers=self.workers, mode=self.stack.mode,
                            base_url=self.stack.base_url, budget_s=budget, budget_source=budget_source,
                            smoke=cfg.smoke,
                            config={k: v for k, v in vars(cfg).items() if k not in ("out_dir",)})
        if not self.stack.wait_idle(timeout=30):
            self.log("warning: the pool was busy before the run started")
        led_start = self.stack.ledger()
        self.sampler.start()
        sc = self.results["scenarios"]
        try:
            base_ms = 5.0
            if "baseline" in cfg.scenarios:
                sc["baseline"] = self.baseline()
                base_ms = sc["baseline"]["p50_ms"] or base_ms
            if "exhaustion" in cfg.scenarios:
                sc["exhaustion"] = self.exhaustion(base_ms)
            if "timeout" in cfg.scenarios and cfg.smoke and budget > 5:
                self.results["skipped"]["timeout"] = (
                    f"the pool's background budget is {budget:g} s ({budget_source}), too long for a smoke run; "
                    "start the stack with FCGIPOOL_BACKGROUND_TIMEOUT=2 (or pass --background-budget)")
            elif "timeout" in cfg.scenarios:
                sc["timeout"] = self.timeout(budget)
                sc["timeout"]["budget_source"] = budget_source
            if "lock" in cfg.scenarios:
                sc["lock"] = self.lock()
            if "signup" in cfg.scenarios:
                sc["signup"] = self.signup()
        finally:
            self.sampler.stop()
        self.results["finished"] = time.time()
        self.results["ledger"] = {"before": led_start, "after": self.stack.ledger()}
        self.access = accesslog.read_from(self.stack.access_log, log_offset)
        self.results["nginx"] = accesslog.summarize(self.access)
        self.results["rss_mb_per_worker"] = self._rss()
        polls = [float(r["poll_ms"]) for r in self.sampler.rows if not r.get("error")]
        self.results["status_page_ms"] = {"samples": len(polls), "p50": analysis.pct(polls, 0.5),
                                          "max": analysis.pct(polls, 1.0),
                                          "errors": sum(1 for r in self.sampler.rows if r.get("error"))}
        self.results["recommendations"] = self._recommend()
        self.results["checks"] = checks(self.results)
        return self.results

    def _rss(self) -> float | None:
        xs = [float(r["rss_mb_max"]) for r in self.sampler.rows if r.get("rss_mb_max") not in ("", None)]
        return round(max(xs), 1) if xs else None

    def _recommend(self) -> dict:
        sc = self.results["scenarios"]
        exh = sc.get("exhaustion")
        lat = [r["latency_ms"] / 1000 for r in self.requests if 200 <= r["status"] < 300 and (
            r["scenario"] in ("baseline", "signup")
            or (r["scenario"] == "exhaustion" and _stable_step(exh, r["step"])))]
        p999 = model.quantile(lat, 0.999) if lat else 1.0
        target = self.cfg.rate or (_best_stable_rate(exh) if exh else 10.0)
        return analysis.recommend(exh, sc.get("timeout"), p999, self.results.get("rss_mb_per_worker"),
                                  target_rps=target, target_p99_ms=self.cfg.target_p99_ms,
                                  memory_mb=self.cfg.memory_mb, budget_now=self.cfg.budget) | {
            "target": {"rps": target, "p99_wait_ms": self.cfg.target_p99_ms, "memory_mb": self.cfg.memory_mb}}


def _stable_step(exh: dict | None, label: str | None) -> bool:
    return bool(exh) and any(s["label"] == label and s["stable"] and s["utilization"] <= 0.9 for s in exh["steps"])


def _best_stable_rate(exh: dict) -> float:
    rates = [s["arrival_rate"] for s in exh["steps"] if s["stable"] and s["utilization"] <= 0.9]
    return max(rates) if rates else exh["expected_capacity"] * 0.5


def checks(results: dict) -> list[dict]:
    """The issue's must-show list, each with the measured numbers and pass/fail (None: not measured).

    "hard" checks are correctness (nothing lost silently): `run` exits 1 when one fails. The others compare
    the model with measurements; their verdict, with the reason, is the result.
    """
    sc = results["scenarios"]
    out = []
    exh = sc.get("exhaustion")
    if exh:
        out.append({"name": "exhaustion capacity within 15 % of workers / occupancy", "ok": exh["capacity_ok"],
                    "detail": f"measured {exh['measured_capacity']} req/s vs {exh['expected_capacity']} req/s "
                              f"= {exh['workers']} / {exh['occupancy_s']} s (error {exh['capacity_error']})"})
        pts = exh["model_points"]
        out.append({"name": "p99 wait prediction within 25 % at two rates", "ok": exh["model_ok"],
                    "detail": "; ".join(f"{p['rate']:.1f}/s: predicted {p['predicted_ms']} ms, measured "
                                        f"{p['measured_ms']} ms" + (f" ({p['why']})" if p["why"] else "")
                                        for p in pts) or "no stable step"})
    t = sc.get("timeout")
    if t:
        out.append({"name": "timeout: lost work agrees exactly with the ledger", "ok": t["lost_agrees"], "hard": True,
                    "detail": f"ledger lost {t['ledger_lost']}, pool counter {t['pool_lost']}, sent over budget "
                              f"{t['sent_over_budget']} of {t['tasks_sent']}"})
    s = sc.get("signup")
    if s:
        out.append({"name": "signup: no mail lost", "ok": s["no_mail_lost"] and s["signups_accepted"] > 0, "hard": True,
                    "detail": f"{s['mail_arrived']} of {s['signups_accepted']} accepted signups' mails arrived"})
    lk = sc.get("lock")
    if lk:
        out.append({"name": "lock: release=late waits about the hold, early does not",
                    "ok": lk["late_waits_about_hold"] and lk["early_does_not_wait"],
                    "detail": f"follow-up lock wait p50 late {lk['late']['p50_ms']} ms, early "
                              f"{lk['early']['p50_ms']} ms, hold {lk['hold_ms']} ms"})
    return out


def run(cfg: RunConfig) -> tuple[Path, dict]:
    from loadtest import report  # matplotlib only when there is something to draw

    unknown = [s for s in cfg.scenarios if s not in SCENARIOS]
    if unknown or not cfg.scenarios:
        raise StackError(f"unknown scenario(s) {', '.join(unknown) or '(none given)'}; choose from "
                         f"{', '.join(SCENARIOS)}")
    stack = Stack.load(cfg.stack_file)
    r = Run(cfg, stack)
    results = r.execute()
    report.write(r.out, results, r.requests, r.sampler, r.access)
    if not math.isfinite(results["finished"] - results["started"]):
        raise RuntimeError("clock went backwards")
    return r.out, results
