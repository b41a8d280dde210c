"""COPY/MOVE response codes when a folder is missing (RFC 3501 6.4.7, RFC 5530), two live sessions over TCP."""

from __future__ import annotations

import pytest

from tests.imap.conftest import sample
from tests.imap.test_compliance_syntax import RawClient


@pytest.fixture
def pair(imap_server, request):
    """Two raw clients logged in as the same user (named after the test)."""
    user = request.node.name.replace("_", "-")[:40] + "@example.test"
    clients = [RawClient(imap_server.ports["imap"]) for _ in range(2)]
    for client in clients:
        client.ok(f"LOGIN {user} secret")
    imap_server.writer.deliver(user, sample(1, "copy"))
    yield clients
    for client in clients:
        client.close()


def test_copy_to_a_missing_target_says_trycreate_and_keeps_the_session(pair):
    """RFC 3501 6.4.7: a missing destination is [TRYCREATE], never "the selected mailbox was deleted"."""
    one, _ = pair
    one.ok("SELECT INBOX")
    for command in ("COPY 1 Elsewhere", "MOVE 1 Elsewhere", "UID COPY 1:* Elsewhere"):
        untagged, done = one.command(command)
        assert done.startswith(b"NO [TRYCREATE]"), (command, done)
        assert not any(line.startswith(b"* BYE") for line in untagged), untagged
    one.ok("CREATE Elsewhere")
    one.ok("COPY 1 Elsewhere")
    one.ok("NOOP")


def test_copy_from_a_recreated_folder_is_not_trycreate(pair):
    """The selected folder deleted and re-created under the same name by another session
    (new UIDVALIDITY): COPY to an existing target fails without [TRYCREATE], and the
    session ends with BYE (its UIDs mean nothing any more)."""
    one, two = pair
    one.ok("CREATE Work")
    one.ok("CREATE Keep")
    two.ok("SELECT INBOX")
    two.ok("COPY 1 Work")
    one.ok("SELECT Work")
    two.ok("UNSELECT")
    two.ok("DELETE Work")
    two.ok("CREATE Work")
    untagged, done = one.command("COPY 1 Keep")
    assert done.startswith(b"NO"), done
    assert b"TRYCREATE" not in done, done
    assert any(line.startswith(b"* BYE") for line in untagged) or one.line().startswith(b"* BYE"), untagged
