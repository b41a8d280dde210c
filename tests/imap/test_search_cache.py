"""SEARCH's shared cache and fast paths give exactly the answers of a full decode.

mailsuite.imap.search keeps decoded header values and MIME text-leaf offsets in
the store's mailsuite.facts cache, matches ASCII parts as bytes and skips messages
by a raw-octet pre-filter.  These tests compare every such shortcut, cold and
warm, with a reference written the slow way (mime.parse + mime.body_text +
str.casefold for every text part, split_fields for every field), on tricky
messages (base64, quoted-printable soft breaks, encoded words, non-ASCII and
stateful charsets, Unicode case folding) and on the corpus, and check that a
cached fact never leaks to another message.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import io
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailsuite.imap import mime, search
from mailsuite.imap.search import decode_header_text, parse_search, unfolded_field
from mailsuite.facts import FactsCache as SearchCache
from mailsuite.interfaces import MessageInfo
from tests.imap.harness import Harness

UTC = datetime.timezone.utc
CORPUS = Path(__file__).parent.parent / "data" / "cpython-email"
ALICE = "alice@example.test"

# ---------------------------------------------------------------------------
# The reference: RFC 3501 6.4.4 matching done the slow, obvious way
# ---------------------------------------------------------------------------


def ref_bodies(data: bytes) -> list[str]:
    root = mime.parse(data)
    return [mime.body_text(data, p).casefold() for p in root.leaves() if p.media_type.lower() == b"text"]


def ref_text(data: bytes) -> list[str]:
    root = mime.parse(data)
    headers = [root.fields] + [p.message.fields for _n, p in root.walk() if p.message is not None]
    texts = [decode_header_text(unfolded_field(f.raw)).casefold() for fields in headers for f in fields]
    return texts + ref_bodies(data)


def ref_field(data: bytes, name: str) -> list[str]:
    header = mime.read_header(io.BytesIO(data))
    return [decode_header_text(f.value).casefold() for f in mime.split_fields(header) if f.name == name]


def ref_match(data: bytes, kind: str, needle: str, name: str = "") -> bool:
    folded = needle.casefold()
    if kind == "BODY":
        return any(folded in t for t in ref_bodies(data))
    if kind == "TEXT":
        return any(folded in t for t in ref_text(data))
    values = ref_field(data, name)
    return bool(values) if not folded else any(folded in v for v in values)


def criteria(kind: str, needle: str, name: str = "") -> bytes:
    raw = needle.encode("utf-8")
    literal = b"{%d}\r\n%s" % (len(raw), raw)
    if kind == "HEADER":
        return b"CHARSET UTF-8 HEADER " + name.encode() + b" " + literal
    return b"CHARSET UTF-8 " + kind.encode() + b" " + literal


def info(uid: int, data: bytes, key: str | None = None) -> MessageInfo:
    return MessageInfo(uid, frozenset(), len(data), datetime.datetime(2024, 1, 1, tzinfo=UTC), 1, key or f"m{uid}")


class Octets:
    """Messages as the store hands them to SEARCH (IMessageOctets), from a list (UID n is item n-1)."""

    def __init__(self, messages: list[bytes], refuse: bool = False) -> None:
        self.messages = messages
        self.refuse = refuse

    def header(self, uid: int) -> bytes:
        if self.refuse:
            raise AssertionError("message read although the cache knew the answer")
        return mime.read_header(io.BytesIO(self.messages[uid - 1]))

    def message(self, uid: int) -> bytes:
        if self.refuse:
            raise AssertionError("message read although the cache knew the answer")
        return self.messages[uid - 1]


def run(messages: list[bytes], query: bytes, cache: SearchCache | None, folder: object = "t", *,
        blocks: bool = False) -> list[int]:
    """UIDs matching ``query`` through search.evaluate (the server's path), messages through an
    IMessageOctets; ``blocks``: header blocks handed in as the store's header cache does."""
    candidates = [(i + 1, i + 1, info(i + 1, m), False) for i, m in enumerate(messages)]
    headers = {i + 1: mime.read_header(io.BytesIO(m)) for i, m in enumerate(messages)} if blocks else None
    q = parse_search(query)
    return [uid for _seq, uid, _modseq in search.evaluate(q, candidates, Octets(messages), headers, cache, folder)]


def check(messages: list[bytes], kind: str, needle: str, name: str = "") -> list[int]:
    """Cold cache, warm cache and no cache, with and without header blocks handed in, all agree
    with the reference; returns the UIDs."""
    expected = [i + 1 for i, m in enumerate(messages) if ref_match(m, kind, needle, name)]
    query = criteria(kind, needle, name)
    cache = SearchCache()
    assert run(messages, query, None) == expected, (kind, needle, "no cache")
    assert run(messages, query, None, blocks=True) == expected, (kind, needle, "no cache, blocks")
    assert run(messages, query, cache, blocks=True) == expected, (kind, needle, "cold, blocks")
    assert run(messages, query, cache) == expected, (kind, needle, "warm")
    other = SearchCache()
    assert run(messages, query, other) == expected, (kind, needle, "cold")
    assert run(messages, query, other, blocks=True) == expected, (kind, needle, "warm, blocks")
    return expected


# ---------------------------------------------------------------------------
# Hand-picked traps
# ---------------------------------------------------------------------------


def b64(text: str, charset: str = "utf-8") -> bytes:
    return base64.encodebytes(text.encode(charset)).replace(b"\n", b"\r\n")


PLAIN = b"From: a@example.test\r\nSubject: plain\r\n\r\nnothing special in here\r\n"
BASE64_ONLY = (
    b"From: b@example.test\r\nSubject: b64\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n" + b64("the magic word is xyzzy, Grüße")
)
BASE64_IN_MULTIPART = (
    b"From: c@example.test\r\nSubject: parts\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
    b"--b1\r\nContent-Type: text/plain\r\n\r\nfirst part words\r\n"
    b"--b1\r\nContent-Type: text/html; charset=iso-8859-1\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + b64("<p>Caf\u00e9 FROBOZZ</p>", "iso-8859-1")
    + b"--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + b64("attachment-only-word")
    + b"--b1--\r\n"
)
QP_SOFT_BREAK = (
    b"From: d@example.test\r\nSubject: qp\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"the secret is plu=\r\ngh and Stra=C3=9Fe=\r\n\r\n"
)
ENCODED_WORD_HEADER = (
    b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.test>\r\nSubject: =?utf-8?b?" + base64.b64encode("Grüße aus Köln".encode()) + b"?=\r\n"
    b"X-Note: =?iso-8859-1?q?na=EFve?=\r\n\r\nbody text\r\n"
)
FOLDED_HEADER = b"From: e@example.test\r\nSubject: first half\r\n second half\r\nX-Tab: one\r\n\ttwo\r\n\r\nbody\r\n"
LATIN1_BODY = b"From: f@example.test\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nGro\xdfe Stra\xdfe, na\xefve\r\n"
UTF8_FOLDING = "From: g@example.test\r\nContent-Type: text/plain; charset=utf-8\r\n\r\ntemperature 300\u212a, \u017ftop, \u0130stanbul\r\n".encode()
UTF7_BODY = b"From: h@example.test\r\nContent-Type: text/plain; charset=utf-7\r\n\r\ncaf+AOk- and +AO8-\r\n"
ISO2022_BODY = b"From: i@example.test\r\nContent-Type: text/plain; charset=iso-2022-jp\r\n\r\n" + "日本語 text".encode("iso-2022-jp") + b"\r\n"
NO_CONTENT_TYPE_8BIT = b"From: j@example.test\r\nSubject: raw\r\n\r\nplain 8-bit caf\xc3\xa9 \xe2\x84\xaa\r\n"
RFC822_INSIDE = (
    b"From: k@example.test\r\nSubject: fwd\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Subject: =?utf-8?q?inner_subj=C3=A9ct?=\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + b64("encapsulated zorkmid")
)
LF_ONLY = b"From: l@example.test\nSubject: lf lines\n folded\n\nbody with LF only\nline two\n"
BARE_CR = b"From: m@example.test\rSubject: bare cr\r\n\r\nbody\r\n"
CHARSET_WORD_IN_BODY = b"From: n@example.test\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nwe talk about charset=utf-7 here\r\n"
UTF7_SPELLINGS = [  # the charset written so that a plain "charset=name" reading misses it
    b"From: p@example.test\r\nContent-Type: text/plain; " + spelling + b"\r\n\r\nsee caf+AOk- now\r\n"
    for spelling in (b"charset*=''utf-7", b"charset=(c)utf-7", b'charset="utf-7"', b"CHARSET = utf-7")
]
ENCODED_WORD_AND_CTYPE = (
    b"From: o@example.test\r\nSubject: =?utf-8?q?Z=C3=BCrich_meeting?=\r\nContent-Type: text/plain; charset=us-ascii\r\n"
    b"\r\nagenda\r\n"
)

TRAPS = [PLAIN, BASE64_ONLY, BASE64_IN_MULTIPART, QP_SOFT_BREAK, ENCODED_WORD_HEADER, FOLDED_HEADER, LATIN1_BODY,
         UTF8_FOLDING, UTF7_BODY, ISO2022_BODY, NO_CONTENT_TYPE_8BIT, RFC822_INSIDE, LF_ONLY, BARE_CR, CHARSET_WORD_IN_BODY,
         ENCODED_WORD_AND_CTYPE]


@pytest.mark.parametrize(
    ("kind", "needle", "expected"),
    [
        ("BODY", "XYZZY", [2]),  # only in a base64 part
        ("BODY", "grüße", [2]),
        ("BODY", "frobozz", [3]),  # base64 ISO-8859-1 HTML inside a multipart
        ("BODY", "café", [3, 9, 11]),  # UTF-7 too
        ("BODY", "attachment-only-word", []),  # not a text part
        ("BODY", "plugh", [4]),  # across a quoted-printable soft line break
        ("BODY", "STRASSE", [4, 7]),  # ß folds to ss (QP UTF-8, raw Latin-1)
        ("BODY", "300k", [8]),  # KELVIN SIGN folds to k: an ASCII needle in non-ASCII octets
        ("BODY", "stop", [8]),  # LONG S folds to s
        ("BODY", "é and ï", [9]),  # UTF-7: all-ASCII octets decoding to non-ASCII text
        ("BODY", "+aok-", []),  # ... and not matching their own octets
        ("BODY", "日本語", [10]),  # ISO-2022-JP: a stateful charset in ASCII octets
        ("BODY", "zorkmid", [12]),  # base64 inside message/rfc822
        ("BODY", "line two", [13]),
        ("BODY", "utf-7", [15]),
        ("BODY", "nothing special", [1]),
        ("BODY", "", list(range(1, 17))),  # every message here has a text part
        ("TEXT", "köln", [5]),  # encoded word in the Subject
        ("TEXT", "naïve", [5, 7]),
        ("TEXT", "half second", [6]),  # a header matched unfolded
        ("TEXT", "inner subjéct", [12]),  # encoded word in an encapsulated header
        ("TEXT", "x-tab: one\ttwo", [6]),
        ("TEXT", "lf lines folded", [13]),
        ("TEXT", "subject: bare cr", [14]),
        ("TEXT", "plugh", [4]),
        ("TEXT", "xyzzy", [2]),
        ("TEXT", "rich meeting", [16]),  # only in an encoded word (its octets say "rich_meeting")
        ("TEXT", "zürich", [16]),
        ("BODY", "rich meeting", []),
    ],
)
def test_traps_match_the_reference(kind: str, needle: str, expected: list[int]) -> None:
    """Shortcuts (cache, bytes matching, pre-filter) never change a BODY/TEXT answer."""
    assert check(TRAPS, kind, needle) == expected


@pytest.mark.parametrize(
    ("name", "needle", "expected"),
    [
        ("from", "jürgen", [5]),  # encoded word
        ("subject", "GRÜSSE", [5]),  # encoded word, ß folded
        ("subject", "half second", [6]),  # folded field unfolded
        ("subject", "first half", [6]),
        ("x-tab", "one\ttwo", [6]),
        ("x-note", "naïve", [5]),
        ("subject", "folded", [13]),  # LF line ends
        ("subject", "bare cr", [14]),  # a bare CR ends a line
        ("subject", "", [1, 2, 3, 4, 5, 6, 11, 12, 13, 14, 16]),  # HEADER x "": the field exists
        ("subject", "inner", []),  # encapsulated headers are not the message's
        ("content-type", "utf-7", [9]),
        ("from", "example.test", list(range(1, 17))),
        ("subject", "rich meeting", [16]),
    ],
)
def test_header_fields_match_the_reference(name: str, needle: str, expected: list[int]) -> None:
    """Header keys from the cache and the regex extraction equal split_fields + decode."""
    assert check(TRAPS, "HEADER", needle, name) == expected


@pytest.mark.parametrize("needle", ["café", "caf+aok-", "see", "k"])
def test_charset_spellings(needle: str) -> None:
    """However the charset parameter is written (RFC 2231, comments, quotes, case), UTF-7 text is
    decoded before matching: the raw pre-filter only trusts charsets it can read for sure."""
    check(UTF7_SPELLINGS, "BODY", needle)
    check(UTF7_SPELLINGS, "TEXT", needle)


def test_raw_prefilter_refuses_non_ascii_octets() -> None:
    """Case folding of non-ASCII text yields ASCII letters (KELVIN SIGN, LONG S): such octets are
    never ruled out from their raw form."""
    data = "Content-Type: text/plain; charset=utf-8\r\n\r\n300\u212a \u017ftop\r\n".encode()
    assert not search.raw_excludes(data, data.lower(), b"300k", text=False)
    assert not search.raw_excludes(data, data.lower(), b"stop", text=True)
    ascii_only = b"Content-Type: text/plain; charset=utf-8\r\n\r\n300 kelvin\r\n"
    assert search.raw_excludes(ascii_only, ascii_only.lower(), b"300k", text=False)
    assert search.raw_excludes(ascii_only, ascii_only.lower(), None, text=False)  # a non-ASCII needle
    assert not search.raw_excludes(ascii_only, ascii_only.lower(), b"kelvin", text=False)


def test_corpus_matches_the_reference() -> None:
    """Every corpus message (LF and CRLF forms): BODY, TEXT and header keys agree with the reference."""
    messages = []
    for path in sorted(CORPUS.glob("msg_*.txt")):
        data = path.read_bytes()
        messages += [data, data.replace(b"\n", b"\r\n")]
    for kind, needle, name in [
        ("BODY", "the", ""), ("BODY", "Hello", ""), ("BODY", "é", ""), ("BODY", "zzqq-none", ""), ("BODY", "\r\n", ""),
        ("TEXT", "content-type: text/plain", ""), ("TEXT", "subject", ""), ("TEXT", "zzqq-none", ""),
        ("HEADER", "", "content-type"), ("HEADER", "test", "subject"), ("HEADER", "@", "from"), ("HEADER", "", "x-nope"),
    ]:
        check(messages, kind, needle, name)


# ---------------------------------------------------------------------------
# Random messages against the reference
# ---------------------------------------------------------------------------

WORDS = ["plugh", "Straße", "STRASSE", "300\u212a", "\u017ftop", "İstanbul", "naïve", "café", "CAFÉ", "日本", "x", "ab cd",
         "=?", "base64", "charset", "The End", "q=3D1", "über", "\u00b5"]
CHARSETS = ["utf-8", "iso-8859-1", "utf-7", "us-ascii", "iso-2022-jp", "windows-1252", "koi8-r", "bogus-cs", None]
ENCODINGS = [None, "7bit", "8bit", "base64", "quoted-printable", "x-unknown", "BASE64"]


def _encode_text(text: str, charset: str | None, encoding: str | None) -> bytes:
    try:
        raw = text.encode(charset or "utf-8")
    except (UnicodeEncodeError, LookupError):
        raw = text.encode("utf-8", "replace")
    enc = (encoding or "").lower()
    if enc == "base64":
        return base64.encodebytes(raw).replace(b"\n", b"\r\n")
    if enc == "quoted-printable":
        return binascii.b2a_qp(raw).replace(b"\n", b"\r\n") + b"\r\n"
    return raw + b"\r\n"


@st.composite
def leaf(draw: st.DrawFn) -> bytes:
    text = " ".join(draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=6)))
    charset = draw(st.sampled_from(CHARSETS))
    encoding = draw(st.sampled_from(ENCODINGS))
    ctype = draw(st.sampled_from(["text/plain", "text/html", "application/octet-stream", None]))
    header = b""
    if ctype is not None:
        header += b"Content-Type: " + ctype.encode() + (b"; charset=" + charset.encode() if charset else b"") + b"\r\n"
    if encoding is not None:
        header += b"Content-Transfer-Encoding: " + encoding.encode() + b"\r\n"
    return header + b"\r\n" + _encode_text(text, charset, encoding)


