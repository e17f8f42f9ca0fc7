"""Modules gunicorn imports at start-up that a FastCGI pool never uses, loaded on first use instead.

gunicorn.util imports ``importlib.metadata`` (for ``egg:`` URIs) and ``email.utils`` (HTTP dates), and through
them ``email``, ``zipfile``, ``csv`` and more; ``html`` is for its HTTP error pages. A worker is forked from
the arbiter, so whatever the arbiter imported is in every worker's RSS: these cost 3.5 MB a process (24.6 ->
21.1 MB RSS for ``import fcgipool.cli, fcgipool.worker``, Python 3.11). :func:`install` (called by the
``fcgipool`` command before gunicorn is imported) puts a finder first on ``sys.meta_path`` that gives them a
:class:`importlib.util.LazyLoader`: ``import`` statements bind a module object, the module runs on its first
attribute access. Code that uses them (``gunicorn.util.http_date``, an ``egg:`` worker class) works unchanged.

A deferred module stays deferred only while nothing imports it again: a second plain ``import html`` reads the
module's ``__spec__``, and that first attribute access runs it (CPython 3.11). Until 2026-11-26 the status
page's ``import html`` and ``xml.sax.saxutils`` (through ``urllib.request``, which needs ``email.utils``) did
exactly that in the arbiter, so every worker ran ``html`` and ``email.utils``; without them a worker's RSS is
1.5 MiB lower with :func:`install` than without (20.5 against 22.0 MiB). ``pool/tests/test_pool_memory.py``
checks that they stay deferred in a worker.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

#: imported by gunicorn at start-up, used by none of fcgipool's paths (``ssl`` would be the largest, 5 MB, but
#: gunicorn.config reads its constants while it is imported)
DEFERRED = ("importlib.metadata", "email.utils", "html")


class _LazyFinder:
    """A meta path finder (duck-typed: ``importlib.abc`` would import ``importlib.resources``, 2 MB)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = frozenset(names)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = importlib.util.LazyLoader(spec.loader)
                return spec
        return None


def install(names: Sequence[str] = DEFERRED) -> None:
    """Defer ``names`` (those not imported yet) until first use. Once per process; a no-op after that."""
    if any(isinstance(f, _LazyFinder) for f in sys.meta_path):
        return
    pending = [name for name in names if name not in sys.modules]
    if pending:
        sys.meta_path.insert(0, _LazyFinder(pending))
