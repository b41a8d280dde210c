"""mailsuite.imap.mime: structure, ENVELOPE, BODYSTRUCTURE and BODY[section] over raw octets."""

from __future__ import annotations

import email
import email.policy
import io
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailsuite.imap import mime, wire

CORPUS = sorted((Path(__file__).parent.parent / "data" / "cpython-email").glob("msg_*.txt"))

#: Corpus messages whose tree Python's parser builds differently on purpose:
#: nested multiparts reusing their parent's boundary (15, 39: boundaries are
#: matched innermost first, as Dovecot does), empty parts between adjacent
#: delimiters (37: RFC 2046 makes each an empty part; Python drops them), and
#: a multipart with no parts inside message/rfc822 (42).  Each has its own test.
DIFFERENT_BY_DESIGN = {"msg_15.txt", "msg_37.txt", "msg_39.txt", "msg_42.txt"}


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def python_walk(msg: email.message.Message, prefix: tuple[int, ...] = ()):
    """IMAP part numbers (RFC 3501 6.4.5) over Python's email tree."""
    yield prefix, msg
    if msg.get_content_type() == "message/rfc822":
        inner = msg.get_payload()[0]
        base = prefix or (1,)  # a non-multipart message is its own part 1
        if inner.get_content_maintype() == "multipart":
            if inner.is_multipart():
                for i, child in enumerate(inner.get_payload(), 1):
                    yield from python_walk(child, base + (i,))
        else:
            yield from python_walk(inner, base + (1,))
    elif msg.get_content_maintype() == "multipart" and msg.is_multipart():
        for i, child in enumerate(msg.get_payload(), 1):
            yield from python_walk(child, prefix + (i,))


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
@pytest.mark.parametrize("line_ends", ["as-is", "crlf"])
def test_corpus_structure_matches_python(path: Path, line_ends: str) -> None:
    """Part numbering, content types and leaf body byte ranges agree with Python's email parser."""
    data = path.read_bytes()
    if line_ends == "crlf":
        data = crlf(data)
    root = mime.parse(data)
    ours = dict(root.walk())
    # every structure item is well-formed whatever the input
    for numbers, part in ours.items():
        assert 0 <= part.start <= part.body_start <= part.end <= len(data), numbers
    wire.Reader(b"(" + mime.bodystructure(data) + b")").value_list()
    wire.Reader(b"(" + mime.bodystructure(data, extended=False) + b")").value_list()
    wire.Reader(mime.envelope(mime.read_header(data))).value_list()
    if path.name in DIFFERENT_BY_DESIGN:
        return
    py = email.message_from_bytes(data, policy=email.policy.compat32)
    theirs = list(python_walk(py))
    assert [(n, (p.media_type + b"/" + p.subtype).decode().lower()) for n, p in root.walk()] == [
        (n, m.get_content_type()) for n, m in theirs
    ]
    for numbers, msg in theirs:
        part = ours[numbers]
        if not any(f.name == "" for f in part.fields):
            # the header: same fields in the same order, values byte-exact
            assert [f.name for f in part.fields] == [k.lower() for k in msg.keys()], numbers
            assert [f.raw.split(b":", 1)[1].lstrip(b" \t").rstrip(b"\r\n") for f in part.fields] == [
                v.encode("ascii", "surrogateescape") for v in msg.values()
            ], numbers
        if part.multipart or part.message is not None or any(f.name == "" for f in part.fields):
            # Python starts the body at a header line without a colon; RFC 5322
            # (and Dovecot) end the header only at the blank line
            continue
        payload = msg.get_payload()
        if not isinstance(payload, str):
            continue  # Python parses message/delivery-status and friends into lists
        assert payload.encode("ascii", "surrogateescape") == data[part.body_start : part.end], numbers
        assert mime.section(data, numbers or (1,)) == data[part.body_start : part.end]


