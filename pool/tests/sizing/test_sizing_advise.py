"""``fcgipool advise`` on synthetic logs: the busiest window, the per-route split, timeouts and lost tasks, the
overload answer, the access log, and clear errors for logs it cannot use."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from fcgipool import cli
from fcgipool.sizing import advise as adv_mod
from fcgipool.sizing import advise_cli, rules
from fcgipool.sizing.advise import Advice, Options, advise, busiest_windows
from fcgipool.sizing.logs import LogError, match_waits, read_access_logs, read_request_logs
from fcgipool.sizing.predict import workers_for

T0 = 1795700000.0
FAST = Options(replications=6, requests=20_000)
MB = 2**20


def line(t: float, route: str, answer_s: float, after_s: float, *, outcome: str = "ok", pid: int = 100,
         rss: int = 40 * MB, status: int = 200) -> str:  # fmt: skip
    tasks = [{"name": "job", "outcome": outcome}] if after_s else []
    return json.dumps({"time": round(t, 3), "method": "GET", "uri": route, "route": route, "status": status,
                       "answer_ms": answer_s * 1000, "after_ms": after_s * 1000, "tasks": tasks, "pid": pid,
                       "cpu_ms": 1.0, "rss": rss})  # fmt: skip


def traffic(seconds: float, rate: Callable[[float], float], seed: int = 1, lost_every: int = 0) -> list[str]:
    """Poisson arrivals at ``rate(t)``: 70 % light "/" (10 ms answer), 30 % "/signup" (4 ms + 300 ms after)."""
    rng = random.Random(seed)
    out, t, n = [], T0, 0
    while t < T0 + seconds:
        t += rng.expovariate(rate(t - T0))
        n += 1
        if rng.random() < 0.3:
            lost = lost_every and n % lost_every == 0
            out.append(line(t, "/signup", 0.004, 2.0 if lost else rng.uniform(0.2, 0.4),
                            outcome="lost:timeout" if lost else "ok", pid=100 + n % 6))  # fmt: skip
        else:
            out.append(line(t, "/", rng.uniform(0.005, 0.015), 0.0, pid=100 + n % 6))
    return out


def write(path: Path, lines: list[str]) -> str:
    path.write_text("".join(x + "\n" for x in lines))
    return str(path)


def run(path: str, opts: Options = FAST) -> Advice:
    read = read_request_logs([path])
    return advise(read.items, opts)


def test_busiest_window_finds_the_burst() -> None:
    rng = random.Random(2)
    times, t = [], 0.0
    while t < 600:
        t += rng.expovariate(50.0 if 300 <= t < 360 else 10.0)
        times.append(t)
    windows = busiest_windows(times, 60.0)
    assert len(windows) == 3
    assert 280 <= windows[0].start <= 320 and windows[0].rate == pytest.approx(50.0, rel=0.15)
    assert all(w.rate <= windows[0].rate for w in windows[1:])
    for a in windows:  # non-overlapping
        assert all(a is b or a.end <= b.start or b.end <= a.start for b in windows)
    short = busiest_windows([0.0, 1.0, 2.0, 4.0], 60.0)
    assert len(short) == 1 and short[0].rate == pytest.approx(3 / 4)
    with pytest.raises(ValueError):
        busiest_windows([1.0], 60.0)


def test_routes_split_and_the_after_response_route_sets_the_size(tmp_path: Path) -> None:
    path = write(tmp_path / "r.log", traffic(300, lambda t: 20.0))
    res = run(path)
    signup, light = res.routes
    assert signup.route == "/signup" and light.route == "/"
    assert signup.worker_share > 0.8 and signup.share == pytest.approx(0.3, abs=0.05)
    assert signup.after_mean_ms == pytest.approx(300, rel=0.1) and light.after_mean_ms == 0
    assert signup.background_timeout_s == rules.background_timeout([0.4])  # p99.9 ~0.4 s x 1.5 -> 1 s
    # the worker count is what workers_for says for the busiest window's sample at 1.5 x its rate
    read = read_request_logs([path])
    peak = res.windows[0]
    sample = [r.occupancy_s for r in read.items if peak.start <= r.time <= peak.end]
    expect = workers_for(peak.rate * 1.5, sample, 100.0, replications=6, requests=20_000, ca2=res.ca2)
    assert res.workers == expect.workers and res.settings["workers"]["value"] == res.workers
    assert "after the response" in res.settings["workers"]["reason"]
    assert res.overload is None and res.memory["needed_mb"] == math.ceil((res.workers + 1) * 40)
    text = advise_cli.render(res, FAST, [path], [])
    assert "/signup holds the workers" in text and "--workers" in text and "fastcgi_read_timeout" in text


def test_timeouts_come_from_answer_times_and_lost_tasks_say_the_budget_is_too_small(tmp_path: Path) -> None:
    lines = traffic(120, lambda t: 10.0, lost_every=20)
    lines += [line(T0 + 121 + i, "/report", 5.0, 0.0) for i in range(3)]  # a slow answer: 3 x 5 s = 15 s
    res = run(write(tmp_path / "r.log", lines))
    assert res.settings["timeout"]["value"] == rules.worker_timeout(5.0) == 15
    assert res.settings["fastcgi_read_timeout"]["value"] == f"{rules.read_timeout(15)}s" == "20s"
    bg = res.settings["background_timeout"]
    assert "TOO SMALL" in bg["reason"] and "/signup" in bg["reason"]
    assert bg["value"] >= 4  # at least 2 x the 2 s where the tasks were cut
    signup = next(r for r in res.routes if r.route == "/signup")
    assert signup.tasks_lost_timeout > 0 and signup.cut_at_ms == pytest.approx(2000)


def test_overload_answer_when_memory_holds_too_few_workers(tmp_path: Path) -> None:
    path = write(tmp_path / "r.log", traffic(300, lambda t: 20.0))
    res = run(path, Options(replications=6, requests=20_000, memory_mb=160))  # 160 MB / 40 MB = 3 workers
    assert res.overload is not None and res.memory["cap_workers"] == 3 and res.workers is not None
    assert res.workers > 3
    ov = res.overload
    assert ov["heaviest_route"] == "/signup" and ov["heaviest_after_share"] > 0.8
    assert "queue" in ov["what_to_do"][0] and "--spill-to" in ov["what_to_do"][0]
    assert f"{(res.workers + 1) * 40} MB" in ov["what_to_do"][-1]
    text = advise_cli.render(res, FAST, [path], [])
    assert "OVERLOAD" in text and "with 3" in text.replace("With 3", "with 3")


def test_a_saturated_pool_without_access_log_is_flagged(tmp_path: Path) -> None:
    """One worker busy back to back: the log's rate is what it managed, not what arrived."""
    lines = [line(T0 + 0.5 * i, "/slow", 0.1, 0.4, pid=7) for i in range(400)]
    res = run(write(tmp_path / "r.log", lines))
    assert res.now["workers_seen"] == 1 and res.now["busy_share"] > 0.95
    assert any("--access-log" in w for w in res.warnings)


