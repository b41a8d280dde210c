"""Shared fixtures for the IMAP tests against a real server process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, task

from mailsuite.interfaces import Delivery


class StoreWriter:
    """Delivers into a running server's Maildir from this (another) process, through the store API."""

    def __init__(self, root: Path) -> None:
        from mailsuite.store import InlineRunner, MaildirStore

        self.store = MaildirStore(root, runner=InlineRunner(), clock=task.Clock())

    def deliver(self, address: str, data: bytes, folder: str = "INBOX") -> None:
        message = self.store.new_incoming()
        message.write(data)
        message.finish()
        out: list[Any] = []
        self.store.deliver(message, [Delivery(address, folder)]).addBoth(out.append)
        message.discard()
        assert out and isinstance(out[0], list), out
        assert all(r.error is None for r in out[0]), out[0]


def sample(n: int, subject: str = "message") -> bytes:
    """A small well-formed message."""
    return (
        f"From: Sender <sender@example.test>\r\nTo: alice@example.test\r\nSubject: {subject} {n}\r\n"
        f"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <{n}.{subject}@example.test>\r\n\r\nbody {n}\r\n"
    ).encode()


def start_server(base: Path, overrides: dict[str, Any]) -> Any:
    """A real ``twistd mailsuite`` process (tests/conftest.py's ServerProcess) under ``base``."""
    from tests.conftest import ServerProcess

    try:
        import mailsuite.tls  # noqa: F401
    except ImportError:  # until the TLS part lands the implicit-TLS listeners cannot start
        overrides = {**overrides, "imaps.enabled": False, "pop3s.enabled": False, "submissions.enabled": False}
    base.mkdir(parents=True, exist_ok=True)  # ServerProcess writes its config before creating the folder
    server = ServerProcess(base, overrides)
    server.start()
    server.writer = StoreWriter(server.data_root / "mail")
    return server


@pytest.fixture(scope="module")
def imap_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server in capture mode (any password logs in) that allows plaintext LOGIN for these tests."""
    server = start_server(tmp_path_factory.mktemp("imap") / "server", {"capture.enabled": True, "tls.allow_plaintext_auth": True})
    yield server
    server.stop()


__all__ = ["sample", "StoreWriter", "defer"]


@pytest.fixture(autouse=True)
def _end_harness_connections() -> Any:
    """After each test, every StringTransport connection of tests/imap/harness.py ends as a real one would."""
    from tests.imap import harness

    yield
    while harness.OPEN:
        conn = harness.OPEN.pop()
        conn.transport.hang_up()
        conn.read()