def test_nested_multipart_reusing_the_boundary() -> None:
    """msg_15: an inner multipart with its parent's boundary closes first (innermost match)."""
    data = crlf((CORPUS[0].parent / "msg_15.txt").read_bytes())
    kinds = [(n, p.subtype.decode().lower()) for n, p in mime.parse(data).walk()]
    assert kinds == [((), "mixed"), ((1,), "alternative"), ((1, 1), "plain"), ((1, 2), "html"), ((2,), "gif")]


def test_empty_parts_between_adjacent_delimiters() -> None:
    """msg_37: each delimiter starts a part, even an empty one (RFC 2046 5.1.1)."""
    data = crlf((CORPUS[0].parent / "msg_37.txt").read_bytes())
    root = mime.parse(data)
    assert len(root.children) == 7
    assert [c.subtype for c in root.children] == [b"x-one", b"plain", b"x-two", b"plain", b"plain", b"plain", b"x-two"]
    assert root.children[1].size == 0
    assert mime.section(data, (2,)) == b""


def test_rfc2231_boundary_is_decoded() -> None:
    """msg_33's boundary*=charset''value still splits the multipart."""
    data = crlf((CORPUS[0].parent / "msg_33.txt").read_bytes())
    assert len(mime.parse(data).children) == 2
    assert b'"boundary*" "ansi-x3.4-1968\'\'EeQfGwPcQSOJBaQU"' in mime.bodystructure(data)


# -- exact expected strings ---------------------------------------------------

SIMPLE = (
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\n"
    b"From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
    b"Subject: afternoon meeting\r\n"
    b"To: mooch@owatagu.siam.edu.example\r\n"
    b"Message-Id: <B27397-0100000@Blurdybloop.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
    b"\r\n"
    b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
)


def test_simple_text_message() -> None:
    """RFC 3501's own example message: ENVELOPE and BODYSTRUCTURE as in 7.4.2 (Dovecot keeps the case)."""
    assert mime.envelope(mime.read_header(SIMPLE)) == (
        b'("Mon, 7 Feb 1994 21:52:25 -0800 (PST)" "afternoon meeting" '
        b'(("Fred Foobar" NIL "foobar" "Blurdybloop.example")) '
        b'(("Fred Foobar" NIL "foobar" "Blurdybloop.example")) '
        b'(("Fred Foobar" NIL "foobar" "Blurdybloop.example")) '
        b'((NIL NIL "mooch" "owatagu.siam.edu.example")) NIL NIL NIL "<B27397-0100000@Blurdybloop.example>")'
    )
    assert mime.bodystructure(SIMPLE) == b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7bit" 55 1 NIL NIL NIL NIL)'
    assert mime.bodystructure(SIMPLE, extended=False) == b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7bit" 55 1)'
    assert mime.section(SIMPLE, (1,)) == b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
    assert mime.section(SIMPLE, "TEXT") == mime.section(SIMPLE, (1,))
    assert mime.section(SIMPLE, ()) == SIMPLE
    assert mime.section(SIMPLE, (2,)) == b""


def test_no_content_type_defaults() -> None:
    """No Content-Type: text/plain us-ascii 7bit (RFC 2045 5.2), written like Dovecot."""
    data = b"Subject: x\r\n\r\nline1\r\nline2\r\n"
    assert mime.bodystructure(data) == b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 14 2 NIL NIL NIL NIL)'


ALTERNATIVE = (
    b"From: a@example.com\r\n"
    b"To: b@example.com\r\n"
    b"Subject: alt\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="b1"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"caf=C3=A9\r\n"
    b"--b1\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>caf\xc3\xa9</p>\r\n"
    b"\r\n"
    b"--b1--\r\n"
    b"epilogue\r\n"
)


