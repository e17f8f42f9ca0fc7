"""fcgipool's optional C parts, and which of them this process runs.

Three hot spots are in C when a compiler was there at install time (pool/setup.py): the FastCGI PARAMS decoder
(``fcgipool.protocol._cparams``), the scoreboard slot's per-request writes (``fcgipool.scoreboard._cslot``) and the
request log's rows (``fcgipool._crequestlog``). The first two took worker CPU per request in ``make bench`` from
~27 to ~20 µs (docs/benchmarks.md). Each has a
pure-Python twin that runs without them, is tested against them, and is what ``FCGIPOOL_NO_EXTENSIONS=1``
selects (as aiohttp's and yarl's ``*_NO_EXTENSIONS``). The arbiter logs the outcome at start, ``--version`` sums
it up.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["ENV", "MODULES", "all_built", "describe", "load"]

ENV = "FCGIPOOL_NO_EXTENSIONS"
MODULES = ("fcgipool.protocol._cparams", "fcgipool.scoreboard._cslot", "fcgipool._crequestlog")
_outcome: dict[str, str] = {}


def load(name: str) -> ModuleType | None:
    """The C module ``name``, or None (switched off, or not built): the caller then runs its Python twin."""
    if os.environ.get(ENV):
        _outcome[name] = f"off ({ENV} is set)"
        return None
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        _outcome[name] = f"not built ({exc})"
        return None
    _outcome[name] = "C"
    return module


def all_built() -> bool:
    """Every C part is in use (each module is imported first, so each has loaded or not)."""
    _import_users()
    return all(_outcome.get(name) == "C" for name in MODULES)


def describe() -> str:
    """One line for the start log."""
    _import_users()
    if all_built():
        return f"C speedups in use: {', '.join(MODULES)}"
    off = [f"{name}: {_outcome.get(name, 'not loaded')}" for name in MODULES if _outcome.get(name) != "C"]
    fix = "" if os.environ.get(ENV) else " -- install gcc and the Python headers (make install-system), then reinstall"
    return f"pure-Python fallback, ~45 % more CPU per request ({'; '.join(off)}){fix}"


def _import_users() -> None:
    from . import requestlog, scoreboard  # noqa: F401 - their imports call load()
    from .protocol import pairs  # noqa: F401
