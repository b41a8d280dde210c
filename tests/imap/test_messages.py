"""FETCH, STORE, COPY, MOVE, EXPUNGE and their UID forms, CONDSTORE, two-session rules (StringTransport, real store)."""

from __future__ import annotations

import re

import pytest

from tests.imap.harness import Harness

ALICE = "alice@example.test"


def message(n: int) -> bytes:
    return (
        b"From: Sender <s@example.test>\r\nTo: alice@example.test\r\nSubject: message %d\r\n"
        b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <%d@example.test>\r\n\r\nbody of %d\r\n" % (n, n, n)
    )


@pytest.fixture
def harness(tmp_path):
    h = Harness(tmp_path)
    for n in range(1, 6):
        h.deliver(ALICE, message(n))
    return h


@pytest.fixture
def conn(harness):
    c = harness.connect(ALICE)
    c.send("s SELECT INBOX\r\n")
    return c


def test_fetch_metadata(conn):
    out = conn.send("a FETCH 1:* (UID FLAGS RFC822.SIZE)\r\n")
    lines = out.split(b"\r\n")
    assert lines[0] == b"* 1 FETCH (UID 1 FLAGS (\\Recent) RFC822.SIZE %d)" % len(message(1))
    assert len(lines) == 7 and lines[5] == b"a OK FETCH completed."


def test_fetch_macros_and_bad_sets(conn):
    out = conn.send("a FETCH 2 FAST\r\n")
    assert out.startswith(b"* 2 FETCH (FLAGS (\\Recent) INTERNALDATE \"")
    assert conn.send("b FETCH 9 FLAGS\r\n").startswith(b"b BAD")
    assert conn.send("c FETCH 0 FLAGS\r\n").startswith(b"c BAD")
    assert conn.send("d FETCH 1 (FLAGS\r\n").startswith(b"d BAD")
    assert conn.send("e FETCH 1 BOGUS\r\n").startswith(b"e BAD")
    assert conn.send("f UID FETCH 100:200 FLAGS\r\n") == b"f OK UID FETCH completed.\r\n"


def test_fetch_body_sets_seen_and_peek_does_not(conn):
    out = conn.send("a FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n")
    assert out == b'* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {22}\r\nSubject: message 1\r\n\r\n)\r\na OK FETCH completed.\r\n'
    out = conn.send("b FETCH 1 FLAGS\r\n")
    assert b"\\Seen" not in out
    out = conn.send("c FETCH 1 BODY[]\r\n")
    body = message(1)
    assert out == b"* 1 FETCH (FLAGS (\\Seen \\Recent) BODY[] {%d}\r\n" % len(body) + body + b")\r\nc OK FETCH completed.\r\n"
    out = conn.send("d FETCH 2 (BODY[TEXT]<0.4> RFC822.HEADER)\r\n")
    assert b"BODY[TEXT]<0> {4}\r\nbody" in out and b"RFC822.HEADER {" in out and b"FLAGS (\\Seen \\Recent)" in out


def test_examine_never_sets_seen(harness):
    conn = harness.connect(ALICE)
    conn.send("a EXAMINE INBOX\r\n")
    conn.send("b FETCH 1 BODY[]\r\n")
    conn.send("c CLOSE\r\n")
    conn.send("d SELECT INBOX\r\n")
    out = conn.send("e FETCH 1 FLAGS\r\n")
    assert b"\\Seen" not in out


def test_uid_fetch_includes_uid(conn):
    out = conn.send("a UID FETCH 3 FLAGS\r\n")
    assert out.startswith(b"* 3 FETCH (UID 3 FLAGS (")


def test_store_forms(conn):
    out = conn.send("a STORE 1 +FLAGS (\\Flagged $Work)\r\n")
    assert out.startswith(b"* FLAGS (") and b"$Work" in out
    assert b"* 1 FETCH (FLAGS (\\Flagged \\Recent $Work))\r\n" in out
    assert out.index(b"* FLAGS") < out.index(b"* 1 FETCH")
    assert conn.send("b STORE 1 -FLAGS.SILENT (\\Flagged)\r\n") == b"b OK STORE completed.\r\n"
    out = conn.send("c UID STORE 1 FLAGS (\\Answered)\r\n")
    assert out == b"* 1 FETCH (UID 1 FLAGS (\\Answered \\Recent))\r\nc OK UID STORE completed.\r\n"
    assert conn.send("d STORE 1 +FLAGS (\\Recent)\r\n").startswith(b"d BAD")
    assert conn.send("e STORE 1 +FLAGZ (\\Seen)\r\n").startswith(b"e BAD")


