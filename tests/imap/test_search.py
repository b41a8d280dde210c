"""mailsuite.imap.search: SEARCH key parsing and evaluation semantics (RFC 3501 6.4.4)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailsuite.errors import NoSuchMessage
from mailsuite.imap import mime, search
from mailsuite.imap.search import BadCharset, SearchMessage, parse_search
from mailsuite.imap.wire import ParseError
from mailsuite.interfaces import MessageInfo

UTC = datetime.timezone.utc
CORPUS = Path(__file__).parent.parent / "data" / "cpython-email"


def info(uid: int, flags: tuple[str, ...] = (), size: int = 100, date: datetime.datetime | None = None, modseq: int = 1) -> MessageInfo:
    return MessageInfo(uid, frozenset(flags), size, date or datetime.datetime(2024, 3, 10, 12, 0, tzinfo=UTC), modseq, f"k{uid}")


class Mailbox:
    """A few messages with counters of how often their octets were read."""

    def __init__(self, messages: list[tuple[MessageInfo, bytes, bool]]) -> None:
        self.messages = messages
        self.header_reads = 0
        self.body_reads = 0

    def search(self, criteria: bytes) -> list[int]:
        query = parse_search(criteria)
        last_seq = len(self.messages)
        last_uid = self.messages[-1][0].uid if self.messages else 0
        found = []
        for seq, (meta, data, recent) in enumerate(self.messages, 1):
            def header(data: bytes = data) -> bytes:
                self.header_reads += 1
                return mime.read_header(data)

            def whole(data: bytes = data) -> bytes:
                self.body_reads += 1
                return data

            if search.matches(query, SearchMessage(seq, meta, recent, header, whole), last_seq=last_seq, last_uid=last_uid):
                found.append(seq)
        return found


M1 = (
    b"Date: Sun, 10 Mar 2024 23:30:00 -0800\r\n"
    b"From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <jm@example.de>\r\n"
    b"To: Ann <ann@example.org>\r\n"
    b"Subject: =?iso-8859-1?b?U2No9m5lIEdy/N9l?=\r\n"
    b"X-Tag: alpha\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Stra=C3=9Fe und Caf=C3=A9 au lait\r\n"
)
M2 = (
    b"Date: 1 Jan 2023 00:00:00 +0000\r\n"
    b"From: bob@example.com\r\n"
    b"To: team@example.com\r\n"
    b"Cc: Carol <carol@example.net>\r\n"
    b"Subject: Quarterly report\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="zz"\r\n'
    b"\r\n"
    b"--zz\r\n"
    b"Content-Type: text/html; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"PHA+R3L832UgYXVzIEv2bG48L3A+\r\n"
    b"--zz\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"c2VjcmV0IGluIGF0dGFjaG1lbnQ=\r\n"
    b"--zz\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: forwarded thing\r\n"
    b"\r\n"
    b"inner body words\r\n"
    b"--zz--\r\n"
)
M3 = b"From: eve@example.com\r\nSubject: no date here\r\n\r\nplain 8-bit caf\xc3\xa9\r\n"


@pytest.fixture
def box() -> Mailbox:
    return Mailbox([
        (info(10, ("\\Seen", "$Work"), size=len(M1), date=datetime.datetime(2024, 3, 10, 23, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=-8))), modseq=5), M1, False),
        (info(20, ("\\Answered", "\\Flagged"), size=len(M2), date=datetime.datetime(2023, 1, 1, tzinfo=UTC), modseq=9), M2, True),
        (info(30, ("\\Deleted", "\\Draft", "\\Seen"), size=len(M3), date=datetime.datetime(2022, 6, 15, 8, 0, tzinfo=UTC), modseq=2), M3, True),
    ])


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        (b"ALL", [1, 2, 3]),
        (b"SEEN", [1, 3]), (b"UNSEEN", [2]), (b"ANSWERED", [2]), (b"UNANSWERED", [1, 3]),
        (b"FLAGGED", [2]), (b"UNFLAGGED", [1, 3]), (b"DELETED", [3]), (b"UNDELETED", [1, 2]),
        (b"DRAFT", [3]), (b"UNDRAFT", [1, 2]), (b"RECENT", [2, 3]), (b"OLD", [1]), (b"NEW", [2]),
        (b"KEYWORD $work", [1]), (b"UNKEYWORD $Work", [2, 3]),
        (b"1", [1]), (b"2:*", [2, 3]), (b"*", [3]), (b"*:2", [2, 3]), (b"1,3", [1, 3]),
        (b"UID 20", [2]), (b"UID 25:*", [3]), (b"UID 100:*", [3]), (b"UID 1:15", [1]),
        (b"NOT SEEN", [2]), (b"OR DELETED FLAGGED", [2, 3]), (b"(SEEN UNDELETED)", [1]),
        (b"NOT (SEEN UNDELETED)", [2, 3]), (b"OR (SEEN DRAFT) NOT RECENT", [1, 3]), (b"SEEN DELETED", [3]),
        (b"MODSEQ 5", [1, 2]), (b'MODSEQ "/flags/\\\\Seen" all 9', [2]),
    ],
)
def test_meta_keys_never_read_messages(box: Mailbox, criteria: bytes, expected: list[int]) -> None:
    """Flag, sequence, UID and MODSEQ searches answer from MessageInfo alone."""
    assert box.search(criteria) == expected
    assert (box.header_reads, box.body_reads) == (0, 0)


def test_size_and_internal_dates(box: Mailbox) -> None:
    """LARGER/SMALLER are strict; BEFORE/ON/SINCE use the internal date's own day, no files read."""
    assert box.search(b"LARGER %d" % len(M3)) == [1, 2]
    assert box.search(b"SMALLER %d" % len(M1)) == [3]
    assert box.search(b"SMALLER %d" % len(M3)) == []
    # message 1 is 10-Mar-2024 23:30 -0800 (11 March in UTC): its own day counts
    assert box.search(b"ON 10-Mar-2024") == [1]
    assert box.search(b"BEFORE 10-Mar-2024") == [2, 3]
    assert box.search(b'SINCE "1-Jan-2023"') == [1, 2]
    assert box.search(b"SINCE 11-Mar-2024") == []
    assert (box.header_reads, box.body_reads) == (0, 0)


