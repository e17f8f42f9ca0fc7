"""FastCGI 1.0 constants (names follow the specification, minus the ``FCGI_`` prefix in enums)."""

from __future__ import annotations

import enum

FCGI_VERSION_1 = 1
HEADER_LEN = 8
#: Largest content a single record can carry (16-bit contentLength).
MAX_CONTENT = 65535
#: Largest content per output record that needs no padding (multiple of 8); long streams use this size.
MAX_ALIGNED_CONTENT = 65528
#: Request id reserved for management records.
FCGI_NULL_REQUEST_ID = 0
#: BEGIN_REQUEST flag: the application keeps the connection open after END_REQUEST.
FCGI_KEEP_CONN = 1

# Names the application answers in FCGI_GET_VALUES (section 4.1); nothing else is ever reported.
FCGI_MAX_CONNS = "FCGI_MAX_CONNS"
FCGI_MAX_REQS = "FCGI_MAX_REQS"
FCGI_MPXS_CONNS = "FCGI_MPXS_CONNS"
KNOWN_VALUES = frozenset({FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS})


class RecordType(enum.IntEnum):
    BEGIN_REQUEST = 1
    ABORT_REQUEST = 2
    END_REQUEST = 3
    PARAMS = 4
    STDIN = 5
    STDOUT = 6
    STDERR = 7
    DATA = 8
    GET_VALUES = 9
    GET_VALUES_RESULT = 10
    UNKNOWN_TYPE = 11


#: Record types carried with request id 0.
MANAGEMENT_TYPES = frozenset({RecordType.GET_VALUES, RecordType.GET_VALUES_RESULT, RecordType.UNKNOWN_TYPE})
#: Record types only the application sends; receiving one is a protocol error.
APPLICATION_ONLY_TYPES = frozenset(
    {
        RecordType.END_REQUEST,
        RecordType.STDOUT,
        RecordType.STDERR,
        RecordType.GET_VALUES_RESULT,
        RecordType.UNKNOWN_TYPE,
    }
)
#: Highest record type this implementation understands; anything above gets FCGI_UNKNOWN_TYPE.
MAX_KNOWN_TYPE = max(RecordType)


class Role(enum.IntEnum):
    RESPONDER = 1
    AUTHORIZER = 2
    FILTER = 3


class ProtocolStatus(enum.IntEnum):
    REQUEST_COMPLETE = 0
    CANT_MPX_CONN = 1
    OVERLOADED = 2
    UNKNOWN_ROLE = 3


def type_name(record_type: int) -> str:
    """Human name of a record type for error messages (``STDIN``, or ``type 42`` when unknown)."""
    try:
        return RecordType(record_type).name
    except ValueError:
        return f"type {record_type}"