def test_multipart_alternative() -> None:
    """Children in order, the subtype, the boundary parameter; part bodies byte-exact."""
    assert mime.bodystructure(ALTERNATIVE) == (
        b'(("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 9 0 NIL NIL NIL NIL)'
        b'("text" "html" ("charset" "utf-8") NIL NIL "7bit" 14 1 NIL NIL NIL NIL) '
        b'"alternative" ("boundary" "b1") NIL NIL NIL)'
    )
    assert mime.bodystructure(ALTERNATIVE, extended=False) == (
        b'(("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 9 0)'
        b'("text" "html" ("charset" "utf-8") NIL NIL "7bit" 14 1) "alternative")'
    )
    assert mime.section(ALTERNATIVE, (1,)) == b"caf=C3=A9"
    assert mime.section(ALTERNATIVE, (1,), binary=True) == "café".encode()
    assert mime.binary_size(ALTERNATIVE, (1,)) == 5
    assert mime.section(ALTERNATIVE, (2,)) == b"<p>caf\xc3\xa9</p>\r\n"
    assert mime.section(ALTERNATIVE, "2.MIME") == b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    assert mime.section(ALTERNATIVE, "TEXT").startswith(b"preamble\r\n--b1\r\n") and mime.section(ALTERNATIVE, "TEXT").endswith(b"epilogue\r\n")


NESTED = (
    b"From: \"Doe, Jane\" <jane@example.com>\r\n"
    b"To: Friends: joe@example.com, (comment) Ann <ann@example.org>;, bob@example.net (Bob B)\r\n"
    b"Cc: undisclosed-recipients:;\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?=\r\n"
    b"  and more\r\n"
    b"In-Reply-To: <x@y>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=outer\r\n"
    b"Content-Language: en, de\r\n"
    b"\r\n"
    b"--outer\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"See attached.\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"Content-Description: forwarded\r\n"
    b"\r\n"
    b"From: inner@example.com\r\n"
    b"Subject: inner\r\n"
    b"Content-Type: multipart/mixed; boundary=inner\r\n"
    b"\r\n"
    b"--inner\r\n"
    b"\r\n"
    b"inner text\r\n"
    b"--inner\r\n"
    b"Content-Type: application/pdf; name=\"a b.pdf\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"Content-Disposition: attachment; filename*0*=utf-8''%E2%82%AC; filename*1=\".pdf\"\r\n"
    b"Content-ID: <pdf@x>\r\n"
    b"Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n"
    b"Content-Location: http://example.com/a.pdf\r\n"
    b"\r\n"
    b"JVBERi0=\r\n"
    b"--inner--\r\n"
    b"--outer\r\n"
    b"Content-Type: image/png\r\n"
    b"Content-Disposition: inline\r\n"
    b"\r\n"
    b"PNG\r\n"
    b"--outer--\r\n"
)


def test_nested_multipart_with_message_rfc822_envelope() -> None:
    """Groups, comments as names, encoded words kept, folded subject unfolded."""
    assert mime.envelope(mime.read_header(NESTED)) == (
        b'(NIL "=?utf-8?q?caf=C3=A9?= and more" '
        b"((\"Doe, Jane\" NIL \"jane\" \"example.com\")) ((\"Doe, Jane\" NIL \"jane\" \"example.com\")) "
        b"((\"Doe, Jane\" NIL \"jane\" \"example.com\")) "
        b'((NIL NIL "Friends" NIL)(NIL NIL "joe" "example.com")("Ann" NIL "ann" "example.org")(NIL NIL NIL NIL)'
        b'("Bob B" NIL "bob" "example.net")) '
        b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) NIL "<x@y>" NIL)'
    )


