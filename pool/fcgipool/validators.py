"""Validators of setting values: each turns a config-file value, or the string a flag or environment variable
brings, into the setting's type, or raises ValueError with a message that names the setting.

Shared by every declaration (fcgipool.config and the ``fcgipool.config_*`` modules); a declaration builds
one with the setting's name, ``validator = non_negative_float("kill_grace")``, so its messages say which
setting was wrong.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from gunicorn import util

__all__ = ["boolean", "choice", "hook", "non_negative_float", "non_negative_int", "size_bytes"]


def _number(kind: type, val: Any, name: str) -> Any:
    if isinstance(val, bool):
        raise ValueError(f"{name} must be a number, got {val!r}")
    if isinstance(val, int | float):
        return kind(val)
    if isinstance(val, str):
        try:
            return kind(val.strip())
        except ValueError:
            pass
    raise ValueError(f"{name} must be a {'whole ' if kind is int else ''}number, got {val!r}")


def non_negative_float(name: str) -> Callable[[Any], float]:
    def validate(val: Any) -> float:
        num = _number(float, val, name)
        if not num >= 0 or num == float("inf"):
            raise ValueError(f"{name} must be a finite number of seconds >= 0, got {val!r}")
        return num

    return validate


def size_bytes(name: str, minimum: int = 0) -> Callable[[Any], int]:
    """Whole bytes; accepts a K/M/G suffix (powers of 1024) in strings: ``64k``, ``10M``."""
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}

    def validate(val: Any) -> int:
        raw = val
        factor = 1
        if isinstance(val, str) and val.strip()[-1:].lower() in units:
            factor = units[val.strip()[-1].lower()]
            val = val.strip()[:-1]
        num = _number(int, val, name) * factor
        if num < minimum:
            raise ValueError(f"{name} must be at least {minimum} bytes, got {raw!r}")
        return num

    return validate


def non_negative_int(name: str) -> Callable[[Any], int]:
    def validate(val: Any) -> int:
        num = _number(int, val, name)
        if num < 0:
            raise ValueError(f"{name} must be a whole number >= 0, got {val!r}")
        return num

    return validate


def boolean(name: str) -> Callable[[Any], bool]:
    def validate(val: Any) -> bool:
        if isinstance(val, bool):
            return val
        if isinstance(val, str) and val.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(val, str) and val.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name} must be true or false, got {val!r}")

    return validate


def choice(name: str, *options: str) -> Callable[[Any], str]:
    def validate(val: Any) -> str:
        if isinstance(val, str) and val.strip().lower() in options:
            return val.strip().lower()
        raise ValueError(f"{name} must be one of {', '.join(options)}; got {val!r}")

    return validate


def hook(name: str, arity: int) -> Callable[[Any], Callable[..., Any]]:
    def validate(val: Any) -> Callable[..., Any]:
        if isinstance(val, str):
            try:
                mod_name, obj_name = val.rsplit(".", 1)
                val = getattr(importlib.import_module(mod_name), obj_name)
            except (ValueError, ImportError, AttributeError) as exc:
                raise ValueError(f"{name}: cannot load {val!r} ({exc}); use 'package.module.function'") from exc
        if not callable(val):
            raise ValueError(f"{name} must be callable, got {val!r}")
        if util.get_arity(val) != arity:
            raise ValueError(f"{name} must accept exactly {arity} arguments")
        return val

    return validate
