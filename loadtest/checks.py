"""The run's checks, each PASS / FAIL / n/a with the numbers behind it.

"hard" checks are correctness (nothing lost silently): `run` exits 1 when one fails. The others compare the
model with measurements, only where the run has enough samples (loadtest/modelcheck.py says how many).
"""

from __future__ import annotations

from loadtest import modelcheck


def stepped_checks(name: str, sc: dict) -> list[dict]:
    out = []
    if sc.get("capacity_ok") is not None:
        tol = sc.get("capacity_tolerance") or 0.15
        se = sc.get("occupancy_se_s")
        occ = f"{sc['occupancy_s']} s" + (f" ± {se * 1000:.1f} ms ({sc['occupancy_n']} requests)" if se else "")
        out.append({"name": f"{name}: capacity within {tol * 100:.0f} % of workers / occupancy",
                    "ok": sc["capacity_ok"], "kind": "capacity",
                    "detail": f"measured {sc['measured_capacity']} req/s vs {sc['expected_capacity']} req/s = "
                              f"{sc['workers']} / {occ} (error {sc['capacity_error']}; the tolerance is 15 %, or two "
                              "standard errors of the occupancy's mean if wider)"})
    return out + modelcheck.summarize(sc["model_points"], name)


def checks(results: dict) -> list[dict]:
    sc = results["scenarios"]
    out = []
    for name in results.get("stepped", []):
        if name in sc:
            out += stepped_checks(name, sc[name])
    t = sc.get("timeout")
    if t:
        out.append({"name": "timeout: lost work agrees exactly with the ledger", "ok": t["lost_agrees"], "hard": True,
                    "detail": f"ledger lost {t['ledger_lost']}, pool counter {t['pool_lost']}, sent over budget "
                              f"{t['sent_over_budget']} of {t['tasks_sent']}"})
    s = sc.get("signup")
    if s:
        out.append({"name": "signup: no mail lost", "ok": s["no_mail_lost"] and s["signups_accepted"] > 0, "hard": True,
                    "detail": f"{s['mail_arrived']} of {s['signups_accepted']} accepted signups' mails arrived"})
    sp = sc.get("spill")
    if sp and sp.get("verdict", {}).get("ok") is not None:
        v = sp["verdict"]
        out.append({"name": "spill: nothing lost, every spilled task ran in the queue, the queue drained",
                    "ok": v["on_lost"] == 0 and v["spilled_not_run"] == 0 and v["drained"], "hard": True,
                    "detail": f"{v['on_lost']} lost, {v['spilled_not_run']} spilled but not run, drained in "
                              f"{v['drain_s']} s"})
        out.append({"name": f"spill: at {max(sp['loads']):g}x capacity p99 within 2x unloaded, 0 502/504",
                    "ok": v["on_p99_ratio"] is not None and v["on_p99_ratio"] <= 2.0 and v["on_502_504"] == 0,
                    "detail": f"p99 {v['on_p99_ms']:.0f} ms = {v['on_p99_ratio']}x the unloaded "
                              f"{v['unloaded_p99_ms']:.0f} ms (spill off: {v['off_p99_ratio']}x), "
                              f"{v['on_502_504']} 502/504"})
    lk = sc.get("lock")
    if lk:
        out.append({"name": "lock: release=late waits about the hold, early does not",
                    "ok": lk["late_waits_about_hold"] and lk["early_does_not_wait"],
                    "detail": f"follow-up lock wait p50 late {lk['late']['p50_ms']} ms, early "
                              f"{lk['early']['p50_ms']} ms, hold {lk['hold_ms']} ms"})
    return out