def test_nested_multipart_with_message_rfc822_structure() -> None:
    """message/rfc822 carries envelope, body and lines; RFC 2231 merged; disposition, language, MD5, location."""
    inner_message = NESTED[NESTED.index(b"From: inner") : NESTED.index(b"\r\n--outer\r\nContent-Type: image")]
    assert mime.bodystructure(NESTED) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 13 0 NIL NIL NIL NIL)'
        b'("message" "rfc822" NIL NIL "forwarded" "7bit" ' + b"%d" % len(inner_message) + b" "
        b'(NIL "inner" ((NIL NIL "inner" "example.com")) ((NIL NIL "inner" "example.com")) '
        b'((NIL NIL "inner" "example.com")) NIL NIL NIL NIL NIL) '
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 0 NIL NIL NIL NIL)'
        b'("application" "pdf" ("name" "a b.pdf") "<pdf@x>" NIL "base64" 8 "Q2hlY2sgSW50ZWdyaXR5IQ==" '
        b'("attachment" ("filename*" "utf-8\'\'%E2%82%AC.pdf")) NIL "http://example.com/a.pdf") '
        b'"mixed" ("boundary" "inner") NIL NIL NIL) ' + b"%d" % inner_message.count(b"\n") + b" NIL NIL NIL NIL)"
        b'("image" "png" NIL NIL NIL "7bit" 3 NIL ("inline" NIL) NIL NIL) '
        b'"mixed" ("boundary" "outer") NIL ("en" "de") NIL)'
    )


def test_nested_sections() -> None:
    """Part numbers through message/rfc822 (RFC 3501 6.4.5): HEADER/TEXT of the encapsulated message, MIME of the part."""
    inner_message = NESTED[NESTED.index(b"From: inner") : NESTED.index(b"\r\n--outer\r\nContent-Type: image")]
    assert mime.section(NESTED, (2,)) == inner_message
    assert mime.section(NESTED, "2.HEADER") == inner_message[: inner_message.index(b"\r\n\r\n") + 4]
    assert mime.section(NESTED, "2.TEXT") == inner_message[inner_message.index(b"\r\n\r\n") + 4 :]
    assert mime.section(NESTED, "2.MIME") == b"Content-Type: message/rfc822\r\nContent-Description: forwarded\r\n\r\n"
    assert mime.section(NESTED, (2, 1)) == b"inner text"
    assert mime.section(NESTED, "2.1.MIME") == b"\r\n"
    assert mime.section(NESTED, (2, 2)) == b"JVBERi0="
    assert mime.section(NESTED, (2, 2), binary=True) == b"%PDF-"
    assert mime.section(NESTED, "2.HEADER.FIELDS (subject)") == b"Subject: inner\r\n\r\n"
    assert mime.section(NESTED, "2.HEADER.FIELDS.NOT (subject content-type)") == b"From: inner@example.com\r\n\r\n"
    assert mime.section(NESTED, (3,)) == b"PNG"
    assert mime.section(NESTED, (3, 1)) == b"PNG"  # a leaf's part 1 is itself
    assert mime.section(NESTED, (2, 3)) == b""
    assert mime.section(NESTED, (4,)) == b""
    assert mime.section(NESTED, "HEADER.FIELDS (Subject TO)") == (
        b"To: Friends: joe@example.com, (comment) Ann <ann@example.org>;, bob@example.net (Bob B)\r\n"
        b"Subject: =?utf-8?q?caf=C3=A9?=\r\n  and more\r\n\r\n"
    )
    assert mime.partial(mime.section(NESTED, (3,)), 1, 10) == b"NG"
    assert mime.partial(b"abc", 5, 2) == b""


def test_unknown_transfer_encoding_for_binary() -> None:
    """BINARY[] of an unknown encoding is refused (RFC 3516 UNKNOWN-CTE)."""
    data = b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n"
    with pytest.raises(mime.UnknownTransferEncoding):
        mime.section(data, (1,), binary=True)
    assert mime.section(data, (1,)) == b"begin\r\n"