@st.composite
def header_field(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(["Subject", "From", "X-Tag", "subject"]))
    words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3))
    style = draw(st.sampled_from(["raw", "folded", "q", "b"]))
    if style == "raw":
        value = " ".join(words).encode("utf-8")
    elif style == "folded":
        value = " ".join(words[:1]).encode() + b"\r\n " + " ".join(words[1:] or ["tail"]).encode()
    elif style == "q":
        value = b"=?utf-8?q?" + binascii.b2a_qp(" ".join(words).encode(), header=True).replace(b"?", b"=3F") + b"?="
    else:
        value = b"=?utf-8?b?" + base64.b64encode(" ".join(words).encode()) + b"?="
    return name.encode() + b": " + value + b"\r\n"


@st.composite
def message(draw: st.DrawFn) -> bytes:
    header = b"".join(draw(st.lists(header_field(), max_size=3)))
    shape = draw(st.sampled_from(["leaf", "multipart", "rfc822"]))
    if shape == "leaf":
        data = header + draw(leaf())
    elif shape == "multipart":
        parts = draw(st.lists(leaf(), min_size=1, max_size=3))
        data = header + b'Content-Type: multipart/mixed; boundary="=_b"\r\n\r\n'
        data += b"".join(b"--=_b\r\n" + p for p in parts) + b"--=_b--\r\n"
    else:
        inner = b"".join(draw(st.lists(header_field(), max_size=2))) + draw(leaf())
        data = header + b"Content-Type: message/rfc822\r\n\r\n" + inner
    if draw(st.booleans()):
        data = data.replace(b"\r\n", b"\n")
    return data


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(message(), min_size=1, max_size=4), st.sampled_from(WORDS + ["tail", "a", "ss", "k", "s", "i̇"]),
       st.sampled_from(["BODY", "TEXT", "HEADER"]), st.sampled_from(["subject", "x-tag", "from"]))
