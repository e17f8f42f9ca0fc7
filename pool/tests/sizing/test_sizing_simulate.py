"""The discrete-event simulation (fcgipool.sizing.simulate) against queueing results that hold exactly: Erlang C
for M/M/c, Pollaczek-Khinchine for M/D/1, the M/M/1 wait tail, and no waiting at all for D/D/c below capacity."""

from __future__ import annotations

import math
import random

import pytest
from fcgipool.sizing import model
from fcgipool.sizing.simulate import simulate_waits, wait_stats


def exponential_sample(mean: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.expovariate(1 / mean) for _ in range(n)]


@pytest.mark.parametrize(("workers", "load"), [(1, 0.7), (2, 1.2), (4, 3.0), (8, 6.5)])
def test_mmc_matches_erlang_c(workers: int, load: float) -> None:
    """A large exponential sample replayed with Poisson arrivals is M/M/c: P(wait) = C(c, a), Wq = C / (cμ - λ)."""
    occupancy = 0.1
    rate = load / occupancy
    stats = wait_stats(simulate_waits(workers, rate, exponential_sample(occupancy, 200_000, seed=1),
                                      requests=400_000, seed=2))  # fmt: skip
    c = model.erlang_c(workers, load)
    assert stats.p_wait == pytest.approx(c, abs=0.015)
    assert stats.mean_wait_s == pytest.approx(c / (workers / occupancy - rate), rel=0.08)


def test_mm1_wait_tail() -> None:
    """M/M/1: P(W > t) = rho·exp(-(mu - lam)·t), so the p99 wait is ln(rho / 0.01) / (mu - lam)."""
    mu, lam = 10.0, 7.0
    stats = wait_stats(simulate_waits(1, lam, exponential_sample(1 / mu, 200_000, seed=3), requests=400_000, seed=4))
    assert stats.p99_wait_s == pytest.approx(math.log(0.7 / 0.01) / (mu - lam), rel=0.08)


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_md1_matches_pollaczek_khinchine(rho: float) -> None:
    """M/D/1: Wq = rho·S / (2·(1 - rho)) and P(wait) = rho."""
    service = 0.1
    stats = wait_stats(simulate_waits(1, rho / service, [service], requests=400_000, seed=5))
    assert stats.mean_wait_s == pytest.approx(rho * service / (2 * (1 - rho)), rel=0.06)
    assert stats.p_wait == pytest.approx(rho, abs=0.01)


def test_ddc_below_capacity_never_waits_and_above_it_always_does() -> None:
    assert wait_stats(simulate_waits(3, 29.0, [0.1], requests=5_000, ca2=0.0)).p_wait == 0.0
    over = wait_stats(simulate_waits(3, 31.0, [0.1], requests=5_000, ca2=0.0))
    assert over.p_wait > 0.9 and over.mean_wait_s > 0.1  # the queue grows for ever


def test_burstier_arrivals_wait_longer_about_as_allen_cunneen_says() -> None:
    """Gamma arrivals with ca² = 2 against Poisson: Allen-Cunneen scales the mean wait by (2 + 1) / (1 + 1) = 1.5."""
    svc = exponential_sample(0.1, 50_000, seed=6)
    poisson = wait_stats(simulate_waits(4, 30.0, svc, requests=300_000, seed=7))
    bursty = wait_stats(simulate_waits(4, 30.0, svc, requests=300_000, seed=7, ca2=2.0))
    assert 1.2 < bursty.mean_wait_s / poisson.mean_wait_s < 1.8


def test_replayed_poisson_gaps_give_erlang_c() -> None:
    """Measured inter-arrival gaps are replayed rescaled to the requested rate: Poisson gaps measured at 5/s,
    replayed at 30/s, behave like Poisson at 30/s."""
    rng = random.Random(8)
    gaps = [rng.expovariate(5.0) for _ in range(50_000)]
    stats = wait_stats(simulate_waits(4, 30.0, exponential_sample(0.1, 100_000, seed=9), requests=300_000, seed=10,
                                      interarrivals_s=gaps))  # fmt: skip
    assert stats.p_wait == pytest.approx(model.erlang_c(4, 3.0), abs=0.02)


def test_deterministic_for_a_seed_and_warmup_dropped() -> None:
    svc = exponential_sample(0.1, 1000, seed=11)
    a = simulate_waits(2, 15.0, svc, requests=10_000, seed=3)
    assert a == simulate_waits(2, 15.0, svc, requests=10_000, seed=3)
    assert a != simulate_waits(2, 15.0, svc, requests=10_000, seed=4)
    assert len(a) == 9_000 and len(simulate_waits(2, 15.0, svc, requests=10_000, warmup=0.0)) == 10_000


def test_wait_stats_and_bad_input() -> None:
    stats = wait_stats([0.0] * 90 + [0.1 * i for i in range(1, 11)])
    assert stats.requests == 100 and stats.p_wait == pytest.approx(0.10)
    assert stats.mean_wait_s == pytest.approx(5.5 / 100)
    assert stats.p99_wait_s == pytest.approx(model.quantile([0.0] * 90 + [0.1 * i for i in range(1, 11)], 0.99))
    assert math.isnan(wait_stats([]).p99_wait_s)
    for bad in ({"workers": 0}, {"rate": 0.0}, {"service_s": []}, {"service_s": [math.nan, -1.0]}):
        kwargs = {"workers": 2, "rate": 1.0, "service_s": [0.1], **bad}
        with pytest.raises(ValueError):
            simulate_waits(kwargs["workers"], kwargs["rate"], kwargs["service_s"], requests=10)
