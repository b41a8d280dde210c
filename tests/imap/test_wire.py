"""mailsuite.imap.wire: response formatting and the command-argument parser."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailsuite.imap import wire
from mailsuite.imap.wire import FetchAttribute, ParseError, Reader, SequenceSet


def read_back(token: bytes) -> bytes | None:
    """Parse a formatted nstring/astring back as a client would."""
    reader = Reader(token)
    if token == b"NIL":
        value = reader.nstring()
    else:
        value = reader.astring()
    reader.end()
    return value


# -- formatting ---------------------------------------------------------------


def test_string_chooses_quoted_for_plain_text() -> None:
    """Plain 7-bit text is quoted, as Dovecot sends it."""
    assert wire.nstring(b"Hello world") == b'"Hello world"'
    assert wire.nstring(None) == b"NIL"
    assert wire.nstring(b"") == b'""'


@pytest.mark.parametrize("text", [b"a\r\nb", b"caf\xc3\xa9", b'say "hi"', b"back\\slash", b"nul\x00", b"tab\there"])
def test_string_uses_literal_for_unsafe_octets(text: bytes) -> None:
    """CR/LF, 8-bit, quotes, backslashes and controls go out as literals."""
    assert wire.nstring(text) == b"{%d}\r\n" % len(text) + text


def test_quoted_escapes_and_refuses_unquotable() -> None:
    """quoted() escapes the quoted-specials and refuses what no quoted string can carry."""
    assert wire.quoted('a"b\\c') == b'"a\\"b\\\\c"'
    with pytest.raises(ValueError):
        wire.quoted(b"a\r\n")


def test_astring_atom_when_safe() -> None:
    """astring sends a bare atom when possible, never the atom NIL."""
    assert wire.astring("INBOX") == b"INBOX"
    assert wire.astring("nil") == b'"nil"'
    assert wire.astring("two words") == b'"two words"'
    assert wire.astring("") == b'""'


def test_binary_literals() -> None:
    """BINARY data with NUL goes out as literal8 (RFC 3516), other data as a plain literal; both read back."""
    assert wire.binary_literal(b"a\x00b") == b"~{3}\r\na\x00b"
    assert wire.binary_literal(b"ab") == b"{2}\r\nab"
    assert Reader(wire.binary_literal(b"a\x00b")).literal() == b"a\x00b"


def test_format_list_nested() -> None:
    """Lists: preformatted bytes, strings, numbers, NIL and nesting."""
    assert wire.format_list([b"FLAGS", "x y", 3, None, [b"A", ["q"]]]) == b'(FLAGS "x y" 3 NIL (A ("q")))'
    assert wire.format_list([]) == b"()"


def test_format_flags_order() -> None:
    """System flags first, \\Recent when asked, keywords after."""
    assert wire.format_flags({"Work", "\\Seen", "\\Answered"}, recent=True) == b"(\\Answered \\Seen \\Recent Work)"
    assert wire.format_flags(()) == b"()"


def test_internaldate_format_and_parse() -> None:
    """date-time is formatted with a zone and parsed back to the same instant."""
    tz = datetime.timezone(-datetime.timedelta(hours=7))
    dt = datetime.datetime(1996, 7, 17, 2, 44, 25, tzinfo=tz)
    assert wire.format_internaldate(dt) == b'"17-Jul-1996 02:44:25 -0700"'
    assert wire.parse_internaldate(b'"17-Jul-1996 02:44:25 -0700"') == dt
    assert wire.parse_internaldate(" 7-Jul-1996 02:44:25 +0130").utcoffset() == datetime.timedelta(hours=1, minutes=30)
    for bad in (b"17-Jux-1996 02:44:25 -0700", b"31-Feb-1996 02:44:25 -0700", b"17-Jul-1996 02:44:25", b"17-Jul-1996 02:44:25 -0760"):
        with pytest.raises(ParseError):
            wire.parse_internaldate(bad)


@given(st.datetimes(min_value=datetime.datetime(1000, 1, 1), max_value=datetime.datetime(9999, 12, 31)).map(lambda d: d.replace(microsecond=0)),
       st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59))
def test_internaldate_round_trip(naive: datetime.datetime, minutes: int) -> None:
    """Any second-precision date-time with any zone survives format + parse."""
    dt = naive.replace(tzinfo=datetime.timezone(datetime.timedelta(minutes=minutes)))
    back = wire.parse_internaldate(wire.format_internaldate(dt))
    assert back == dt and back.utcoffset() == dt.utcoffset()


@given(st.binary(max_size=200))
def test_nstring_round_trip(data: bytes) -> None:
    """Whatever nstring() chooses, a parser reads back the same octets."""
    if b"\x00" in data:
        data = data.replace(b"\x00", b"")
    assert read_back(wire.nstring(data)) == data
    assert read_back(wire.astring(data)) == data


# -- modified UTF-7 -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("INBOX", b"INBOX"),
        ("~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e", b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501 5.1.3
        ("A&B", b"A&-B"),
        ("Entw\u00fcrfe", b"Entw&APw-rfe"),
        ("\U0001F600", b"&2D3eAA-"),
    ],
)
def test_mutf7_known_values(text: str, encoded: bytes) -> None:
    """The RFC's example and a few known encodings, both ways."""
    assert wire.encode_mailbox_name(text) == encoded
    assert wire.decode_mailbox_name(encoded) == text