def test_random_messages_match_the_reference(messages: list[bytes], needle: str, kind: str, name: str) -> None:
    """Generated messages (every encoding, charsets incl. stateful ones, folding, encoded words):
    cold, warm and uncached answers equal the reference."""
    check(messages, kind, needle.casefold() if len(needle) > 3 else needle, name if kind == "HEADER" else "")


@settings(max_examples=150, deadline=None)
@given(message(), st.sampled_from([b"", b"Content-Type: text/plain; charset*=''utf-7\r\n", b"content-type : TEXT/html ;\r\n charset=\"latin1\"\r\n",
                                   b"Content-Type: garbage\r\n", b"Content-Type: multipart/mixed\r\n", b"CONTENT-TRANSFER-ENCODING: (c) Base64 \r\n",
                                   b"Content-Type: image/png\r\nContent-Type: text/plain\r\n", b"X: y\rContent-Type: text/html\r\n"]))
def test_structure_shortcuts_equal_the_parse(data: bytes, extra: bytes) -> None:
    """The structure read from the Content-* fields alone (or their absence) equals the full
    MIME parse whenever a shortcut answers."""
    data = extra + data
    full = search.parsed_structure(data)
    for shortcut in (search.simple_structure, search.single_part_structure):
        found = shortcut(data)
        assert found is None or found == full, shortcut.__name__
    assert search.message_structure(data) == full


