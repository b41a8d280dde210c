"""Trace fields and submission additions."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailsuite.smtp.headers import HeaderScanner, TLSInfo, protocol_keyword, received, submission_additions


def test_protocol_keywords() -> None:
    """RFC 3848 / RFC 6531 keywords for each session state."""
    assert protocol_keyword(esmtp=False, tls=False, authenticated=False, utf8=False) == "SMTP"
    assert protocol_keyword(esmtp=True, tls=False, authenticated=False, utf8=False) == "ESMTP"
    assert protocol_keyword(esmtp=True, tls=True, authenticated=False, utf8=False) == "ESMTPS"
    assert protocol_keyword(esmtp=True, tls=True, authenticated=True, utf8=False) == "ESMTPSA"
    assert protocol_keyword(esmtp=True, tls=False, authenticated=True, utf8=False) == "ESMTPA"
    assert protocol_keyword(esmtp=True, tls=True, authenticated=True, utf8=True) == "UTF8SMTPSA"


def test_received_field_shape() -> None:
    """RFC 5321 4.4: from/by/with/id/for and a date after the semicolon; folded lines; IPv6 literal."""
    field = received(helo="client.test", ip="2001:db8::1", hostname="mx.example.test", protocol="ESMTPS", queue_id="abc",
                     tls=TLSInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256", 128), recipient="a@example.test", when=0)
    assert field == (b"Received: from client.test ([IPv6:2001:db8::1])\r\n\tby mx.example.test (mailsuite) with ESMTPS id abc\r\n"
                     b"\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits))\r\n\tfor <a@example.test>;\r\n"
                     b"\tThu, 01 Jan 1970 00:00:00 -0000\r\n")


def test_scanner_and_additions() -> None:
    """Header names are read up to the blank line only; missing Message-ID/Date are added."""
    scanner = HeaderScanner()
    for piece in (b"Subject: x\r\nDa", b"te: now\r\n\r\nMessage-ID: in the body\r\n"):
        scanner.feed(piece)
    assert scanner.field_names() == ["subject", "date"]
    added = submission_additions(scanner.field_names(), "mx.example.test", "q1", when=0)
    assert added == b"Message-ID: <q1@mx.example.test>\r\n"
    assert submission_additions(["message-id", "date"], "h", "q") == b""


def test_ids_are_unique() -> None:
    """Queue ids (also Message-ID left parts) never repeat."""
    from mailsuite.smtp.headers import new_id

    ids = [new_id() for _ in range(10000)]
    assert len(set(ids)) == len(ids) and all(i.isalnum() for i in ids)


def test_date_text_is_the_rfc5322_date_of_each_second() -> None:
    """The cached date text changes with the second and equals email.utils.formatdate's."""
    import email.utils

    from mailsuite.smtp.headers import date_text

    for when in (1_795_000_000.2, 1_795_000_000.9, 1_795_000_001.0, 1_000_000_000.5, 1_795_000_001.5):
        assert date_text(when) == email.utils.formatdate(when, localtime=False)


def test_field_values_unfold_every_field_of_a_name() -> None:
    """RFC 5322 2.2.3: continuation lines belong to their field; names are case-insensitive; each field counts."""
    from mailsuite.smtp.headers import field_values

    header = (b"FROM : Alice\r\n <alice@example.test>\r\nSubject: x\r\n\tFrom: not a field\r\n"
              b"garbage line\r\n\tstill garbage\r\nfrom: bob@example.test\r\nX-From: no\r\n\r\n")
    assert field_values(header, "From") == [" Alice <alice@example.test>", " bob@example.test"]
    assert field_values(header, "sender") == []
    assert field_values("From: Jos\u00e9 <jos\u00e9@b\u00fccher.example>\r\n".encode(), "from") == [" Jos\u00e9 <jos\u00e9@b\u00fccher.example>"]


def test_mailbox_addresses_reads_plain_forms_and_groups() -> None:
    """Display names, comments, quoted local parts, groups (RFC 6854) and UTF-8 (RFC 6532): the addresses named."""
    from mailsuite.smtp.headers import mailbox_addresses

    assert mailbox_addresses("Alice <alice@example.test>") == ["alice@example.test"]
    assert mailbox_addresses('"bob@example.test" <alice@example.test>') == ["alice@example.test"]
    assert mailbox_addresses("=?utf-8?b?QWxpY2U=?= <alice@example.test>") == ["alice@example.test"]
    assert mailbox_addresses("alice@example.test (bob@example.test)") == ["alice@example.test"]
    assert mailbox_addresses('"alice"@example.test') == ["alice@example.test"]
    assert mailbox_addresses("A <a@example.test>, B <b@example.test>") == ["a@example.test", "b@example.test"]
    assert mailbox_addresses("team: a@example.test, b@example.test;") == ["a@example.test", "b@example.test"]
    assert mailbox_addresses("Jos\u00e9 <jos\u00e9@b\u00fccher.example>") == ["jos\u00e9@b\u00fccher.example"]