@pytest.mark.parametrize(
    "bad",
    [
        b"&", b"&U,BTFw", b"&Jjo!-", b"&AGE-",  # unterminated, bad alphabet, encodes "a"
        b"&AOk-&AOk-",  # two adjacent shifts
        b"&AOl-",  # non-zero leftover bits
        b"&2D0-",  # lone high surrogate
        b"&AA-", b"&A-",  # odd octet count / one stray char
        b"caf\xc3\xa9", b"a\x01b",
    ],
)
def test_mutf7_rejects_invalid(bad: bytes) -> None:
    """Invalid encodings are refused (RFC 3501 5.1.3), not guessed at."""
    with pytest.raises(ParseError):
        wire.decode_mailbox_name(bad)


def test_mutf7_utf8_opt_in() -> None:
    """8-bit names are UTF-8 only when the caller allows it."""
    assert wire.decode_mailbox_name("café".encode(), allow_utf8=True) == "café"
    with pytest.raises(ParseError):
        wire.decode_mailbox_name(b"\xff", allow_utf8=True)


@given(st.text(alphabet=st.characters(min_codepoint=0x20, exclude_categories=("Cs",)), max_size=40))
def test_mutf7_round_trip(text: str) -> None:
    """encode then decode is the identity; the encoding is 7-bit printable."""
    encoded = wire.encode_mailbox_name(text)
    assert all(0x20 <= c <= 0x7E for c in encoded)
    assert wire.decode_mailbox_name(encoded) == text


@given(st.binary(max_size=40))
def test_mutf7_decoder_only_raises_parse_error(raw: bytes) -> None:
    """Any octets: a name or ParseError; accepted names re-encode identically."""
    try:
        text = wire.decode_mailbox_name(raw)
    except ParseError:
        return
    assert wire.encode_mailbox_name(text) == raw


# -- commands and arguments ---------------------------------------------------


def test_literals_in_place_are_read_by_the_productions() -> None:
    """Arguments with literals glued in (as the server's framing delivers them) read like quoted strings."""
    args = Reader(b'{4}\r\nuser "pa\\"ss"')
    assert args.astring() == b"user"
    args.space()
    assert args.astring() == b'pa"ss'
    args.end()


def test_generic_values() -> None:
    """Atoms, NIL, quoted, literal, literal8 and nested lists."""
    values = Reader(b'A NIL "q" {3}\r\nl\r\n ~{2}\r\n\x00\x01 (B (C) ()) BODY[HEADER.FIELDS (A B)]<0.5>').values()
    assert values[0] == "A" and isinstance(values[0], wire.Atom)
    assert values[1] is None
    assert values[2] == b"q" and isinstance(values[2], wire.Quoted)
    assert values[3] == b"l\r\n" and isinstance(values[3], wire.Literal)
    assert values[4] == b"\x00\x01" and values[4].binary
    assert values[5] == ["B", ["C"], []]
    assert values[6] == "BODY[HEADER.FIELDS (A B)]<0.5>"


@pytest.mark.parametrize("bad", [b"{5}\r\nabc", b'"abc', b'"a\\b"', b"(A", b"(" * 200 + b")" * 200, b'"a\rb"', b"{3}\r\na\x00b"])
def test_generic_value_errors(bad: bytes) -> None:
    """Short literals, unterminated strings, bad escapes, deep nesting, NUL in a literal."""
    with pytest.raises(ParseError):
        Reader(bad).values()


