"""`python -m loadtest run`: every scenario against the running stack, then the report.

Scenarios run one after another on an idle pool; before and after each one the ledger and the pool's
counters are read, so each scenario's lost work is its own.
"""

from __future__ import annotations

import math
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from loadtest import accesslog, advice, analysis, checks, model, modelcheck, requestlog, spillrun, stepped, userfile
from loadtest.driver import run_user
from loadtest.results import (
    Baseline,
    ClosedLoop,
    Lock,
    LocustView,
    NginxSummary,
    Recommendations,
    RunResults,
    Signup,
    StatusPage,
    Stepped,
    Target,
    Timeout,
)
from loadtest.sampler import Sampler
from loadtest.scenarios import USERS, Recorder
from loadtest.stack import REPO, Stack, StackError

SCENARIOS = ("baseline", "exhaustion", "spill", "timeout", "lock", "signup")  # the sample app's
# default seconds per scenario (exhaustion: per step, loadtest/stepped.py); with the drains and the mail check
# the default run takes about eight minutes, four of them the spill scenario (loadtest/spillrun.py)
DEFAULT_DURATION = {"baseline": 15, "timeout": 20, "lock": 15, "signup": 20}
SMOKE_DURATION = {"baseline": 4, "timeout": 6, "lock": 5, "signup": 6}


