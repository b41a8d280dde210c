"""Line framing shared by the three protocols.

Implementation notes:

- A line ends at LF; a CR right before it is dropped with it (RFC 5321
  2.3.8, RFC 1939 3 and RFC 3501 2.2 ask for CRLF, but a bare LF is taken
  as a line end by all three protocols here, as by most servers).  A CR
  anywhere else stays in the line for the protocol to judge.
- The protocols keep their input in one ``bytearray`` and take lines from
  its front as they handle them (pipelining: later lines wait in the
  buffer while a command runs), so every take removes what it returns.
- What an over-long line means is each protocol's choice (SMTP answers
  500 and skips it, POP3 hangs up, IMAP answers BAD and skips it); this
  module only frames.
"""

from __future__ import annotations


def take_line(buffer: bytearray) -> bytes | None:
    """Remove the first complete line from ``buffer`` and return it without its line end; None if there is none yet."""
    end = buffer.find(b"\n")
    if end < 0:
        return None
    line = bytes(buffer[:end])
    del buffer[: end + 1]
    if line.endswith(b"\r"):
        line = line[:-1]
    return line


def take_bytes(buffer: bytearray, count: int) -> bytes:
    """Remove and return up to ``count`` bytes from the front of ``buffer`` (a literal's or a BDAT chunk's octets)."""
    chunk = bytes(buffer[:count])
    del buffer[:count]
    return chunk
