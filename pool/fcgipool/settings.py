"""The settings each consumer reads, as one frozen object built from the config (the declarations: fcgipool.config).

A consumer takes its values once, from :meth:`from_config`, and reads attributes after that: no string keys in
the hot path, and the defaults come from the declarations (never written out twice).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from gunicorn.config import KNOWN_SETTINGS

from . import config
from .environ import script_root
from .protocol import FCGI_MAX_CONNS, FCGI_MAX_REQS

__all__ = ["PmSettings", "ServerSettings"]


def _default(name: str) -> Any:
    """The declared default of a setting (ours or gunicorn's)."""
    config.load_all()
    for s in KNOWN_SETTINGS:
        if s.name == name:
            return s.default
    raise KeyError(name)


def most_workers(cfg: Any) -> int:
    """The most workers this pool may run: ``workers``, or ``pm_max_children`` under dynamic/ondemand."""
    static = config.get(cfg, "pm") == "static"
    workers = config.get(cfg, "workers")
    return max(1, workers if static else config.get(cfg, "pm_max_children") or workers)


@dataclass(frozen=True)
class ServerSettings:
    """What serving a FastCGI connection reads (fcgipool.server), per request."""

    timeout: float = float(_default("timeout"))  # response phase (gunicorn's --timeout); 0 = none
    background_timeout: float = _default("background_timeout")
    kill_grace: float = _default("kill_grace")
    max_params_size: int = _default("max_params_size")
    max_body_size: int = _default("max_body_size")  # 0 = none
    keep_conn: bool = _default("keep_conn") == "allow"
    buffer_size: int = _default("output_buffer_size")
    stop_on_error: bool = _default("background_stop_on_error")
    only_on_success: bool = _default("background_only_on_success")
    values: dict[str, str] = field(default_factory=dict)  # FCGI_GET_VALUES answers
    root: str = field(default_factory=script_root)

    @classmethod
    def from_config(cls, cfg: Any) -> ServerSettings:
        workers = str(most_workers(cfg))  # FCGI_MAX_CONNS/MAX_REQS: the most workers this pool may run
        return cls(
            timeout=float(config.get(cfg, "timeout")),
            background_timeout=config.get(cfg, "background_timeout"),
            kill_grace=config.get(cfg, "kill_grace"),
            max_params_size=config.get(cfg, "max_params_size"),
            max_body_size=config.get(cfg, "max_body_size"),
            keep_conn=config.get(cfg, "keep_conn") == "allow",
            buffer_size=config.get(cfg, "output_buffer_size"),
            stop_on_error=config.get(cfg, "background_stop_on_error"),
            only_on_success=config.get(cfg, "background_only_on_success"),
            values={FCGI_MAX_CONNS: workers, FCGI_MAX_REQS: workers},
        )


@dataclass(frozen=True)
class PmSettings:
    """The process manager's effective values (fcgipool.pm), cross-checked."""

    pm: str
    max_children: int
    start_servers: int
    min_spare: int
    max_spare: int
    max_spawn_rate: int
    idle_timeout: float

    @classmethod
    def from_config(cls, cfg: Any, workers: int) -> PmSettings:
        """The pm settings for ``workers``; ValueError saying what to change when they contradict each other."""
        mode = config.get(cfg, "pm")
        max_children = config.get(cfg, "pm_max_children") or workers
        if max_children < 1:
            raise ValueError(f"pm_max_children must be at least 1 (got {max_children})")
        min_spare, max_spare = config.get(cfg, "pm_min_spare_servers"), config.get(cfg, "pm_max_spare_servers")
        start = config.get(cfg, "pm_start_servers") or min(max_children, min_spare + (max_spare - min_spare) // 2)
        if mode == "dynamic":
            if min_spare > max_spare:
                raise ValueError(
                    f"pm_min_spare_servers ({min_spare}) must not exceed pm_max_spare_servers ({max_spare})"
                )
            if max_spare > max_children:
                raise ValueError(
                    f"pm_max_spare_servers ({max_spare}) must not exceed pm_max_children ({max_children})"
                )
            if not min_spare <= start <= max_spare:
                raise ValueError(
                    f"pm_start_servers ({start}) must be between pm_min_spare_servers ({min_spare}) "
                    f"and pm_max_spare_servers ({max_spare})"
                )
        idle_timeout = config.get(cfg, "pm_process_idle_timeout")
        if mode == "ondemand" and idle_timeout <= 0:
            raise ValueError("pm_process_idle_timeout must be > 0 with pm ondemand (idle workers would never stop)")
        return cls(
            pm=mode,
            max_children=max_children if mode != "static" else workers,
            start_servers=start if mode == "dynamic" else (0 if mode == "ondemand" else workers),
            min_spare=min_spare,
            max_spare=max_spare,
            max_spawn_rate=config.get(cfg, "pm_max_spawn_rate"),
            idle_timeout=idle_timeout,
        )

    def changed(self, old: PmSettings) -> dict[str, Any]:
        """The values that differ from ``old`` (for the reload log line)."""
        mine, theirs = dataclasses.asdict(self), dataclasses.asdict(old)
        return {k: v for k, v in mine.items() if theirs[k] != v}
