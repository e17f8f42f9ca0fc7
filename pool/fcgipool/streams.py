"""``wsgi.input``: the request body, pulled from STDIN records as the application reads it.

Never reads past CONTENT_LENGTH (bytes beyond it are left for the server to discard), never blocks once
the body is complete, and supports ``read``, ``readline``, ``readlines`` and iteration (PEP 3333).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator


class InputStream(io.RawIOBase):
    """Body of one request. ``pull()`` returns the next chunk of STDIN, ``b""`` when the stream ended."""

    def __init__(self, pull: Callable[[], bytes], limit: int | None) -> None:
        super().__init__()
        self._pull: Callable[[], bytes] | None = pull
        self._remaining = limit  # bytes of the body not yet taken from the stream; None = until STDIN ends
        self._buf = bytearray()
        self.consumed = 0  # bytes handed to the application

    def readable(self) -> bool:
        return True

    def _fill(self) -> bool:
        """Append one more chunk to the buffer; False at the end of the body."""
        if self._pull is None or self._remaining == 0:
            self._pull = None
            return False
        chunk = self._pull()
        if not chunk:
            self._pull = None
            return False
        if self._remaining is not None:
            if len(chunk) >= self._remaining:
                chunk = chunk[: self._remaining]
                self._pull = None
            self._remaining -= len(chunk)
        self._buf += chunk
        return True

    def _take(self, n: int) -> bytes:
        data = bytes(self._buf[:n])
        del self._buf[:n]
        self.consumed += len(data)
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            return self._take(len(self._buf))
        while len(self._buf) < size and self._fill():
            pass
        return self._take(size)

    def read1(self, size: int = -1) -> bytes:
        if not self._buf:
            self._fill()
        return self._take(len(self._buf) if size < 0 else size)

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read1(len(b))
        n = len(data)
        b[:n] = data
        return n

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        start = 0
        while True:
            end = self._buf.find(b"\n", start)
            if end >= 0:
                n = end + 1
                break
            start = len(self._buf)
            if 0 <= limit <= len(self._buf) or not self._fill():
                n = len(self._buf)
                break
        if 0 <= limit < n:
            n = limit
        return self._take(n)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                break
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def buffer_rest(self) -> None:
        """Pull the rest of the body into memory now (the connection is about to close)."""
        while self._fill():
            pass

    @property
    def exhausted(self) -> bool:
        """True when the whole body has been taken from the stream (the app may not have read it all)."""
        return self._pull is None
