"""Unit tests of the pieces that need no stack: arrivals, access log, sampler rows, stack file, analysis."""

import itertools
import json
import random
import statistics

import pytest

from loadtest import accesslog, analysis, arrivals, model
from loadtest.sampler import status_row
from loadtest.stack import Stack, StackError, rss_to_mb

# --- arrivals ---------------------------------------------------------------------------------------------


def test_poisson_schedule_has_the_rate_and_exponential_gaps():
    times = arrivals.poisson_schedule(50.0, 200.0, random.Random(3))
    assert len(times) == pytest.approx(10_000, rel=0.03)
    assert all(a < b for a, b in itertools.pairwise(times))
    gaps = arrivals.interarrivals(times)
    assert statistics.fmean(gaps) == pytest.approx(0.02, rel=0.03)
    assert model.cv2(gaps) == pytest.approx(1.0, abs=0.05)  # Poisson: ca² = 1
    assert arrivals.poisson_schedule(0, 10, random.Random(1)) == []


def test_truncated_lognormal_avoids_the_band_around_the_budget():
    rng = random.Random(5)
    values = [arrivals.truncated_lognormal_ms(rng, 600, 0.6, 10, 2000, (850, 1150)) for _ in range(2000)]
    assert all(10 <= v <= 2000 and not 850 <= v <= 1150 for v in values)
    assert 0.05 < sum(v > 1000 for v in values) / len(values) < 0.4  # some work exceeds the budget
    with pytest.raises(ValueError):
        arrivals.truncated_lognormal_ms(rng, 600, 0.6, 900, 1000, (800, 1100))


# --- nginx access log -------------------------------------------------------------------------------------

NGINX_LINES = [
    # what nginx's stack_json format writes (escape=json; upstream times are strings)
    '{"time":"2026-11-21T11:05:43+00:00","msec":1795000000.123,"method":"GET","uri":"/work?respond_ms=20",'
    '"status":200,"request_time":0.025,"upstream_connect_time":"0.000","upstream_header_time":"0.021",'
    '"upstream_response_time":"0.022","upstream_status":"200","bytes_sent":300}',
    '{"time":"2026-11-21T11:05:44+00:00","msec":1795000001.5,"method":"GET","uri":"/work","status":502,'
    '"request_time":0.001,"upstream_connect_time":"0.001, 0.002","upstream_header_time":"-",'
    '"upstream_response_time":"0.001, 0.002","upstream_status":"502, 502","bytes_sent":150}',
    '{"time":"2026-11-21T11:05:45+00:00","msec":1795000002.0,"method":"GET","uri":"/","status":504,'
    '"request_time":60.0,"upstream_connect_time":"","upstream_header_time":"","upstream_response_time":"60.001",'
    '"upstream_status":"504","bytes_sent":150}',
    "not json at all",
]


def test_access_log_reads_only_what_was_appended(tmp_path):
    log = tmp_path / "access.log"
    log.write_text("\n".join(NGINX_LINES[:1]) + "\n")
    offset = accesslog.log_size(str(log))
    with log.open("a") as fh:
        fh.write("\n".join(NGINX_LINES[1:]) + "\n")
    rows = accesslog.read_from(str(log), offset)
    assert [r["status"] for r in rows] == [502, 504]
    assert rows[0]["upstream_response_time"] == pytest.approx(0.003)  # two attempts, summed
    assert rows[0]["upstream_header_time"] is None
    assert accesslog.summarize(rows) == {"requests": 2, "status_502": 1, "status_504": 1, "status_5xx": 2,
                                         "status_2xx": 0, "upstream_response_p99_s": pytest.approx(0.003)}
    status_poll = dict(rows[0], uri="/pool-status?json", status=200)
    assert accesslog.summarize([*rows, status_poll])["requests"] == 2
    # a rotated (shorter) log is read from its start
    log.write_text(NGINX_LINES[0] + "\n")
    assert len(accesslog.read_from(str(log), offset + 10_000)) == 1
    assert accesslog.read_from(str(tmp_path / "missing.log"), 0) == []


def test_upstream_times_select_by_prefix_and_window(tmp_path):
    rows = [accesslog.parse_line(line) for line in NGINX_LINES[:3]]
    assert accesslog.upstream_times(rows, "/work", 1795000000.0, 1795000003.0) == [pytest.approx(0.022)]
    assert accesslog.upstream_times(rows, "/work", 1795000001.0, 1795000003.0) == []


