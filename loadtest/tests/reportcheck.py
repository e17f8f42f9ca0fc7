"""Consistency checks of a report folder, shared by the fake-stack test and the real-stack smoke test."""

from __future__ import annotations

import csv
import json
from pathlib import Path

REQUIRED = ["index.html", "report.md", "results.json", "requests.csv", "status.csv", "access.csv",
            "workers_over_time.png", "listen_queue.png"]
PER_SCENARIO = {"timeout": ["lost_vs_budget.png"], "lock": ["lock_wait.png"]}


def check_report(folder: Path) -> dict:
    """Assert the files exist and the numbers in results.json agree with the raw CSVs; returns results."""
    for name in REQUIRED:
        assert (folder / name).is_file(), f"{name} missing in {folder}"
    results = json.loads((folder / "results.json").read_text())
    sc = results["scenarios"]
    for scenario, files in PER_SCENARIO.items():
        if scenario in sc:
            for name in files:
                assert (folder / name).stat().st_size > 1000, f"{name} missing or empty"
    for scenario in results.get("stepped", []):  # the sample's exhaustion and every class of a LOCUSTFILE
        prefix = "" if scenario == "exhaustion" else f"{scenario}_"
        assert (folder / f"{prefix}latency_vs_rate.png").stat().st_size > 1000, f"{scenario}: no latency plot"
    html = (folder / "index.html").read_text()
    assert html.count("data:image/png;base64,") >= 2, "plots are not embedded in index.html"
    assert "src='http" not in html and 'src="http' not in html, "index.html must be self-contained"

    with (folder / "requests.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    by_scenario: dict[str, list[dict]] = {}
    for r in rows:
        by_scenario.setdefault(r["scenario"], []).append(r)
        assert float(r["latency_ms"]) >= float(r["service_ms"]) - 1e-6, "latency counts from the intended send"
    if "baseline" in sc:
        assert sc["baseline"]["requests"] == len(by_scenario["baseline"])
    for scenario in results.get("stepped", []):
        exh = sc[scenario]
        mine = [r for r in by_scenario[scenario] if not r["step"].endswith(":probe")]
        assert sum(s["requests"] for s in exh["steps"]) == len(mine), scenario
        assert exh["steps"][0]["phase"] == "calibration"
        assert exh["expected_capacity"] > 0 and exh["occupancy_s"] > 0
        assert abs(exh["expected_capacity"] - exh["workers"] / exh["occupancy_s"]) < 0.01 * exh["expected_capacity"]
        for p in exh["model_points"]:  # every prediction carries its interval; a judged one its measurement
            lo, value, hi = p["predicted"][1], p["predicted"][0], p["predicted"][2]
            assert lo is not None and lo <= value and (hi is None or value <= hi), p  # hi None: unbounded
            assert (p["agrees"] is None) == ("measured" not in p), p
    if "timeout" in sc:
        t = sc["timeout"]
        over = sum(1 for r in by_scenario["timeout"] if r["over_budget"] == "True" and 200 <= int(r["status"]) < 300)
        assert t["sent_over_budget"] == over
        assert t["lost_agrees"] == (t["ledger_lost"] == t["pool_lost"] == t["sent_over_budget"])
    if "signup" in sc:
        s = sc["signup"]
        accepted = sum(1 for r in by_scenario["signup"] if r["email"] and r["status"] == "202")
        assert s["signups_accepted"] == accepted
        assert s["mail_arrived"] + s["mail_missing"] == accepted
    with (folder / "status.csv").open() as fh:
        status_rows = list(csv.DictReader(fh))
    assert status_rows, "the sampler wrote no rows"
    for r in status_rows:
        if r["active"] and r["finishing"]:
            assert int(r["finishing"]) <= int(r["active"]) <= int(r["total"]), r
    names = {c["name"] for c in results["checks"]}
    for scenario in sc:
        assert scenario == "baseline" or any(scenario in n for n in names), f"no check for {scenario}"
    rec = results["recommendations"]
    for key in ("timeout", "fastcgi_read_timeout"):
        assert rec[key]["value"] and rec[key]["reason"]
    if rec.get("workers", {}).get("prediction"):
        assert "[" in rec["workers"]["reason"], "the workers advice states its prediction's interval"
    return results


if __name__ == "__main__":  # CI: python -m loadtest.tests.reportcheck loadtest/reports/<run>
    import sys

    res = check_report(Path(sys.argv[1]))
    failed = [c for c in res["checks"] if c.get("hard") and c["ok"] is False]
    print(f"report {sys.argv[1]}: files present, numbers consistent; {len(res['checks'])} checks, "
          f"{len(failed)} correctness failures")
    sys.exit(1 if failed else 0)
