"""The model check and the advice on synthetic runs: a simulated pool the model describes must pass, a pool
with an extra delay the model does not know of must fail, and too few requests must be 'not judged'."""

import heapq
import random
from types import SimpleNamespace

import pytest
from fcgipool.sizing.logs import Request

from loadtest import advice, modelcheck, stepped, steps
from loadtest.results import Stepped

WORKERS, ANSWER_S = 4, 0.02


def after_s(rng: random.Random) -> float:
    return rng.uniform(0.03, 0.09)  # the sample exhaustion's after-response time: 60 ms mean


def simulate_step(label: str, phase: str, rate: float, duration: float, rng: random.Random, start: float,
                  extra_s: float = 0.0, logs: tuple[list, list] | None = None) -> dict:
    """Poisson arrivals on WORKERS FIFO workers, each held for the answer + its after-response time; the client
    sees the wait + the answer (+ 0.5 ms jitter, + ``extra_s`` the model knows nothing about)."""
    free = [start] * WORKERS
    rows, t = [], start
    while (t := t + rng.expovariate(rate)) < start + duration:
        begin = max(t, heapq.heappop(free))
        bg = after_s(rng)
        heapq.heappush(free, begin + ANSWER_S + bg)
        done = begin + ANSWER_S + abs(rng.gauss(0, 0.0005)) + extra_s
        if logs is not None:  # what the pool's request log and nginx's access log would say
            end = begin + ANSWER_S + 0.0002
            logs[0].append(Request(begin, "GET", "/work", "/work", 200, ANSWER_S, bg, (), 1, 0))
            logs[1].append({"msec": end, "request_time": end - t + 0.0001, "upstream_response_time": end - t,
                            "method": "GET", "uri": "/work?background_ms=60", "status": 200})
        rows.append({"scenario": "exhaustion", "step": label, "intended": t, "sent": t, "done": done,
                     "latency_ms": (done - t) * 1000, "service_ms": (done - t) * 1000, "status": 200, "error": "",
                     "bg_ms": round(bg * 1000, 3)})
    return {"label": label, "phase": phase, "rate": rate, "duration": duration, "start": start, "rows": rows}


def synthetic_run(seed: int, stable_s: float = 40.0, extra_s: float = 0.0, with_logs: bool = False) -> Stepped:
    rng = random.Random(seed)
    logs: tuple[list, list] | None = ([], []) if with_logs else None
    cap = WORKERS / (ANSWER_S + 0.06)
    plan = [("calibration", 0.25, 30.0), *(("stable", load, stable_s) for load in (0.5, 0.65, 0.8)),
            ("overload", 1.3, 14.0)]
    out, start = [], 1_000_000.0
    for phase, load, secs in plan:
        out.append(simulate_step(f"exhaustion@{cap * load:.1f}/s", phase, cap * load, secs, rng, start,
                                 extra_s if phase == "stable" else 0.0, logs))
        start += secs + 120  # the pool drains between steps
    log, access = logs or ([], [])
    return steps.analyse(out, WORKERS, sampler_rows=[], log=log, access_rows=access, seed=seed)


@pytest.fixture(scope="module")
def good_run():
    return synthetic_run(seed=7)


def test_a_pool_the_model_describes_passes_every_check(good_run):
    res = good_run
    assert res.occupancy_s == pytest.approx(ANSWER_S + 0.06, rel=0.05)
    assert res.capacity.capacity_ok, (res.capacity.measured_capacity, res.expected_capacity)
    checks = modelcheck.summarize(res.model_points, "exhaustion")
    assert [c.ok for c in checks] == [True, True, True, True], [c.detail for c in checks]
    # every prediction comes with an interval around its value
    for p in res.model_points:
        assert p.predicted[1] <= p.predicted[0] <= p.predicted[2]


def test_with_the_pools_logs_occupancy_and_waits_are_measured_per_request():
    res = synthetic_run(seed=11, with_logs=True)
    assert res.service_source.startswith("pool request log")
    assert res.calibration["server"].source == "nginx upstream time - pool answer time"
    assert res.calibration["server"].resolution_ms <= 0.5  # no client jitter in nginx - pool
    assert all(st.judged.wait_source.startswith("nginx") for st in res.steps if st.phase == "stable")
    assert res.occupancy_s == pytest.approx(ANSWER_S + 0.06, rel=0.05)
    checks = modelcheck.summarize(res.model_points, "exhaustion")
    assert [c.ok for c in checks] == [True, True, True, True], [c.detail for c in checks]