# -- envelope corner cases ----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"", b"NIL"),
        (b"(just a comment)", b"NIL"),
        (b"user", b'((NIL NIL "user" "MISSING_DOMAIN"))'),
        (b"<@a.example,@b.example:joe@c.example>", b'((NIL "@a.example,@b.example" "joe" "c.example"))'),
        (b'"john doe"@example.com', b'((NIL NIL "john doe" "example.com"))'),
        (b"joe@[192.0.2.1]", b'((NIL NIL "joe" "[192.0.2.1]"))'),
        (b"Joe <joe@example.com", b'(("Joe" NIL "joe" "SYNTAX_ERROR"))'),
        (b"a@b, , c@d", b'((NIL NIL "a" "b")(NIL NIL "c" "d"))'),
        (b'"Quote \\" me" <q@x>', b'(({10}\r\nQuote " me NIL "q" "x"))'),
        (b"=?iso-8859-1?q?J=F6rg?= <j@x>", b'(("=?iso-8859-1?q?J=F6rg?=" NIL "j" "x"))'),
        (b"J\xc3\xb6rg <j@x>", b'(({5}\r\nJ\xc3\xb6rg NIL "j" "x"))'),
    ],
)
def test_address_lists(value: bytes, expected: bytes) -> None:
    """Address structure per RFC 3501 7.4.2; missing parts filled as Dovecot does; 8-bit and quotes as literals."""
    env = mime.envelope(b"To: " + value + b"\r\n\r\n")
    items = wire.Reader(env).value_list()
    assert len(items) == 10
    # From/Sender/Reply-To are NIL, so the To list starts right after them
    start = len(b"(NIL NIL NIL NIL NIL ")
    assert env[start : start + len(expected)] == expected


def test_envelope_last_header_wins_and_empty_subject() -> None:
    """Duplicate envelope headers: the last one (Dovecot); an empty Subject is "" not NIL."""
    env = mime.envelope(b"Subject: one\r\nSubject:\r\nFrom: a@b\r\nFrom: c@d\r\nReply-To: r@s\r\n\r\n")
    assert env == b'(NIL "" ((NIL NIL "c" "d")) ((NIL NIL "c" "d")) ((NIL NIL "r" "s")) NIL NIL NIL NIL NIL)'
    assert mime.envelope(b"") == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"


def test_subject_and_names_for_humans() -> None:
    """Subject and display names: tabs and runs of blanks collapse, outer blanks go (as Dovecot)."""
    env = mime.envelope(b"Subject: \t a \t\t b  \r\n  c \r\nFrom: \"  Ann \t Lee \" <a@b>\r\n\r\n")
    assert env.startswith(b'(NIL "a b c" (("Ann Lee" NIL "a" "b"))')


def test_delimiter_inside_a_header_ends_the_part() -> None:
    """A part whose header runs into the next delimiter has no body; the CRLF belongs to the delimiter."""
    data = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\n--b\r\n\r\nsecond\r\n--b--\r\n"
    root = mime.parse(data)
    assert [c.subtype for c in root.children] == [b"html", b"plain"]
    assert mime.section(data, "1.MIME") == b"Content-Type: text/html"
    assert mime.section(data, (1,)) == b""
    assert mime.section(data, (2,)) == b"second"


def test_line_counts_through_nesting() -> None:
    """body-fld-lines of message/rfc822 counts the whole encapsulated message, computed from its parts."""
    root = mime.parse(NESTED)
    part = root.children[1]
    assert part.body_lines(NESTED) == NESTED[part.body_start : part.end].count(b"\n")
    assert root.body_lines(NESTED) == NESTED[root.body_start :].count(b"\n")


# -- broken input, files, laziness --------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n",
        b"no header at all",
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nno close",
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\nno delimiter at all\r\n",
        b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nmissing boundary parameter\r\n",
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x--\r\n",
        b"Content-Type: message/rfc822\r\n\r\n",
        b"Content-Type: text/\r\n\r\nbroken type",
        b"Content-Type: ;;;=\r\nContent-Disposition: ;\r\nContent-Language: ,\r\n\r\n",
        b"Subject: \xff\xfe\r\nFrom: <<<@@@>>>\r\nTo: ::;;,,\r\n\r\nx",
        b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--a--\r\n",
    ],
)
def test_broken_messages_do_not_raise(data: bytes) -> None:
    """Broken input yields well-formed output, never an exception."""
    wire.Reader(b"(" + mime.bodystructure(data) + b")").value_list()
    wire.Reader(mime.envelope(mime.read_header(data))).value_list()
    for numbers, _part in mime.parse(data).walk():
        for spec in ("", "MIME", "HEADER", "TEXT"):
            if spec == "MIME" and not numbers:
                continue
            mime.section(data, numbers, spec)


