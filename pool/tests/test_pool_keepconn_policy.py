"""The keep-conn policy (fcgipool.keepconn) driven from tables: events in, decisions out, no sockets, no clock.

Each scenario is a list of steps ``(event, arguments, expected answer)`` played on one fresh policy; the pool
tests (test_pool_handoff*.py, test_pool_nginx_keepconn.py) show the same rules through real workers.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from fcgipool.keepconn import MAX_HELD, YIELD_AFTER, YIELD_WAIT, Action, KeepConnPolicy, Outcome
from fcgipool.watchdog import Watchdog

KEPT, CLOSED = Outcome.KEPT, Outcome.CLOSED
HOLD, PASS_ON, SERVE_LAST, CLOSE = Action.HOLD, Action.PASS_ON, Action.SERVE_LAST, Action.CLOSE
QUEUE = {"queue": True, "handoff_after": 0.005}  # under PoolArbiter, the default handoff_after
STRICT = {"queue": True, "handoff_after": 0.0}  # --handoff-after 0
PLAIN = {"queue": False, "handoff_after": 0.005}  # plain gunicorn: no hand-off queue

Step = tuple[str, tuple[Any, ...], Any]

SCENARIOS: dict[str, tuple[dict[str, Any], list[Step]]] = {
    "a round that holds connections asks for one reminder": (QUEUE, [
        ("round_begins", (2,), True),
        ("serving", (1,), False),  # the others stay while the round is young
        ("served", (KEPT, True), HOLD),
        ("holding", (2,), False),  # asked already this round
        ("round_ends", (), None),
    ]),
    "a round that holds nothing asks when a connection joins": (QUEUE, [
        ("round_begins", (0,), False),
        ("holding", (1,), True),
        ("holding", (2,), False),
    ]),
    "the reminder inside a request: pass the others on at once": (QUEUE, [
        ("round_begins", (3,), True),
        ("serving", (2,), False),
        ("reminder", (), True),
        ("served", (KEPT, True), HOLD),
        ("reminder", (), False),  # between two requests: due before the next
        ("holding", (1,), True),  # the reminder came: the next wait starts now
    ]),
    "the reminder between two requests: pass them on before the next one, once": (QUEUE, [
        ("round_begins", (2,), True),
        ("reminder", (), False),
        ("serving", (2,), True),
        ("serving", (1,), False),
    ]),
    "serving that asks to let go first has not started the request; asked again, it has": (QUEUE, [
        ("round_begins", (2,), True),
        ("reminder", (), False),
        ("serving", (2,), True),  # let go of the two, then ask again
        ("reminder", (), False),  # not inside the request yet: due before the next one
        ("serving", (0,), False),  # the request starts
        ("reminder", (), True),  # inside it: let go at once
    ]),
    "a round that ends first leaves them with the now idle worker": (QUEUE, [
        ("round_begins", (1,), True),
        ("reminder", (), False),
        ("round_ends", (), None),
        ("round_begins", (1,), True),
        ("serving", (1,), False),
    ]),
    "nothing to pass on: nothing due is used up": (QUEUE, [
        ("round_begins", (1,), True),
        ("reminder", (), False),
        ("serving", (0,), False),
        ("serving", (1,), True),
    ]),
    "handoff_after 0: the others go before every request, no reminder": (STRICT, [
        ("round_begins", (3,), False),
        ("serving", (2,), True),
        ("serving", (0,), False),
        ("holding", (1,), False),
    ]),
    "no queue: the others go before every request, each served last if a request waits on it": (PLAIN, [
        ("round_begins", (2,), False),
        ("serving", (1,), True),
        ("letting_go", ({"stopping": False},), SERVE_LAST),
        ("letting_go", ({"stopping": True},), PASS_ON),  # a stopping worker serves nothing more
    ]),
    "with a queue a connection let go is passed on": (QUEUE, [
        ("letting_go", ({"stopping": False},), PASS_ON),
        ("letting_go", ({"stopping": True},), PASS_ON),
    ]),
    "after serving: held, passed on by a stopping worker, or closed": (QUEUE, [
        ("served", (KEPT, True), HOLD),
        ("served", (KEPT, False), PASS_ON),
        ("served", (CLOSED, True), CLOSE),
        ("served", (CLOSED, False), CLOSE),
    ]),
    "after-response work ahead: a kept connection is passed on before it starts": (QUEUE, [
        ("work_ahead", (True,), PASS_ON),  # its next request is served by another worker at once
        ("work_ahead", (False,), CLOSE),  # not kept (stopping, given up, no FCGI_KEEP_CONN): END_REQUEST, close
    ]),
    "after-response work ahead with handoff_after 0: passed on too": (STRICT, [
        ("work_ahead", (True,), PASS_ON),
    ]),
    "after-response work ahead, no queue: closed (with the no-reuse marker)": (PLAIN, [
        ("work_ahead", (True,), CLOSE),
        ("work_ahead", (False,), CLOSE),
    ]),
    "after-response work ahead inside a request: the held ones go at the reminder, the served one is passed on": (
        QUEUE, [
            ("round_begins", (2,), True),
            ("serving", (1,), False),
            ("work_ahead", (True,), PASS_ON),
            ("reminder", (), True),  # arming the after-response budget gives the reminder at once
            ("served", (CLOSED, True), CLOSE),  # it left this worker already: nothing more to do with it
            ("round_ends", (), None),
        ],
    ),
    "past MAX_HELD the oldest is closed": (QUEUE, [
        ("must_evict", (MAX_HELD - 1,), False),
        ("must_evict", (MAX_HELD,), True),
    ]),
    "no queue: give up after YIELD_AFTER requests with a connection waiting": (PLAIN, [
        ("give_up", (False, 1.0), False),
        *[("give_up", (True, 1.0 + i * 0.001), False) for i in range(YIELD_AFTER - 1)],
        ("give_up", (True, 1.004), True),
        ("give_up", (True, 1.005), False),  # counted afresh
    ]),
    "no queue: give up after YIELD_WAIT seconds with a connection waiting": (PLAIN, [
        ("give_up", (True, 5.0), False),
        ("give_up", (True, 5.0 + YIELD_WAIT / 2), False),
        ("give_up", (True, 5.0 + YIELD_WAIT * 1.5), True),
    ]),
    "no queue: an empty listen queue starts the count again": (PLAIN, [
        *[("give_up", (True, 1.0), False) for _ in range(YIELD_AFTER - 1)],
        ("give_up", (False, 1.0), False),
        *[("give_up", (True, 1.0), False) for _ in range(YIELD_AFTER - 1)],
    ]),
}


@pytest.mark.parametrize("settings, steps", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_policy(settings: dict[str, Any], steps: list[Step]) -> None:
    policy = KeepConnPolicy(**settings)
    for i, (event, args, expected) in enumerate(steps):
        kwargs = args[0] if args and isinstance(args[0], dict) else {}
        answer = getattr(policy, event)(**kwargs) if kwargs else getattr(policy, event)(*args)
        assert answer == expected, f"step {i}: {event}{args} answered {answer!r}, expected {expected!r}"


@pytest.mark.parametrize(
    "settings, timed", [(QUEUE, True), (STRICT, False), (PLAIN, False)], ids=["queue", "strict", "plain"]
)
def test_only_a_queue_with_handoff_after_times_rounds(settings: dict[str, Any], timed: bool) -> None:
    assert KeepConnPolicy(**settings).timed is timed


def test_after_response_work_gives_the_round_its_reminder_at_once() -> None:
    """Arming the after-response budget is the policy's "after-response start" event: a round waiting for its
    reminder gets it in the calling thread (no clock thread here), once; a round that did not ask gets none."""
    calls: list[int] = []
    dog = Watchdog()
    dog.watch_rounds(60.0, lambda: calls.append(1))
    dog.round_begins()
    dog.arm(time.monotonic() + 10)
    assert calls == [], "a round that asked for nothing got a reminder"
    dog.want_reminder()
    dog.arm(time.monotonic() + 10)
    assert calls == [1]
    dog.arm(time.monotonic() + 10)
    assert calls == [1], "one reminder per wait"
    dog.round_ends()
    dog.disarm()