def test_sent_dates_use_the_date_header(box: Mailbox) -> None:
    """SENT* read the Date: header (its own zone's day); no Date: never matches."""
    assert box.search(b"SENTON 10-Mar-2024") == [1]
    assert box.search(b"SENTBEFORE 1-Feb-2023") == [2]
    assert box.search(b"SENTSINCE 1-Jan-2023") == [1, 2]
    assert box.body_reads == 0


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        (b"FROM mueller", []), (b'FROM "m\xc3\xbcller"', [1]), (b'FROM "J\xc3\x9cRGEN"', [1]), (b"FROM jm@example", [1]),
        (b"SUBJECT \"sch\xc3\xb6ne\"", [1]), (b"SUBJECT REPORT", [2]), (b"TO ann", [1]), (b"CC carol", [2]),
        (b"BCC x", []), (b"HEADER X-Tag ALP", [1]), (b'HEADER x-tag ""', [1]), (b'HEADER Cc ""', [2]),
        (b"HEADER Subject forwarded", []), (b"CHARSET UTF-8 FROM {7}\r\nm\xc3\xbcller", [1]),
        (b"OR FROM bob FROM eve", [2, 3]), (b"SEEN FROM eve", [3]),
    ],
)
def test_header_keys_read_only_headers(box: Mailbox, criteria: bytes, expected: list[int]) -> None:
    """Header matching is case-insensitive on RFC 2047-decoded values and never reads bodies."""
    assert box.search(criteria) == expected
    assert box.body_reads == 0


def test_cheap_keys_first_avoid_reading_headers(box: Mailbox) -> None:
    """In an AND, flag tests run first: unmatched flags skip the header read."""
    assert box.search(b"FROM example DELETED") == [3]
    assert box.header_reads == 1


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        (b'BODY "stra\xc3\x9fe"', [1]),  # quoted-printable UTF-8 decoded
        (b'BODY "CAF\xc3\x89"', [1, 3]),  # case folding beyond ASCII; raw 8-bit body
        (b"BODY \"gr\xc3\xbc\xc3\x9fe aus\"", [2]),  # base64 ISO-8859-1 HTML part
        (b"BODY secret", []),  # attachments are not text
        (b"BODY \"inner body\"", [2]),  # text inside message/rfc822
        (b"BODY report", []),  # BODY does not look at headers
        (b"TEXT report", [2]),  # TEXT does
        (b"TEXT \"forwarded thing\"", [2]),  # headers of an encapsulated message
        (b"TEXT {7}\r\nsch\xc3\xb6ne", [1]),  # decoded header text
        (b"TEXT lait", [1]),
    ],
)
def test_body_and_text(box: Mailbox, criteria: bytes, expected: list[int]) -> None:
    """BODY/TEXT search decoded text parts (and TEXT the headers), as Dovecot does."""
    assert box.search(criteria) == expected


@pytest.mark.parametrize("bad", [
    b"", b"BOGUS", b"FROM", b"OR SEEN", b"NOT", b"(SEEN", b"()", b"SEEN)", b"LARGER x", b"BEFORE 32-Jan-2024",
    b"UID", b"$", b"HEADER \"\" x", b"FROM m\xc3\xbcller", b"SEEN  UNSEEN", b"FROM \xff", b"MODSEQ \"/x\" bogus 5", b"KEYWORD \\Seen",
    b"(" * 500 + b"ALL" + b")" * 500,
])
def test_parse_errors(bad: bytes) -> None:
    """Malformed criteria are ParseErrors (BAD)."""
    with pytest.raises(ParseError):
        parse_search(bad)


