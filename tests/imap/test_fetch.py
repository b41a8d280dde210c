"""FETCH of structure and section items through the session (mailsuite.imap.mime does the parsing).

The byte-exact BODYSTRUCTURE/ENVELOPE rules are tested with the mime module
(tests/imap/test_mime.py); these tests check what FETCH adds: the right item
names in the response, nested sections, partials, \\Seen handling, and that
header-only items never need the body.
"""

from __future__ import annotations

import pytest

from tests.imap.harness import Harness

ALICE = "alice@example.test"
NESTED = (
    b"From: Alice Example <alice@example.test>\r\nTo: bob@example.test, Carol <carol@example.test>\r\n"
    b"Subject: nested\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <nested@example.test>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"
    b"preamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n"
    b"--XX\r\nContent-Type: multipart/alternative; boundary=YY\r\n\r\n"
    b"--YY\r\nContent-Type: text/plain\r\n\r\ninner text\r\n"
    b"--YY\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<b>x=3D1</b>\r\n--YY--\r\n"
    b"--XX\r\nContent-Type: message/rfc822\r\n\r\nFrom: inner@example.test\r\nSubject: attached\r\n\r\nattached body\r\n"
    b"--XX--\r\n"
)


@pytest.fixture
def conn(tmp_path):
    pytest.importorskip("mailsuite.imap.mime")
    h = Harness(tmp_path)
    h.deliver(ALICE, NESTED)
    c = h.connect(ALICE)
    c.send("s SELECT INBOX\r\n")
    return c


def fetch_ok(conn, command: str) -> bytes:
    out = conn.send(command)
    tag = command.split(" ", 1)[0].encode()
    assert out.endswith(tag + b" OK FETCH completed.\r\n") or out.endswith(tag + b" OK UID FETCH completed.\r\n"), out
    return out


def test_envelope(conn):
    out = fetch_ok(conn, "a FETCH 1 ENVELOPE\r\n")
    assert out.startswith(b'* 1 FETCH (ENVELOPE ("Mon, 1 Jan 2024 10:00:00 +0000" "nested" (("Alice Example" NIL "alice" "example.test"))')
    assert b'(NIL NIL "bob" "example.test")("Carol" NIL "carol" "example.test")' in out
    assert b'"<nested@example.test>"' in out


def test_bodystructure_and_body(conn):
    out = fetch_ok(conn, "a FETCH 1 (BODYSTRUCTURE)\r\n")
    assert b'("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 5 ' in out
    assert b'"alternative"' in out and b'"mixed"' in out and b'("boundary" "XX")' in out
    assert b'"message" "rfc822"' in out
    out = fetch_ok(conn, "b FETCH 1 (BODY)\r\n")
    assert out.startswith(b"* 1 FETCH (BODY (") and b'("boundary" "XX")' not in out  # BODY is not extensible


def test_nested_sections(conn):
    out = fetch_ok(conn, "a FETCH 1 (BODY.PEEK[2.1] BODY.PEEK[2.2.MIME] BODY.PEEK[3.HEADER] BODY.PEEK[3.TEXT] BODY.PEEK[1]<1.3>)\r\n")
    assert b"BODY[2.1] {10}\r\ninner text" in out
    assert b"BODY[2.2.MIME] {" in out and b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" in out
    assert b"BODY[3.HEADER] {" in out and b"Subject: attached\r\n\r\n" in out
    assert b"BODY[3.TEXT] {13}\r\nattached body " in out  # the CRLF before a boundary belongs to it (RFC 2046 5.1.1)
    assert b"BODY[1]<1> {3}\r\nell" in out
    assert b"\\Seen" not in out


def test_section_fetch_sets_seen_and_header_fields(conn):
    out = fetch_ok(conn, "a FETCH 1 (BODY[1] BODY.PEEK[HEADER.FIELDS.NOT (DATE MESSAGE-ID MIME-VERSION CONTENT-TYPE TO)])\r\n")
    assert b"BODY[1] {5}\r\nhello" in out
    assert b"BODY[HEADER.FIELDS.NOT (DATE MESSAGE-ID MIME-VERSION CONTENT-TYPE TO)] {" in out
    assert b"From: Alice Example <alice@example.test>\r\nSubject: nested\r\n\r\n" in out
    assert b"FLAGS (\\Seen \\Recent)" in out


def test_missing_section_is_empty(conn):
    out = fetch_ok(conn, "a FETCH 1 (BODY.PEEK[9])\r\n")
    assert out.startswith(b'* 1 FETCH (BODY[9] ')
