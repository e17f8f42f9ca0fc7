"""The typed results against real reports: results.json reads into the dataclasses and writes back equal (same
keys, same order), and the report's text and HTML are what main's dict-based code rendered from the same input
(fixtures/golden/, captured before the results were typed)."""

import json
from pathlib import Path

import pytest

from loadtest import checks, report
from loadtest.results import RunResults, SweepResults

FIXTURES = Path(__file__).parent / "fixtures"
RUNS = ["run_sample", "run_locustfile", "run_spill"]  # real reports: the sample app, a LOCUSTFILE, spill
IMAGES = ["workers_over_time.png", "listen_queue.png", "latency_vs_rate.png", "lost_vs_budget.png", "spill.png"]


def load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


@pytest.mark.parametrize("name", RUNS)
def test_results_json_reads_into_the_dataclasses_and_writes_back_equal(name):
    data = load(name)
    back = RunResults.from_dict(data).to_dict()
    assert back == data
    assert json.dumps(back, indent=2) == json.dumps(data, indent=2)  # the key order too


def test_a_sweeps_results_json_round_trips():
    data = load("sweep")
    assert SweepResults.from_dict(data).to_dict() == data


def test_an_unknown_key_is_an_error_not_silently_dropped():
    data = load("run_sample")
    data["scenarios"]["lock"]["new_field"] = 1
    with pytest.raises(ValueError, match="Lock: unknown key"):
        RunResults.from_dict(data)


def test_sample_lists_stay_in_memory_and_out_of_results_json():
    res = RunResults.from_dict(load("run_sample"))
    lock = res.scenarios["lock"]
    lock.early.samples = [1.0, 2.0]
    assert "samples" not in lock.to_dict()["early"] and lock.to_dict(clean=False)["early"]["samples"] == [1.0, 2.0]


def _variant(name: str) -> dict:
    if name != "run_sample_skipped":
        data = load(name)
    else:  # a smoke run whose timeout scenario was skipped, without an access log
        data = load("run_sample")
        del data["scenarios"]["timeout"]
        data["skipped"]["timeout"] = "the pool's background budget is 30 s, too long for a smoke run"
        data["nginx"] = None
    data["status_page_ms"]["samples"] = 321  # in memory; results.json never had it
    return data


@pytest.mark.parametrize("name", [*RUNS, "run_sample_skipped"])
def test_the_report_renders_as_before(name, tmp_path):
    images = []
    for img in IMAGES:
        (tmp_path / img).write_bytes(b"\x89PNG fake " + img.encode())
        images.append(tmp_path / img)
    res = RunResults.from_dict(_variant(name))
    assert report.markdown(res, images) == (FIXTURES / "golden" / f"{name}.md").read_text()
    assert report.index_html(res, images) == (FIXTURES / "golden" / f"{name}.html").read_text()


def test_the_sweep_summary_renders_as_before():
    res = SweepResults.from_dict(load("sweep"))
    assert "\n".join(res.summary_lines()) + "\n" == (FIXTURES / "golden" / "sweep.txt").read_text()


@pytest.mark.parametrize("name", RUNS)
def test_the_checks_read_back_from_the_fields_are_the_runs_own(name):
    data = load(name)
    res = RunResults.from_dict(data)
    assert [c.to_dict() for c in checks.checks(res)] == data["checks"]