def access_line(arrival: float, upstream: float, uri: str, request_time: float | None = None) -> str:
    rt = request_time if request_time is not None else upstream + 0.001
    return json.dumps({"time": "x", "msec": round(arrival + rt, 3), "method": "GET", "uri": uri + "?q=1",
                       "status": 200, "request_time": rt, "upstream_response_time": f"{upstream:.3f}",
                       "upstream_status": "200"})  # fmt: skip


def test_access_log_gives_arrivals_and_measured_waits(tmp_path: Path) -> None:
    """Each request waited 50 ms for a worker: nginx's upstream time is 50 ms more than the pool's answer."""
    reqs, acc = [], []
    for i in range(300):
        arrival = T0 + i * 0.2
        reqs.append(line(arrival + 0.05, "/w", 0.01, 0.1, pid=1 + i % 3))
        acc.append(access_line(arrival, 0.06, "/w"))
    acc += ['{"msec": 1, "request_time": 0, "upstream_response_time": "-"}', "not json"]  # static file, garbage
    read = read_request_logs([write(tmp_path / "r.log", reqs)])
    access = read_access_logs([write(tmp_path / "a.log", acc)])
    assert len(access.items) == 300 and access.skipped == 1
    assert access.items[0].arrival == pytest.approx(T0, abs=1e-3) and access.items[0].path == "/w"
    matched = match_waits(read.items, access.items)
    assert len(matched) == 300 and all(w == pytest.approx(0.05, abs=0.002) for _, w in matched)
    res = advise(read.items, FAST, access.items, matched)
    assert res.now["measured_p99_wait_s"]["value"] == pytest.approx(0.05, abs=0.002)
    assert res.windows[0].rate == pytest.approx(5.0, rel=0.02)


