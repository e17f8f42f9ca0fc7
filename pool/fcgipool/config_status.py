"""Settings of the status listener, slowlog and process managers (declared once; see fcgipool.config)."""

from __future__ import annotations

import socket
from typing import Any

from .config import FcgiSetting, _flag_type, choice, non_negative_float, non_negative_int

SECTION = "FastCGI pool: status, slowlog, process manager"

__all__ = ["SECTION", "parse_address", "validate_pm"]


def parse_address(val: str) -> tuple[socket.AddressFamily, Any]:
    """``unix:/path``, ``HOST:PORT``, ``[v6]:PORT`` or ``tcp://HOST:PORT`` → (family, sockaddr)."""
    text = val.strip()
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ValueError(f"unix socket address needs a path: {val!r} (e.g. unix:/run/fcgipool-status.sock)")
        return socket.AF_UNIX, path
    if text.startswith("tcp://"):
        text = text[6:]
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"status listen address must be unix:/path or HOST:PORT, got {val!r}")
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, (host[1:-1], int(port))
    return socket.AF_INET, (host or "127.0.0.1", int(port))


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
    abstract = True
    section = SECTION


class StatusListen(_S):
    name = "status_listen"
    cli = ["--status-listen"]
    env = "FCGIPOOL_STATUS_LISTEN"
    meta = "ADDRESS"
    validator = _address
    type = _flag_type(validator)
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
    env = "FCGIPOOL_STATUS_PATH"
    meta = "PATH"
    validator = _uri_path("status_path")
    type = _flag_type(validator)
    default = "/pool-status"
    desc = """\
        URI of the status page on the status listener (PHP-FPM's ``pm.status_path``).

        Formats by query string: none (PHP-FPM text), ``?json``, ``?html`` (refreshes every
        ``?refresh=N`` seconds, default 2), ``?openmetrics``; add ``full`` for one entry per process.
        """


class PingPath(_S):
    name = "ping_path"
    cli = ["--ping-path"]
    env = "FCGIPOOL_PING_PATH"
    meta = "PATH"
    validator = _uri_path("ping_path")
    type = _flag_type(validator)
    default = "/pool-ping"
    desc = """\
        URI that answers ``ping_response`` with HTTP 200 on the status listener (PHP-FPM's ``ping.path``).
        """


class PingResponse(_S):
    name = "ping_response"
    cli = ["--ping-response"]
    meta = "TEXT"
    validator = _text("ping_response")
    type = _flag_type(validator)
    default = "pong"
    desc = """\
        Body of the ping answer (PHP-FPM's ``ping.response``).
        """


class PoolName(_S):
    name = "pool_name"
    cli = ["--pool-name"]
    env = "FCGIPOOL_POOL_NAME"
    meta = "NAME"
    validator = _text("pool_name")
    type = _flag_type(validator)
    default = "www"
    desc = """\
        Name of the pool on the status page and in log lines (PHP-FPM's pool section name).
        """


class SlowlogTimeout(_S):
    name = "slowlog_timeout"
    cli = ["--slowlog-timeout"]
    env = "FCGIPOOL_SLOWLOG_TIMEOUT"
    meta = "SECONDS"
    validator = non_negative_float("slowlog_timeout")
    type = _flag_type(validator)
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
    env = "FCGIPOOL_SLOWLOG"
    meta = "PATH"
    validator = _text("slowlog")
    type = _flag_type(validator)
    default = ""
    desc = """\
        File the slow-request tracebacks are appended to; empty writes them to the error log, ``-`` to stderr.
        """


class ProcessManager(_S):
    name = "pm"
    cli = ["--pm"]
    env = "FCGIPOOL_PM"
    meta = "static|dynamic|ondemand"
    validator = choice("pm", "static", "dynamic", "ondemand")
    type = _flag_type(validator)
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
    env = "FCGIPOOL_PM_MAX_CHILDREN"
    meta = "INT"
    validator = non_negative_int("pm_max_children")
    type = _flag_type(validator)
    default = 0
    desc = """\
        Most workers the pool may have with ``dynamic`` and ``ondemand``; 0 means ``workers``.
        """