def test_mailbox_addresses_refuses_what_readers_could_read_differently() -> None:
    """Values the strict and the lenient parser disagree on, control characters, no address at all: ValueError."""
    import pytest

    from mailsuite.smtp.headers import mailbox_addresses

    for value in ("alice@example.test <ceo@bank.test>", "Alice <alice@example.test> <ceo@bank.test>", "alice@example.test\x00<ceo@bank.test>",
                  "a@example.test\"<ceo@bank.test>", "alice@example.test@bank.test", "=?utf-8?q?ceo=40bank.test?=", "<alice@example.test",
                  "alice", "undisclosed:;", "", "   "):
        with pytest.raises(ValueError):
            mailbox_addresses(value)


def test_scanner_header_and_the_added_from() -> None:
    """header() is the block up to the blank line, None past the scan limit; a missing From is added for the author."""
    from mailsuite.smtp.headers import HEADER_SCAN_LIMIT

    scanner = HeaderScanner()
    scanner.feed(b"Subject: x\r\n\r\nFrom: body@example.test\r\n")
    assert scanner.header() == b"Subject: x\r\n"
    long = HeaderScanner()
    long.feed(b"X-Pad: " + b"a" * HEADER_SCAN_LIMIT + b"\r\nFrom: ceo@example.test\r\n\r\n")
    assert long.header() is None
    assert submission_additions(["subject"], "h", "q1", when=0, author="alice@example.test").startswith(b"From: <alice@example.test>\r\n")
    assert not submission_additions(["from"], "h", "q1", when=0, author="alice@example.test").startswith(b"From")


_ADDRESS_TOKENS = ["alice", "bob", "@", "a.test", "b.test", "<", ">", '"', ",", ":", ";", "(", ")", " ", "\\", ".", "=?utf-8?q?x=40b.test?=", "[", "]"]


@given(st.lists(st.sampled_from(_ADDRESS_TOKENS), max_size=14).map("".join))
@settings(max_examples=1500, deadline=None)
def test_an_accepted_value_hides_no_address_from_our_imap_envelope(value: str) -> None:
    """Whatever mailbox_addresses accepts, each address the IMAP ENVELOPE parser (what a reader is shown) finds is among its answer."""
    from mailsuite.imap.mime import parse_addresses
    from mailsuite.smtp.headers import mailbox_addresses

    try:
        found = {a.lower() for a in mailbox_addresses(value)}
    except ValueError:
        return
    for _name, _route, local, host in parse_addresses(value.encode()):
        if host is not None and local != b"MISSING_MAILBOX" and host != b"MISSING_DOMAIN":
            assert f"{local.decode()}@{host.decode()}".lower() in found, (value, found)


@given(st.text(max_size=60))
@settings(max_examples=500, deadline=None)
def test_any_value_is_read_or_refused_never_crashes(value: str) -> None:
    """The stdlib parser raises IndexError on some values ("<"): every outcome is a list of addresses or ValueError."""
    from mailsuite.smtp.headers import field_values, mailbox_addresses

    try:
        assert mailbox_addresses(value)
    except ValueError:
        pass
    if "\r" not in value and "\n" not in value:
        assert len(field_values(b"From:" + value.encode("utf-8", "surrogatepass") + b"\r\n", "from")) == 1


_ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
_atom = st.text(alphabet=_ATEXT, min_size=1, max_size=6)
_addr = st.tuples(st.lists(_atom, min_size=1, max_size=3).map(".".join),
                  st.lists(st.text(alphabet="abc09-", min_size=1, max_size=5), min_size=1, max_size=3).map(".".join)).map("@".join)
_ws = st.sampled_from(["", " ", "\t", "  "])
_name = st.one_of(st.lists(_atom, min_size=1, max_size=3).map(" ".join), st.just(""),
                  st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=10).map(lambda t: f'"{t}"'))
_plain = st.one_of(st.tuples(_ws, _addr, _ws).map("".join), st.tuples(_ws, _name, _ws, st.just("<"), _addr, st.just(">"), _ws).map("".join))
_noise = st.text(alphabet=' \t<>"\\@.,:;()[]aZ=?', max_size=3)


@given(st.one_of(_plain, st.tuples(_plain, _noise).map("".join), st.tuples(_noise, _plain).map("".join)))
@settings(max_examples=1000, deadline=None)
def test_the_plain_mailbox_shortcut_reads_as_both_parsers_and_imap_do(value: str) -> None:
    """``addr`` / ``Name <addr>`` read by the regex give exactly what the two parsers and the IMAP ENVELOPE parser give (30,000 clean by hand)."""
    from mailsuite.imap.mime import parse_addresses
    from mailsuite.smtp import headers

    plain = headers._PLAIN_MAILBOX.match(value) if value.isascii() and "=?" not in value else None
    if plain is None:
        return
    fast = [plain.group(1) or plain.group(2)]
    assert headers.mailbox_addresses(value) == fast
    assert headers._parsed_addresses(value) == fast
    assert [f"{m.decode()}@{h.decode()}" for _n, _r, m, h in parse_addresses(value.encode()) if h is not None] == fast
