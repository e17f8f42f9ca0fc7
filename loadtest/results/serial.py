"""The one way between the result dataclasses and results.json: field order is key order, and a field's
metadata says how it is written.

- ``flat()``: a nested record whose keys sit in the parent's dict (every scenario's latency summary); optional
  ones are present when their first key is.
- ``samples()``: raw sample lists the plots and the advice use; results.json leaves them out (requests.csv has
  the raw data), as it always has.
- ``optional()``: the key is absent when the value is None; ``present_if="f"``: absent when field f is None.
- ``empty_none()``: None is written as ``{}`` (the spill advice when there is none).

Reading rejects unknown keys, so a key results.json has and a dataclass lacks cannot go unnoticed.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Self

T = typing.TypeVar("T")


@typing.dataclass_transform(kw_only_default=True)
def record(cls: type[T]) -> type[T]:
    """Every result: a keyword-only dataclass, so optional fields can sit anywhere (in results.json's key order)."""
    return dataclasses.dataclass(kw_only=True)(cls)


def flat(optional: bool = False) -> Any:
    meta = {"flat": True}
    return dataclasses.field(default=None, metadata=meta) if optional else dataclasses.field(metadata=meta)


def samples() -> Any:
    return dataclasses.field(default_factory=list, metadata={"samples": True}, repr=False)


def optional(default: Any = None) -> Any:
    return dataclasses.field(default=default, metadata={"omit_none": True})


def present_if(other: str) -> Any:
    return dataclasses.field(default=None, metadata={"present_if": other})


def empty_none() -> Any:
    return dataclasses.field(default=None, metadata={"empty_none": True})


def _plain(value: Any, clean: bool) -> Any:
    if isinstance(value, Record):
        return value.to_dict(clean)
    if isinstance(value, dict):
        return {k: _plain(v, clean) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, clean) for v in value]
    if clean and isinstance(value, float) and not math.isfinite(value):
        return None
    if clean and isinstance(value, Path):
        return str(value)
    return value


def _hints(cls: type) -> dict[str, Any]:
    cached = cls.__dict__.get("_hints_cache")
    if cached is None:
        cached = typing.get_type_hints(cls)
        cls._hints_cache = cached  # type: ignore[attr-defined]
    return cached


def _read(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _read(args[0], value) if len(args) == 1 else value
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        return [_read(arg, v) for v in value]
    if origin is dict:
        _, arg = typing.get_args(tp) or (str, Any)
        return {k: _read(arg, v) for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.from_dict(value)
    return value


class Record:
    """Base of every result dataclass: ``to_dict`` writes it, ``from_dict`` reads it back."""

    def to_dict(self, clean: bool = True) -> dict:
        """``clean``: as results.json has it (no sample lists, NaN and infinity as null)."""
        out: dict = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value, meta = getattr(self, f.name), f.metadata
            if meta.get("flat"):
                out.update(value.to_dict(clean) if value is not None else {})
            elif not self._omitted(meta, value, clean):
                out[f.name] = {} if value is None and meta.get("empty_none") else _plain(value, clean)
        return out

    def _omitted(self, meta: typing.Mapping, value: Any, clean: bool) -> bool:
        if clean and meta.get("samples"):
            return True
        if value is None and meta.get("omit_none"):
            return True
        return "present_if" in meta and getattr(self, meta["present_if"]) is None

    @classmethod
    def keys(cls) -> list[str]:
        """Every key this record (its flat parts included) may write."""
        out = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            out += _flat_type(cls, f.name).keys() if f.metadata.get("flat") else [f.name]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Self:
        hints, kwargs, known = _hints(cls), dict[str, Any](), set()
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.metadata.get("flat"):
                sub = _flat_type(cls, f.name)
                keys = sub.keys()
                known.update(keys)
                if keys[0] in data or f.default is dataclasses.MISSING:
                    kwargs[f.name] = sub.from_dict({k: data[k] for k in keys if k in data})
                continue
            known.add(f.name)
            if f.name in data:
                value = data[f.name]
                kwargs[f.name] = None if f.metadata.get("empty_none") and value == {} else _read(hints[f.name], value)
        unknown = [k for k in data if k not in known]
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown key(s) {', '.join(unknown)}")
        return cls(**kwargs)


def _flat_type(cls: type, name: str) -> type[Record]:
    tp = _hints(cls)[name]
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    return tp
