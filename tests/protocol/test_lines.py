"""mailsuite.protocol.lines: framing of pipelined input."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailsuite.protocol.lines import take_bytes, take_line


def test_crlf_and_bare_lf_end_lines_and_a_partial_line_waits() -> None:
    buffer = bytearray(b"EHLO a\r\nNOOP\nQUI")
    assert take_line(buffer) == b"EHLO a"
    assert take_line(buffer) == b"NOOP"
    assert take_line(buffer) is None
    assert buffer == b"QUI"
    buffer += b"T\r\n"
    assert take_line(buffer) == b"QUIT" and buffer == b""


def test_only_the_cr_right_before_lf_is_dropped() -> None:
    buffer = bytearray(b"a\rb\r\r\n\r\n")
    assert take_line(buffer) == b"a\rb\r"
    assert take_line(buffer) == b""


def test_take_bytes_takes_at_most_what_is_there() -> None:
    buffer = bytearray(b"abc\r\nrest")
    assert take_bytes(buffer, 5) == b"abc\r\n"
    assert take_bytes(buffer, 10) == b"rest" and buffer == b""


@given(st.lists(st.binary(max_size=20).filter(lambda b: b"\n" not in b), max_size=10), st.binary(max_size=20).filter(lambda b: b"\n" not in b))
def test_lines_come_back_in_order_whatever_the_split(lines: list[bytes], tail: bytes) -> None:
    """Taking lines gives back exactly what was sent, line by line; the unterminated rest stays."""
    data = b"".join(line + b"\r\n" for line in lines) + tail
    buffer = bytearray()
    got = []
    for i in range(0, len(data), 3):  # arriving three bytes at a time
        buffer += data[i : i + 3]
        while (line := take_line(buffer)) is not None:
            got.append(line)
    assert got == lines and buffer == tail
