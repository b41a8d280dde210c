"""FETCH racing an EXPUNGE from another session (RFC 2180 4.1, RFC 5530), two live sessions over TCP."""

from __future__ import annotations

import pytest

from tests.imap.conftest import sample
from tests.imap.test_compliance_syntax import RawClient


@pytest.fixture
def pair(imap_server, request):
    """Two raw clients of one user with three messages in INBOX, both with INBOX selected."""
    user = request.node.name.replace("_", "-")[:40] + "@example.test"
    for n in (1, 2, 3):
        imap_server.writer.deliver(user, sample(n, "race"))
    clients = [RawClient(imap_server.ports["imap"]) for _ in range(2)]
    for client in clients:
        client.ok(f"LOGIN {user} secret")
        client.ok("SELECT INBOX")
    yield clients
    for client in clients:
        client.close()


def test_fetch_answers_the_rest_with_ok_when_another_session_expunged_one(pair):
    """A body FETCH over a range in which another session expunged one message answers the
    others and ends OK [EXPUNGEISSUED], not NO: clients (and Dovecot's imaptest) take a
    tagged NO as the whole FETCH failing.  No EXPUNGE is sent during the FETCH (RFC 3501 7.4.1)."""
    reader, expunger = pair
    expunger.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    expunger.ok("EXPUNGE")

    untagged, done = reader.command("FETCH 1:3 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert done.startswith(b"OK [EXPUNGEISSUED]"), done
    fetched = [line.split(b" ")[1] for line in untagged if b" FETCH " in line]
    assert fetched == [b"1", b"3"], untagged
    assert not any(line.endswith(b" EXPUNGE") for line in untagged), untagged

    untagged, done = reader.command("FETCH 1:3 BODY.PEEK[]")
    assert done.startswith(b"OK [EXPUNGEISSUED]"), done
    assert b"body 3" in b"\n".join(untagged) and b"body 2" not in b"\n".join(untagged)

    # only the expunged message asked for: nothing to answer, still OK [EXPUNGEISSUED] as Dovecot
    # (RFC 2180 4.1.3 allows a NO, which clients and imaptest count as a failed FETCH)
    untagged, done = reader.command("FETCH 2 BODY.PEEK[]")
    assert done.startswith(b"OK [EXPUNGEISSUED]"), done
    assert untagged == [], untagged

    # the next command that may report it does (RFC 3501 7.4.1), and the numbers shift
    untagged = reader.ok("NOOP")
    assert b"* 2 EXPUNGE" in untagged, untagged
    untagged, done = reader.command("FETCH 1:2 BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
    assert done.startswith(b"OK") and b"EXPUNGEISSUED" not in done, done


def test_fetch_of_only_expunged_messages_answers_ok_with_what_it_can(pair):
    """Every requested message expunged by another session: the tagged answer is
    OK [EXPUNGEISSUED], not NO; the items the session still knows (UID, FLAGS, sizes) are
    answered, items needing the content are left out, and no EXPUNGE comes during the FETCH."""
    reader, expunger = pair
    expunger.ok("STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    expunger.ok("EXPUNGE")

    for command in ("FETCH 1:3 (BODY.PEEK[] BODYSTRUCTURE)", "FETCH 1:3 (ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
                    "FETCH 2 BODY.PEEK[TEXT]<0.10>", "FETCH 1:3 (FLAGS RFC822.TEXT)"):
        untagged, done = reader.command(command)
        assert done.startswith(b"OK [EXPUNGEISSUED]"), (command, done)
        assert not any(b" FETCH " in line or line.endswith(b" EXPUNGE") for line in untagged), (command, untagged)

    untagged, done = reader.command("FETCH 1:3 (UID RFC822.SIZE)")  # cached items: all answered
    assert done.startswith(b"OK") and b"EXPUNGEISSUED" not in done, done
    assert [line.split(b" ")[1] for line in untagged] == [b"1", b"2", b"3"], untagged

    # a UID FETCH may report the EXPUNGEs (RFC 3501 7.4.1), after its own answer is worked out
    untagged, done = reader.command("UID FETCH 1:3 (UID BODY.PEEK[HEADER])")
    assert done.startswith(b"OK [EXPUNGEISSUED]"), done
    assert untagged == [b"* 1 EXPUNGE"] * 3, untagged