def test_bad_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    lines = traffic(60, lambda t: 5.0)
    lines[3] = lines[3][:20]  # cut short
    lines[7] = json.dumps({"time": T0, "uri": "/x"})  # no answer_ms
    lines[9] = json.dumps({"time": T0, "uri": "/x", "answer_ms": "fast", "after_ms": 0})
    read = read_request_logs([write(tmp_path / "r.log", lines)])
    assert read.skipped == 3 and read.lines == len(lines)
    assert read.reasons[0].endswith(":4: not JSON (a line cut short by a crash or a full disk?)")
    assert "no 'answer_ms' field" in read.reasons[1] and "answer_ms is 'fast'" in read.reasons[2]


def test_logs_it_cannot_use_give_errors_that_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(LogError, match=r"does not exist.*--request-log PATH"):
        read_request_logs([str(tmp_path / "missing.log")])
    with pytest.raises(LogError, match="matches no file"):
        read_request_logs([str(tmp_path / "*.log")])
    with pytest.raises(LogError, match="is empty: let the pool serve traffic"):
        read_request_logs([write(tmp_path / "empty.log", [])])
    nginx = [access_line(T0 + i, 0.01, "/") for i in range(5)]
    with pytest.raises(LogError, match=r"none of the 5 lines.*--access-log"):
        read_request_logs([write(tmp_path / "nginx.log", nginx)])
    with pytest.raises(LogError, match="no line of the access log"):
        read_access_logs([write(tmp_path / "req.log", traffic(10, lambda t: 2.0))])


def test_globs_and_repeated_logs_are_read_together(tmp_path: Path) -> None:
    lines = traffic(120, lambda t: 10.0)
    half = len(lines) // 2
    write(tmp_path / "requests.log.1", lines[:half])
    write(tmp_path / "requests.log", lines[half:])
    read = read_request_logs([str(tmp_path / "requests.log*")])
    assert len(read.files) == 2 and len(read.items) == len(lines)
    assert [r.time for r in read.items] == sorted(r.time for r in read.items)


def test_cli_json_and_text_through_fcgipool_advise(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(adv_mod, "WHAT_IF_REPLICATIONS", 4)
    path = write(tmp_path / "r.log", [*traffic(120, lambda t: 10.0), "garbage"])
    fast = ["--replications", "4"]
    assert cli.main(["advise", "--request-log", path, "--json", "--p99-ms", "150", "--headroom", "1", *fast]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["workers"] == doc["settings"]["workers"]["value"] and doc["workers"] >= 1
    assert doc["options"]["p99_ms"] == 150 and doc["options"]["replications"] == 4 and doc["skipped_lines"] == 1
    assert doc["prediction"]["p99_wait_s"]["high"] <= 0.150
    assert set(doc["settings"]) >= {"workers", "timeout", "background_timeout", "fastcgi_read_timeout", "memory_mb"}
    assert advise_cli.main(["--request-log", path, "--memory-mb", "80", *fast]) == 0
    out = capsys.readouterr().out
    assert "OVERLOAD" in out and "note: 1 of" in out and "lines skipped" in out
    assert cli.main(["advise", "--request-log", str(tmp_path / "nope.log")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        advise_cli.main(["--request-log", path, "--headroom", "0"])


def test_requests_stopped_at_the_timeout_do_not_set_the_timeout(tmp_path: Path) -> None:
    """504s answered after the current --timeout (30 s) would make the rule recommend 90 s; they are reported."""
    lines = traffic(60, lambda t: 10.0)
    lines += [line(T0 + 61 + i, "/export", 30.0, 0.0, status=504) for i in range(5)]
    res = run(write(tmp_path / "r.log", lines))
    reason = res.settings["timeout"]["reason"]
    assert res.settings["timeout"]["value"] == rules.MIN_TIMEOUT_S
    assert "5 requests answered 504 after about 30.0 s" in reason