# ---------------------------------------------------------------------------
# The cache itself
# ---------------------------------------------------------------------------


def test_warm_header_search_reads_no_file() -> None:
    """Once a field is cached, a header search answers without opening the message (messages the
    raw pre-filter rules out are not cached: they are as cheap to rule out again)."""
    cache = SearchCache()
    messages = [FOLDED_HEADER, ENCODED_WORD_HEADER]  # neither can be ruled out from raw octets
    query = criteria("HEADER", "half", "subject")
    assert run(messages, query, cache) == [1]
    candidates = [(i + 1, i + 1, info(i + 1, m), False) for i, m in enumerate(messages)]

    refuse = Octets(messages, refuse=True)
    q = parse_search(query)
    assert [m[1] for m in search.evaluate(q, candidates, refuse, None, cache, "t")] == [1]
    assert [m[1] for m in search.evaluate(parse_search(criteria("HEADER", "köln", "subject")), candidates, refuse, None, cache, "t")] == [2]
    # another folder incarnation (new UIDVALIDITY) shares nothing: it must read
    with pytest.raises(AssertionError):
        search.evaluate(q, candidates, refuse, None, cache, "t2")


def test_a_message_with_the_same_uid_but_other_identity_is_not_confused() -> None:
    """The key holds the store's message key and size besides the UID: another file under the
    same UID (other size, or same size and another Maildir name) is read, not answered from cache."""
    cache = SearchCache()
    query = criteria("HEADER", "naïve", "x-note")
    assert run([ENCODED_WORD_HEADER], query, cache) == [1]
    assert run([PLAIN], query, cache) == []  # same UID and message key, other size
    twin = ENCODED_WORD_HEADER.replace(b"na=EFve", b"na=EFvx")
    assert len(twin) == len(ENCODED_WORD_HEADER)
    candidates = [(1, 1, info(1, twin, key="another-name"), False)]
    q = parse_search(query)
    assert search.evaluate(q, candidates, Octets([twin]), None, cache, "t") == []


