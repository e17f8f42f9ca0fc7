"""Settings of the status listener, slowlog and process managers (declared once; see fcgipool.config)."""

from __future__ import annotations

from typing import Any

from .config import FcgiSetting
from .status.address import parse_address
from .validators import choice, non_negative_float, non_negative_int

SECTION = "FastCGI pool: status, slowlog, process manager"

__all__ = ["SECTION", "parse_address"]


def _address(val: Any) -> str:
    if val is None or (isinstance(val, str) and not val.strip()):
        return ""
    if not isinstance(val, str):
        raise ValueError(f"status_listen must be a string such as unix:/run/fcgipool-status.sock, got {val!r}")
    parse_address(val)
    return val.strip()


def _uri_path(name: str) -> Any:
    def validate(val: Any) -> str:
        if val is None or val == "":
            return ""
        if not isinstance(val, str) or not val.startswith("/") or any(c in val for c in "?# \t\r\n"):
            raise ValueError(f"{name} must be a URI path starting with '/' (no query), got {val!r}; '' disables it")
        return val

    return validate


def _text(name: str) -> Any:
    def validate(val: Any) -> str:
        if not isinstance(val, str):
            raise ValueError(f"{name} must be a string, got {val!r}")
        return val

    return validate


def _positive_int(name: str) -> Any:
    base = non_negative_int(name)

    def validate(val: Any) -> int:
        num = base(val)
        if num < 1:
            raise ValueError(f"{name} must be at least 1, got {val!r}")
        return num

    return validate


class _S(FcgiSetting):
    """This module's settings: their own section of the reference."""

    abstract = True
    section = SECTION


class StatusListen(_S):
    name = "status_listen"
    cli = ["--status-listen"]
    meta = "ADDRESS"
    validator = _address
    default = ""
    desc = """\
        Address of the status listener: ``unix:/path`` or ``HOST:PORT``; empty disables it.

        The arbiter answers ``status_path`` and ``ping_path`` here itself, on its own small FastCGI
        listener, so the status page and health checks answer even when every worker is busy (with
        requests or after-response work). Like PHP-FPM's ``pm.status_listen``; route nginx's
        ``location = /pool-status`` to it. Unix sockets get the permissions of gunicorn's ``umask``.
        """


class StatusPath(_S):
    name = "status_path"
    cli = ["--status-path"]
    meta = "PATH"
    validator = _uri_path("status_path")
    default = "/pool-status"
    desc = """\
        URI of the status page on the status listener (PHP-FPM's ``pm.status_path``).

        Formats by query string: none (PHP-FPM text), ``?json``, ``?html`` (refreshes every
        ``?refresh=N`` seconds, default 2), ``?openmetrics``; add ``full`` for one entry per process.
        """


class PingPath(_S):
    name = "ping_path"
    cli = ["--ping-path"]
    meta = "PATH"
    validator = _uri_path("ping_path")
    default = "/pool-ping"
    desc = """\
        URI that answers ``ping_response`` with HTTP 200 on the status listener (PHP-FPM's ``ping.path``).
        """


class PingResponse(_S):
    name = "ping_response"
    cli = ["--ping-response"]
    meta = "TEXT"
    env = None  # never had one; kept so that users' environments mean what they meant
    validator = _text("ping_response")
    default = "pong"
    desc = """\
        Body of the ping answer (PHP-FPM's ``ping.response``).
        """


class PoolName(_S):
    name = "pool_name"
    cli = ["--pool-name"]
    meta = "NAME"
    validator = _text("pool_name")
    default = "www"
    desc = """\
        Name of the pool on the status page and in log lines (PHP-FPM's pool section name).
        """


class SlowlogTimeout(_S):
    name = "slowlog_timeout"
    cli = ["--slowlog-timeout"]
    meta = "SECONDS"
    validator = non_negative_float("slowlog_timeout")
    default = 0.0
    desc = """\
        Write the Python traceback of a request still running after this many seconds; 0 disables it.

        A watchdog thread in the worker dumps the request thread's stack (no ptrace, works unprivileged)
        with the request's method and URI, once per request, and counts it in ``slow requests``. After-
        response work that runs longer than this is logged the same way (phase ``after-response``).
        Like PHP-FPM's ``request_slowlog_timeout``.
        """


class Slowlog(_S):
    name = "slowlog"
    cli = ["--slowlog"]
    meta = "PATH"
    validator = _text("slowlog")
    default = ""
    desc = """\
        File the slow-request tracebacks are appended to; empty writes them to the error log, ``-`` to stderr.
        """


class ProcessManager(_S):
    name = "pm"
    cli = ["--pm"]
    meta = "static|dynamic|ondemand"
    validator = choice("pm", "static", "dynamic", "ondemand")
    default = "static"
    desc = """\
        How the number of workers is chosen, as PHP-FPM's ``pm``.

        ``static``: always ``workers`` (TTIN/TTOU change it at runtime). ``dynamic``: start
        ``pm_start_servers``, keep between ``pm_min_spare_servers`` and ``pm_max_spare_servers`` idle
        workers, never more than ``pm_max_children``. ``ondemand``: no workers until a connection waits;
        a worker idle for ``pm_process_idle_timeout`` is stopped.
        """


class PmMaxChildren(_S):
    name = "pm_max_children"
    cli = ["--pm-max-children"]
    meta = "INT"
    validator = non_negative_int("pm_max_children")
    default = 0
    desc = """\
        Most workers the pool may have with ``dynamic`` and ``ondemand``; 0 means ``workers``.
        """


class PmStartServers(_S):
    name = "pm_start_servers"
    cli = ["--pm-start-servers"]
    meta = "INT"
    validator = non_negative_int("pm_start_servers")
    default = 0
    desc = """\
        Workers started with ``dynamic``; 0 means PHP-FPM's default, ``min_spare + (max_spare - min_spare) / 2``.
        """


class PmMinSpareServers(_S):
    name = "pm_min_spare_servers"
    cli = ["--pm-min-spare-servers"]
    meta = "INT"
    validator = _positive_int("pm_min_spare_servers")
    default = 1
    desc = """\
        ``dynamic``: fewer idle workers than this and more are started (up to ``pm_max_children``).
        """


class PmMaxSpareServers(_S):
    name = "pm_max_spare_servers"
    cli = ["--pm-max-spare-servers"]
    meta = "INT"
    validator = _positive_int("pm_max_spare_servers")
    default = 3
    desc = """\
        ``dynamic``: more idle workers than this and one idle worker is stopped per second.
        """


class PmMaxSpawnRate(_S):
    name = "pm_max_spawn_rate"
    cli = ["--pm-max-spawn-rate"]
    meta = "INT"
    validator = _positive_int("pm_max_spawn_rate")
    default = 32
    desc = """\
        ``dynamic`` and ``ondemand``: most workers started in one round. As in PHP-FPM the number
        doubles each round (1, 2, 4, ...) while spares stay short, up to this.
        """


class PmProcessIdleTimeout(_S):
    name = "pm_process_idle_timeout"
    cli = ["--pm-process-idle-timeout"]
    meta = "SECONDS"
    validator = non_negative_float("pm_process_idle_timeout")
    default = 10.0
    desc = """\
        ``ondemand``: a worker idle this long is stopped (PHP-FPM's ``pm.process_idle_timeout``).
        """
