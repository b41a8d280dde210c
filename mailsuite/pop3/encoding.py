"""Stored message bytes -> the POP3 multi-line wire form, one chunk at a time.

Implementation notes:
- RFC 1939 3: every line of a multi-line response ends in CRLF, a line that
  starts with "." gets one more "." in front (byte-stuffing), and the
  response ends with ".\\r\\n" on a line of its own.
- The encoder is fed the message in arbitrary chunks and keeps only two
  bits of state between them (are we at the start of a line; was the last
  byte a CR held back), so memory does not grow with the message size and
  a chunk boundary anywhere (between CR and LF, right before a ".") is
  handled exactly like the same bytes in one piece.
- Line ends are normalised: CRLF and bare LF both become CRLF.  A bare CR
  in the middle of a line is passed through unchanged (it cannot end a
  line for a POP3 client, so it cannot break the framing).
- For TOP (RFC 1939 7) a line budget stops the output after the header
  block, the blank line and ``n`` body lines; :attr:`done` then tells the
  caller to stop reading the file.
"""

from __future__ import annotations

#: The bytes that end every multi-line response (RFC 1939 3).
TERMINATOR = b".\r\n"


class MessageEncoder:
    """Incremental CRLF normalisation, byte-stuffing and optional TOP line limit.

    Call :meth:`feed` with each chunk read from the stored message and
    :meth:`finish` once at end of file; write what they return.  Why a
    class and not a function: the state (line start, held-back CR, how far
    into a TOP we are) must survive chunk boundaries.
    """

    def __init__(self, body_lines: int | None = None) -> None:
        #: None for RETR (everything); the TOP line count otherwise.
        self.body_lines = body_lines
        self._at_line_start = True
        self._held_cr = False
        self._in_header = body_lines is not None
        self._last_byte = b"\n"  # context for finding the blank line after the header
        #: True once TOP's budget is used: the rest of the file is not needed.
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        """Encode one chunk of the stored message (may return b"")."""
        if self.done:
            return b""
        data = b"\r" + chunk if self._held_cr else chunk
        self._held_cr = data.endswith(b"\r")
        if self._held_cr:
            data = data[:-1]  # a CR at the end may be half of a CRLF: decide with the next chunk
        return self._encode(data)

    def finish(self) -> bytes:
        """The tail of the response: any held-back byte, a final CRLF if needed, and ".\\r\\n"."""
        tail = b""
        if self._held_cr and not self.done:
            tail = self._encode(b"\r\n")  # a CR at end of file: the line end it was meant to be
            self._held_cr = False
        if not self._at_line_start:
            tail += b"\r\n"
            self._at_line_start = True
        return tail + TERMINATOR

    def _encode(self, data: bytes) -> bytes:
        if not data:
            return b""
        # Normalise: CRLF -> LF -> CRLF turns bare LFs into CRLF and leaves CRLF as is.
        # Stored mail is CRLF already; counting is cheaper than two copies, so check first.
        line_feeds = data.count(b"\n")
        if line_feeds and data.count(b"\r\n") != line_feeds:
            data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if self.body_lines is not None:
            data = self._limit(data)
            if not data:
                return b""
        # RFC 1939 3: byte-stuff lines that start with the termination octet.
        stuffed = data.replace(b"\n.", b"\n..") if b"\n." in data else data
        if self._at_line_start and stuffed.startswith(b"."):
            stuffed = b"." + stuffed
        self._at_line_start = stuffed.endswith(b"\n")
        return stuffed

    def _limit(self, data: bytes) -> bytes:
        """Cut normalised data at the end of TOP's budget (RFC 1939 7)."""
        start = 0
        if self._in_header:
            # The header ends at the first empty line: "\r\n" right after a line end.
            window = self._last_byte + data
            found = window.find(b"\n\r\n")
            self._last_byte = data[-1:]
            if found < 0:
                return data
            self._in_header = False
            start = found + 3 - 1  # index in data just after the blank line
        assert self.body_lines is not None
        available = data.count(b"\n", start)
        if available < self.body_lines:
            self.body_lines -= available
            return data
        end = start
        for _ in range(self.body_lines):
            end = data.index(b"\n", end) + 1
        self.body_lines = 0
        self.done = True
        return data[:end]
