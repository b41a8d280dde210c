"""DATA decoding: the end marker, dot-unstuffing, bare CR/LF (SMTP smuggling) and the size limit."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailsuite.smtp.data import MAX_PENDING, ChunkChecker, DataDecoder


def decode(stream: bytes, chunks: list[int] | None = None, max_size: int = 10**9) -> tuple[bytes, DataDecoder, bytes | None]:
    out: list[bytes] = []
    decoder = DataDecoder(out.append, max_size)
    rest = None
    pieces = [stream] if not chunks else _split(stream, chunks)
    for i, piece in enumerate(pieces):
        rest = decoder.feed(piece)
        if rest is not None:
            rest += b"".join(pieces[i + 1 :])
            break
    return b"".join(out), decoder, rest


def _split(data: bytes, sizes: list[int]) -> list[bytes]:
    pieces, pos = [], 0
    for n in sizes:
        pieces.append(data[pos : pos + n])
        pos += n
    pieces.append(data[pos:])
    return [p for p in pieces if p]


def stuff(message: bytes) -> bytes:
    """What a correct client sends for a CRLF message (RFC 5321 4.5.2)."""
    lines = message.split(b"\r\n")
    assert lines[-1] == b""
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines[:-1]) + b".\r\n"


def test_simple_message_and_what_follows() -> None:
    """The bytes after CRLF.CRLF are returned (the next pipelined command)."""
    body, decoder, rest = decode(b"Subject: a\r\n\r\nhello\r\n.\r\nQUIT\r\n")
    assert body == b"Subject: a\r\n\r\nhello\r\n"
    assert rest == b"QUIT\r\n" and decoder.done and not decoder.bare_line_ending


def test_empty_message() -> None:
    """A lone dot line right away is an empty message."""
    body, decoder, rest = decode(b".\r\n")
    assert body == b"" and rest == b""


def test_dot_unstuffing_is_exact() -> None:
    """Exactly one leading dot goes; dots elsewhere stay."""
    body, _, _ = decode(b"..\r\n...x\r\na.b\r\n. \r\n.\r\n")
    assert body == b".\r\n..x\r\na.b\r\n \r\n"


def test_end_marker_split_across_every_boundary() -> None:
    """CRLF.CRLF is found whatever the chunking."""
    stream = b"line one\r\n..stuffed\r\nend\r\n.\r\nNOOP\r\n"
    for cut in range(1, len(stream)):
        body, decoder, rest = decode(stream, [cut])
        assert body == b"line one\r\n.stuffed\r\nend\r\n", cut
        assert rest == b"NOOP\r\n", cut


SMUGGLING = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\r\n", b"\n.\r"]


def test_smuggling_sequences_never_end_data() -> None:
    """None of the lax end markers ends the data; each marks the message bare and it ends only at CRLF.CRLF."""
    for seq in SMUGGLING:
        stream = b"Subject: x\r\n\r\nfirst" + seq + b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<v@example.test>\r\nDATA\r\nsmuggled\r\n.\r\nNOOP\r\n"
        for chunks in (None, [15], [20, 1, 1, 1]):
            body, decoder, rest = decode(stream, chunks)
            assert decoder.done, seq
            assert rest == b"NOOP\r\n", seq
            assert decoder.bare_line_ending, seq
            assert b"smuggled" not in body, seq  # output stops at the first bare CR/LF


def test_bare_lf_or_cr_anywhere_marks_message() -> None:
    """A bare LF or CR in the middle of a line is caught too."""
    for data in (b"a\nb\r\n.\r\n", b"a\rb\r\n.\r\n", b"abc\r\r\n.\r\n", b"\n.\r\n"):
        _, decoder, _ = decode(data)
        assert decoder.bare_line_ending, data


def test_cr_split_from_its_lf_is_not_bare() -> None:
    """A CRLF split over two reads, even in a long partial line, is a proper line end."""
    long_line = b"x" * (MAX_PENDING + 10) + b"\r"
    body, decoder, rest = decode(long_line + b"\n.\r\n", [len(long_line)])
    assert not decoder.bare_line_ending
    assert body == b"x" * (MAX_PENDING + 10) + b"\r\n"


def test_long_line_is_not_buffered_whole() -> None:
    """A line without CRLF is handed on once it passes MAX_PENDING bytes."""
    out: list[bytes] = []
    decoder = DataDecoder(out.append, 10**9)
    decoder.feed(b"." + b"y" * (3 * MAX_PENDING))
    assert sum(map(len, out)) >= 2 * MAX_PENDING
    assert out[0].startswith(b"y")  # the leading dot was unstuffed


def test_size_limit_stops_output_but_finds_the_end() -> None:
    """Past max_size nothing more is handed on, and the stream is still followed to its end."""
    out: list[bytes] = []
    decoder = DataDecoder(out.append, 100)
    assert decoder.feed(b"a" * 98 + b"\r\n") is None
    assert decoder.feed(b"b" * 5000 + b"\r\n") is None
    assert decoder.feed(b".\r\nQUIT\r\n") == b"QUIT\r\n"
    assert decoder.too_big and sum(map(len, out)) == 100


lines = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")), max_size=20)


@settings(max_examples=150, deadline=None)
@given(lines=lines, cuts=st.lists(st.integers(min_value=1, max_value=30), max_size=20))
def test_round_trip_any_message_any_chunking(lines: list[bytes], cuts: list[int]) -> None:
    """Stuffing then decoding gives back the message exactly, however the bytes are split."""
    message = b"".join(line + b"\r\n" for line in lines)
    body, decoder, rest = decode(stuff(message) + b"RSET\r\n", cuts)
    assert body == message
    assert rest == b"RSET\r\n"
    assert not decoder.bare_line_ending


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=200), cuts=st.lists(st.integers(min_value=1, max_value=30), max_size=10))
def test_decoder_never_ends_before_crlf_dot_crlf(data: bytes, cuts: list[int]) -> None:
    """Whatever the bytes, the data ends exactly at the first CRLF.CRLF (counting the line start)."""
    _, decoder, rest = decode(data, cuts)
    first = (b"\r\n" + data).find(b"\r\n.\r\n")
    if first < 0:
        assert rest is None
    else:
        assert rest == data[first + 3 :]


def test_chunk_checker() -> None:
    """BDAT chunks: CR at a chunk's end pairs with LF at the next one's start; anything else is bare."""
    good = ChunkChecker()
    for piece in (b"a\r", b"\nb\r\n", b""):
        good.feed(piece)
    good.finish()
    assert not good.bare_line_ending
    for pieces in ([b"a\nb"], [b"a\r", b"b"], [b"a\r"], [b"\n"]):
        checker = ChunkChecker()
        for piece in pieces:
            checker.feed(piece)
        checker.finish()
        assert checker.bare_line_ending, pieces