def test_sequence_sets_and_resolution() -> None:
    """``*`` resolves to the largest existing number; reversed ranges are normalised."""
    s = wire.parse_sequence_set(b"1:*,3,5:7")
    assert s.ranges == ((1, None), (3, 3), (5, 7))
    assert s.resolve(range(1, 4)) == [1, 2, 3]
    assert wire.parse_sequence_set(b"*:4").resolve([2, 10, 20]) == [10, 20]
    # RFC 3501 6.4.8: UID n:* names the last message even when n is above it
    assert wire.parse_sequence_set(b"100:*").resolve([2, 10, 20]) == [20]
    assert wire.parse_sequence_set(b"*").resolve([]) == []
    assert wire.parse_sequence_set(b"2,4:5").out_of_range(4)
    assert not wire.parse_sequence_set(b"1:*").out_of_range(4)
    assert wire.parse_sequence_set(b"*").out_of_range(0)
    assert wire.parse_sequence_set(b"$").saved
    assert bytes(wire.parse_sequence_set(b"1:*,3,7:5")) == b"1:*,3,7:5"
    for bad in (b"0", b"1:", b":1", b"1::2", b"a", b"1,,2", b"4294967296", b"01", b""):
        with pytest.raises(ParseError):
            wire.parse_sequence_set(bad)


@given(st.lists(st.tuples(st.integers(1, 50), st.integers(1, 50) | st.none()), min_size=1, max_size=5), st.lists(st.integers(1, 60), unique=True).map(sorted))
def test_sequence_set_resolve_matches_definition(ranges: list[tuple[int, int | None]], existing: list[int]) -> None:
    """resolve() equals the set-builder definition of RFC 3501 9 on UID lists and ranges."""
    s = SequenceSet(tuple((a, b if b is not None else None) for a, b in ranges))
    for pool in (existing, range(1, len(existing) + 1)):
        if not pool:
            assert s.resolve(pool) == []
            continue
        top = pool[-1]
        want = set()
        for a, b in s.ranges:
            lo, hi = sorted((a if a is not None else top, b if b is not None else top))
            want |= {x for x in pool if lo <= x <= hi}
        assert s.resolve(pool) == sorted(want)
        assert wire.parse_sequence_set(bytes(s)) == s


def test_flags_and_dates() -> None:
    """flag lists with canonical system flags; \\Recent refused where it cannot be stored."""
    assert Reader(b"(\\seen $Work \\DELETED)").flag_list() == ("\\Seen", "$Work", "\\Deleted")
    assert Reader(b"\\Seen foo").flag_list(bare=True) == ("\\Seen", "foo")
    for bad in (b"(\\Recent)", b"(\\Bogus)", b"(a", b"(a  b)"):
        with pytest.raises(ParseError):
            Reader(bad).flag_list()
    assert Reader(b"1-Feb-1994").date() == datetime.date(1994, 2, 1)
    assert Reader(b'"01-feb-1994"').date() == datetime.date(1994, 2, 1)
    with pytest.raises(ParseError):
        Reader(b"30-Feb-1994").date()


def test_fetch_macros_and_items() -> None:
    """Macros expand per RFC 3501 6.4.5; sections, PEEK and partials are typed."""
    assert [a.name for a in wire.parse_fetch_attributes(b"ALL").attributes] == ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"]
    assert [a.name for a in wire.parse_fetch_attributes(b"full").attributes][-1] == "BODY"
    req = wire.parse_fetch_attributes(
        b"(UID body.peek[1.2.HEADER.FIELDS (from \"To\")]<10.20> BODY[] BODY[3.MIME] BODY BINARY.PEEK[1] BINARY.SIZE[2] BODY[TEXT]) (CHANGEDSINCE 12345)"
    )
    atts = req.attributes
    assert atts[0] == FetchAttribute("UID")
    assert atts[1] == FetchAttribute("BODY", (1, 2), "HEADER.FIELDS", ("FROM", "TO"), (10, 20), peek=True)
    assert atts[1].response_name() == b"BODY[1.2.HEADER.FIELDS (FROM TO)]<10>"
    assert not atts[1].sets_seen
    assert atts[2] == FetchAttribute("BODY", (), "") and atts[2].sets_seen
    assert atts[3].section == (3,) and atts[3].specifier == "MIME"
    assert atts[4] == FetchAttribute("BODY") and atts[4].section is None and not atts[4].sets_seen
    assert atts[5].name == "BINARY" and atts[5].peek and atts[5].section == (1,)
    assert atts[6].name == "BINARY.SIZE"
    assert atts[7].response_name() == b"BODY[TEXT]"
    assert req.changed_since == 12345