def test_cache_is_bounded_lru() -> None:
    """The estimated size stays under the bound; the least recently used messages go first."""
    cache = SearchCache(max_bytes=20_000)
    for i in range(200):
        facts = cache.facts(("k", i))
        cache.add_field(facts, "subject", ("x" * 50,))
        if i >= 1:
            cache.touch([("k", 0)])  # keep message 0 in use
        assert cache.size <= cache.max_bytes
    assert cache.peek(("k", 0)) is not None
    assert cache.peek(("k", 1)) is None
    assert 0 < len(cache) < 200
    assert cache.knows_folder("k") and not cache.knows_folder("other")


def test_folder_ids_and_per_folder_counts() -> None:
    """Each folder incarnation gets its own number; once its last entry is evicted the cache
    no longer claims to know the folder (SEARCH then skips looking its messages up)."""
    cache = SearchCache(max_bytes=10_000)
    a = cache.folder_id(("/root", "alice", "INBOX", 1))
    b = cache.folder_id(("/root", "alice", "INBOX", 2))  # re-created: new UIDVALIDITY
    assert a != b and cache.folder_id(("/root", "alice", "INBOX", 1)) == a
    cache.add_field(cache.facts((a, 1, "k1", 10)), "from", ("x",))
    assert cache.knows_folder(a) and not cache.knows_folder(b)
    for uid in range(100):
        cache.add_field(cache.facts((b, uid, f"k{uid}", 10)), "from", ("y" * 20,))
    assert not cache.knows_folder(a)  # evicted
    assert sum(cache._per_folder.values()) == len(cache)


