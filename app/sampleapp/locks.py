"""A per-user inter-process lock, the way PHP's file sessions lock: flock() on a file in a shared directory.

The lock belongs to the open file, so it survives the response when an after-response task keeps the file
open, and the kernel releases it if the holding worker is killed — nothing can leave a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from pathlib import Path

USER_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_POLL_S = 0.001


class LockTimeout(Exception):
    pass


class UserLock:
    def __init__(self, lock_dir: Path, user: str) -> None:
        self._fd: int | None = None
        if not USER_RE.fullmatch(user) or user in {".", ".."}:
            raise ValueError(f"invalid user name {user!r}")
        self.path = lock_dir / f"{user}.lock"
        self.wait_ms = 0.0

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, timeout_s: float) -> float:
        """Block until the lock is ours; return how long we waited (ms). Polls so a stuck holder cannot hang us."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o660)
        start = time.perf_counter()
        deadline = start + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.perf_counter() >= deadline:
                    os.close(fd)
                    raise LockTimeout(f"lock {self.path.name} still held after {timeout_s:g} s") from None
                time.sleep(_POLL_S)
        self._fd = fd
        self.wait_ms = (time.perf_counter() - start) * 1000.0
        return self.wait_ms

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            # Closing the descriptor drops the flock; no separate LOCK_UN needed.
            os.close(fd)

    def __del__(self) -> None:
        # A task that never ran (dropped, or a failing request) must not keep the user locked.
        self.release()
