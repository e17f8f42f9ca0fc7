"""Typed load-test results: one dataclass per scenario, each rendering its own summary lines, written to and
read from results.json in one place (loadtest/results/serial.py)."""

from loadtest.results.common import Check, Latency, LocustView, NginxSummary, StatusPage
from loadtest.results.run import RunResults, Scenario
from loadtest.results.sample import Baseline, Lock, LockWaits, Signup, Timeout
from loadtest.results.settings import Recommendations, Setting, Target, WorkersSetting
from loadtest.results.spill import Spill, SpillAdvice, SpillFacts, SpillStep, SpillVerdict, TaskCounts
from loadtest.results.stepped import Capacity, ClosedLoop, ModelPoint, Step, StepJudgement, Stepped, WaitCalibration
from loadtest.results.sweep import Agreement, SweepCalibration, SweepPoint, SweepResults

__all__ = [
           "Agreement",
           "Baseline",
           "Capacity",
           "Check",
           "ClosedLoop",
           "Latency",
           "Lock",
           "LockWaits",
           "LocustView",
           "ModelPoint",
           "NginxSummary",
           "Recommendations",
           "RunResults",
           "Scenario",
           "Setting",
           "Signup",
           "Spill",
           "SpillAdvice",
           "SpillFacts",
           "SpillStep",
           "SpillVerdict",
           "StatusPage",
           "Step",
           "StepJudgement",
           "Stepped",
           "SweepCalibration",
           "SweepPoint",
           "SweepResults",
           "Target",
           "TaskCounts",
           "Timeout",
           "WaitCalibration",
           "WorkersSetting",
]
