"""The queue inside a real ``twistd -n mailsuite`` process: resume after restart and SIGKILL, DSN to a local user, the CLI."""

from __future__ import annotations

import collections
import io
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from mailsuite.queue.spool import QueueEntry, RecipientState, Spool, new_id
from tests.conftest import ServerProcess
from tests.queue.helpers import message, remote_records
from tests.support.smtpsink import SMTPSink

ALICE = "alice@example.test"


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    """Make (not start) ServerProcess objects; stop them all at the end."""
    made: list[ServerProcess] = []

    def make(overrides: dict[str, Any]) -> ServerProcess:
        (tmp_path / f"server{len(made)}").mkdir(parents=True, exist_ok=True)
        server = ServerProcess(tmp_path / f"server{len(made)}", overrides)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


def seed(server: ServerProcess, recipients: list[str], subject: str = "seeded", sender: str = ALICE) -> str:
    """Put a message into the server's spool the way enqueue does (the server is not running)."""
    now = time.time()
    entry = QueueEntry(id=new_id(now), sender=sender, recipients=[RecipientState(r) for r in recipients], arrival=now, next_attempt=now)
    Spool(server.data_root / "queue").add(entry, io.BytesIO(message(subject=subject)), b"Received: from test by mail.example.test\r\n")
    return entry.id


def wait_until(predicate: Any, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def overrides(dns: Any, sink: SMTPSink, **more: Any) -> dict[str, Any]:
    base = {"queue.resolver": dns.address, "queue.outbound_port": sink.port, "queue.retry_schedule": [0.5, 1.0],
            "queue.connect_timeout": 2.0, "queue.command_timeout": 5.0, "queue.delay_warning": 0.0}
    base.update(more)
    return base


def test_spooled_messages_resume_after_start_and_bounce_to_local_inbox(server_factory, dns, sink):
    """A spool left by a previous run is delivered on start; a 550 recipient's DSN reaches the local sender's INBOX."""
    dns.set_records(remote_records(sink))
    sink.state.rcpt_replies["gone@remote.test"] = collections.deque(["550 5.1.1 gone@remote.test: user unknown"])
    server = server_factory(overrides(dns, sink))
    server.add_user(ALICE, "pw-alice-123")
    seed(server, ["bob@remote.test", "gone@remote.test"], "first")
    seed(server, ["carol@remote.test"], "second")
    server.start()
    got = sink.wait_for(2)
    assert sorted(r for m in got for r in m.rcpt_to) == ["bob@remote.test", "carol@remote.test"]
    inbox = server.mail_dir(ALICE) / "new"
    wait_until(lambda: inbox.exists() and any(inbox.iterdir()), what="the DSN in alice's INBOX")
    (dsn_file,) = list(inbox.iterdir())
    dsn = dsn_file.read_bytes()
    assert b"Final-Recipient: rfc822; gone@remote.test" in dsn and b"Status: 5.1.1" in dsn and b"user unknown" in dsn
    assert b"Subject: first" in dsn
    wait_until(lambda: Spool(server.data_root / "queue").ids() == [], what="an empty spool")


def test_sigkill_during_retries_loses_nothing(server_factory, dns, sink):
    """Killed with SIGKILL while a message is deferred: the restarted server delivers it, once."""
    dns.set_records(remote_records(sink))
    sink.state.data_replies.extend(["451 4.3.0 not now"] * 1000)
    server = server_factory(overrides(dns, sink))
    qid = seed(server, ["bob@remote.test"])
    server.start()
    spool = Spool(server.data_root / "queue")
    wait_until(lambda: (spool.load(qid) or QueueEntry(qid, "", [], 0, 0)).attempts >= 2, what="two failed attempts")
    server.stop(signal.SIGKILL)
    assert spool.load(qid) is not None
    sink.state.data_replies.clear()
    server.start()
    (got,) = sink.wait_for(1)
    assert got.rcpt_to == ["bob@remote.test"]
    wait_until(lambda: spool.ids() == [], what="an empty spool")
    time.sleep(0.5)
    assert len(sink.messages) == 1


def test_cli_list_show_flush_delete_against_a_running_server(server_factory, dns, sink):
    """list and show describe deferred mail; flush makes the running server retry now; delete removes without a DSN."""
    dns.set_records(remote_records(sink))
    sink.state.data_replies.extend(["452 4.2.2 mailbox full"] * 2)
    server = server_factory(overrides(dns, sink, **{"queue.retry_schedule": [3600.0]}))
    keep = seed(server, ["bob@remote.test"], "keep")
    drop = seed(server, ["carol@remote.test"], "drop")
    server.start()
    spool = Spool(server.data_root / "queue")
    wait_until(lambda: all((spool.load(i) or QueueEntry(i, "", [], 0, 0)).attempts == 1 for i in (keep, drop)), what="first attempts")

    listing = server.cli("queue", "list").stdout
    assert keep in listing and drop in listing and "deferred" in listing
    assert f"<{ALICE}> -> bob@remote.test" in listing and "452 4.2.2 mailbox full" in listing and "in 59m" in listing

    shown = server.cli("queue", "show", keep).stdout
    assert "attempts:     1" in shown and "<bob@remote.test> pending (452 4.2.2 mailbox full from mx.remote.test)" in shown
    assert "Subject: keep" in shown

    assert server.cli("queue", "delete", drop).returncode == 0
    assert spool.load(drop) is None

    assert sink.messages == []
    assert server.cli("queue", "flush", keep).returncode == 0
    (got,) = sink.wait_for(1)
    assert got.rcpt_to == ["bob@remote.test"]
    wait_until(lambda: spool.ids() == [], what="an empty spool")
    assert server.cli("queue", "list").stdout.strip() == "queue is empty"
    assert not (server.mail_dir(ALICE) / "new").exists() or not any((server.mail_dir(ALICE) / "new").iterdir())

    missing = server.cli("queue", "show", keep, check=False)
    assert missing.returncode == 1 and "no message" in missing.stderr
    assert server.cli("queue", "delete", "../etc", check=False).returncode == 2


def test_cli_without_a_server(server_factory, dns, sink):
    """With no server running, flush marks messages due and delete edits the spool directly."""
    server = server_factory(overrides(dns, sink))
    qid = seed(server, ["bob@remote.test"])
    other = seed(server, ["carol@remote.test"])
    spool = Spool(server.data_root / "queue")
    entry = spool.load(qid)
    entry.next_attempt = time.time() + 3600
    spool.save(entry)
    out = server.cli("queue", "flush").stdout
    assert "2 message(s) marked due" in out
    assert spool.load(qid).next_attempt <= time.time()
    assert server.cli("queue", "delete", other).returncode == 0
    assert spool.ids() == [qid]
    import json

    listed = json.loads(server.cli("queue", "list", "--json").stdout)
    assert [e["id"] for e in listed] == [qid] and listed[0]["recipients"][0]["address"] == "bob@remote.test"
