"""Every fcgipool setting, declared once as a gunicorn ``Setting``.

Each class below is the single source of truth for one setting: its name, command-line flag, environment
variable, validator, default and description. gunicorn builds its argument parser and config-file handling
from them; ``python -m fcgipool.config --markdown`` renders the settings reference (docs/settings.md).

Other fcgipool modules add settings by subclassing :class:`FcgiSetting` in a module named
``fcgipool.config_*`` (for example ``config_status.py``); :func:`load_all` imports them so the CLI and the
reference pick them up. The validators they declare with (``non_negative_float("kill_grace")``, ...) are in
:mod:`fcgipool.validators`.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

from gunicorn.config import KNOWN_SETTINGS, Setting, SettingMeta

from .validators import boolean, choice, hook, non_negative_float, non_negative_int, size_bytes

SECTION = "FastCGI pool"
ENV_PREFIX = "FCGIPOOL_"


# argparse `type=` for flags: a bad value is reported by argparse as "argument --flag: ..." and exit 2
def _flag_type(validator: Callable[[Any], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return validator(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    parse.__name__ = "value"
    return parse


class _FcgiSettingMeta(SettingMeta):
    """Derives what a declaration would otherwise repeat, and keeps the abstract bases out of gunicorn's registry.

    ``env``: ``FCGIPOOL_`` + the upper-cased name for every setting with a flag (declare ``env = None`` to have
    none). ``type``: the argparse type built from the validator, so a bad flag value is reported by argparse.
    ``section``: inherited like any class attribute (a module's abstract base sets its own).
    """

    def __new__(mcs, name: str, bases: tuple[type, ...], attrs: dict[str, Any]):
        if attrs.pop("abstract", False):
            return type.__new__(mcs, name, bases, attrs)
        if attrs.get("cli"):
            attrs.setdefault("env", ENV_PREFIX + attrs["name"].upper())
            if not attrs.get("action"):
                attrs.setdefault("type", staticmethod(_flag_type(attrs["validator"])))
        return super().__new__(mcs, name, bases, attrs)


class FcgiSetting(Setting, metaclass=_FcgiSettingMeta):
    """Base of every fcgipool setting. ``env`` names the environment variable the fcgipool command reads."""

    abstract = True
    section = SECTION
    env: str | None = None


# --- the settings ----------------------------------------------------------------------------------------


class BackgroundTimeout(FcgiSetting):
    name = "background_timeout"
    cli = ["--background-timeout"]
    meta = "SECONDS"
    validator = non_negative_float("background_timeout")
    default = 30.0
    desc = """\
        Total budget in seconds for one request's after-response work.

        Starts when the response has been sent (END_REQUEST) and covers every task the request added,
        including tasks added by tasks. When it runs out the running task is interrupted (a
        ``BackgroundTimeout`` exception, a ``BaseException`` so ``except Exception`` does not swallow it),
        and it and the tasks that never started are reported lost with reason ``timeout``. A task that
        does not stop is killed with its worker ``kill_grace`` seconds later (reason ``killed``).
        Separate from ``timeout``, which limits the response phase. 0 disables the limit.
        """


class BackgroundStopOnError(FcgiSetting):
    name = "background_stop_on_error"
    cli = ["--background-stop-on-error"]
    validator = boolean("background_stop_on_error")
    action = "store_const"
    const = True
    default = False
    desc = """\
        Stop a request's after-response work at the first task that raises.

        The failed task is logged with its traceback and counted; the tasks after it are reported lost
        with reason ``not_started``. By default the next task still runs.
        """


class BackgroundOnlyOnSuccess(FcgiSetting):
    name = "background_only_on_success"
    cli = ["--background-only-on-success"]
    validator = boolean("background_only_on_success")
    action = "store_const"
    const = True
    default = False
    desc = """\
        Run after-response tasks only when the response status is below 400.

        Tasks of a failed request are reported lost with reason ``not_started``.
        """


class KillGrace(FcgiSetting):
    name = "kill_grace"
    cli = ["--kill-grace"]
    meta = "SECONDS"
    validator = non_negative_float("kill_grace")
    default = 2.0
    desc = """\
        Seconds between a soft limit and the hard kill.

        A worker past ``timeout`` (response phase) or ``background_timeout`` (after-response work) is
        sent SIGABRT by the arbiter this long after its soft limit, and SIGKILL another ``kill_grace``
        later. On graceful stop the worker interrupts its after-response work this long before
        ``graceful_timeout`` runs out, so it can report what it could not finish.
        """


class KeepConn(FcgiSetting):
    name = "keep_conn"
    cli = ["--keep-conn"]
    meta = "allow|disable"
    validator = choice("keep_conn", "allow", "disable")
    default = "allow"
    desc = """\
        Honour the web server's FCGI_KEEP_CONN flag (``allow``) or close after every request (``disable``).

        With ``allow`` a worker keeps the connections nginx reuses, and passes the idle ones to another
        worker (never closing them) when it is busy for longer than ``handoff_after``, so keep-conn never
        makes a request wait long behind a busy worker while another idles. A connection whose request has
        after-response work is always closed (php-src #10335).
        """


class HandoffAfter(FcgiSetting):
    name = "handoff_after"
    cli = ["--handoff-after"]
    meta = "SECONDS"
    validator = non_negative_float("handoff_after")
    default = 0.005
    desc = """\
        How long a busy worker may keep its idle kept connections from the rest of the pool, in seconds.

        A worker serving requests holds on to its other kept connections, so under load each gets its next
        request without a hand-over; once it has been busy this long without going back to wait (one request
        or several in a row), and whenever after-response work starts, they go to the pool's hand-off queue,
        where any idle worker picks them up. It bounds how long a request sent on one of them can wait while
        another worker idles (the worker's clock thread tells it between this and twice this; no timer syscall
        per round). 0 passes them on before every
        request (strictest; in ``make bench`` about half the requests per second: 13k instead of 25k).
        """


class MaxParamsSize(FcgiSetting):
    name = "max_params_size"
    cli = ["--max-params-size"]
    meta = "BYTES"
    validator = size_bytes("max_params_size", minimum=1024)
    default = 256 * 1024
    desc = """\
        Largest PARAMS stream (CGI variables and request headers) a request may send, in bytes.

        A request over the limit gets its connection closed and a warning naming the peer. Accepts
        ``k``/``m`` suffixes in flags and env vars (``64k``).
        """


class MaxBodySize(FcgiSetting):
    name = "max_body_size"
    cli = ["--max-body-size"]
    meta = "BYTES"
    validator = size_bytes("max_body_size")
    default = 64 * 1024**2
    desc = """\
        Largest request body, in bytes; larger requests get HTTP 413 without the application being called.

        Checked against CONTENT_LENGTH before the application runs; a body without CONTENT_LENGTH is read
        (spooled to disk past 1 MiB) up to the limit first. 0 means no limit. Keep it at or below nginx's
        ``client_max_body_size``.
        """


class OutputBufferSize(FcgiSetting):
    name = "output_buffer_size"
    cli = ["--output-buffer-size"]
    meta = "BYTES"
    validator = size_bytes("output_buffer_size", minimum=1024)
    default = 256 * 1024
    desc = """\
        Response bytes collected before they are written to the socket.

        A response smaller than this leaves the worker in one write together with END_REQUEST. Larger
        ones are written in chunks of about this size. A response with ``X-Accel-Buffering: no`` is
        written block by block as the application yields it.
        """


class ScoreboardSlots(FcgiSetting):
    name = "scoreboard_slots"
    cli = ["--scoreboard-slots"]
    meta = "INT"
    validator = non_negative_int("scoreboard_slots")
    default = 0
    desc = """\
        Number of worker slots in the shared-memory scoreboard; 0 sizes it automatically.

        Automatic is ``max(64, 4 * workers)``: enough for a reload (old and new workers side by side)
        and for growing the pool with TTIN. The arbiter refuses to start more workers than slots.
        """


class OnTaskLost(FcgiSetting):
    name = "on_task_lost"
    validator = hook("on_task_lost", 2)

    def on_task_lost(server, task):
        pass

    default = staticmethod(on_task_lost)
    desc = """\
        Called once for every after-response task that did not finish.

        ``on_task_lost(server, task)``: ``server`` is the worker (reasons ``timeout``, ``shutdown``,
        ``not_started``) or the arbiter (``killed``, ``shutdown`` for a worker that died with work
        pending); ``task`` is a ``fcgipool.background.LostTask`` with ``name``, ``reason``,
        ``request_uri``, ``pid`` and ``started``. The lost task is also logged as an error and counted
        on the status page. Exceptions from the hook are logged and ignored.
        """


# --- access ------------------------------------------------------------------------------------------------


def load_all() -> list[type[FcgiSetting]]:
    """Import every ``fcgipool.config_*`` module and return all fcgipool settings in declaration order."""
    import fcgipool

    modules = ["fcgipool.config"]
    for info in pkgutil.iter_modules(fcgipool.__path__):
        if info.name.startswith("config_"):
            modules.append(importlib.import_module(f"fcgipool.{info.name}").__name__)
    # by module, then as declared: the order does not depend on which module some other import loaded first
    rank = {name: i for i, name in enumerate(sorted(modules, key=lambda m: (m != "fcgipool.config", m)))}
    found = fcgipool_settings()
    return sorted(found, key=lambda s: (rank.get(s.__module__, len(rank)), found.index(s)))


def fcgipool_settings() -> list[type[FcgiSetting]]:
    return [s for s in KNOWN_SETTINGS if issubclass(s, FcgiSetting)]


def get(cfg: Any, name: str) -> Any:
    """A setting's value; its default when the config predates our settings (plain ``gunicorn -k``)."""
    try:
        return getattr(cfg, name)
    except AttributeError:
        for s in fcgipool_settings():
            if s.name == name:
                return s().get()
        raise


def apply_env(cfg: Any, environ: dict[str, str], explicit: set[str]) -> None:
    """Set each setting from its environment variable unless the command line set it (``explicit``)."""
    for s in fcgipool_settings():
        if s.env and s.env in environ and s.name not in explicit:
            try:
                cfg.set(s.name, environ[s.env])
            except (ValueError, TypeError) as exc:
                raise ValueError(f"environment variable {s.env}: {exc}") from exc


# --- reference generator -------------------------------------------------------------------------------


def _default_text(s: type[FcgiSetting]) -> str:
    if callable(s.default):
        src = inspect.getsource(s.default).strip().splitlines()
        return "```python\n" + textwrap.dedent("\n".join(src)) + "\n```"
    return f"`{s.default!r}`"


def markdown() -> str:
    settings = load_all()
    out = [
        "# Settings reference",
        "",
        "<!-- generated by `python -m fcgipool.config --markdown`; edit the settings in pool/fcgipool/config*.py -->",
        "",
        "fcgipool takes every gunicorn setting (`fcgipool --help`, https://gunicorn.org/reference/settings/)",
        "plus the ones below. Precedence, lowest first: default, config file (`-c gunicorn.conf.py`),",
        "`GUNICORN_CMD_ARGS`, the setting's environment variable, the command line.",
        "",
    ]
    sections: dict[str, list[type[FcgiSetting]]] = {}
    for s in settings:
        sections.setdefault(s.section, []).append(s)
    for section, items in sections.items():
        out += [f"## {section}", ""]
        for s in items:
            out += [f"### `{s.name}`", ""]
            facts = []
            if s.cli:
                facts.append("**Command line:** " + ", ".join(f"`{c}`" for c in s.cli))
            if s.env:
                facts.append(f"**Environment:** `{s.env}`")
            facts.append(f"**Config file:** `{s.name} = ...`")
            out += [f"- {f}" for f in facts]
            default = _default_text(s)
            out += ["- **Default:** " + (default if not default.startswith("```") else ""), ""]
            if default.startswith("```"):
                out += [default, ""]
            out += [s.desc, ""]
    return "\n".join(out).rstrip() + "\n"


def _iter_names() -> Iterator[str]:
    for s in load_all():
        yield s.name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fcgipool.config", description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the settings reference as Markdown")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown())
    else:
        print("\n".join(_iter_names()))
    return 0


if __name__ == "__main__":
    # run the imported fcgipool.config, not this __main__ copy: config_* modules subclass its FcgiSetting
    from fcgipool.config import main as _main

    raise SystemExit(_main())
