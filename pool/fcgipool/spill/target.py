"""The queue a task spills to. RQ today; the seam is two methods, so a Celery target would be one more class:

- ``check(fn, args, kwargs) -> path``: refuse at ``background.add`` time what the queue could never run;
- ``enqueue(path, args, kwargs, *, name, reason, request_uri) -> job id``: raise :class:`QueueAway` when the
  queue does not answer (the task then runs in the pool).
"""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

#: seconds a connect or a command to Redis may take before the queue counts as away (a slow Redis must not hold
#: a worker: the task runs in the pool instead)
REDIS_TIMEOUT = 0.25


class SpillRefused(TypeError):
    """``background.add`` of a task the queue's workers could not run (not importable, arguments not picklable)."""


class QueueAway(Exception):
    """The queue did not take the task (Redis down, slow or refusing). ``job_id``: the id the job was sent with --
    it may be in the queue all the same, when Redis executed the enqueue and its reply died with the connection."""

    def __init__(self, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


# Takes a job back out of the queue, unless a worker has it already: 1 taken out (and its hash deleted), 2 taken
# by a worker (it will run), 0 never stored.
_WITHDRAW = """
if redis.call('LREM', KEYS[1], 0, ARGV[1]) > 0 then
    redis.call('DEL', KEYS[2])
    return 1
end
if redis.call('EXISTS', KEYS[2]) == 1 then
    return 2
end
return 0
"""


def import_path(fn: Callable[..., Any]) -> str:
    """``module.qualname`` of a module-level function the queue's workers can import; SpillRefused otherwise."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname or module == "__main__":
        raise SpillRefused(
            f"background.add({fn!r}): with spill on (--spill-to), a task must be a module-level function the "
            "queue's workers can import (not a lambda, a closure, a bound method or a function of __main__); "
            "move it to a module, or pass spill=False to keep it in the pool"
        )
    return f"{module}.{qualname}"


def check_arguments(path: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    try:
        pickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise SpillRefused(
            f"background.add({path}): with spill on (--spill-to), a task's arguments must be picklable for the "
            f"queue ({type(exc).__name__}: {exc}); pass plain data (ids, strings), or spill=False to keep the "
            "task in the pool"
        ) from exc


class RQTarget:
    """An RQ queue on Redis (``redis://host:port/db``). One connection per worker process, made after fork."""

    def __init__(self, url: str, queue: str = "fcgipool", *, timeout: float = REDIS_TIMEOUT) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
            raise ValueError(f"spill_to must be a Redis URL such as redis://127.0.0.1:6379/0, got {url!r}")
        try:
            from redis import Redis
            from rq import Queue
        except ImportError as exc:
            raise RuntimeError(
                f"spill_to is set ({url}) but RQ is not installed in this environment: pip install 'rq>=2' "
                "(or pip install 'fcgipool[spill]')"
            ) from exc
        self.url = url
        self.queue_name = queue
        connection = Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        self.queue = Queue(queue, connection=connection)

    def describe(self) -> str:
        return f"RQ queue {self.queue_name!r} at {self.url}"

    def check(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        path = import_path(fn)
        check_arguments(path, args, kwargs)
        return path

    def enqueue(self, path: str, args: tuple[Any, ...], kwargs: dict[str, Any], *, name: str, reason: str,
                request_uri: str) -> str:  # fmt: skip
        from redis.exceptions import RedisError

        job_id = str(uuid.uuid4())  # chosen here, so that a failed enqueue can be taken back (withdraw)
        try:
            job = self.queue.enqueue_call(path, args=args, kwargs=kwargs, description=name, job_id=job_id,
                                          meta={"fcgipool_reason": reason, "request_uri": request_uri})  # fmt: skip
        except (RedisError, OSError) as exc:
            raise QueueAway(f"{type(exc).__name__}: {exc}", job_id) from exc
        return str(job.id)

    def withdraw(self, job_ids: list[str]) -> tuple[list[str], list[str]]:
        """Take the jobs of failed enqueues back out of the queue (their tasks ran in the pool): (taken out, already
        taken by a queue worker -- those run twice). QueueAway when Redis does not answer."""
        from redis.exceptions import RedisError

        out: tuple[list[str], list[str]] = ([], [])
        try:
            for job_id in job_ids:
                found = self.queue.connection.eval(_WITHDRAW, 2, self.queue.key, self.queue.job_class.key_for(job_id),
                                                   job_id)  # fmt: skip
                if found:
                    out[int(found) - 1].append(job_id)
        except (RedisError, OSError) as exc:
            raise QueueAway(f"{type(exc).__name__}: {exc}") from exc
        return out

    def depth(self) -> int | None:
        """Jobs not yet started: waiting in the queue, or dequeued by a worker that has not started them -- for
        milliseconds, or until fcgipool's RQ worker puts a stranded one back (fcgipool.spill.stranded); None
        when Redis does not answer."""
        try:
            pipe = self.queue.connection.pipeline(transaction=False)
            pipe.llen(self.queue.key)
            pipe.llen(self.queue.intermediate_queue_key)
            return sum(int(n) for n in pipe.execute())
        except Exception:
            return None