def test_missing_inner_close_ends_at_outer_delimiter() -> None:
    """An inner multipart without its close delimiter ends at the parent's next delimiter."""
    data = b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--a\r\n\r\ny\r\n--a--\r\n"
    root = mime.parse(data)
    assert len(root.children) == 2
    assert mime.section(data, (1, 1)) == b"x"
    assert mime.section(data, (2,)) == b"y"


def test_deep_nesting_is_bounded() -> None:
    """Thousands of nested multiparts parse without recursion errors."""
    depth = 3000
    head = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(depth))
    data = head + b"\r\nleaf\r\n"
    out = mime.bodystructure(data)
    # below MAX_DEPTH levels the multipart is an opaque leaf
    assert out.startswith(b"(" * (mime.MAX_DEPTH + 1) + b'"multipart" "mixed" ("boundary" "b%d") NIL NIL "7bit"' % mime.MAX_DEPTH)
    assert out.count(b"(") == out.count(b")")


class CountingFile(io.BytesIO):
    """A file that remembers how far it was read."""

    furthest = 0

    def read(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        data = super().read(size)
        self.furthest = max(self.furthest, self.tell())
        return data

    def readline(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        data = super().readline(size)
        self.furthest = max(self.furthest, self.tell())
        return data

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def fileno(self) -> int:
        raise io.UnsupportedOperation("no fd")


def test_header_items_read_only_the_header() -> None:
    """BODY[HEADER...] and ENVELOPE from a file stop at the blank line."""
    data = SIMPLE + b"x" * 100000
    fp = CountingFile(data)
    assert mime.section(fp, (), "HEADER.FIELDS", ("SUBJECT",)) == b"Subject: afternoon meeting\r\n\r\n"
    assert mime.envelope(fp) == mime.envelope(SIMPLE)
    assert fp.furthest <= len(SIMPLE) - 55


def test_real_files_are_memory_mapped_and_agree(tmp_path: Path) -> None:
    """A real file (mmap) and the same bytes give identical answers."""
    path = tmp_path / "m"
    path.write_bytes(NESTED)
    with path.open("rb") as fp:
        assert mime.bodystructure(fp) == mime.bodystructure(NESTED)
        assert mime.section(fp, (2, 2), binary=True) == b"%PDF-"
        assert mime.section(fp, ()) == NESTED
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with empty.open("rb") as fp:
        assert mime.bodystructure(fp) == b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)'


_PIECES = st.sampled_from([
    b"\r\n", b"--b\r\n", b"--b--\r\n", b"--c\r\n", b"Content-Type: multipart/mixed; boundary=c\r\n",
    b"Content-Type: multipart/alternative; boundary=b\r\n", b"Content-Type: message/rfc822\r\n",
    b"Content-Type: text/plain; charset=\"x\r\n", b"Content-Transfer-Encoding: base64\r\n", b"From: a <b@c>\r\n",
    b"To: g: a@b;\r\n", b"text\r\n", b" folded\r\n", b"no colon\r\n", b"\n", b"\xff\r\n", b"=?x?q?y?=\r\n",
])


@settings(max_examples=200, deadline=None)
@given(st.lists(_PIECES, max_size=30).map(b"".join))
def test_any_message_parses(data: bytes) -> None:
    """Random assemblies of MIME pieces: offsets nest properly and output always parses as IMAP."""
    data = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + data
    root = mime.parse(data)
    for numbers, part in root.walk():
        assert 0 <= part.start <= part.body_start <= part.end <= len(data)
        for child in part.children:
            assert part.body_start <= child.start and child.end <= part.end
        body = mime.section(data, numbers) if numbers else data
        assert isinstance(body, bytes)
    wire.Reader(b"(" + mime.bodystructure(data) + b")").value_list()
    wire.Reader(b"(" + mime.bodystructure(data, extended=False) + b")").value_list()


def _shape(part: mime.Part) -> list:
    return [(n, p.start, p.body_start, p.end, p.media_type, p.subtype) for n, p in part.walk()]


@settings(max_examples=200, deadline=None)
@given(st.lists(_PIECES, max_size=30).map(b"".join), st.integers(min_value=1, max_value=9))
def test_header_window_size_does_not_change_the_result(data: bytes, window: int) -> None:
    """Headers are searched in windows; any window size gives the same tree (edges straddled correctly)."""
    data = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + data
    expected = _shape(mime.parse(data))
    original = mime.tree._Parser.WINDOW
    mime.tree._Parser.WINDOW = window
    try:
        assert _shape(mime.parse(data)) == expected
    finally:
        mime.tree._Parser.WINDOW = original


def test_pathological_lines_parse() -> None:
    """Huge headers without a blank line and bodies full of almost-delimiters stay correct."""
    junk = b"X-A: b\r\n" * 50000
    data = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" + junk + b"--b\r\n\r\n" + b"--bx\r\n--\r\n" * 30000 + b"\r\n--b--\r\n"
    root = mime.parse(data)
    assert len(root.children) == 2
    assert root.children[0].body_start == root.children[0].end  # header ran into the delimiter
    assert mime.section(data, (2,)).startswith(b"--bx\r\n--\r\n")


RFC822_CHAIN = (
    b"From: outer@example.org\r\nMIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: middle@example.org\r\nMIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: inner@example.org\r\nSubject: deepest\r\n\r\nthe text\r\n"
)


def test_top_level_message_rfc822_numbering() -> None:
    """A top-level message/rfc822 is part 1; its encapsulated message's parts are 1.x (as Dovecot answers)."""
    middle = RFC822_CHAIN[RFC822_CHAIN.index(b"From: middle") :]
    inner = RFC822_CHAIN[RFC822_CHAIN.index(b"From: inner") :]
    assert mime.section(RFC822_CHAIN, (1,)) == middle
    assert mime.section(RFC822_CHAIN, "TEXT") == middle
    assert mime.section(RFC822_CHAIN, "1.HEADER") == middle[: middle.index(b"\r\n\r\n") + 4]
    assert mime.section(RFC822_CHAIN, "1.TEXT") == inner
    assert mime.section(RFC822_CHAIN, (1, 1)) == inner
    assert mime.section(RFC822_CHAIN, "1.1.HEADER") == b"From: inner@example.org\r\nSubject: deepest\r\n\r\n"
    assert mime.section(RFC822_CHAIN, "1.1.TEXT") == b"the text\r\n"
    assert mime.section(RFC822_CHAIN, (1, 1, 1)) == b"the text\r\n"
    assert mime.section(RFC822_CHAIN, (2,)) == b""
    assert [n for n, _p in mime.parse(RFC822_CHAIN).walk()] == [(), (1, 1), (1, 1, 1)]


DIGEST_IN_RFC822 = (
    b"From: a@example.org\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Subject: digest\r\nContent-Type: multipart/digest; boundary=\"d\"\r\n\r\nprologue\r\n"
    b"--d \r\n\r\nSubject: one\r\n\r\nbody one\r\n"
    b"--d\r\nX-Part: two\r\n\r\nSubject: two\r\n\r\nbody two\r\n"
    b"--d--\r\nepilogue\r\n"
)


def test_digest_parts_default_to_message_rfc822() -> None:
    """multipart/digest children without Content-Type are message/rfc822 (RFC 2046 5.1.5); padding after a delimiter is allowed."""
    assert mime.section(DIGEST_IN_RFC822, (1, 1)) == b"Subject: one\r\n\r\nbody one"
    assert mime.section(DIGEST_IN_RFC822, "1.1.MIME") == b"\r\n"
    assert mime.section(DIGEST_IN_RFC822, "1.1.HEADER") == b"Subject: one\r\n\r\n"
    assert mime.section(DIGEST_IN_RFC822, "1.1.TEXT") == b"body one"
    assert mime.section(DIGEST_IN_RFC822, "1.2.MIME") == b"X-Part: two\r\n\r\n"
    assert mime.section(DIGEST_IN_RFC822, "1.2.TEXT") == b"body two"
    assert mime.section(DIGEST_IN_RFC822, "1.TEXT").startswith(b"prologue\r\n--d \r\n")
    structure = mime.bodystructure(DIGEST_IN_RFC822)
    assert structure.count(b'"message" "rfc822"') == 3
    assert b'"digest" ("boundary" "d")' in structure


FOLDED_BOUNDARY = (
    b'From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="one\r\n two"\r\n\r\n'
    b"top prologue\r\n\r\n--one two\r\nContent-Type: text/x-custom; charset=us-ascii\r\n\r\nhi\r\n\r\n"
    b"--one two\r\nContent-Type: message/rfc822\r\n\r\n"
    b'From: b@example.org\r\nSubject: sub\r\nContent-Type: multipart/alternative; boundary="s"\r\n\r\n'
    b"sub prologue\r\n--s\r\nContent-Type: text/html\r\n\r\n<i>x</i>\r\n\r\n--s\r\nContent-Type: text/plain\r\n\r\nx\r\n\r\n--s--\r\n"
    b"sub epilogue\r\n\r\n--one two--\r\ntop epilogue\r\n"
)


def test_folded_quoted_boundary_and_line_counts() -> None:
    """A boundary folded inside its quoted string is unfolded; the CRLF before a delimiter is not content (Dovecot's sizes)."""
    assert mime.section(FOLDED_BOUNDARY, (1,)) == b"hi\r\n"
    assert mime.section(FOLDED_BOUNDARY, (2, 1)) == b"<i>x</i>\r\n"
    assert mime.section(FOLDED_BOUNDARY, "2.TEXT").endswith(b"--s--\r\nsub epilogue\r\n")
    structure = mime.bodystructure(FOLDED_BOUNDARY, extended=False)
    assert structure.startswith(b'(("text" "x-custom" ("charset" "us-ascii") NIL NIL "7bit" 4 1)')
    assert structure.endswith(b'"mixed")')
    assert b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 10 1)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 1) "alternative")' in structure


