"""The spill scenario's verdict and advice (loadtest/spillrun.py) on made-up steps; the scenario itself runs against
the stack in test_pipeline.py's smoke run."""

from __future__ import annotations

import copy
import dataclasses
import types

import pytest

from loadtest import checks, spillrun
from loadtest.results import Latency, RunResults, Spill, SpillStep, TaskCounts


def step(half: str, load: float, p99: float, *, spilled: int = 0, ran: int = 0, lost: int = 0, s502: int = 0,
         drain: float | None = 0.0, requests: int = 1200) -> SpillStep:  # fmt: skip
    tasks = TaskCounts(started=100, finished=100 - lost, failed=0, lost=lost, spilled=spilled, ran_in_queue=ran)
    latency = Latency(requests=requests, errors=0, status_5xx=s502, status_502=s502, status_504=0, p50_ms=p99 / 3,
                      p90_ms=p99 / 2, p99_ms=p99, max_ms=p99, send_p50_ms=p99 / 3, send_p99_ms=p99)
    return SpillStep(spill=half, load=load, offered_rate=40 * load, label=f"spill-{half}@{load:g}x", latency=latency,
                     throughput=40 * load, tasks=tasks, queue_depth_max=spilled // 2, drain_s=drain, depth_at_end=0)


def changed(s: SpillStep, change: dict) -> SpillStep:
    """``change``: step fields, or the latency's (p99_ms, status_502), or the task counts as a dict."""
    latency = {k: v for k, v in change.items() if k in ("p99_ms", "status_502", "requests")}
    own = {k: (TaskCounts(**v) if k == "tasks" else v) for k, v in change.items() if k not in latency}
    return dataclasses.replace(s, latency=dataclasses.replace(s.latency, **latency), **own)


def run_out(**top_on: object) -> Spill:
    on_top = changed(step("on", 2.0, 80.0, spilled=200, ran=200), top_on)
    out = Spill(loads=[0.25, 2.0], step_s=10.0, background_ms=60, capacity=40.0,
                steps=[step("off", 0.25, 50.0), step("off", 2.0, 4000.0), step("on", 0.25, 45.0), on_top])
    out.verdict = spillrun.verdict(out)
    out.advice = spillrun.advice(out)
    return out


def test_the_verdict_passes_when_spill_holds_the_p99_and_loses_nothing() -> None:
    v = run_out().verdict
    assert v.ok is True
    assert v.facts.on_p99_ratio == 1.6 and v.facts.off_p99_ratio == 80.0 and v.facts.spilled_not_run == 0


@pytest.mark.parametrize(
    "change, why",
    [
        ({"p99_ms": 101.0}, "p99 past 2x the unloaded 50 ms"),
        ({"status_502": 1}, "a 502"),
        ({"drain_s": None}, "the queue did not drain"),
        ({"tasks": {"started": 100, "finished": 99, "failed": 0, "lost": 1, "spilled": 200, "ran_in_queue": 200}},
         "a task lost"),
        ({"tasks": {"started": 100, "finished": 100, "failed": 0, "lost": 0, "spilled": 200, "ran_in_queue": 190}},
         "spilled tasks that never ran"),
    ],
)
def test_the_verdict_fails_on_each_broken_promise(change: dict, why: str) -> None:
    assert run_out(**copy.deepcopy(change)).verdict.ok is False, why


def test_p99s_on_too_few_requests_are_not_judged_the_rest_still_is() -> None:
    """A p99 of ~150 requests is nearly the slowest request (the reference's read 30-50 ms from run to run): the
    comparison is made only when both p99s rest on P99_REQUESTS requests. Losses and 502s are judged anyway."""
    few = {"p99_ms": 400.0, "requests": spillrun.P99_REQUESTS - 1}  # 8x the unloaded p99, on too few requests
    v = run_out(**few).verdict
    assert v.ok is True and not v.facts.judged and "needs 1000 requests" in v.facts.p99_not_judged
    check = next(c for c in checks.checks(RunResults(scenarios={"spill": run_out(**few)})) if "p99 within" in c.name)
    assert check.ok is None and "not judged" in check.detail
    assert run_out(**few, drain_s=None).verdict.ok is False, "the queue must still drain"
    broken = run_out(**few, status_502=1)
    check = next(c for c in checks.checks(RunResults(scenarios={"spill": broken})) if "p99 within" in c.name)
    assert broken.verdict.ok is False and check.ok is False, "a 502 fails it, judged p99 or not"


def test_the_two_judged_steps_run_until_they_have_their_requests() -> None:
    """The top load with spill on and the lowest with spill off (the reference) run until they have 1,100 requests;
    every other step, and every step of a smoke run, keeps its length."""
    loads, secs, n = spillrun.LOADS, spillrun.STEP_S, spillrun.step_seconds
    assert n("on", 2.0, loads, 94.0, secs, smoke=False) == secs, "1,128 requests in 12 s already"
    assert n("on", 2.0, loads, 60.0, secs, smoke=False) == 19  # 1,100 / 60 req/s
    assert n("off", 0.25, loads, 11.76, secs, smoke=False) == 94  # 1,100 / 11.76 req/s
    assert n("off", 0.25, loads, 2.0, secs, smoke=False) == spillrun.MAX_REFERENCE_S
    assert n("on", 2.0, loads, 5.0, secs, smoke=False) == spillrun.MAX_STEP_S
    for half, load in (("on", 0.25), ("off", 2.0), ("off", 1.5)):
        assert n(half, load, loads, 11.76, secs, smoke=False) == secs, f"{half} {load}x: not judged, not longer"
    assert n("off", 0.25, spillrun.SMOKE_LOADS, 11.76, 4.0, smoke=True) == 4.0


def test_the_spill_rate_comes_from_the_top_steps_own_length() -> None:
    out = run_out()
    out.steps[3].seconds = 20.0  # 200 tasks spilled in 20 s, not in step_s = 10
    assert spillrun.advice(out).spill_rate_per_s == 10.0


class _Ledger:
    """A stack whose ledger shows the last spilled job counted as run only at the third look."""

    def __init__(self) -> None:
        self.looks = 0

    def ledger(self) -> dict:
        self.looks += 1
        ran = 10 if self.looks >= 3 else 9
        return {"kinds": {"work": {"started": 10, "finished": ran, "spilled": 10, "ran_in_queue": ran}}}


def test_counting_waits_for_the_queues_last_running_job() -> None:
    """An empty queue may still have a job running: the step is counted once every spilled task has run."""
    run = types.SimpleNamespace(stack=_Ledger())
    before = dict.fromkeys(spillrun.EVENTS, 0)
    after = spillrun.wait_ran(run, before, timeout=5.0)
    assert after["ran_in_queue"] == after["spilled"] == 10 and run.stack.looks == 3
    stuck = types.SimpleNamespace(stack=types.SimpleNamespace(ledger=lambda: {"kinds": {"work": {"spilled": 3}}}))
    assert spillrun.wait_ran(stuck, before, timeout=0.3)["ran_in_queue"] == 0, "a task that never runs is reported"


def test_advice_sizes_the_queue_workers_from_the_measured_spill_rate() -> None:
    a = run_out().advice
    # 200 tasks in 10 s = 20/s x 60 ms = 1.2 workers busy; at 70 % busy: 2
    assert a.turn_on is True and a.spill_rate_per_s == 20.0 and a.queue_workers == 2
    assert "RQ_WORKERS=2" in a.queue_workers_why
    calm = run_out()
    calm.steps[1].latency.p99_ms = 90.0  # spill off at 2x no worse than on: spill is not needed
    assert spillrun.advice(calm).turn_on is False


def test_summary_lines_have_one_row_per_step_and_say_pass_or_fail() -> None:
    lines = run_out().table_lines()
    rows = [line for line in lines if line.startswith("| on") or line.startswith("| off")]
    assert len(rows) == 4
    assert any("PASS" in line for line in lines) and any("RQ_WORKERS=2" in line for line in lines)
    skipped = RunResults(skipped={"spill": "no queue"}).summary_lines()
    assert "  spill       SKIPPED: no queue" in skipped
