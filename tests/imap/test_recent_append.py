"""\\Recent for APPENDed messages (RFC 3501 2.3.2, 6.3.1, 6.3.2) with real imaplib sessions on a real server.

A message APPENDed by one session is \\Recent for the first session that
sees it, whether that session SELECTs after the APPEND or had the folder
selected already; an EXAMINE session sees it \\Recent but never takes that
away from the next SELECT.
"""

from __future__ import annotations

import imaplib

from tests.imap.conftest import sample


def login(server, user: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=10)
    client.login(user, "any")
    return client


def recent_count(client: imaplib.IMAP4) -> int:
    """The last ``* n RECENT`` the server sent (imaplib keeps the untagged responses)."""
    typ, data = client.response("RECENT")
    assert data and data[-1] is not None, "no RECENT response"
    return int(data[-1])


def flags_of(client: imaplib.IMAP4, seq: int) -> bytes:
    typ, data = client.fetch(str(seq), "(FLAGS)")
    assert typ == "OK"
    return data[0]


def append(client: imaplib.IMAP4, n: int, flags: str = "") -> None:
    typ, data = client.append("INBOX", flags or None, None, sample(n))
    assert typ == "OK", data


def test_appended_message_is_recent_for_the_next_select_and_examine_does_not_clear_it(imap_server):
    """APPEND, then EXAMINE (sees \\Recent, clears nothing), then SELECT (gets it), then another SELECT (not recent)."""
    user = "recent-select@example.test"
    appender = login(imap_server, user)
    append(appender, 1, r"(\Seen)")
    typ, data = appender.status("INBOX", "(MESSAGES RECENT)")
    assert b"MESSAGES 1 RECENT 1" in data[0]

    examiner = login(imap_server, user)
    typ, data = examiner.select("INBOX", readonly=True)
    assert data == [b"1"] and recent_count(examiner) == 1
    assert b"\\Recent" in flags_of(examiner, 1) and b"\\Seen" in flags_of(examiner, 1)
    examiner.logout()

    selector = login(imap_server, user)
    typ, data = selector.select("INBOX")
    assert data == [b"1"] and recent_count(selector) == 1
    assert b"\\Recent" in flags_of(selector, 1) and b"\\Seen" in flags_of(selector, 1)

    later = login(imap_server, user)
    later.select("INBOX")
    assert recent_count(later) == 0
    assert b"\\Recent" not in flags_of(later, 1)
    typ, data = appender.status("INBOX", "(RECENT)")
    assert b"RECENT 0" in data[0]
    for c in (appender, selector, later):
        c.logout()


def test_session_with_the_folder_selected_gets_another_sessions_append_as_recent(imap_server):
    """A selected session learns of the APPEND on NOOP with EXISTS and RECENT; nobody else gets it after."""
    user = "recent-noop@example.test"
    imap_server.writer.deliver(user, sample(0))
    watcher = login(imap_server, user)
    watcher.select("INBOX")
    assert recent_count(watcher) == 1  # the delivered message

    appender = login(imap_server, user)
    append(appender, 1)
    append(appender, 2, r"(\Flagged)")
    watcher.noop()
    typ, data = watcher.response("EXISTS")
    assert data[-1] == b"3"
    assert recent_count(watcher) == 3
    typ, data = watcher.fetch("1:3", "(FLAGS)")
    assert all(b"\\Recent" in line for line in data)
    assert b"\\Flagged" in data[2]

    other = login(imap_server, user)
    other.select("INBOX")
    assert recent_count(other) == 0
    for c in (watcher, appender, other):
        c.logout()