# --- sampler ------------------------------------------------------------------------------------------------


def test_status_row_splits_answering_and_finishing():
    st = {"active processes": 5, "finishing processes": 3, "idle processes": 1, "total processes": 6,
          "listen queue": 7, "background tasks lost": 2}
    row = status_row(st, [40.0, 60.0])
    assert row["answering"] == 2 and row["finishing"] == 3 and row["listen_queue"] == 7 and row["bg_lost"] == 2
    assert row["rss_mb_mean"] == 50.0 and row["rss_mb_max"] == 60.0
    assert status_row({}, [])["answering"] == ""  # missing keys stay empty, never invented


def test_rss_units():
    assert rss_to_mb(50 * 1024 * 1024) == 50.0
    assert rss_to_mb("51200 kB") == 50.0


# --- stack file ---------------------------------------------------------------------------------------------


def test_stack_file_errors_say_what_to_do(tmp_path):
    with pytest.raises(StackError, match="make up"):
        Stack.load(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(StackError, match="not valid JSON"):
        Stack.load(bad)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"base_url": "http://127.0.0.1:1"}))
    with pytest.raises(StackError, match="mail_url, status_url"):
        Stack.load(partial)
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps({"mode": "docker", "base_url": "http://127.0.0.1:1", "mail_url": "x",
                              "status_url": "http://127.0.0.1:1/pool-status",
                              "compose": ["docker", "compose"], "unknown_key": 1}))
    st = Stack.load(ok)
    assert st.compose == ["docker", "compose"] and st.mode == "docker"
    with pytest.raises(StackError, match="make up"):
        st.status()  # nothing listens on port 1


# --- analysis -----------------------------------------------------------------------------------------------


def test_ledger_and_status_deltas():
    before = {"kinds": {"work": {"started": 5, "finished": 5, "failed": 0, "lost": 0}}}
    after = {"kinds": {"work": {"started": 9, "finished": 7, "failed": 0, "lost": 2},
                       "cart": {"started": 1, "finished": 1, "failed": 0, "lost": 0}}}
    d = analysis.ledger_delta(before, after)
    assert d["kinds"]["work"] == {"started": 4, "finished": 2, "failed": 0, "lost": 2}
    assert d["total"] == {"started": 5, "finished": 3, "failed": 0, "lost": 2}
    s = analysis.status_delta({"background tasks lost": 1, "background seconds": 1.5},
                              {"background tasks lost": 3, "background seconds": 4.0})
    assert s["background tasks lost"] == 2 and s["background seconds"] == 2.5


def _row(scenario, latency_ms, status=200, **extra):
    return {"scenario": scenario, "latency_ms": latency_ms, "service_ms": latency_ms, "status": status,
            "error": "" if status < 400 else f"HTTP {status}", **extra}


def test_timeout_agreement_is_exact():
    rows = [_row("timeout", 10, bg_ms=500, over_budget=False), _row("timeout", 10, bg_ms=1500, over_budget=True),
            _row("timeout", 10, bg_ms=1600, over_budget=True)]
    ledger = {"total": {"started": 3, "finished": 1, "failed": 0, "lost": 2}}
    res = analysis.analyse_timeout(rows, 1.0, ledger, {"background tasks lost": 2})
    assert res.lost_agrees and res.predicted_lost_share == pytest.approx(2 / 3, abs=1e-3)
    res = analysis.analyse_timeout(rows, 1.0, ledger, {"background tasks lost": 1})
    assert not res.lost_agrees


def test_the_timeout_scenario_sends_at_least_one_request_in_four_over_the_budget():
    """With the Compose stack's 30-s budget the scenario sends ~4 requests; the lognormal alone (~14 % over the
    budget) sent none in about half of the runs, and the lost-work check then had nothing to count."""
    for seed in range(50):
        rng, sent, over = random.Random(seed), [], 0
        for n in range(9):
            sent.append(arrivals.timeout_task_ms(rng, 30_000, n, over))
            over += sent[-1] > 30_000
        assert sent[0] > 34_500, seed  # the first, so that a run of one request has one
        assert over >= 3, seed
        assert all(not 25_500 <= ms <= 34_500 and 10 <= ms <= 60_000 for ms in sent)
    # without the rule, 9 draws from the lognormal alone: some seeds send none over the budget
    alone = [sum(arrivals.truncated_lognormal_ms(random.Random(s), 18_000, 0.6, 10, 60_000, (25_500, 34_500)) > 30_000
                 for _ in range(4)) for s in range(50)]
    assert 0 in alone
    # the budget near the longest task time: none can be drawn over 1.15 x, none is forced
    assert arrivals.timeout_task_ms(random.Random(1), 55_000, 0, 0) < 55_000


