"""The ``fcgipool`` command: gunicorn with the FastCGI worker and the pool arbiter.

``fcgipool --bind unix:/run/app.sock --workers 4 myapp:app`` takes every gunicorn option plus the fcgipool
settings (``fcgipool --help``). ``fcgipool status ...`` is dispatched to ``fcgipool.status.cli``, ``fcgipool advise
...`` (sizing from the request log) to ``fcgipool.sizing.advise_cli``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

from . import lazyimports

lazyimports.install()  # before gunicorn: see the module (3.5 MB less RSS per worker)

import gunicorn  # noqa: E402
from gunicorn.app.base import BaseApplication  # noqa: E402
from gunicorn.app.wsgiapp import WSGIApplication  # noqa: E402
from gunicorn.config import Config  # noqa: E402

from . import __version__, config  # noqa: E402

WORKER_CLASS = "fcgipool.worker.FastCGIWorker"


class FcgiPoolConfig(Config):
    """gunicorn's Config; ``--version`` names fcgipool, the gunicorn it runs on and whether its C parts run."""

    def parser(self) -> argparse.ArgumentParser:
        from . import speedups

        parser = super().parser()
        for action in parser._actions:
            if isinstance(action, argparse._VersionAction):
                kind = "C speedups" if speedups.all_built() else "pure Python"  # the start log says why
                action.version = f"%(prog)s {__version__} (gunicorn {gunicorn.__version__}, {kind})"
        return parser


class _RunsPoolArbiter(BaseApplication):
    """``run()`` with PoolArbiter, where gunicorn's ``BaseApplication.run`` builds its own ``Arbiter``.

    Placed between gunicorn's ``Application`` and ``BaseApplication`` in the method resolution order (see
    FcgiPoolApplication), so ``Application.run`` -- config printing and checking, daemonizing, the python
    path -- runs unchanged and its ``super().run()`` lands here.
    """

    def run(self) -> None:
        from .arbiter import PoolArbiter  # the arbiter's imports, only for the process that runs the pool

        try:
            PoolArbiter(self).run()
        except RuntimeError as e:  # as BaseApplication.run: a configuration the arbiter refuses
            print(f"\nError: {e}\n", file=sys.stderr)
            sys.stderr.flush()
            sys.exit(1)


class FcgiPoolApplication(WSGIApplication, _RunsPoolArbiter):
    """gunicorn's WSGI application runner with fcgipool's defaults and settings, and PoolArbiter.

    The order of the bases makes the MRO FcgiPoolApplication, WSGIApplication, Application, _RunsPoolArbiter,
    BaseApplication: gunicorn's own classes, subclassed, nothing of gunicorn patched.
    """

    def load_default_config(self) -> None:
        config.load_all()  # register every fcgipool setting before gunicorn builds its Config
        self.cfg = FcgiPoolConfig(self.usage, prog=self.prog)
        self.cfg.set("worker_class", WORKER_CLASS)

    def load_config(self) -> None:
        super().load_config()
        # FCGIPOOL_* environment variables: above the config file, below the command line
        assert self.cfg is not None
        explicit = {k for k, v in vars(self.cfg.parser().parse_args()).items() if v is not None}
        config.apply_env(self.cfg, dict(os.environ), explicit)


def _subcommand(name: str, module_name: str, argv: list[str]) -> int:
    try:
        module: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        print(f"fcgipool {name}: not available in this installation", file=sys.stderr)
        return 2
    return int(module.main(argv) or 0)


SUBCOMMANDS = {"status": "fcgipool.status.cli", "advise": "fcgipool.sizing.advise_cli"}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] and args[0] in SUBCOMMANDS:
        return _subcommand(args[0], SUBCOMMANDS[args[0]], args[1:])
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    FcgiPoolApplication("%(prog)s [OPTIONS] [APP_MODULE]", prog="fcgipool").run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
