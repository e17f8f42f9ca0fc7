"""Run a check in a forked child that has given up root, as a pool in an unprivileged container would."""

from __future__ import annotations

import os
from collections.abc import Callable

NOBODY = 65534


def passes_unprivileged(check: Callable[[], bool]) -> bool:
    """``check()`` in a child running as nobody (if we are root); True when it returned True without raising."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            code = 0 if check() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
