"""Predictions with intervals (fcgipool.sizing.predict): the interval covers the truth, the closed form is used
where the simulation agrees with it and the simulation where not, and workers_for picks the smallest count."""

from __future__ import annotations

import math
import random

import pytest
from fcgipool.sizing import model
from fcgipool.sizing.predict import CLOSED_FORM, SIMULATION, Interval, predict_wait, workers_for

FAST = {"replications": 10, "requests": 20_000}  # enough for the logic; the defaults are for real advice


def exponential(mean: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.expovariate(1 / mean) for _ in range(n)]


def lognormal(mean: float, sigma: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    xs = [rng.lognormvariate(0, sigma) for _ in range(n)]
    m = sum(xs) / len(xs)
    return [x / m * mean for x in xs]


def test_exponential_service_agrees_with_erlang_c_and_intervals_are_ordered() -> None:
    p = predict_wait(4, 30.0, exponential(0.1, 5000, seed=1), **FAST)
    assert p.stable and p.method == CLOSED_FORM and p.agreed
    assert p.p99_wait_s.value == p.closed_form["p99_wait_s"]
    for iv in (p.p_wait, p.mean_wait_s, p.p90_wait_s, p.p99_wait_s):
        assert iv.low <= iv.value <= iv.high
    assert 0 < p.p_wait.value < 1 and p.mean_wait_s.value < p.p90_wait_s.value < p.p99_wait_s.value
    exact = model.predict(4, 30.0, 0.1)  # the truth the sample was drawn from
    assert p.p99_wait_s.contains(exact.wait_quantile) and p.p_wait.contains(exact.p_wait)


def test_heavy_tailed_service_uses_the_simulation_and_says_why() -> None:
    """Lognormal sigma=1.5 (cs² ≈ 7) at 8 workers, utilisation 0.5: Allen-Cunneen doubles the simulated p99 wait
    (1M simulated requests: 180 against 89 ms, docs/loadtest.md)."""
    p = predict_wait(8, 40.0, lognormal(0.1, 1.5, 20_000, seed=2), replications=20)
    assert p.method == SIMULATION and not p.agreed
    assert p.p99_wait_s.value == p.simulated["p99_wait_s"].value
    assert not p.p99_wait_s.contains(p.closed_form["p99_wait_s"])
    assert "closed form outside the simulation's interval" in p.notes and "p99 wait" in p.notes


def test_overload_is_unbounded() -> None:
    p = predict_wait(2, 30.0, [0.1] * 100)
    assert not p.stable and p.utilization == pytest.approx(1.5)
    assert math.isinf(p.p99_wait_s.value) and p.p_wait.value == 1.0 and "grows without bound" in p.notes


def test_a_small_sample_gives_a_wide_interval_and_says_so() -> None:
    small = predict_wait(4, 30.0, exponential(0.1, 40, seed=3), **FAST)
    large = predict_wait(4, 30.0, exponential(0.1, 5000, seed=3), **FAST)
    width = lambda iv: iv.high - iv.low  # noqa: E731
    assert width(small.p99_wait_s) > 2 * width(large.p99_wait_s)
    assert "only 40 service times" in small.notes


def test_deterministic_for_a_seed() -> None:
    svc = exponential(0.1, 500, seed=4)
    assert predict_wait(3, 20.0, svc, seed=7, **FAST) == predict_wait(3, 20.0, svc, seed=7, **FAST)
    assert predict_wait(3, 20.0, svc, seed=7, **FAST) != predict_wait(3, 20.0, svc, seed=8, **FAST)


@pytest.mark.slow
def test_the_interval_covers_the_true_p99_most_of_the_time() -> None:
    """Coverage sanity: 20 exponential samples of 1000 service times; the true M/M/4 p99 wait (exact for them)
    must fall inside the interval in most. A percentile bootstrap of a convex statistic under-covers a little:
    60 samples of 300 gave 90 % with 40 replications (nominal 95 %)."""
    true = model.predict(4, 30.0, 0.1).wait_quantile
    covered = sum(
        predict_wait(4, 30.0, exponential(0.1, 1000, seed=100 + k), seed=k, requests=20_000).p99_wait_s.contains(true)
        for k in range(20)
    )
    assert covered >= 15, covered


def test_workers_for_is_the_smallest_count_meeting_the_target_by_the_upper_end() -> None:
    svc = exponential(0.1, 3000, seed=5)
    adv = workers_for(30.0, svc, 150.0, **FAST)
    assert adv.workers is not None and adv.prediction is not None and adv.fewer is not None
    assert adv.prediction.workers == adv.workers and adv.fewer.workers == adv.workers - 1
    assert adv.prediction.p99_wait_s.high <= 0.150 < adv.fewer.p99_wait_s.high
    by_value = workers_for(30.0, svc, 150.0, end="value", **FAST)
    assert by_value.workers is not None and by_value.workers <= adv.workers
    assert by_value.prediction is not None and by_value.prediction.p99_wait_s.value <= 0.150


def test_workers_for_walks_down_from_a_pessimistic_closed_form() -> None:
    """The heavy-tailed mix where Allen-Cunneen is too pessimistic: the simulation allows fewer workers than the
    closed form's answer, and workers_for finds them."""
    svc = lognormal(0.1, 1.5, 20_000, seed=2)
    closed = model.smallest_workers(40.0, 0.1, 0.150, cs2=model.cv2(svc))
    adv = workers_for(40.0, svc, 150.0, end="value", replications=20)
    assert closed is not None and adv.workers is not None and adv.workers < closed


def test_workers_for_gives_up_past_max_workers_and_rejects_bad_input() -> None:
    assert workers_for(1000.0, [1.0] * 10, 10.0, max_workers=20, **FAST).workers is None
    with pytest.raises(ValueError):
        workers_for(1.0, [], 10.0)
    with pytest.raises(ValueError):
        workers_for(1.0, [0.1], 10.0, end="low")
    with pytest.raises(ValueError):
        predict_wait(0, 1.0, [0.1])


def test_interval_helpers() -> None:
    iv = Interval(2.0, 1.0, 3.0)
    assert iv.contains(1.0) and not iv.contains(3.5)
    assert iv.scaled(1000) == Interval(2000.0, 1000.0, 3000.0)
    assert iv.as_dict() == {"value": 2.0, "low": 1.0, "high": 3.0}