def test_copy_with_copyuid(conn):
    conn.send("a CREATE Archive2\r\n")
    out = conn.send("b COPY 2:3 Archive2\r\n")
    assert re.match(rb"b OK \[COPYUID \d+ 2:3 1:2\] Copy completed\.\r\n", out), out
    assert conn.send("c COPY 1 Nope\r\n") == b"c NO [TRYCREATE] Mailbox doesn't exist\r\n"
    assert b"MESSAGES 2" in conn.send("d STATUS Archive2 (MESSAGES)\r\n")


def test_move(conn):
    conn.send("a CREATE Old\r\n")
    out = conn.send("b MOVE 2:3 Old\r\n")
    assert re.match(rb"\* OK \[COPYUID \d+ 2:3 1:2\] Moved UIDs\.\r\n\* 2 EXPUNGE\r\n\* 2 EXPUNGE\r\nb OK Move completed\.\r\n", out), out
    out = conn.send("c UID MOVE 5 Old\r\n")
    assert b"* 3 EXPUNGE" in out
    assert conn.send("d FETCH 1:* UID\r\n").count(b"FETCH (UID") == 2


def test_expunge_and_uid_expunge(conn):
    conn.send("a STORE 1,3,5 +FLAGS.SILENT (\\Deleted)\r\n")
    assert conn.send("b UID EXPUNGE 3:4\r\n") == b"* 3 EXPUNGE\r\nb OK UID EXPUNGE completed.\r\n"
    assert conn.send("c EXPUNGE\r\n") == b"* 1 EXPUNGE\r\n* 3 EXPUNGE\r\nc OK EXPUNGE completed.\r\n"
    assert conn.send("d FETCH 1:* UID\r\n") == b"* 1 FETCH (UID 2)\r\n* 2 FETCH (UID 4)\r\nd OK FETCH completed.\r\n"


def test_condstore(conn):
    out = conn.send("a FETCH 1 (MODSEQ)\r\n")
    modseq = int(re.search(rb"MODSEQ \((\d+)\)", out).group(1))
    out = conn.send(f"b STORE 1 (UNCHANGEDSINCE {modseq}) +FLAGS (\\Flagged)\r\n")
    assert b"MODSEQ (" in out and out.endswith(b"b OK STORE completed.\r\n")
    out = conn.send(f"c STORE 1 (UNCHANGEDSINCE {modseq}) +FLAGS (\\Seen)\r\n")
    assert out == b"c OK [MODIFIED 1] Conditional STORE failed for some messages.\r\n"
    out = conn.send(f"d FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq})\r\n")
    assert out.count(b"* ") == 1 and out.startswith(b"* 1 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ (")


def test_other_session_changes_reported_at_noop_not_expunge_during_fetch(harness, conn):
    other = harness.connect(ALICE)
    other.send("s SELECT INBOX\r\n")
    other.send("a STORE 2 +FLAGS (\\Deleted)\r\n")
    other.send("b EXPUNGE\r\n")
    harness.deliver(ALICE, message(6))
    out = conn.send("c FETCH 2 (UID)\r\n")
    # the message stays addressable: no EXPUNGE during FETCH (RFC 3501 7.4.1)
    assert b"EXPUNGE" not in out
    assert out.startswith(b"* 2 FETCH (UID 2)\r\n")
    # the new message may be announced at once; the expunge must wait
    assert b"* 6 EXISTS\r\n" in out
    assert conn.send("d NOOP\r\n") == b"* 2 EXPUNGE\r\nd OK NOOP completed.\r\n"
    assert conn.send("e FETCH 2 UID\r\n") == b"* 2 FETCH (UID 3)\r\ne OK FETCH completed.\r\n"


def test_flag_change_by_other_session_is_announced(harness, conn):
    other = harness.connect(ALICE)
    other.send("s SELECT INBOX\r\n")
    other.send("a STORE 3 +FLAGS (\\Flagged)\r\n")
    out = conn.send("b NOOP\r\n")
    assert b"* 3 FETCH (UID 3 FLAGS (\\Flagged" in out