def test_charsets() -> None:
    """CHARSET UTF-8/US-ASCII accepted; others are NO [BADCHARSET (UTF-8 US-ASCII)]."""
    assert parse_search(b"CHARSET us-ascii ALL").charset == "US-ASCII"
    assert parse_search(b'CHARSET "UTF-8" ALL').charset == "UTF-8"
    with pytest.raises(BadCharset) as caught:
        parse_search(b"CHARSET ISO-8859-1 FROM x")
    assert caught.value.code == "BADCHARSET (UTF-8 US-ASCII)"


def test_needs_and_modseq_flag() -> None:
    """The tree says what it reads; MODSEQ use is reported for the (MODSEQ n) response."""
    assert parse_search(b"SEEN UID 1:*").needs == "meta"
    assert parse_search(b"OR SEEN FROM x").needs == "header"
    assert parse_search(b"NOT TEXT x").needs == "body"
    assert parse_search(b"MODSEQ 3").uses_modseq and not parse_search(b"ALL").uses_modseq


def test_compat_api_with_bound_sets(tmp_path: Path) -> None:
    """parse(args, resolve)/evaluate(...) bind sequence sets across batches; messages are read
    (through the store's IMessageOctets) only when a key needs them."""
    paths = {}
    for uid, data in ((10, M1), (20, M2), (30, M3)):
        paths[uid] = tmp_path / str(uid)
        paths[uid].write_bytes(data)
    opened: list[int] = []

    class Octets:  # IMessageOctets over the files
        def header(self, uid: int) -> bytes:
            opened.append(uid)
            return mime.read_header(paths[uid].read_bytes())

        def message(self, uid: int) -> bytes:
            opened.append(uid)
            return paths[uid].read_bytes()

    class Missing:  # every message expunged meanwhile
        def header(self, uid: int) -> bytes:
            raise NoSuchMessage()

        message = header

    opener = Octets()

    class Args:
        def __init__(self, data: bytes) -> None:
            self.data, self.pos = data, 0

    view = [10, 20, 30]

    def resolve(ranges, is_uid):
        from mailsuite.imap.wire import SequenceSet
        pool = view if is_uid else list(range(1, len(view) + 1))
        picked = SequenceSet(tuple(ranges)).resolve(pool)
        return picked if is_uid else [view[n - 1] for n in picked]

    candidates = [(1, 10, info(10, ("\\Seen",)), False), (2, 20, info(20), True), (3, 30, info(30), False)]
    args = Args(b"2:*")
    query = search.parse(args, resolve)
    assert args.pos == len(args.data)
    # evaluated in two batches: "*" still means the mailbox's last message
    assert search.evaluate(query, candidates[:2], opener) + search.evaluate(query, candidates[2:], opener) == [(2, 20, 1), (3, 30, 1)]
    assert opened == []
    assert search.evaluate(search.parse(Args(b"BODY lait"), resolve), candidates, opener) == [(1, 10, 1)]
    assert sorted(set(opened)) == [10, 20, 30]
    missing = Missing()
    assert search.evaluate(search.parse(Args(b"FROM x"), resolve), candidates, missing) == []
    # header blocks already read (the server's header cache) are used instead of the files
    cached = {20: b"From: cached@example.com\r\n\r\n"}
    assert search.evaluate(search.parse(Args(b"FROM cached"), resolve), candidates[1:2], missing, cached) == [(2, 20, 1)]


def test_decode_header_text() -> None:
    """RFC 2047: adjacent encoded words join, whitespace between them dropped; broken words kept."""
    assert search.decode_header_text(b"=?utf-8?q?a?= =?utf-8?q?b?= c") == "ab c"
    assert search.decode_header_text(b"=?utf-8?b?w6k=?=") == "é"
    assert search.decode_header_text(b"=?bogus-charset?q?x?=") == "x"
    assert search.decode_header_text(b"caf\xe9") == "café"


def test_corpus_searches_do_not_raise() -> None:
    """Every corpus message survives header and text searches."""
    for path in sorted(CORPUS.glob("msg_*.txt")):
        data = path.read_bytes()
        box = Mailbox([(info(1, size=len(data)), data, False)])
        for criteria in (b"TEXT the", b"BODY a", b"FROM a", b"SENTSINCE 1-Jan-1990", b"HEADER Content-Type \"\""):
            box.search(criteria)


_TOKENS = st.sampled_from([
    b"ALL", b"SEEN", b"NOT", b"OR", b"(", b")", b"FROM", b"x", b'"q"', b"1:*", b"UID", b"*", b"LARGER", b"5",
    b"SINCE", b"1-Jan-2020", b"HEADER", b"MODSEQ", b"CHARSET", b"UTF-8", b"{1}\r\nz", b"BODY", b"$", b"\xff",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(_TOKENS, max_size=12).map(b" ".join))
def test_parser_only_raises_parse_error(data: bytes) -> None:
    """Any token soup either parses (and evaluates) or is a ParseError/BadCharset."""
    try:
        query = parse_search(data)
    except (ParseError, BadCharset):
        return
    msg = SearchMessage(1, info(1), False, lambda: mime.read_header(M2), lambda: M2)
    search.matches(query, msg, last_seq=1, last_uid=1)