def test_p99_is_judged_only_on_steps_with_1000_requests(good_run):
    p99 = [p for p in good_run.model_points if p.quantity == "p99_wait_s"]
    assert len(p99) == 3
    for p in p99:
        assert (p.agrees is not None) == (p.requests >= 1000), p
    short = synthetic_run(seed=3, stable_s=12.0)  # 300-480 requests a step: a p99 rests on 3-5 samples
    checks = {c.name.split(" model ")[1].split(" within")[0]: c for c in
              modelcheck.summarize(short.model_points, "exhaustion")}
    assert checks["p99 wait"].ok is None and "fewer than the 1000" in checks["p99 wait"].detail
    assert checks["P(wait > tau)"].ok is not None and checks["mean wait"].ok is not None


def test_a_delay_the_model_does_not_know_of_fails_the_check():
    # every request waits 30 ms more than the queue explains (e.g. a lock the workers share)
    res = synthetic_run(seed=7, extra_s=0.03)
    checks = {c.name.split(" model ")[1].split(" within")[0]: c for c in
              modelcheck.summarize(res.model_points, "exhaustion")}
    assert checks["mean wait"].ok is False
    assert "measured longer than the model" in checks["mean wait"].detail


def test_calibration_noise_and_resolution():
    rng = random.Random(1)
    lat = [0.020 + abs(rng.gauss(0, 0.001)) for _ in range(500)]
    cal = modelcheck.Calibration.from_values(lat, "client latency")
    # half-normal noise, sigma 1 ms: p95 - p50 = (1.96 - 0.674) x 1 ms
    assert cal.resolution_s == pytest.approx(0.00129, rel=0.15) and cal.tau_s == pytest.approx(2 * cal.resolution_s)
    assert cal.false_wait < 0.02
    waits = modelcheck.measure_waits([x + 0.05 for x in lat], cal)  # everyone waits 50 ms
    assert waits["p_wait"][0] == pytest.approx(1.0, abs=0.01)
    assert waits["mean_wait_s"][0] == pytest.approx(0.05, abs=0.001)
    assert waits["mean_wait_s"][1] <= 0.05 <= waits["mean_wait_s"][2]


def test_plan_runs_each_stable_step_long_enough_for_a_p99():
    plan = stepped.Plan(stepped.STABLE_LOADS, stepped.OVERLOAD_LOAD)
    out = plan.steps(50.0, smoke=False, total_s=None)
    assert [p for p, _, _ in out] == ["stable", "stable", "stable", "overload"]
    for _, rate, secs in out[:3]:
        assert rate * secs >= stepped.TARGET_REQUESTS * 0.99
    slow = plan.steps(2.0, smoke=False, total_s=None)  # a slow pool: capped, its p99 goes unjudged
    assert all(secs <= stepped.MAX_STABLE_S for _, _, secs in slow)
    smoke = stepped.Plan(stepped.SMOKE_LOADS, stepped.OVERLOAD_LOAD).steps(50.0, smoke=True, total_s=None)
    assert sum(s for _, _, s in smoke) + stepped.calibration_seconds(True, None) <= 15


def test_advice_comes_from_normal_traffic_and_says_what_to_do_when_memory_bound(good_run):
    # the parts of the timeout scenario's result the advice may read
    timeout = SimpleNamespace(ledger_lost=7, ledger_started=30, background_samples_s=[20.0, 25.0, 30.0])
    rec = advice.recommend({"exhaustion": good_run}, timeout, 0.5, 40.0, target_rps={"exhaustion": 40.0},
                           target_p99_ms=100, memory_mb=4096, budget_now=2.0)
    # the timeout scenario's 20-30 s tasks never set the budget: the normal work is under 0.1 s
    assert rec.background_timeout.value == 1
    assert "not used here" in rec.background_timeout.reason
    w = rec.workers
    assert w.value == w.needed and w.value >= 5  # 40 req/s x 80 ms = 3.2 busy workers
    lo, value, hi = w.prediction["p99_wait_s"][1], w.prediction["p99_wait_s"][0], w.prediction["p99_wait_s"][2]
    assert lo <= value <= hi and hi <= 0.1  # the whole interval meets the target
    tight = advice.recommend({"exhaustion": good_run}, None, 0.5, 40.0, target_rps={"exhaustion": 40.0},
                             target_p99_ms=100, memory_mb=160, budget_now=2.0)
    reason = tight.workers.reason
    assert tight.workers.value == 3 and "MEMORY-BOUND" in reason  # (160 - 40) / 40
    assert "cannot keep up" in reason and "queue" in reason and "spill" in reason


