"""The run's checks, each PASS / FAIL / n/a with the numbers behind it.

"hard" checks are correctness (nothing lost silently): `run` exits 1 when one fails. The others compare the
model with measurements, only where the run has enough samples (loadtest/modelcheck.py says how many).
"""

from __future__ import annotations

from loadtest import modelcheck
from loadtest.results import Check, Lock, RunResults, Signup, Spill, Stepped, Timeout


def stepped_checks(name: str, sc: Stepped) -> list[Check]:
    out = []
    cap = sc.capacity
    if cap.capacity_ok is not None:
        tol = cap.capacity_tolerance or 0.15
        se = sc.occupancy_se_s
        occ = f"{sc.occupancy_s} s" + (f" ± {se * 1000:.1f} ms ({sc.occupancy_n} requests)" if se else "")
        out.append(Check(name=f"{name}: capacity within {tol * 100:.0f} % of workers / occupancy",
                         ok=cap.capacity_ok, kind="capacity",
                         detail=f"measured {cap.measured_capacity} req/s vs {sc.expected_capacity} req/s = "
                                f"{sc.workers} / {occ} (error {cap.capacity_error}; the tolerance is 15 %, or two "
                                "standard errors of the occupancy's mean if wider)"))
    return out + modelcheck.summarize(sc.model_points, name)


def checks(results: RunResults) -> list[Check]:
    out = []
    for name, sc in results.stepped_scenarios():
        out += stepped_checks(name, sc)
    if t := results.one(Timeout):
        detail = f"ledger lost {t.ledger_lost}, pool counter {t.pool_lost}, sent over budget {t.sent_over_budget} " \
                 f"of {t.tasks_sent}"
        if not t.sent_over_budget and t.lost_agrees:
            detail += ": nothing was sent over the budget, so nothing could be lost (not judged)"
        out.append(Check(name="timeout: lost work agrees exactly with the ledger", hard=True, detail=detail,
                         ok=None if not t.sent_over_budget and t.lost_agrees else t.lost_agrees))
    if s := results.one(Signup):
        out.append(Check(name="signup: no mail lost", ok=s.no_mail_lost and s.signups_accepted > 0, hard=True,
                         detail=f"{s.mail_arrived} of {s.signups_accepted} accepted signups' mails arrived"))
    sp = results.one(Spill)
    if sp and sp.verdict and sp.verdict.ok is not None and (v := sp.verdict.facts):
        out.append(Check(name="spill: nothing lost, every spilled task ran in the queue, the queue drained",
                         ok=v.on_lost == 0 and v.spilled_not_run == 0 and v.drained, hard=True,
                         detail=f"{v.on_lost} lost, {v.spilled_not_run} spilled but not run, drained in "
                                f"{v.drain_s} s"))
        p99_ok = (v.on_p99_ratio is not None and v.on_p99_ratio <= 2.0) if v.judged else None
        out.append(Check(name=f"spill: at {max(sp.loads):g}x capacity p99 within 2x unloaded, 0 502/504",
                         ok=False if v.on_502_504 else p99_ok,  # a 502/504 fails it even when the p99s are not judged
                         detail=f"{v.p99_text()}, {v.on_502_504} 502/504"))
    if lk := results.one(Lock):
        out.append(Check(name="lock: release=late waits about the hold, early does not",
                         ok=lk.late_waits_about_hold and lk.early_does_not_wait,
                         detail=f"follow-up lock wait p50 late {lk.late.p50_ms} ms, early {lk.early.p50_ms} ms, "
                                f"hold {lk.hold_ms} ms"))
    return out
