"""What the arbiter gives the worker it is about to fork: its scoreboard slot and the pool's shared objects.

gunicorn builds the worker object with a fixed argument list just before it forks, so PoolArbiter sets a
:class:`SpawnContext` around ``spawn_worker`` (:func:`spawning`) and the worker's ``__init__`` reads it
(:func:`current`). Outside PoolArbiter (plain gunicorn) there is none: :data:`NO_POOL`, every field empty.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .handoff import HandoffQueue
from .keeper import Keeper
from .scoreboard import Scoreboard

if TYPE_CHECKING:  # a type only: importing fcgipool.spill at run time would load the spill policy into every worker
    from .spill.flags import PoolFlags


@dataclass(frozen=True)
class SpawnContext:
    scoreboard: Scoreboard | None = None
    slot: int | None = None  # the worker's scoreboard slot
    handoff: HandoffQueue | None = None  # idle kept connections passed between workers (fcgipool.handoff)
    keeper: Keeper | None = None  # the arbiter's copy of every kept connection (fcgipool.keeper)
    flags: PoolFlags | None = None  # pool-wide flags the arbiter sets for its workers (fcgipool.spill.flags)


NO_POOL = SpawnContext()
_current: ContextVar[SpawnContext] = ContextVar("fcgipool_spawn", default=NO_POOL)


@contextlib.contextmanager
def spawning(context: SpawnContext) -> Iterator[None]:
    """The arbiter, around gunicorn's ``spawn_worker``: the worker built inside reads ``context``."""
    token = _current.set(context)
    try:
        yield
    finally:
        _current.reset(token)


def current() -> SpawnContext:
    """The context of the worker being built right now; :data:`NO_POOL` outside PoolArbiter."""
    return _current.get()
