"""Record framing (section 3.3): encoders for both sides and a whole-buffer record splitter.

Output records are padded to a multiple of 8 bytes, as the specification recommends. Streams longer than
one record are cut into :data:`MAX_ALIGNED_CONTENT`-byte records, which need no padding at all.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .constants import (
    FCGI_KEEP_CONN,
    FCGI_NULL_REQUEST_ID,
    FCGI_VERSION_1,
    HEADER_LEN,
    MAX_ALIGNED_CONTENT,
    MAX_CONTENT,
    ProtocolStatus,
    RecordType,
    Role,
)
from .errors import LocalProtocolError, RemoteProtocolError
from .pairs import Pairs, encode_pairs

#: version, type, requestId, contentLength, paddingLength, reserved
HEADER = struct.Struct("!BBHHBx")
#: role, flags, reserved[5]
BEGIN_REQUEST_BODY = struct.Struct("!HB5x")
#: appStatus, protocolStatus, reserved[3]
END_REQUEST_BODY = struct.Struct("!IB3x")
#: type, reserved[7]
UNKNOWN_TYPE_BODY = struct.Struct("!B7x")

# Precompiled multi-record frames for the hot path.
# empty STDOUT header + END_REQUEST header + body: the tail of every response in one pack() call.
_STDOUT_EOF_AND_END = struct.Struct("!BBHHBx BBHHBx IB3x")
# empty STDERR + empty STDOUT + END_REQUEST.
_STDERR_EOF_STDOUT_EOF_AND_END = struct.Struct("!BBHHBx BBHHBx BBHHBx IB3x")

_PADDING = bytes(8)
_V1 = FCGI_VERSION_1
_STDOUT = RecordType.STDOUT.value
_STDERR = RecordType.STDERR.value
_END = RecordType.END_REQUEST.value
_pack_header = HEADER.pack


class Record(NamedTuple):
    """One decoded record (content without padding)."""

    type: int
    request_id: int
    content: bytes


def encode_record(record_type: int, request_id: int, content: bytes = b"") -> bytes:
    """One record, padded to a multiple of 8. ``content`` must fit in one record."""
    clen = len(content)
    if clen > MAX_CONTENT:
        raise LocalProtocolError(f"record content of {clen} bytes exceeds {MAX_CONTENT}")
    if not 0 <= request_id <= 0xFFFF:
        raise LocalProtocolError(f"request id {request_id} out of range 0..65535")
    pad = -clen & 7
    return b"".join((_pack_header(_V1, record_type, request_id, clen, pad), content, _PADDING[:pad]))


def stream_chunks(record_type: int, request_id: int, data: bytes, out: list[bytes | memoryview]) -> None:
    """Append the records carrying ``data`` (non-empty; no terminator) to ``out``."""
    clen = len(data)
    if clen <= MAX_CONTENT:
        pad = -clen & 7
        out.append(_pack_header(_V1, record_type, request_id, clen, pad))
        out.append(data)
        if pad:
            out.append(_PADDING[:pad])
        return
    view = memoryview(data)
    full_header = _pack_header(_V1, record_type, request_id, MAX_ALIGNED_CONTENT, 0)
    pos = 0
    while clen - pos > MAX_ALIGNED_CONTENT:
        out.append(full_header)
        out.append(view[pos : pos + MAX_ALIGNED_CONTENT])
        pos += MAX_ALIGNED_CONTENT
    rest = clen - pos
    pad = -rest & 7
    out.append(_pack_header(_V1, record_type, request_id, rest, pad))
    out.append(view[pos:])
    if pad:
        out.append(_PADDING[:pad])


def encode_stdout_response(request_id: int, stdout: bytes) -> bytes:
    """A whole response of at most 65535 bytes: one STDOUT record, the empty one that ends the stream and
    END_REQUEST (complete, app status 0), in one bytes object -- what nearly every response is."""
    tail = _COMPLETE_TAILS.get(request_id)
    if tail is None:
        tail = encode_end_request(request_id)
        if len(_COMPLETE_TAILS) < 64:  # web servers reuse a few ids (nginx: always 1)
            _COMPLETE_TAILS[request_id] = tail
    clen = len(stdout)
    if not clen:
        return tail
    pad = -clen & 7
    return b"".join((_pack_header(_V1, _STDOUT, request_id, clen, pad), stdout, _PADDING[:pad], tail))


_COMPLETE_TAILS: dict[int, bytes] = {}


def encode_stream(record_type: int, request_id: int, data: bytes, *, terminate: bool = False) -> bytes:
    """``data`` as a stream of records of at most 65535 bytes; ``terminate`` adds the empty record."""
    if not 0 <= request_id <= 0xFFFF:
        raise LocalProtocolError(f"request id {request_id} out of range 0..65535")
    out: list[bytes | memoryview] = []
    if data:
        stream_chunks(record_type, request_id, data, out)
    if terminate:
        out.append(_pack_header(_V1, record_type, request_id, 0, 0))
    return b"".join(out)


def encode_end_request(
    request_id: int,
    app_status: int = 0,
    protocol_status: int = ProtocolStatus.REQUEST_COMPLETE,
    *,
    close_stdout: bool = True,
    close_stderr: bool = False,
) -> bytes:
    """END_REQUEST, preceded by the empty STDOUT (and STDERR) records that end those streams."""
    if not 0 <= request_id <= 0xFFFF or not 0 <= protocol_status <= 0xFF:
        raise LocalProtocolError(f"END_REQUEST with request id {request_id}, protocol status {protocol_status}")
    app_status &= 0xFFFFFFFF
    if close_stderr and close_stdout:
        return _STDERR_EOF_STDOUT_EOF_AND_END.pack(
            _V1, _STDERR, request_id, 0, 0,
            _V1, _STDOUT, request_id, 0, 0,
            _V1, _END, request_id, 8, 0, app_status, protocol_status,
        )  # fmt: skip
    if close_stdout:
        return _STDOUT_EOF_AND_END.pack(
            _V1, _STDOUT, request_id, 0, 0, _V1, _END, request_id, 8, 0, app_status, protocol_status
        )
    head = _pack_header(_V1, _STDERR, request_id, 0, 0) if close_stderr else b""
    return head + _pack_header(_V1, _END, request_id, 8, 0) + END_REQUEST_BODY.pack(app_status, protocol_status)


def encode_unknown_type(record_type: int) -> bytes:
    """FCGI_UNKNOWN_TYPE answer for a record type we do not understand."""
    return encode_record(RecordType.UNKNOWN_TYPE, FCGI_NULL_REQUEST_ID, UNKNOWN_TYPE_BODY.pack(record_type))


# --- web server side encoders: used by tests, benchmarks and health checks --------------------------------


def encode_begin_request(request_id: int, role: int = Role.RESPONDER, *, keep_conn: bool = False) -> bytes:
    return encode_record(
        RecordType.BEGIN_REQUEST, request_id, BEGIN_REQUEST_BODY.pack(role, FCGI_KEEP_CONN if keep_conn else 0)
    )


def encode_params(request_id: int, params: Pairs) -> bytes:
    """A complete PARAMS stream, including the terminating empty record."""
    return encode_stream(RecordType.PARAMS, request_id, encode_pairs(params), terminate=True)


def encode_request(
    request_id: int,
    params: Pairs,
    stdin: bytes = b"",
    *,
    keep_conn: bool = False,
    role: int = Role.RESPONDER,
) -> bytes:
    """A whole request as a web server sends it: BEGIN_REQUEST, PARAMS stream, STDIN stream."""
    return b"".join(
        (
            encode_begin_request(request_id, role, keep_conn=keep_conn),
            encode_params(request_id, params),
            encode_stream(RecordType.STDIN, request_id, stdin, terminate=True),
        )
    )


def parse_records(data: bytes) -> list[Record]:
    """Split a complete byte string into records (padding dropped). For clients and tests.

    Raises :class:`RemoteProtocolError` on a bad version or when the data ends inside a record.
    """
    records: list[Record] = []
    pos = 0
    end = len(data)
    unpack = HEADER.unpack_from
    while pos < end:
        if end - pos < HEADER_LEN:
            raise RemoteProtocolError(f"data ends inside a record header at offset {pos}")
        version, rtype, rid, clen, plen = unpack(data, pos)
        if version != FCGI_VERSION_1:
            raise RemoteProtocolError(f"unsupported FastCGI version {version} at offset {pos}")
        start = pos + HEADER_LEN
        stop = start + clen + plen
        if stop > end:
            raise RemoteProtocolError(f"data ends inside a {rtype} record at offset {pos}")
        records.append(Record(rtype, rid, bytes(data[start : start + clen])))
        pos = stop
    return records
