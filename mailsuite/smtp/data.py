"""Message data decoding for DATA (RFC 5321 4.1.1.4, 4.5.2) and BDAT (RFC 3030).

Implementation notes:

- Only ``<CRLF>.<CRLF>`` ends DATA.  The decoder scans the byte stream for that
  exact sequence (with the CRLF that ended the previous line); ``<LF>.<LF>``,
  ``<LF>.<CR><LF>``, ``<CR><LF>.<LF>`` and ``<CR>.<CR>`` never end the data.
- Any CR not followed by LF, or LF not preceded by CR, anywhere in the data
  marks the message ``bare_line_ending``; the server then refuses the whole
  message (550 5.6.11) after the real end marker, so a smuggled "second
  message" can never be accepted, in part or whole (SMTP smuggling, 2023).
- Dot-unstuffing removes exactly one leading dot of every line (4.5.2).
- Memory is bounded: complete lines are handed on at once, a partial line is
  held only up to :data:`MAX_PENDING` bytes, then handed on too.  Past the
  size limit nothing more is handed on (``too_big``), but the stream is still
  scanned for the end marker.
- Decoding is done on whole chunks with bytes.find / replace / count (no
  per-line Python loop), which keeps the reactor thread fast.
"""

from __future__ import annotations

from typing import Callable

#: Longest partial line kept while waiting for its CRLF.
MAX_PENDING = 64 * 1024

_END = b"\r\n.\r\n"


def has_bare_line_ending(segment: bytes) -> bool:
    """True if a CR or LF in ``segment`` is not part of a CRLF pair."""
    pairs = segment.count(b"\r\n")
    return segment.count(b"\r") != pairs or segment.count(b"\n") != pairs


class DataDecoder:
    """Turns DATA's transparent stream into message bytes; see the module notes.

    ``sink`` receives unstuffed message bytes (CRLF line ends) while the size
    stays within ``max_size``.
    """

    def __init__(self, sink: Callable[[bytes], None], max_size: int) -> None:
        self.sink = sink
        self.max_size = max_size
        self.size = 0  # bytes of message content seen (after unstuffing), even past the limit
        self.too_big = False
        self.bare_line_ending = False
        self.done = False
        self._pending = b""
        self._at_line_start = True  # the pending bytes begin a line

    def feed(self, data: bytes) -> bytes | None:
        """Consume bytes; returns None while more data is needed, else the bytes after the end marker."""
        prefix = b"\r\n" if self._at_line_start else b""
        stream = prefix + self._pending + data
        self._pending = b""
        end = stream.find(_END)
        if end >= 0:
            self._emit(stream[: end + 2], len(prefix))
            self.done = True
            return stream[end + 5 :]
        last = stream.rfind(b"\r\n")
        if last >= 0 and last + 2 >= len(prefix):
            # everything up to the last CRLF is complete lines (the CRLF itself is
            # emitted now; the line after it starts with a fresh line start)
            self._emit(stream[: last + 2], len(prefix))
            self._pending = stream[last + 2 :]
            self._at_line_start = True
            if len(self._pending) > MAX_PENDING:
                self._flush_partial()
            return None
        # no complete line in the new bytes
        self._pending = stream[len(prefix) :]
        if len(self._pending) > MAX_PENDING:
            self._flush_partial()
        return None

    def _flush_partial(self) -> None:
        """Hand on a long partial line, keeping a trailing CR (it may pair with the next LF)."""
        prefix = b"\r\n" if self._at_line_start else b""
        stream = prefix + self._pending
        keep = 1 if stream.endswith(b"\r") else 0
        self._emit(stream[: len(stream) - keep], len(prefix))
        self._pending = stream[len(stream) - keep :] if keep else b""
        self._at_line_start = False

    def _emit(self, segment: bytes, prefix_len: int) -> None:
        # RFC 5321 4.5.2: a line beginning with "." loses that one dot
        if b"\r\n." in segment:
            segment = segment.replace(b"\r\n.", b"\r\n")
        segment = segment[prefix_len:]
        if not segment:
            return
        if not self.bare_line_ending and has_bare_line_ending(segment):
            self.bare_line_ending = True
        self.size += len(segment)
        if self.size > self.max_size:
            self.too_big = True
        if not self.too_big and not self.bare_line_ending:
            self.sink(segment)


class ChunkChecker:
    """Bare CR / LF detection across BDAT chunks (a CR may end one chunk and its LF start the next)."""

    def __init__(self) -> None:
        self.bare_line_ending = False
        self._carry_cr = False

    def feed(self, data: bytes) -> None:
        """Look at the next bytes of the message."""
        if self.bare_line_ending or not data:
            return
        text = (b"\r" if self._carry_cr else b"") + data
        self._carry_cr = text.endswith(b"\r")
        if self._carry_cr:
            text = text[:-1]
        if has_bare_line_ending(text):
            self.bare_line_ending = True

    def finish(self) -> None:
        """The message ended: a CR still waiting for its LF is bare."""
        if self._carry_cr:
            self.bare_line_ending = True