def test_repeated_fetch_items_parse_like_the_first() -> None:
    """An item written again (BODY.PEEK[1]<0.1> thousands of times, issue 15) is taken as the
    same attribute without parsing it again; a longer item starting with the same text is not."""
    atts = wire.parse_fetch_attributes(b"(BODY.PEEK[1]<0.1> BODY.PEEK[1]<0.1> BODY.PEEK[1]<0.10> BODY BODY[1] BODY[1] FLAGS)").attributes
    assert [a.response_name() for a in atts] == [b"BODY[1]<0>", b"BODY[1]<0>", b"BODY[1]<0>", b"BODY", b"BODY[1]", b"BODY[1]", b"FLAGS"]
    assert atts[2].partial == (0, 10) and atts[0].partial == (0, 1)
    for bad in (b"(FLAGS FLAGSX)", b"(BODY[1] BODY[1]<0.0>)", b"(UID UID(FLAGS))"):
        with pytest.raises(ParseError):
            wire.parse_fetch_attributes(bad)


def test_changedsince_zero_means_everything() -> None:
    """Thunderbird's first CONDSTORE sync sends CHANGEDSINCE 0; RFC 7162's grammar wants 1+, Dovecot accepts it, so do we."""
    assert wire.parse_fetch_attributes(b"(FLAGS) (CHANGEDSINCE 0)").changed_since == 0


@pytest.mark.parametrize(
    "bad",
    [b"", b"()", b"(FLAGS", b"BODY[MIME]", b"BODY[1.]", b"BODY[0]", b"BODY[HEADER.FIELDS ()]", b"BODY[HEADER.FIELDS]",
     b"BODY[1]<5>", b"BODY[1]<1.0>", b"BINARY[HEADER]", b"RFC822.BOGUS", b"BODY.PEEK", b"ALL FLAGS", b"(ALL)",
     b"FLAGS (VANISHED)", b"FLAGS (CHANGEDSINCE x)", b"BODY[TEXT"],
)
def test_fetch_errors(bad: bytes) -> None:
    """Malformed fetch items are BAD."""
    with pytest.raises(ParseError):
        wire.parse_fetch_attributes(bad)


def test_store_arguments() -> None:
    """STORE's modes, .SILENT, bare flag lists and UNCHANGEDSINCE (RFC 7162)."""
    s = Reader(b"+FLAGS.SILENT (\\Seen $X)").store_arguments()
    assert (s.mode, s.silent, s.flags, s.unchanged_since) == ("add", True, ("\\Seen", "$X"), None)
    s = Reader(b"(UNCHANGEDSINCE 7) -flags \\Deleted").store_arguments()
    assert (s.mode, s.silent, s.flags, s.unchanged_since) == ("remove", False, ("\\Deleted",), 7)
    assert Reader(b"FLAGS ()").store_arguments().flags == ()
    for bad in (b"FLAG (\\Seen)", b"+FLAGS", b"FLAGS (\\Recent)", b"(UNCHANGED 1) FLAGS ()", b"FLAGS () x"):
        with pytest.raises(ParseError):
            Reader(bad).store_arguments()


def test_mailbox_production() -> None:
    """mailbox decodes modified UTF-7 and folds INBOX's case."""
    assert Reader(b"inbox").mailbox() == "INBOX"
    assert Reader(b'"Entw&APw-rfe"').mailbox() == "Entwürfe"
    assert Reader(b"Inbox/Sub").mailbox() == "Inbox/Sub"
    assert Reader(b"%/*").list_mailbox() == "%/*"


_ALPHABET = st.sampled_from([b"a", b"1", b" ", b"(", b")", b"[", b"]", b"<", b">", b".", b"*", b":", b",", b'"', b"\\", b"{", b"}", b"~", b"+", b"\r\n", b"\x00", b"\xff", b"NIL", b"BODY", b"FLAGS", b"HEADER.FIELDS", b"{2}\r\n", b"$", b"-"])


@settings(max_examples=300)
@given(st.lists(_ALPHABET, max_size=30).map(b"".join))
def test_parsers_only_raise_parse_error(data: bytes) -> None:
    """Arbitrary input never makes any production raise anything but ParseError."""
    productions = [
        lambda r: r.values(), lambda r: r.fetch_request(), lambda r: r.store_arguments(), lambda r: r.sequence_set(),
        lambda r: r.flag_list(bare=True), lambda r: r.mailbox(), lambda r: r.list_mailbox(), lambda r: r.date(),
        lambda r: r.date_time(), lambda r: r.nstring(), lambda r: r.number64(),
    ]
    for production in productions:
        try:
            production(Reader(data))
        except ParseError:
            pass