class PmStartServers(_S):
    name = "pm_start_servers"
    cli = ["--pm-start-servers"]
    env = "FCGIPOOL_PM_START_SERVERS"
    meta = "INT"
    validator = non_negative_int("pm_start_servers")
    type = _flag_type(validator)
    default = 0
    desc = """\
        Workers started with ``dynamic``; 0 means PHP-FPM's default, ``min_spare + (max_spare - min_spare) / 2``.
        """


class PmMinSpareServers(_S):
    name = "pm_min_spare_servers"
    cli = ["--pm-min-spare-servers"]
    env = "FCGIPOOL_PM_MIN_SPARE_SERVERS"
    meta = "INT"
    validator = _positive_int("pm_min_spare_servers")
    type = _flag_type(validator)
    default = 1
    desc = """\
        ``dynamic``: fewer idle workers than this and more are started (up to ``pm_max_children``).
        """


class PmMaxSpareServers(_S):
    name = "pm_max_spare_servers"
    cli = ["--pm-max-spare-servers"]
    env = "FCGIPOOL_PM_MAX_SPARE_SERVERS"
    meta = "INT"
    validator = _positive_int("pm_max_spare_servers")
    type = _flag_type(validator)
    default = 3
    desc = """\
        ``dynamic``: more idle workers than this and one idle worker is stopped per second.
        """


class PmMaxSpawnRate(_S):
    name = "pm_max_spawn_rate"
    cli = ["--pm-max-spawn-rate"]
    env = "FCGIPOOL_PM_MAX_SPAWN_RATE"
    meta = "INT"
    validator = _positive_int("pm_max_spawn_rate")
    type = _flag_type(validator)
    default = 32
    desc = """\
        ``dynamic`` and ``ondemand``: most workers started in one round. As in PHP-FPM the number
        doubles each round (1, 2, 4, ...) while spares stay short, up to this.
        """


class PmProcessIdleTimeout(_S):
    name = "pm_process_idle_timeout"
    cli = ["--pm-process-idle-timeout"]
    env = "FCGIPOOL_PM_PROCESS_IDLE_TIMEOUT"
    meta = "SECONDS"
    validator = non_negative_float("pm_process_idle_timeout")
    type = _flag_type(validator)
    default = 10.0
    desc = """\
        ``ondemand``: a worker idle this long is stopped (PHP-FPM's ``pm.process_idle_timeout``).
        """


# FcgiSetting's metaclass gives every class without its own ``section`` the base section; ours is SECTION
for _setting in [v for v in list(globals().values()) if isinstance(v, type) and issubclass(v, _S) and v is not _S]:
    _setting.section = SECTION


def validate_pm(cfg: Any, workers: int) -> dict[str, int | float | str]:
    """Cross-check the pm settings; returns the effective values or raises ValueError saying what to change."""
    mode = cfg.pm
    max_children = cfg.pm_max_children or workers
    if max_children < 1:
        raise ValueError(f"pm_max_children must be at least 1 (got {max_children})")
    min_spare, max_spare = cfg.pm_min_spare_servers, cfg.pm_max_spare_servers
    start = cfg.pm_start_servers or min(max_children, min_spare + (max_spare - min_spare) // 2)
    if mode == "dynamic":
        if min_spare > max_spare:
            raise ValueError(f"pm_min_spare_servers ({min_spare}) must not exceed pm_max_spare_servers ({max_spare})")
        if max_spare > max_children:
            raise ValueError(f"pm_max_spare_servers ({max_spare}) must not exceed pm_max_children ({max_children})")
        if not min_spare <= start <= max_spare:
            raise ValueError(
                f"pm_start_servers ({start}) must be between pm_min_spare_servers ({min_spare}) "
                f"and pm_max_spare_servers ({max_spare})"
            )
    if mode == "ondemand" and cfg.pm_process_idle_timeout <= 0:
        raise ValueError("pm_process_idle_timeout must be > 0 with pm ondemand (idle workers would never stop)")
    return {
        "pm": mode,
        "max_children": max_children if mode != "static" else workers,
        "start_servers": start if mode == "dynamic" else (0 if mode == "ondemand" else workers),
        "min_spare": min_spare,
        "max_spare": max_spare,
        "max_spawn_rate": cfg.pm_max_spawn_rate,
        "idle_timeout": cfg.pm_process_idle_timeout,
    }