def _imaplib_shape(response: bytes) -> list:
    """A raw FETCH response split the way imaplib hands it to imapclient: (text{n}, literal) tuples."""
    out: list = []
    pos = 0
    for m in re.finditer(rb"\{(\d+)\}\r\n", response):
        if m.start() < pos:
            continue  # inside a literal already consumed
        size = int(m.group(1))
        out.append((response[pos : m.start()] + b"{%d}" % size, response[m.end() : m.end() + size]))
        pos = m.end() + size
    out.append(response[pos:])
    return out


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_a_real_client_parses_our_structures(path: Path) -> None:
    """imapclient's response parser reads our BODYSTRUCTURE, BODY and ENVELOPE for every corpus message."""
    from imapclient.response_parser import parse_fetch_response

    data = crlf(path.read_bytes())
    response = (
        b"1 (BODYSTRUCTURE " + mime.bodystructure(data) + b" BODY " + mime.bodystructure(data, extended=False)
        + b" ENVELOPE " + mime.envelope(mime.read_header(data)) + b")"
    )
    parsed = parse_fetch_response(_imaplib_shape(response))[1]
    root = mime.parse(data)
    for key in (b"BODYSTRUCTURE", b"BODY"):
        body = parsed[key]
        assert body.is_multipart == root.multipart
        if root.multipart:
            assert len(body[0]) == max(1, len(root.children))
            assert body[1].decode().lower() == root.subtype.decode().lower()
    subject = mime.header_value(mime.read_header(data), "subject", last=True)
    assert parsed[b"ENVELOPE"].subject == (mime.addresses._for_humans(subject) if subject is not None else None)
