"""FastCGI name-value pairs (section 3.4): 1-byte lengths below 128, else 4 bytes with the high bit set."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import TypeVar

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


def decode_pairs(data: bytes) -> list[tuple[bytes, bytes]]:
    """Decode a complete name-value pair stream. Raises :class:`RemoteProtocolError` if it is truncated."""
    pairs: list[tuple[bytes, bytes]] = []
    _split(data, data, pairs)
    return pairs


def decode_params(data: bytes) -> dict[str, str]:
    """Decode a PARAMS stream to ``{name: value}`` in latin-1 (bytes round-trip; later duplicates win)."""
    # latin-1 maps byte i to code point i, so offsets into the bytes are offsets into the text: one decode
    # call for the whole stream instead of two per pair; pairs go straight into the dict (no tuple list).
    params: dict[str, str] = {}
    _split(data, data.decode("latin-1"), params)
    return params


def _split(data: bytes, src: _S, out: list[tuple[_S, _S]] | dict[_S, _S]) -> None:
    """Cut ``src`` (``data`` itself or its latin-1 text) at the pair boundaries that ``data`` encodes, into
    ``out``: a list of (name, value) or a dict (the hot path: no call per pair)."""
    unpack_u32 = _U32.unpack_from
    into_dict = type(out) is dict
    pos = start = 0
    end = len(data)
    try:
        while pos < end:
            start = pos
            nlen = data[pos]
            if nlen & 0x80:
                nlen = unpack_u32(data, pos)[0] & _MAX_PAIR_LEN
                pos += 4
            else:
                pos += 1
            vlen = data[pos]
            if vlen & 0x80:
                vlen = unpack_u32(data, pos)[0] & _MAX_PAIR_LEN
                pos += 4
            else:
                pos += 1
            mid = pos + nlen
            stop = mid + vlen
            if stop > end:
                raise RemoteProtocolError(
                    f"truncated name-value pair at offset {start}: needs {nlen}+{vlen} bytes, {end - pos} left"
                )
            if into_dict:
                out[src[pos:mid]] = src[mid:stop]  # type: ignore[call-overload]
            else:
                out.append((src[pos:mid], src[mid:stop]))  # type: ignore[union-attr]
            pos = stop
    except (IndexError, struct.error):
        raise RemoteProtocolError(_truncated_length(data, start)) from None


def _truncated_length(data: bytes, start: int) -> str:
    """Which length field of the pair at ``start`` was cut short (error path only)."""
    end = len(data)
    pos = start + (4 if data[start] & 0x80 else 1)
    if pos > end:
        return f"truncated name length in name-value pair at offset {start}"
    if pos == end:
        return f"truncated name-value pair at offset {start}: value length missing"
    return f"truncated value length in name-value pair at offset {start}"