@dataclass
class RunConfig:
    scenarios: list[str] | None = None  # None: every sample scenario, or every class of the locustfile
    duration: float | None = None  # seconds per scenario (None: the defaults above)
    rate: float | None = None  # baseline's open-loop rate and the recommendation's target rate
    smoke: bool = False
    budget: float | None = None  # pool's --background-timeout, if the stack does not say
    respond_ms: int = 20
    background_ms: int = 60  # mean; short enough for ~40 req/s at 4 workers: 1,000 requests in under 30 s
    hold_ms: int = 300
    target_p99_ms: float = 100.0
    memory_mb: float = 2048.0
    out_dir: Path | None = None
    stack_file: str | None = None
    seed: int = 1
    target: str | None = None  # TARGET: any app behind nginx + fcgipool (needs locustfile)
    locustfile: str | None = None  # LOCUSTFILE: the user's scenarios (docs/loadtest.md, "Bring your own app")
    status_url: str | None = None  # STATUS_URL: default TARGET/pool-status
    request_log: str | None = None  # the target pool's request log, if readable here: exact occupancy and waits
    access_log: str | None = None  # the target nginx's JSON access log, likewise

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
        self.results = RunResults()
        self.workers = stack.workers()
        self.windows: dict[str, list[float]] = {}  # scenario -> [first send, last answer]: its request-log lines
        self.log_offset = requestlog.log_size(stack.request_log)

    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    # --- one scenario = snapshots around a locust run -------------------------------------------------------
    def drive(self, name: str, label: str, params: dict, duration: float, users: int = 1,
              user_cls: type | None = None) -> tuple[list, LocustView]:
        rec = Recorder()
        self.sampler.label = label
        params = {"scenario": name, "step": label, "run_id": self.run_id, "seed": self.cfg.seed, **params,
                  "duration": duration}
        started = time.time()
        locust_view = run_user(user_cls or USERS[name], self.stack.base_url, params, rec, users=users,
                               duration=duration, label=label, sampler=self.sampler)
        self.sampler.label = f"{label}:drain"
        if not self.stack.wait_idle(timeout=max(30.0, (self.cfg.budget or 0) * 3)):
            self.log(f"warning: pool still busy after {label}")
        win = self.windows.setdefault(name.removesuffix("-closed"), [started, started])
        win[1] = max(win[1], time.time())
        self.requests.extend(rec.rows)
        return rec.rows, LocustView(**locust_view, start=started, duration=duration, task_errors=rec.task_errors)

    def snapshot(self) -> tuple[dict, dict]:
        return self.stack.ledger(), self.stack.status()

    def baseline(self) -> Baseline:
        rate = self.cfg.rate or 30.0
        rows, view = self.drive("baseline", "baseline", {"rate": rate}, self.cfg.seconds("baseline"))
        return Baseline(rate=rate, latency=analysis.latency_summary(rows), locust=view)

    def exhaustion(self, base_ms: float) -> Stepped:
        cfg = self.cfg
        work = {"respond_ms": cfg.respond_ms, "background_ms": cfg.background_ms}
        est_occ = (cfg.respond_ms + cfg.background_ms + base_ms) / 1000
        plan = stepped.Plan(stepped.SMOKE_LOADS if cfg.smoke else stepped.STABLE_LOADS, stepped.OVERLOAD_LOAD)
        out = stepped.run_stepped(self, "exhaustion", USERS["exhaustion"], lambda rate: dict(work), est_occ, plan,
                                  answer_prefix="/work")
        # the top step once more, closed loop, as a default locust run would measure it
        top = out.steps[-1]
        users = self.workers * 2
        closed_s = max(4.0, top.duration_s / 2)
        params = {"rate": top.offered_rate, "users": users, **work}
        label = f"closed-loop@{top.offered_rate:g}/s"
        rows, view = self.drive("exhaustion-closed", label, params, closed_s, users=users)
        out.closed_loop = ClosedLoop(
            rate=top.offered_rate, users=users, duration=closed_s, latency=analysis.latency_summary(rows),
            throughput=round(analysis.step_throughput(rows, view.start + closed_s * 0.2, view.start + closed_s),
                             3))
        return out

    def user_scenario(self, name: str, cls: type) -> Stepped:
        """One class of the user's locustfile, stepped like exhaustion (its occupancy probed first)."""
        out = stepped.run_stepped(self, name, userfile.open_loop(cls), lambda rate: {}, None, userfile.plan_for(cls))
        out.normal = userfile.is_normal(cls)
        out.task_errors = sum(v.task_errors for v in out.locust or [])
        return out

    def timeout(self, budget: float, budget_source: str) -> Timeout:
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
        out.rate, out.locust, out.ledger_delta = rate, view, analysis.ledger_delta(led0, led1)
        if budget > 5:
            out.note = (f"the stack's budget is {budget:g} s, so few requests fit in {duration:g} s; start it "
                        "with FCGIPOOL_BACKGROUND_TIMEOUT=2 for a statistically useful run")
        out.budget_source = budget_source
        return out

    def lock(self) -> Lock:
        users = max(1, min(4, self.workers // 2))
        rows, view = self.drive("lock", "lock", {"hold_ms": self.cfg.hold_ms}, self.cfg.seconds("lock"), users=users)
        out = analysis.analyse_lock(rows, self.cfg.hold_ms)
        out.users, out.locust = users, view
        return out

    def signup(self) -> Signup:
        led0, _ = self.snapshot()
        rows, view = self.drive("signup", "signup", {}, self.cfg.seconds("signup"), users=5)
        accepted = [r["email"] for r in rows if r.get("email") and r["status"] == 202]
        deadline = time.time() + (10 if self.cfg.smoke else 30)
        text = self.stack.mail_text()
        while any(e not in text for e in accepted) and time.time() < deadline:
            time.sleep(1)
            text = self.stack.mail_text()
        led1, _ = self.snapshot()
        out = analysis.analyse_signup(rows, text, analysis.ledger_delta(led0, led1))
        out.locust = view
        return out

    # --- the whole run ----------------------------------------------------------------------------------------
    def sample_scenarios(self, names: list[str], budget: float, budget_source: str) -> None:
        res, cfg = self.results, self.cfg
        sc = res.scenarios
        base_ms = 5.0
        if "baseline" in names:
            sc["baseline"] = b = self.baseline()
            base_ms = b.latency.p50_ms or base_ms
        if "exhaustion" in names:
            sc["exhaustion"] = self.exhaustion(base_ms)
            res.stepped.append("exhaustion")
            res.normal.append("exhaustion")
        if "spill" in names:
            try:
                sc["spill"] = spillrun.run_spill(self, self.pool_capacity(base_ms), base_ms)
            except spillrun.Skipped as why:
                res.skipped["spill"] = str(why)
        if "timeout" in names and cfg.smoke and budget > 5:
            res.skipped["timeout"] = (
                f"the pool's background budget is {budget:g} s ({budget_source}), too long for a smoke run; "
                "start the stack with FCGIPOOL_BACKGROUND_TIMEOUT=2 (or pass --background-budget)")
        elif "timeout" in names:
            sc["timeout"] = self.timeout(budget, budget_source)
        if "lock" in names:
            sc["lock"] = self.lock()
        if "signup" in names:
            sc["signup"] = self.signup()

    def pool_capacity(self, base_ms: float) -> float:
        """req/s the pool serves running every task itself: exhaustion's measurement, else workers / occupancy."""
        exh = self.results.scenarios.get("exhaustion")
        measured = exh and isinstance(exh, Stepped) and (exh.capacity.measured_capacity or exh.expected_capacity)
        if measured:
            return float(measured)
        return self.workers / ((self.cfg.respond_ms + self.cfg.background_ms + base_ms) / 1000)

    def execute(self, user_classes: dict[str, type] | None = None) -> RunResults:
        cfg, res = self.cfg, self.results
        budget, budget_source = self.stack.background_budget(cfg.budget)
        cfg.budget = budget
        log_offset = accesslog.log_size(self.stack.access_log)
        res.run_id, res.started, res.workers, res.mode = self.run_id, time.time(), self.workers, self.stack.mode
        res.base_url, res.status_url, res.budget_s = self.stack.base_url, self.stack.status_url, budget
        res.budget_source, res.smoke, res.locustfile = budget_source, cfg.smoke, cfg.locustfile
        res.config = {k: v for k, v in vars(cfg).items() if k not in ("out_dir",)}
        if not self.stack.wait_idle(timeout=30):
            self.log("warning: the pool was busy before the run started")
        led_start = self.stack.ledger() if user_classes is None else None
        self.sampler.start()
        try:
            if user_classes is None:
                self.sample_scenarios(cfg.scenarios or list(SCENARIOS), budget, budget_source)
            else:
                for name, cls in user_classes.items():
                    res.scenarios[name] = one = self.user_scenario(name, cls)
                    res.stepped.append(name)
                    if one.normal:
                        res.normal.append(name)
        finally:
            self.sampler.stop()
        res.finished = time.time()
        if led_start is not None:
            res.ledger = {"before": led_start, "after": self.stack.ledger()}
        self.access = accesslog.read_from(self.stack.access_log, log_offset)
        res.nginx = NginxSummary(**accesslog.summarize(self.access)) if self.stack.access_log else None
        res.rss_mb_per_worker = self._rss()
        polls = [float(r["poll_ms"]) for r in self.sampler.rows if not r.get("error")]
        res.status_page_ms = StatusPage(samples=len(polls), p50=analysis.pct(polls, 0.5),
                                        max=analysis.pct(polls, 1.0),
                                        errors=sum(1 for r in self.sampler.rows if r.get("error")))
        res.recommendations = self._recommend()
        res.checks = checks.checks(res)
        return res

    def _rss(self) -> float | None:
        xs = [float(r["rss_mb_max"]) for r in self.sampler.rows if r.get("rss_mb_max") not in ("", None)]
        return round(max(xs), 1) if xs else None

    def _recommend(self) -> Recommendations:
        res = self.results
        normal = {n: s for n, s in res.stepped_scenarios() if n in res.normal}
        lat = [r["latency_ms"] / 1000 for r in self.requests
               if 200 <= r["status"] < 300 and r["scenario"] in ("baseline", "signup")]
        for s in normal.values():
            lat += s.answer_latency_samples_s
        p999 = model.quantile(lat, 0.999) if lat else 1.0
        targets = {n: self.cfg.rate or best_stable_rate(s) for n, s in normal.items()}
        # after-response times of every normal scenario (signup's mail, lock's hold too) from the request log
        names = [n for n in self.windows if n in res.normal or n in ("baseline", "lock", "signup")]
        wins = [self.windows[n] for n in names]
        if self.stack.request_log:
            time.sleep(1.2)  # workers write their request-log lines once a second
        after = [r.after_s for r in requestlog.read_from(self.stack.request_log, self.log_offset)
                 if 200 <= r.status < 400 and any(lo <= r.time <= hi for lo, hi in wins)]
        rec = advice.recommend(normal, res.one(Timeout), p999, res.rss_mb_per_worker,
                               target_rps=targets, target_p99_ms=self.cfg.target_p99_ms, memory_mb=self.cfg.memory_mb,
                               budget_now=self.cfg.budget, seed=self.cfg.seed,
                               after_s=(after, names) if after else None)
        rec.target = Target(rps=targets, p99_wait_ms=self.cfg.target_p99_ms, memory_mb=self.cfg.memory_mb)
        return rec


def best_stable_rate(sc: Stepped) -> float:
    """The highest arrival rate the run measured below 90 % utilisation: the advice's default target."""
    rates = [s.arrival_rate for s in sc.steps if s.phase == "stable" and s.stable
             and (s.utilization or 1) <= modelcheck.MAX_UTILIZATION]
    return max(rates) if rates else round((sc.expected_capacity or 0.0) * 0.5, 2)


def run(cfg: RunConfig) -> tuple[Path, RunResults]:
    from loadtest import report  # matplotlib only when there is something to draw

    user_classes = None
    if cfg.locustfile:
        user_classes = userfile.select(userfile.load(cfg.locustfile), cfg.scenarios)
        for cls in user_classes.values():
            userfile.plan_for(cls)  # a bad attribute fails now, not after minutes of load
            userfile.tasks_of(cls)
    elif cfg.target:
        raise StackError("TARGET needs LOCUSTFILE: the sample scenarios need the sample app's /ledger and mail "
                         "sink; write your scenarios as in loadtest/example_locustfile.py")
    else:
        unknown = [s for s in cfg.scenarios or SCENARIOS if s not in SCENARIOS]
        if unknown or cfg.scenarios == []:
            raise StackError(f"unknown scenario(s) {', '.join(unknown) or '(none given)'}; choose from "
                             f"{', '.join(SCENARIOS)}")
    if cfg.target:
        stack = Stack.for_target(cfg.target, cfg.status_url, cfg.request_log, cfg.access_log)
    else:
        stack = Stack.load(cfg.stack_file)
        if cfg.status_url:
            stack.status_url = cfg.status_url
    r = Run(cfg, stack)
    results = r.execute(user_classes)
    report.write(r.out, results, r.requests, r.sampler, r.access)
    if not math.isfinite(results.finished - results.started):
        raise RuntimeError("clock went backwards")
    return r.out, results