def test_idle_pushes_delivery_and_done_ends(harness, conn):
    assert conn.send("i IDLE\r\n") == b"+ idling\r\n"
    harness.deliver(ALICE, message(7))
    harness.clock.advance(1)
    harness.clock.advance(0.1)
    assert conn.read() == b"* 6 EXISTS\r\n* 6 RECENT\r\n"
    assert conn.send("DONE\r\n") == b"i OK Idle completed.\r\n"
    assert conn.send("n NOOP\r\n") == b"n OK NOOP completed.\r\n"


def test_no_expunge_during_store_and_fetch_of_vanished_body(harness, conn):
    other = harness.connect(ALICE)
    other.send("s SELECT INBOX\r\n")
    other.send("a STORE 2 +FLAGS.SILENT (\\Deleted)\r\n")
    other.send("b EXPUNGE\r\n")
    out = conn.send("c STORE 1:3 +FLAGS (\\Answered)\r\n")
    assert b"EXPUNGE" not in out and out.endswith(b"c OK STORE completed.\r\n")
    out = conn.send("d FETCH 2 BODY.PEEK[]\r\n")
    assert out == b"d OK [EXPUNGEISSUED] Some messages were expunged before they could be fetched.\r\n"
    out = conn.send("e FETCH 2 (UID FLAGS)\r\n")
    assert out.startswith(b"* 2 FETCH (UID 2 FLAGS (")  # cached items still answer
    out = conn.send("g NOOP\r\n")
    assert out == b"* 2 EXPUNGE\r\ng OK NOOP completed.\r\n"


def test_idle_pushes_flag_changes_and_expunges_from_other_session(harness, conn):
    other = harness.connect(ALICE)
    other.send("s SELECT INBOX\r\n")
    assert conn.send("i IDLE\r\n") == b"+ idling\r\n"
    other.send("a STORE 4 +FLAGS (\\Flagged)\r\n")
    harness.clock.advance(0.1)
    assert conn.read() == b"* 4 FETCH (UID 4 FLAGS (\\Flagged \\Recent))\r\n"
    other.send("b STORE 1 +FLAGS (\\Deleted)\r\n")
    other.send("c EXPUNGE\r\n")
    harness.clock.advance(0.1)
    out = conn.read()
    assert b"* 1 EXPUNGE\r\n" in out
    assert conn.send("DONE\r\n") == b"i OK Idle completed.\r\n"


def test_idle_without_done_and_in_authenticated_state(harness):
    conn = harness.connect(ALICE)
    assert conn.send("i IDLE\r\n") == b"+ idling\r\n"
    assert conn.send("NOPE\r\n") == b"i BAD Expected DONE.\r\n"
    assert conn.send("n NOOP\r\n") == b"n OK NOOP completed.\r\n"



def test_partial_fetch_of_whole_message(conn):
    body = message(1)
    out = conn.send("a FETCH 1 (BODY.PEEK[]<5.10>)\r\n")
    assert out == b"* 1 FETCH (BODY[]<5> {10}\r\n" + body[5:15] + b")\r\na OK FETCH completed.\r\n"
    out = conn.send("b FETCH 1 (BODY.PEEK[]<100000.10>)\r\n")
    assert out == b"* 1 FETCH (BODY[]<100000> {0}\r\n)\r\nb OK FETCH completed.\r\n"


def test_implicit_seen_reports_modseq_once_condstore_is_on(conn):
    conn.send("a FETCH 1 MODSEQ\r\n")  # any MODSEQ use enables CONDSTORE (RFC 7162 3.1)
    out = conn.send("b FETCH 2 BODY[TEXT]\r\n")
    assert re.match(rb"\* 2 FETCH \(BODY\[TEXT\] \{11\}\r\nbody of 2\r\n MODSEQ \(\d+\) FLAGS \(\\Seen \\Recent\)\)\r\n", out), out


def test_star_on_empty_folder(harness):
    conn = harness.connect(ALICE)
    conn.send("a CREATE Empty\r\n")
    conn.send("b SELECT Empty\r\n")
    assert conn.send("c FETCH 1:* FLAGS\r\n") == b"c OK FETCH completed.\r\n"
    assert conn.send("d FETCH 1 FLAGS\r\n").startswith(b"d BAD")