def test_the_lost_work_check_is_not_judged_when_nothing_was_sent_over_the_budget():
    from loadtest.checks import checks
    from loadtest.results import RunResults

    rows = [_row("timeout", 10, bg_ms=500, over_budget=False)]
    ledger = {"total": {"started": 1, "finished": 1, "failed": 0, "lost": 0}}
    timeout = analysis.analyse_timeout(rows, 1.0, ledger, {"background tasks lost": 0})
    [check] = [c for c in checks(RunResults(scenarios={"timeout": timeout})) if c.name.startswith("timeout")]
    assert check.ok is None and "not judged" in check.detail
    timeout = analysis.analyse_timeout(rows, 1.0, ledger, {"background tasks lost": 1})  # the pool lost one
    [check] = [c for c in checks(RunResults(scenarios={"timeout": timeout})) if c.name.startswith("timeout")]
    assert check.ok is False


def test_lock_and_signup_analysis():
    rows = [_row("lock", 5, role="follow", release="late", lock_wait_ms=295.0),
            _row("lock", 5, role="follow", release="early", lock_wait_ms=0.4),
            _row("lock", 5, role="first", release="late", lock_wait_ms=0.0)]
    res = analysis.analyse_lock(rows, 300)
    assert res.late_waits_about_hold and res.early_does_not_wait and res.late.n == 1
    rows = [_row("signup", 3, status=202, email="a@x.org"), _row("signup", 3, status=202, email="b@x.org"),
            _row("signup", 3, status=500, email="c@x.org")]
    res = analysis.analyse_signup(rows, '{"messages": [{"to": "a@x.org"}]}', {})
    assert res.signups_accepted == 2 and res.mail_missing == 1 and not res.no_mail_lost


def test_resize_signals_the_arbiter_in_both_modes(tmp_path, monkeypatch):
    import signal

    import loadtest.stack as stack_mod

    calls = []
    monkeypatch.setattr(stack_mod.subprocess, "run", lambda argv, **kw: calls.append(argv))
    docker = Stack(base_url="http://x", mail_url="m", status_url="s", mode="docker",
                   compose=["docker", "compose", "-p", "fcgipool"])
    docker.signal_pool(signal.SIGTTIN)
    assert calls == [["docker", "compose", "-p", "fcgipool", "kill", "-s", "SIGTTIN", "pool"]]
    with pytest.raises(StackError, match="compose"):
        Stack(base_url="http://x", mail_url="m", status_url="s", mode="docker").signal_pool(signal.SIGTTOU)
    sent = []
    monkeypatch.setattr(stack_mod.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    pidfile = tmp_path / "pool.pid"
    pidfile.write_text("4242\n")
    Stack(base_url="http://x", mail_url="m", status_url="s", pool_pidfile=str(pidfile)).signal_pool(signal.SIGTTOU)
    assert sent == [(4242, signal.SIGTTOU)]
    with pytest.raises(StackError, match="pool_pidfile"):
        Stack(base_url="http://x", mail_url="m", status_url="s").signal_pool(signal.SIGTTIN)


def test_budget_precedence(tmp_path, monkeypatch):
    st = Stack(base_url="http://x", mail_url="m", status_url="s", background_timeout=2.0)
    assert st.background_budget(5.0) == (5.0, "--background-budget")
    assert st.background_budget() == (2.0, "var/stack.json background_timeout")
    bare = Stack(base_url="http://x", mail_url="m", status_url="s")
    monkeypatch.setattr(Stack, "status", lambda self, full=False, timeout=5.0: {"background timeout": 3})
    assert bare.background_budget()[0] == 3.0
    monkeypatch.setattr(Stack, "status", lambda self, full=False, timeout=5.0: {})
    monkeypatch.setenv("FCGIPOOL_BACKGROUND_TIMEOUT", "4")
    assert bare.background_budget() == (4.0, "FCGIPOOL_BACKGROUND_TIMEOUT")
    monkeypatch.delenv("FCGIPOOL_BACKGROUND_TIMEOUT")
    value, source = bare.background_budget()
    assert value == 30.0 and source.startswith("assumed")
