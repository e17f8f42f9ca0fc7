"""The worker's own view of saturation (fcgipool.spill.policy.Spiller._full over Scoreboard.finishing): a task
spills at once when the other workers in after-response work, with this one, would pass the threshold -- without
waiting for the arbiter's flag, which is sampled every 0.1 s."""

from __future__ import annotations

from typing import Any

import pytest
from fcgipool.scoreboard import Scoreboard, WorkerState
from fcgipool.spill.policy import Spiller


@pytest.fixture
def board() -> Any:
    sb = Scoreboard(6)
    yield sb
    sb.close()


def worker(sb: Scoreboard, pid: int, state: WorkerState) -> int:
    index = sb.acquire(pid)
    sb.slot(index).set_state(state)
    return index


def test_finishing_counts_live_workers_other_than_the_caller(board: Scoreboard) -> None:
    me = worker(board, 100, WorkerState.FINISHING)
    worker(board, 101, WorkerState.FINISHING)
    worker(board, 102, WorkerState.RUNNING)
    worker(board, 103, WorkerState.IDLE)
    worker(board, 104, WorkerState.ENDING)  # exiting: neither busy nor live
    assert board.finishing(me) == (1, 3)
    assert board.finishing() == (2, 4)  # nobody left out (e.g. the arbiter)


def spiller(load: tuple[int, int] | None, threshold: float = 0.5) -> Spiller:
    return Spiller(target=None, when={"saturated"}, threshold=threshold,  # type: ignore[arg-type]
                   pool_load=None if load is None else (lambda: load))  # fmt: skip


@pytest.mark.parametrize(("busy", "live", "threshold", "spills"), [
    (0, 3, 0.5, False),  # 4 workers, this one the only one finishing
    (1, 3, 0.5, False),  # two finishing: the threshold (2 of 4) is reached, not passed
    (2, 3, 0.5, True),   # a third would pass it: the task goes to the queue
    (0, 1, 0.5, False),  # 2 workers: one may finish in the pool
    (1, 1, 0.5, True),   # ...and the other keeps answering
    (3, 3, 1.0, False),  # threshold 1: every worker may finish in the pool
])  # fmt: skip
def test_a_task_spills_when_this_worker_would_pass_the_threshold(busy: int, live: int, threshold: float,
                                                                 spills: bool) -> None:  # fmt: skip
    assert spiller((busy, live), threshold).reason("mail", stopping=False) == ("saturated" if spills else None)


def test_without_a_scoreboard_only_the_arbiters_flag_counts() -> None:
    assert spiller(None).reason("mail", stopping=False) is None