def test_cache_under_concurrent_threads() -> None:
    """Worker threads adding and evicting at once keep the size accounting exact."""
    cache = SearchCache(max_bytes=50_000)

    def work(base: int) -> None:
        for i in range(2000):
            facts = cache.facts(("k", (base + i) % 500))
            cache.add_field(facts, "from", ("v" * (i % 40),))
            cache.set_sent(facts, None)

    threads = [threading.Thread(target=work, args=(n * 100,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.size == sum(f.cost for f in cache._entries.values())
    assert cache.size <= cache.max_bytes
    assert cache._per_folder == {"k": len(cache)}


# ---------------------------------------------------------------------------
# Through the IMAP session (store, header cache, batches)
# ---------------------------------------------------------------------------


def test_session_search_cold_and_warm_after_header_fetch(tmp_path: Path) -> None:
    """With the header FETCH first (as clients do), SEARCH answers stay right, cold and warm."""
    h = Harness(tmp_path)
    for data in TRAPS:
        h.deliver(ALICE, data)
    c = h.connect(ALICE)
    c.send("s SELECT INBOX\r\n")
    c.send("f UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])\r\n")
    cases = [
        ("BODY", "XYZZY", [2]), ("BODY", "plugh", [4]), ("BODY", "300k", [8]), ("BODY", "é and ï", [9]),
        ("TEXT", "köln", [5]), ("TEXT", "half second", [6]), ("SUBJECT", "grüsse", [5]), ("FROM", "jürgen", [5]),
        ("SUBJECT", "second half", [6]),
    ]
    for _round in range(2):
        for n, (kind, needle, expected) in enumerate(cases):
            raw = needle.encode()
            assert c.send(f"a{n} SEARCH CHARSET UTF-8 {kind} {{{len(raw)}}}\r\n") == b"+ OK\r\n"
            out = c.send(raw + b"\r\n")
            assert out == b"* SEARCH%s\r\na%d OK SEARCH completed.\r\n" % (b"".join(b" %d" % e for e in expected), n), (kind, needle)


def test_expunged_message_and_new_one_with_same_content(tmp_path: Path) -> None:
    """An expunged message's cached facts never answer for a later message, even with the same
    octets (new UID) or in a re-created folder with the same name (new UIDVALIDITY)."""
    h = Harness(tmp_path)
    h.deliver(ALICE, ENCODED_WORD_HEADER)
    c = h.connect(ALICE)
    c.send("s SELECT INBOX\r\n")
    assert c.send("a SEARCH TEXT body\r\n") == b"* SEARCH 1\r\na OK SEARCH completed.\r\n"
    c.send("b STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
    c.send("c EXPUNGE\r\n")
    h.deliver(ALICE, ENCODED_WORD_HEADER)
    h.deliver(ALICE, PLAIN)
    c.send("d NOOP\r\n")
    assert c.send(b"f UID SEARCH CHARSET UTF-8 SUBJECT {5}\r\n") == b"+ OK\r\n"
    assert c.send("köln\r\n".encode("utf-8")) == b"* SEARCH 2\r\nf OK UID SEARCH completed.\r\n"
    assert c.send("g UID SEARCH BODY nothing\r\n") == b"* SEARCH 3\r\ng OK UID SEARCH completed.\r\n"

    # a folder deleted and re-created under the same name with other content at the same UIDs
    c.send("h CREATE Box\r\n")
    assert b"OK" in c.send(b"i APPEND Box {%d}\r\n" % len(ENCODED_WORD_HEADER))
    c.send(ENCODED_WORD_HEADER + b"\r\n")
    c.send("j SELECT Box\r\n")
    assert c.send("k UID SEARCH TEXT body\r\n") == b"* SEARCH 1\r\nk OK UID SEARCH completed.\r\n"
    assert c.send(b"l UID SEARCH CHARSET UTF-8 SUBJECT {5}\r\n") == b"+ OK\r\n"
    assert c.send("köln\r\n".encode("utf-8")) == b"* SEARCH 1\r\nl OK UID SEARCH completed.\r\n"
    c.send("m SELECT INBOX\r\n")
    c.send("n DELETE Box\r\n")
    c.send("o CREATE Box\r\n")
    same_size = PLAIN[:-2] + b"." * (len(ENCODED_WORD_HEADER) - len(PLAIN)) + b"\r\n"  # same size and UID as before
    assert b"OK" in c.send(b"p APPEND Box {%d}\r\n" % len(same_size))
    c.send(same_size + b"\r\n")
    c.send("q SELECT Box\r\n")
    assert c.send("r UID SEARCH TEXT body\r\n") == b"* SEARCH\r\nr OK UID SEARCH completed.\r\n"
    assert c.send(b"s UID SEARCH CHARSET UTF-8 SUBJECT {5}\r\n") == b"+ OK\r\n"
    assert c.send("köln\r\n".encode("utf-8")) == b"* SEARCH\r\ns OK UID SEARCH completed.\r\n"


def _fired(d):
    """The result of a Deferred the InlineRunner store has already fired (its failure raised)."""
    out: list = []
    d.addBoth(out.append)
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def test_maildir_with_messages_reads_what_map_messages_does(tmp_path: Path) -> None:
    """Maildir's IFolder.with_messages (SEARCH's reader) gives the stored octets and header block
    for small and large messages, after a flag change renamed the file, and refuses an expunged message;
    a BODY search finds a word at the very end of a 200 KB message."""
    from mailsuite.errors import NoSuchMessage

    h = Harness(tmp_path)
    big = b"Subject: big\r\n\r\n" + b"filler line\r\n" * 16000 + b"last word ENDMARK\r\n"
    h.deliver(ALICE, PLAIN)
    h.deliver(ALICE, big)
    c = h.connect(ALICE)
    c.send("s SELECT INBOX\r\n")
    c.send("a STORE 1 +FLAGS (\\Seen)\r\n")  # renames the file (cur/...:2,S)
    assert c.send("b SEARCH BODY endmark\r\n") == b"* SEARCH 2\r\nb OK SEARCH completed.\r\n"
    opened: list = []
    h.store.user_mailbox(ALICE).open_folder("INBOX").addCallback(opened.append)
    folder = opened[0]
    for uid, expected in ((1, PLAIN), (2, big)):
        assert _fired(folder.map_messages([uid], lambda u, data: bytes(data))) == {uid: expected}  # noqa: B023
        assert _fired(folder.with_messages(lambda source: source.message(uid))) == expected  # noqa: B023
        assert _fired(folder.with_messages(lambda source: source.header(uid))) == mime.read_header(io.BytesIO(expected))  # noqa: B023
    c.send("c STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
    c.send("d EXPUNGE\r\n")
    with pytest.raises(NoSuchMessage):
        _fired(folder.with_messages(lambda source: source.message(1)))


def test_sent_dates_cold_and_warm() -> None:
    """SENTON/SENTBEFORE/SENTSINCE from the cached Date: day equal the day parsed from the header."""
    import email.utils

    messages = [
        b"Date: Sun, 10 Mar 2024 23:30:00 -0800\r\nSubject: a\r\n\r\nx\r\n",
        b"Subject: no date\r\n\r\nx\r\n",
        b"Date: garbage\r\n\r\nx\r\n",
        b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nDate: Tue, 12 Mar 2024 00:00:00 +0000\r\n\r\nx\r\n",  # the last one counts
        b"date :\r\n 11 Mar 2024 08:00:00 +0100\r\n\r\nx\r\n",  # folded, odd spacing
    ]

    def day(data: bytes) -> datetime.date | None:
        values = [f.value for f in mime.split_fields(mime.read_header(io.BytesIO(data))) if f.name == "date"]
        parsed = email.utils.parsedate_tz(values[-1].decode("latin-1")) if values else None
        return datetime.date(*parsed[:3]) if parsed else None

    wanted = datetime.date(2024, 3, 11)
    for op, test in (("SENTON", lambda d: d == wanted), ("SENTBEFORE", lambda d: d < wanted), ("SENTSINCE", lambda d: d >= wanted)):
        expected = [i + 1 for i, m in enumerate(messages) if day(m) is not None and test(day(m))]
        cache = SearchCache()
        query = b"%s 11-Mar-2024" % op.encode()
        assert run(messages, query, None) == expected
        assert run(messages, query, cache, blocks=True) == expected
        assert run(messages, query, cache) == expected
    assert expected == [4, 5]  # SENTSINCE
