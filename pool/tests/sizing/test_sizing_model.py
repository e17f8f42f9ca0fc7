"""The sizing math (fcgipool.sizing.model, used by fcgipool advise and the load tests) against closed forms,
published Erlang values and a queue simulation."""

import heapq
import math
import random

import pytest
from fcgipool.sizing import model


def erlang_c_direct(c: int, a: float) -> float:
    """The textbook sum form, independent of the recursion used by the model."""
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


def test_erlang_c_published_mm3_example():
    # Gross & Harris M/M/3 with λ=2, μ=1 (and Mathematica's documented ErlangC[3, 2]) = 4/9.
    assert model.erlang_c(3, 2.0) == pytest.approx(4 / 9, rel=1e-12)
    est = model.predict(3, rate=2.0, occupancy=1.0)
    assert est.mean_queue == pytest.approx(8 / 9, rel=1e-12)  # Lq
    assert est.mean_wait == pytest.approx(4 / 9, rel=1e-12)  # Wq


def test_erlang_b_published_table_value():
    # Erlang B tables: 10 trunks offered 5 Erlangs block 1.84 %.
    assert model.erlang_b(10, 5.0) == pytest.approx(0.018384, abs=5e-6)
    assert model.erlang_c(10, 5.0) == pytest.approx(0.036105, abs=5e-6)


@pytest.mark.parametrize("rho", [0.1, 0.5, 0.9, 0.99])
def test_erlang_c_closed_forms_mm1_mm2(rho):
    assert model.erlang_c(1, rho) == pytest.approx(rho)
    assert model.erlang_c(2, 2 * rho) == pytest.approx(2 * rho**2 / (1 + rho))


@pytest.mark.parametrize(("c", "a"), [(4, 1.0), (4, 3.5), (8, 6.0), (16, 12.5), (32, 30.0)])
def test_erlang_c_matches_direct_sum(c, a):
    assert model.erlang_c(c, a) == pytest.approx(erlang_c_direct(c, a), rel=1e-10)


def test_overload_and_edges():
    assert model.erlang_c(4, 4.0) == 1.0
    assert model.erlang_c(4, 0.0) == 0.0
    est = model.predict(2, rate=30.0, occupancy=0.1)
    assert not est.stable and math.isinf(est.wait_quantile)
    with pytest.raises(ValueError):
        model.erlang_c(0, 1.0)
    with pytest.raises(ValueError):
        model.predict(2, 1.0, 0.0)


def test_wait_tail_formula():
    # P(W > t) = C exp(-(cμ-λ) t): the p99 wait solves C exp(-(cμ-λ)t) = 0.01.
    est = model.predict(4, rate=30.0, occupancy=0.1)
    c = model.erlang_c(4, 3.0)
    assert est.wait_quantile == pytest.approx(math.log(c / 0.01) / (40.0 - 30.0))
    # A quantile that most requests do not reach needs no wait at all.
    assert model.predict(8, rate=10.0, occupancy=0.1).wait_quantile == 0.0


def test_allen_cunneen_scales_waits():
    mm = model.predict(4, 30.0, 0.1, ca2=1.0, cs2=1.0)
    md = model.predict(4, 30.0, 0.1, ca2=1.0, cs2=0.0)
    assert md.p_wait == mm.p_wait
    assert md.mean_wait == pytest.approx(mm.mean_wait / 2)
    assert md.wait_quantile == pytest.approx(mm.wait_quantile / 2)


def simulate_waits(c, rate, service, n, seed):
    """FCFS c-server queue with Poisson arrivals; ``service`` draws a service time from a Random."""
    rng = random.Random(seed)
    free = [0.0] * c  # when each server is next free
    heapq.heapify(free)
    t = 0.0
    waits = []
    for _ in range(n):
        t += rng.expovariate(rate)
        start = max(t, heapq.heappop(free))
        waits.append(start - t)
        heapq.heappush(free, start + service(rng))
    return waits[n // 10 :]  # drop the warm-up


@pytest.mark.parametrize(
    ("name", "cs2", "service"),
    [
        ("exponential", 1.0, lambda r: r.expovariate(10.0)),
        ("deterministic", 0.0, lambda r: 0.1),
        ("uniform", 1 / 12, lambda r: r.uniform(0.05, 0.15)),
    ],
)
@pytest.mark.parametrize("rate", [30.0, 35.0])
def test_p99_wait_prediction_against_simulation(name, cs2, service, rate):
    waits = simulate_waits(4, rate, service, 200_000, seed=7)
    measured = model.quantile(waits, 0.99)
    est = model.predict(4, rate, 0.1, ca2=1.0, cs2=cs2)
    assert model.relative_error(est.wait_quantile, measured) < 0.15, (name, est.wait_quantile, measured)
    assert est.p_wait == pytest.approx(sum(w > 0 for w in waits) / len(waits), abs=0.01 if cs2 == 1.0 else 0.03)


def test_smallest_workers_and_memory_cap():
    need = model.smallest_workers(rate=30.0, occupancy=0.1, target_wait=0.05)
    assert need is not None
    assert model.predict(need, 30.0, 0.1).wait_quantile <= 0.05
    assert model.predict(need - 1, 30.0, 0.1).wait_quantile > 0.05
    assert model.smallest_workers(rate=1e6, occupancy=1.0, target_wait=0.01, max_workers=10) is None
    assert model.memory_cap(1024, 60.0, reserve_mb=100) == 15
    with pytest.raises(ValueError):
        model.memory_cap(1024, 0)


def test_lost_share_and_budget():
    times = [0.1 * i for i in range(1, 101)]  # 0.1 .. 10 s
    assert model.lost_share(times, 5.0) == pytest.approx(0.5)
    assert model.lost_share(times, 10.0) == 0.0
    assert model.lost_share([], 1.0) == 0.0
    budget = model.budget_for_loss(times, 0.01, headroom=1.0)
    assert model.lost_share(times, budget) <= 0.01
    assert model.cv2([1.0, 1.0, 1.0]) == 0.0
    assert model.cv2([1.0]) == 1.0


def test_quantile_ci_covers_the_true_quantile():
    rng = random.Random(11)
    true_p99 = -math.log(0.01)  # exponential(1)
    covered = 0
    for _ in range(200):
        lo, hi = model.quantile_ci([rng.expovariate(1.0) for _ in range(700)], 0.99)
        assert lo <= hi
        covered += lo <= true_p99 <= hi
    assert 0.88 <= covered / 200 <= 1.0  # a ~95 % interval
    assert all(math.isnan(x) for x in model.quantile_ci([], 0.99))
