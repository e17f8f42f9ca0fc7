"""An open-loop HTTP load generator for the sizing tests: requests go out at scheduled times (a Poisson
schedule), each on its own connection and never waiting for earlier answers, and latency is measured from the
*scheduled* time, so a request that waited for a worker carries the whole wait (no coordinated omission).

One asyncio loop drives several targets at once (``run``), so two pools can be measured side by side.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Sent", "poisson_schedule", "run"]


@dataclass(frozen=True)
class Sent:
    at: float  # scheduled offset from the start, s
    path: str
    latency_s: float  # from the scheduled time to the end of the answer
    status: int  # 0: no answer (error)
    error: str = ""


def poisson_schedule(rate: float, seconds: float, seed: int) -> list[float]:
    """Send offsets (s) of a Poisson process at ``rate`` per second over ``seconds``."""
    rng = random.Random(seed)
    out, t = [], rng.expovariate(rate)
    while t < seconds:
        out.append(t)
        t += rng.expovariate(rate)
    return out


async def _one(port: int, path: str, at: float, start: float, timeout: float) -> Sent:
    delay = start + at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: sizing\r\nConnection: close\r\n\r\n".encode())
            data = await reader.read()
            writer.close()
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
        return Sent(at, path, time.monotonic() - (start + at), status)
    except (OSError, TimeoutError, ValueError, IndexError) as exc:
        return Sent(at, path, time.monotonic() - (start + at), 0, f"{type(exc).__name__}: {exc}")


async def _all(loads: Sequence[tuple[int, Sequence[tuple[float, str]]]], timeout: float) -> list[list[Sent]]:
    start = time.monotonic() + 0.2  # let every task be created before the first send
    groups = [[asyncio.ensure_future(_one(port, path, at, start, timeout)) for at, path in plan]
              for port, plan in loads]  # fmt: skip
    return [list(await asyncio.gather(*g)) for g in groups]


def run(loads: Sequence[tuple[int, Sequence[tuple[float, str]]]], timeout: float = 30.0) -> list[list[Sent]]:
    """Send each target's ``(offset, path)`` plan to ``127.0.0.1:port``, all targets at once; returns the
    results per target, in plan order."""
    return asyncio.run(_all(loads, timeout))
