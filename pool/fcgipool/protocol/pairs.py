"""FastCGI name-value pairs (section 3.4): 1-byte lengths below 128, else 4 bytes with the high bit set."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from ..speedups import load
from .errors import LocalProtocolError, RemoteProtocolError

_U32 = struct.Struct("!I")
_MAX_PAIR_LEN = 0x7FFFFFFF
_S = TypeVar("_S", bytes, str)

Pairs = Iterable[tuple[bytes | str, bytes | str]] | Mapping[str, str] | Mapping[bytes, bytes] | Mapping[str, bytes]


def _as_bytes(value: bytes | str) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode("latin-1")
        except UnicodeEncodeError as exc:
            raise LocalProtocolError(f"name-value pair {value[:40]!r} is not latin-1 encodable") from exc
    return bytes(value)


def _encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n > _MAX_PAIR_LEN:
        raise LocalProtocolError(f"name-value pair part of {n} bytes exceeds 2**31-1")
    return _U32.pack(n | 0x80000000)


def encode_pairs(pairs: Pairs) -> bytes:
    """Encode name-value pairs; ``str`` parts are encoded latin-1."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    out: list[bytes] = []
    for name, value in items:
        n = _as_bytes(name)
        v = _as_bytes(value)
        out.append(_encode_length(len(n)))
        out.append(_encode_length(len(v)))
        out.append(n)
        out.append(v)
    return b"".join(out)


class _PairList(list[tuple[bytes, bytes]]):
    """decode_pairs' collector: ``out[name] = value`` appends, so _split has one store for both outputs."""

    def __setitem__(self, name: bytes, value: bytes) -> None:  # type: ignore[override]
        self.append((name, value))


def decode_pairs(data: bytes) -> list[tuple[bytes, bytes]]:
    """Decode a complete name-value pair stream. Raises :class:`RemoteProtocolError` if it is truncated."""
    pairs = _PairList()
    _split(data, data, pairs)
    return list(pairs)


def decode_params(data: bytes) -> dict[str, str]:
    """Decode a PARAMS stream to ``{name: value}`` in latin-1 (bytes round-trip; later duplicates win).

    The C decoder does this when it is built (fcgipool.speedups); a stream it finds truncated comes here, so the
    errors are raised in one place."""
    if _c_decode_params is not None:
        params = _c_decode_params(data)
        if params is not None:
            return params
    return py_decode_params(data)


def py_decode_params(data: bytes) -> dict[str, str]:
    """The pure-Python decoder: the reference the C one is tested against, and the one without a compiler."""
    # latin-1 maps byte i to code point i, so offsets into the bytes are offsets into the text: one decode
    # call for the whole stream instead of two per pair; pairs go straight into the dict (no tuple list).
    params: dict[str, str] = {}
    _split(data, data.decode("latin-1"), params)
    return params


_cparams = load("fcgipool.protocol._cparams")
_c_decode_params: Callable[[bytes], dict[str, str] | None] | None = _cparams.decode_params if _cparams else None


def _split(data: bytes, src: _S, out: Any) -> None:
    """Cut ``src`` (``data`` itself or its latin-1 text) at the pair boundaries that ``data`` encodes, storing
    ``out[name] = value`` for each pair."""
    pos = 0
    end = len(data)
    last = end - 1
    while pos < last:
        nlen = data[pos]
        vlen = data[pos + 1]
        if nlen < 0x80 and vlen < 0x80:  # the common case: both lengths in one byte each
            mid = pos + 2 + nlen
            stop = mid + vlen
            if stop > end:
                break
            out[src[pos + 2 : mid]] = src[mid:stop]
            pos = stop
            continue
        pos = _split_long(data, src, out, pos)
    if pos < end:
        _split_long(data, src, out, pos)  # raises: a truncated pair


def _split_long(data: bytes, src: _S, out: Any, start: int) -> int:
    """One pair with a 4-byte length (or a truncated one, which raises); returns where the next one starts."""
    end = len(data)
    pos = start
    try:
        nlen = data[pos]
        if nlen & 0x80:
            nlen = _U32.unpack_from(data, pos)[0] & _MAX_PAIR_LEN
            pos += 4
        else:
            pos += 1
        vlen = data[pos]
        if vlen & 0x80:
            vlen = _U32.unpack_from(data, pos)[0] & _MAX_PAIR_LEN
            pos += 4
        else:
            pos += 1
    except (IndexError, struct.error):
        raise RemoteProtocolError(_truncated_length(data, start)) from None
    mid = pos + nlen
    stop = mid + vlen
    if stop > end:
        raise RemoteProtocolError(
            f"truncated name-value pair at offset {start}: needs {nlen}+{vlen} bytes, {end - pos} left"
        )
    out[src[pos:mid]] = src[mid:stop]
    return stop


def _truncated_length(data: bytes, start: int) -> str:
    """Which length field of the pair at ``start`` was cut short (error path only)."""
    end = len(data)
    pos = start + (4 if data[start] & 0x80 else 1)
    if pos > end:
        return f"truncated name length in name-value pair at offset {start}"
    if pos == end:
        return f"truncated name-value pair at offset {start}: value length missing"
    return f"truncated value length in name-value pair at offset {start}"
