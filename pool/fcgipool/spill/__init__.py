"""Spill: after-response tasks that the pool should not run itself go to a durable queue (Redis + RQ).

When (``--spill-when``): ``shutdown`` -- tasks not started when a worker stops; ``saturated`` -- while the pool is
full of finishing workers or connections wait; ``slow`` -- task names whose p95 passed ``--spill-slower-than``.
Every spilled task is reported (``on_task_spilled``, counters by reason); a queue that is away makes the pool run
the task itself (one log line per episode) -- nothing is lost because Redis is. docs/spill.md.
"""

from .policy import REASONS, Spiller
from .target import QueueAway, RQTarget, SpillRefused, import_path

__all__ = ["REASONS", "QueueAway", "RQTarget", "SpillRefused", "Spiller", "import_path"]
