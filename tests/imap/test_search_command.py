"""The SEARCH command through the session (sequence numbers, UIDs, CHARSET, MODSEQ, vanished messages).

The key-by-key evaluation tests live with the search module (tests/imap/test_search.py);
these check what the protocol adds around it.
"""

from __future__ import annotations

import pytest

from tests.imap.harness import Harness

ALICE = "alice@example.test"


def message(n: int, subject: str, sender: str = "s@example.test", body: str = "hello") -> bytes:
    return (
        f"From: {sender}\r\nTo: alice@example.test\r\nSubject: {subject}\r\nDate: Mon, {n} Jan 2024 10:00:00 +0000\r\n"
        f"Message-ID: <{n}@example.test>\r\n\r\n{body}\r\n"
    ).encode()


@pytest.fixture
def conn(tmp_path):
    h = Harness(tmp_path)
    h.deliver(ALICE, message(1, "apples", body="red fruit"))
    h.deliver(ALICE, message(2, "pears", sender="Bob <bob@example.test>"))
    h.deliver(ALICE, message(3, "=?utf-8?q?caf=C3=A9?=", body="kaffee"))
    h.deliver(ALICE, message(4, "apples again", sender="bob@example.test"))
    c = h.connect(ALICE)
    c.send("s SELECT INBOX\r\n")
    c.harness = h
    return c


def test_search_by_flags_and_headers(conn):
    conn.send("a STORE 2 +FLAGS (\\Flagged)\r\n")
    assert conn.send("b SEARCH FLAGGED\r\n") == b"* SEARCH 2\r\nb OK SEARCH completed.\r\n"
    assert conn.send("c SEARCH SUBJECT apples\r\n") == b"* SEARCH 1 4\r\nc OK SEARCH completed.\r\n"
    assert conn.send("d SEARCH OR FROM bob UNFLAGGED NOT SUBJECT apples\r\n") == b"* SEARCH 2 3\r\nd OK SEARCH completed.\r\n"
    assert conn.send("e SEARCH CHARSET UTF-8 SUBJECT {5}\r\n") == b"+ OK\r\n"
    assert conn.send("caf\xc3\xa9\r\n".encode("latin-1")) == b"* SEARCH 3\r\ne OK SEARCH completed.\r\n"
    assert conn.send("f SEARCH BODY FRUIT\r\n") == b"* SEARCH 1\r\nf OK SEARCH completed.\r\n"
    assert conn.send("g UID SEARCH 2:3\r\n") == b"* SEARCH 2 3\r\ng OK UID SEARCH completed.\r\n"
    assert conn.send("h SEARCH SENTBEFORE 3-Jan-2024\r\n") == b"* SEARCH 1 2\r\nh OK SEARCH completed.\r\n"


def test_search_errors(conn):
    assert conn.send("a SEARCH CHARSET KOI8-R ALL\r\n") == b"a NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset KOI8-R\r\n"
    assert conn.send("b SEARCH BOGUS\r\n").startswith(b"b BAD")
    assert conn.send("c SEARCH 99\r\n").startswith(b"c BAD")
    assert conn.send("d SEARCH (SEEN\r\n").startswith(b"d BAD")
    assert conn.send("e SEARCH\r\n").startswith(b"e BAD")


def test_search_modseq(conn):
    out = conn.send("a STORE 3 +FLAGS (\\Seen)\r\n")
    out = conn.send("b FETCH 3 MODSEQ\r\n")
    modseq = int(out.split(b"MODSEQ (")[1].split(b")")[0])
    assert conn.send(f"c SEARCH MODSEQ {modseq}\r\n") == b"* SEARCH 3 (MODSEQ %d)\r\nc OK SEARCH completed.\r\n" % modseq


def test_no_expunge_during_search_and_uid_search_of_vanished(conn):
    other = conn.harness.connect(ALICE)
    other.send("s SELECT INBOX\r\n")
    other.send("a STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
    other.send("b EXPUNGE\r\n")
    out = conn.send("c SEARCH ALL\r\n")
    assert b"EXPUNGE" not in out and b"* SEARCH 1 2 3 4\r\n" in out
    out = conn.send("d UID SEARCH SUBJECT apples\r\n")
    assert out == b"* SEARCH 4\r\n* 1 EXPUNGE\r\nd OK UID SEARCH completed.\r\n"


def test_body_search_decodes_transfer_encoding(tmp_path):
    import base64

    h = Harness(tmp_path)
    encoded = base64.encodebytes("Grüße, the secret word is PLUGH".encode("utf-8")).replace(b"\n", b"\r\n")
    h.deliver(ALICE, b"From: a@example.test\r\nSubject: b64\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
              b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded)
    h.deliver(ALICE, message(2, "plain", body="nothing here"))
    c = h.connect(ALICE)
    c.send("s SELECT INBOX\r\n")
    assert c.send("a SEARCH BODY plugh\r\n") == b"* SEARCH 1\r\na OK SEARCH completed.\r\n"
    assert c.send("b SEARCH TEXT nothing\r\n") == b"* SEARCH 2\r\nb OK SEARCH completed.\r\n"
    assert c.send("c SEARCH CHARSET UTF-8 BODY {7}\r\n") == b"+ OK\r\n"
    assert c.send("grüße\r\n".encode("utf-8")) == b"* SEARCH 1\r\nc OK SEARCH completed.\r\n"