def test_a_mix_of_routes_is_calibrated_per_route_and_an_assumed_occupancy_is_not_judged():
    rng = random.Random(5)
    answer = {"/": 0.001, "/search": 0.030}
    steps_in, start = [], 1_000_000.0
    for phase, rate, secs in (("calibration", 10.0, 30.0), ("stable", 20.0, 60.0)):
        rows, t = [], start
        while (t := t + rng.expovariate(rate)) < start + secs:  # light load: nobody waits
            name = rng.choice(list(answer))
            done = t + answer[name] + abs(rng.gauss(0, 0.0005))
            rows.append({"scenario": "Shop", "step": phase, "name": name, "intended": t, "sent": t, "done": done,
                         "latency_ms": (done - t) * 1000, "service_ms": (done - t) * 1000, "status": 200,
                         "error": ""})
        steps_in.append({"label": phase, "phase": phase, "rate": rate, "duration": secs, "start": start,
                         "rows": rows})
        start += secs + 100
    # no request log: the pool's counter says 10 ms of after-response work per request on average
    res = steps.analyse(steps_in, WORKERS, sampler_rows=[], log=[], access_rows=[], bg_seconds=0.01 * 300)
    assert "ASSUMED exponential" in res.service_source and not res.variability_measured
    stable = next(s for s in res.steps if s.phase == "stable")
    assert stable.judged.measured_p99_wait_ms < 3  # a search's 30 ms answer is its own, not a wait
    assert res.model_points and all(p.agrees is None and "variability was not measured" in p.why
                                    for p in res.model_points)
    rec = advice.recommend({"Shop": res}, None, 0.1, 40.0, target_rps={"Shop": 20.0}, target_p99_ms=100,
                           memory_mb=2048, budget_now=30.0)
    assert rec.background_timeout is None and "request log" in rec.not_derived["background_timeout"]


def test_p_wait_allows_for_the_calibrations_own_sampling_error():
    """Each step's P(wait) is corrected by the calibration step's false-wait share, itself a sample of ~150
    requests: a value below the interval by less than 3 of its standard errors agrees, one below by 4 does not,
    and a calibration with no sampling error (se 0) leaves no slack."""
    from fcgipool.sizing.predict import Interval

    interval = Interval(0.075, 0.039, 0.104)
    pred = SimpleNamespace(p_wait=interval, mean_wait_s=Interval(0.0029, 0.0013, 0.0067),
                           p90_wait_s=Interval(0.0067, 0.0, 0.0277), p99_wait_s=Interval(0.054, 0.034, 0.118))
    step = SimpleNamespace(label="exhaustion@22/s", arrival_rate=21.6, utilization=0.46, mean_loadavg=1.0, cores=2)
    cal = modelcheck.Calibration(0.0, 0.0, 0.006, 0.012, 0.04, "server", false_wait_se=0.016)
    low = modelcheck.p_wait_above(pred, cal.tau_s).low
    slack = 0.016 / (1 - 0.04)

    def agrees(p: float, c: modelcheck.Calibration) -> bool | None:
        measured = {"requests": 1061, "p_wait": (p, p - 0.02, p + 0.02)}
        return modelcheck.compare(step, measured, pred, c)[0].agrees

    assert agrees(low - 2 * slack, cal) is True
    assert agrees(low - 4 * slack, cal) is False
    assert agrees(low - 0.001, modelcheck.Calibration(0.0, 0.0, 0.006, 0.012, 0.04, "server")) is False


def test_the_false_wait_share_has_a_standard_error():
    cal = modelcheck.Calibration.from_values([0.02] * 144 + [0.5] * 6, "client latency")
    assert cal.false_wait == pytest.approx(0.04)
    assert cal.false_wait_se == pytest.approx((7 / 152 * (1 - 7 / 152) / 150) ** 0.5)
