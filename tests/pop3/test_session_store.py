"""The POP3 session over the real Maildir store (run inline), on a StringTransport.

The same scenarios as the integration tests, without a server process: what
the session does to real files in new/ and cur/, the real flock-based
maildrop lock, \\Recent left alone, UIDL equal to the store's keys.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task

from mailsuite.interfaces import Delivery
from mailsuite.pop3.protocol import POP3Session, SessionSettings
from mailsuite.store import InlineRunner, MaildirStore
from mailsuite.store.maildir import _pread_then

from .fakes import FakeAuthenticator
from .harness import ALICE, PASSWORD, TLSStringTransport
from .support import result_of
from .test_session import MSG1, MSG2, multiline


@pytest.fixture
def store(tmp_path: Path) -> Any:
    store = MaildirStore(tmp_path / "mail", runner=InlineRunner(), clock=task.Clock())
    yield store
    store.close()


def deliver(store: Any, *bodies: bytes) -> None:
    for body in bodies:
        message = store.new_incoming()
        message.write(body)
        message.finish()
        assert result_of(store.deliver(message, [Delivery(ALICE)]))[0].error is None
        message.discard()


class StoreSession:
    def __init__(self, store: Any) -> None:
        self.auth = FakeAuthenticator({ALICE: PASSWORD}, {})
        self.auth.mailboxes[ALICE] = store.user_mailbox(ALICE)
        self.clock = task.Clock()
        settings = SessionSettings(self.auth, "mail.example.test", 600, self.clock, None, implicit_tls=True)
        self.session = POP3Session(settings)
        self.transport = TLSStringTransport()
        self.session.makeConnection(self.transport)
        self.transport.clear()

    def command(self, line: str) -> bytes:
        self.session.dataReceived(line.encode() + b"\r\n")
        data = self.transport.value()
        self.transport.clear()
        return data

    def login(self) -> bytes:
        self.command(f"USER {ALICE}")
        return self.command(f"PASS {PASSWORD}")

    def drop(self) -> None:
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        self.session.connectionLost(Failure(ConnectionLost()))


def files(store: Any) -> list[str]:
    root = Path(store.root) / "example.test" / "alice"
    return sorted(p.name.split(":")[0] for sub in ("new", "cur") for p in (root / sub).iterdir())


def test_list_uidl_retr_over_real_store(store: Any) -> None:
    deliver(store, MSG1, MSG2)
    s = StoreSession(store)
    assert s.login().startswith(b"+OK Logged in, 2 messages")
    assert multiline(s.command("LIST")) == [b"1 %d" % len(MSG1), b"2 %d" % len(MSG2)]
    uids = [line.split()[1].decode() for line in multiline(s.command("UIDL"))]
    assert uids == files(store)  # the Maildir base names
    assert b"\r\n".join(multiline(s.command("RETR 2"))) + b"\r\n" == MSG2


def test_session_does_not_claim_recent(store: Any) -> None:
    deliver(store, MSG1)
    s = StoreSession(store)
    s.login()
    s.command("RETR 1")
    s.command("QUIT")
    status = result_of(store.user_mailbox(ALICE).status("INBOX"))
    assert status.recent == 1 and status.unseen == 1


def test_quit_removes_marked_files_only(store: Any) -> None:
    deliver(store, MSG1, MSG2, MSG1)
    before = files(store)
    s = StoreSession(store)
    s.login()
    uid2 = s.command("UIDL 2").split()[2].decode()
    s.command("DELE 2")
    assert files(store) == before
    assert s.command("QUIT").startswith(b"+OK")
    assert files(store) == [name for name in before if name != uid2]


def test_drop_keeps_everything_and_frees_real_lock(store: Any) -> None:
    deliver(store, MSG1, MSG2)
    before = files(store)
    s = StoreSession(store)
    s.login()
    s.command("DELE 1")
    s.command("DELE 2")
    other = StoreSession(store)
    assert other.login().startswith(b"-ERR [IN-USE]")
    s.drop()
    assert files(store) == before
    assert other.login().startswith(b"+OK Logged in, 2 messages")


def test_new_delivery_during_session_not_listed(store: Any) -> None:
    deliver(store, MSG1)
    s = StoreSession(store)
    s.login()
    deliver(store, MSG2)
    assert s.command("STAT") == b"+OK 1 %d\r\n" % len(MSG1)
    s.command("QUIT")
    assert StoreSession(store).login().startswith(b"+OK Logged in, 2 messages")


def test_message_dropped_into_new_gets_listed(store: Any) -> None:
    deliver(store, MSG1)
    new = Path(store.root) / "example.test" / "alice" / "new"
    (new / "1700000000.outside.host").write_bytes(MSG2)
    s = StoreSession(store)
    assert s.login().startswith(b"+OK Logged in, 2 messages")
    assert b"1700000000.outside.host" in [line.split()[1] for line in multiline(s.command("UIDL"))]
    assert os.path.exists(new / "1700000000.outside.host")


class CountingRunner(InlineRunner):
    """The store's inline runner, recording each piece of work the store runs."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def run(self, f: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(f)
        return super().run(f, *args, **kwargs)


def test_retr_and_top_read_through_the_stores_runner(tmp_path: Path) -> None:
    """RETR and TOP read the message through the store (IFolder.open_reader), so every read runs
    where the store runs its disk work; POP3 chooses no thread.  A 300 KB message is read in
    several chunks and arrives whole, byte-stuffed."""
    runner = CountingRunner()
    store = MaildirStore(tmp_path / "mail", runner=runner, clock=task.Clock())
    body = b"Subject: big\r\n\r\n" + b"".join(b".line %06d\r\n" % i for i in range(25000))
    deliver(store, body)
    s = StoreSession(store)
    s.login()
    before = len(runner.calls)
    lines = multiline(s.command("RETR 1"))
    assert b"\r\n".join(lines) + b"\r\n" == body
    reads = [f for f in runner.calls[before:] if f is _pread_then]  # read and byte-stuffed there
    assert len(reads) >= 3
    before = len(runner.calls)
    assert multiline(s.command("TOP 1 2")) == [b"Subject: big", b"", b".line 000000", b".line 000001"]
    assert _pread_then in runner.calls[before:]
    store.close()
