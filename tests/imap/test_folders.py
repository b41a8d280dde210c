"""SELECT/EXAMINE, CREATE/DELETE/RENAME, (UN)SUBSCRIBE, LIST/LSUB, STATUS, APPEND over the real Maildir store."""

from __future__ import annotations

import pytest

from tests.imap.harness import Harness

MSG = b"From: a@example.test\r\nTo: alice@example.test\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.fixture
def harness(tmp_path):
    return Harness(tmp_path)


@pytest.fixture
def conn(harness):
    return harness.connect("alice@example.test")


def test_select_reports_state(harness, conn):
    harness.deliver("alice@example.test", MSG)
    harness.deliver("alice@example.test", MSG)
    out = conn.send("a SELECT INBOX\r\n")
    lines = out.split(b"\r\n")
    assert lines[0].startswith(b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft")
    assert lines[1].startswith(b"* OK [PERMANENTFLAGS (") and b"\\*)]" in lines[1]
    assert b"* 2 EXISTS" in lines and b"* 2 RECENT" in lines
    assert any(line.startswith(b"* OK [UNSEEN 1]") for line in lines)
    assert any(line.startswith(b"* OK [UIDVALIDITY ") for line in lines)
    assert any(line.startswith(b"* OK [UIDNEXT 3]") for line in lines)
    assert any(line.startswith(b"* OK [HIGHESTMODSEQ ") for line in lines)
    assert lines[-2] == b"a OK [READ-WRITE] SELECT completed."


def test_examine_is_read_only(harness, conn):
    harness.deliver("alice@example.test", MSG)
    out = conn.send("a EXAMINE inbox\r\n")
    assert b"* OK [PERMANENTFLAGS ()]" in out
    assert out.endswith(b"a OK [READ-ONLY] EXAMINE completed.\r\n")
    assert conn.send("b STORE 1 +FLAGS (\\Seen)\r\n").startswith(b"b NO")
    assert conn.send("c EXPUNGE\r\n").startswith(b"c NO")


def test_select_missing_folder_leaves_selected_state(conn):
    assert conn.send("a SELECT INBOX\r\n").endswith(b"a OK [READ-WRITE] SELECT completed.\r\n")
    assert conn.send("b SELECT Nope\r\n") == b"b NO [NONEXISTENT] Mailbox doesn't exist\r\n"
    assert conn.send("c FETCH 1 FLAGS\r\n") == b"c BAD No mailbox selected.\r\n"


def test_create_list_rename_delete(conn):
    assert conn.send("a CREATE Work/Projects/\r\n") == b"a OK CREATE completed.\r\n"
    assert conn.send("b CREATE Work\r\n").startswith(b"b NO [ALREADYEXISTS]")
    assert conn.send("b2 CREATE INBOX\r\n").startswith(b"b2 NO [ALREADYEXISTS]")
    assert conn.send('b3 CREATE "a*b"\r\n').startswith(b"b3 NO [CANNOT]")
    assert conn.send('b4 CREATE "../etc"\r\n').startswith(b"b4 NO")
    out = conn.send('c LIST "" "*"\r\n')
    assert b'* LIST (\\HasChildren) "/" "Work"\r\n' in out
    assert b'* LIST (\\HasNoChildren) "/" "Work/Projects"\r\n' in out
    assert b'"INBOX"' in out
    out = conn.send('d LIST "" "%"\r\n')
    assert b'"Work/Projects"' not in out and b'"Work"' in out
    out = conn.send('e LIST "Work/" "%"\r\n')
    assert b'"Work/Projects"' in out and b'"Work"\r\n' not in out
    assert conn.send("f RENAME Work Job\r\n") == b"f OK RENAME completed.\r\n"
    out = conn.send('g LIST "" "Job*"\r\n')
    assert b'"Job/Projects"' in out
    assert conn.send("h DELETE Job/Projects\r\n") == b"h OK DELETE completed.\r\n"
    assert conn.send("i DELETE Nope\r\n").startswith(b"i NO [NONEXISTENT]")
    assert conn.send("j DELETE INBOX\r\n").startswith(b"j NO")
    assert conn.send('k LIST "" ""\r\n') == b'* LIST (\\Noselect) "/" ""\r\nk OK LIST completed.\r\n'


def test_international_names_travel_in_modified_utf7(conn):
    assert conn.send("a CREATE &ZeVnLIqe-\r\n") == b"a OK CREATE completed.\r\n"
    out = conn.send('b LIST "" "*"\r\n')
    assert b'"&ZeVnLIqe-"' in out


def test_special_use_and_list_extended(conn):
    out = conn.send('a LIST "" "*"\r\n')
    assert b"\\Sent" in out and b"\\Trash" in out and b"\\Drafts" in out and b"\\Junk" in out
    out = conn.send('b LIST (SPECIAL-USE) "" "*"\r\n')
    assert b'"INBOX"' not in out and b"\\Sent" in out
    out = conn.send('c LIST "" "INBOX" RETURN (STATUS (MESSAGES UIDNEXT) SUBSCRIBED CHILDREN)\r\n')
    assert b'* STATUS "INBOX" (MESSAGES 0 UIDNEXT 1)' in out


def test_subscriptions(conn):
    conn.send("a CREATE Lists/python\r\n")
    assert conn.send("b SUBSCRIBE Lists/python\r\n") == b"b OK SUBSCRIBE completed.\r\n"
    out = conn.send('c LSUB "" "*"\r\n')
    assert b'"Lists/python"' in out
    out = conn.send('d LSUB "" "%"\r\n')
    assert b'* LSUB (\\Noselect) "/" "Lists"' in out
    out = conn.send('e LIST (SUBSCRIBED) "" "*"\r\n')
    assert b'(\\HasNoChildren \\Subscribed) "/" "Lists/python"' in out
    assert conn.send("f UNSUBSCRIBE Lists/python\r\n") == b"f OK UNSUBSCRIBE completed.\r\n"
    assert b'"Lists/python"' not in conn.send('g LSUB "" "*"\r\n')


def test_status(harness, conn):
    harness.deliver("alice@example.test", MSG)
    out = conn.send("a STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)\r\n")
    assert out.startswith(b'* STATUS "INBOX" (MESSAGES 1 RECENT 1 UIDNEXT 2 UIDVALIDITY ')
    assert conn.send("b STATUS INBOX (BOGUS)\r\n").startswith(b"b BAD")
    assert conn.send("c STATUS Nope (MESSAGES)\r\n").startswith(b"c NO [NONEXISTENT]")


def test_append_with_flags_and_date(conn):
    out = conn.send(b'a APPEND INBOX (\\Seen $Work) "05-Mar-2024 10:11:12 +0100" {%d}\r\n' % len(MSG))
    assert out == b"+ OK\r\n"
    out = conn.send(MSG + b"\r\n")
    assert out.startswith(b"a OK [APPENDUID ") and out.endswith(b" 1] Append completed.\r\n")
    out = conn.send("b SELECT INBOX\r\n")
    assert b"$Work" in out
    out = conn.send("c FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE)\r\n")
    # the first session to select the folder after the APPEND sees the message \Recent (RFC 3501 2.3.2)
    assert out.startswith(b'* 1 FETCH (FLAGS (\\Seen \\Recent $Work) INTERNALDATE "05-Mar-2024 09:11:12 +0000" RFC822.SIZE %d)' % len(MSG))


def test_append_to_missing_folder_says_trycreate(conn):
    out = conn.send(b"a APPEND Nope {%d+}\r\n" % len(MSG) + MSG + b"\r\n")
    assert out == b"a NO [TRYCREATE] Mailbox doesn't exist\r\n"


def test_append_to_selected_folder_announces_exists(conn):
    conn.send("a SELECT INBOX\r\n")
    out = conn.send(b"b APPEND INBOX {%d+}\r\n" % len(MSG) + MSG + b"\r\n")
    assert b"* 1 EXISTS\r\n" in out and b"b OK [APPENDUID" in out


def test_close_expunges_silently_and_unselect_does_not(harness, conn):
    for _ in range(3):
        harness.deliver("alice@example.test", MSG)
    conn.send("a SELECT INBOX\r\n")
    conn.send("b STORE 1:2 +FLAGS.SILENT (\\Deleted)\r\n")
    assert conn.send("c UNSELECT\r\n") == b"c OK UNSELECT completed.\r\n"
    conn.send("d SELECT INBOX\r\n")
    assert conn.send("e CLOSE\r\n") == b"e OK CLOSE completed.\r\n"
    assert b"MESSAGES 1" in conn.send("f STATUS INBOX (MESSAGES)\r\n")


def test_append_from_another_session_leaves_recent_to_the_selecting_one(harness, conn):
    """APPEND must not claim \\Recent for a folder another session has selected (RFC 3501 2.3.2)."""
    conn.send("a SELECT INBOX\r\n")
    harness.deliver("alice@example.test", MSG)
    other = harness.connect("alice@example.test")
    assert other.send(b"b APPEND INBOX {%d+}\r\n" % len(MSG) + MSG + b"\r\n").startswith(b"b OK [APPENDUID")
    out = conn.send("c NOOP\r\n")
    # both the delivered and the appended message are \Recent here, in the session that has the folder selected
    assert b"* 2 EXISTS\r\n* 2 RECENT\r\n" in out
    assert conn.send("d FETCH 1:2 FLAGS\r\n").startswith(b"* 1 FETCH (FLAGS (\\Recent))\r\n* 2 FETCH (FLAGS (\\Recent))")
    # and not in the appending session when it selects the folder afterwards
    assert b"* 0 RECENT" in other.send("e SELECT INBOX\r\n")


def test_delete_selected_folder_says_closed(conn):
    conn.send("a CREATE Temp\r\n")
    conn.send("b SELECT Temp\r\n")
    assert conn.send("c DELETE Temp\r\n") == b"* OK [CLOSED] Selected mailbox was deleted.\r\nc OK DELETE completed.\r\n"
    assert conn.send("d FETCH 1 FLAGS\r\n") == b"d BAD No mailbox selected.\r\n"


def test_rename_inbox_moves_messages_and_keeps_inbox(harness, conn):
    """RFC 3501 6.3.5: renaming INBOX moves its messages to the new name; INBOX stays, empty."""
    harness.deliver("alice@example.test", MSG)
    harness.deliver("alice@example.test", MSG)
    assert conn.send("a RENAME INBOX Saved\r\n") == b"a OK RENAME completed.\r\n"
    assert b"MESSAGES 0" in conn.send("b STATUS INBOX (MESSAGES)\r\n")
    assert b"MESSAGES 2" in conn.send("c STATUS Saved (MESSAGES)\r\n")
    assert conn.send("d RENAME Saved Drafts\r\n").startswith(b"d NO [ALREADYEXISTS]")
    assert conn.send("e RENAME Nope Other\r\n").startswith(b"e NO [NONEXISTENT]")


def test_list_extended_subscribed_recursivematch(conn):
    conn.send("a CREATE Foo/Bar\r\n")
    conn.send("b SUBSCRIBE Foo/Bar\r\n")
    out = conn.send('d LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"\r\n')
    assert b'* LIST (\\HasChildren) "/" "Foo" ("CHILDINFO" ("SUBSCRIBED"))\r\n' in out
    assert b'"Foo/Bar"' not in out
    out = conn.send('e LIST (SUBSCRIBED) "" "*"\r\n')
    assert b'* LIST (\\HasNoChildren \\Subscribed) "/" "Foo/Bar"\r\n' in out
    assert b'"Foo"' not in out
    assert conn.send('f LIST (RECURSIVEMATCH) "" "*"\r\n').startswith(b"f BAD")
    out = conn.send('g LIST "" ("INBOX" "Foo/%") RETURN (SUBSCRIBED)\r\n')
    assert b'"INBOX"' in out and b'(\\HasNoChildren \\Subscribed) "/" "Foo/Bar"' in out
