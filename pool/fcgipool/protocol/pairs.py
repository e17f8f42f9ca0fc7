"""FastCGI name-value pairs (section 3.4): 1-byte lengths below 128, else 4 bytes with the high bit set."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

from .errors import LocalProtocolError, RemoteProtocolError

_U32 = struct.Struct("!I")
_MAX_PAIR_LEN = 0x7FFFFFFF

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
    pos = 0
    end = len(data)
    unpack_u32 = _U32.unpack_from
    while pos < end:
        start = pos
        nlen = data[pos]
        if nlen & 0x80:
            if pos + 4 > end:
                raise RemoteProtocolError(f"truncated name length in name-value pair at offset {start}")
            nlen = unpack_u32(data, pos)[0] & _MAX_PAIR_LEN
            pos += 4
        else:
            pos += 1
        if pos >= end:
            raise RemoteProtocolError(f"truncated name-value pair at offset {start}: value length missing")
        vlen = data[pos]
        if vlen & 0x80:
            if pos + 4 > end:
                raise RemoteProtocolError(f"truncated value length in name-value pair at offset {start}")
            vlen = unpack_u32(data, pos)[0] & _MAX_PAIR_LEN
            pos += 4
        else:
            pos += 1
        stop = pos + nlen + vlen
        if stop > end:
            raise RemoteProtocolError(
                f"truncated name-value pair at offset {start}: needs {nlen}+{vlen} bytes, {end - pos} left"
            )
        pairs.append((data[pos : pos + nlen], data[pos + nlen : stop]))
        pos = stop
    return pairs
