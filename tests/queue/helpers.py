"""Queue test helpers and fixtures: a loopback DNS server, SMTP sinks, an in-process queue on the real reactor."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from twisted.internet import task

from mailsuite import config as config_module
from mailsuite.interfaces import Envelope
from mailsuite.resolver import CachingResolver
from mailsuite.queue.runner import RelayQueue
from mailsuite.queue.service import tls_options_factory
from mailsuite.queue.spool import Spool
from mailsuite.threads import LeanThreadPool
from mailsuite.service import ServerContext
from mailsuite.store import MaildirStore, Runner
from mailsuite.store.incoming import IncomingMessage
from tests.conftest import render_config
from tests.support.dnsserver import DNSServer, dns  # noqa: F401 - the dns fixture
from tests.support.smtpsink import SMTPSink

SENDER = "alice@example.test"


def message(subject: str = "hello", extra_headers: str = "", body: str = "Hi there.\r\n") -> bytes:
    """A small RFC 5322 message with CRLF line ends."""
    return (f"From: <{SENDER}>\r\nTo: <bob@remote.test>\r\nSubject: {subject}\r\nMessage-ID: <{subject.replace(' ', '.')}@example.test>\r\n"
            f"{extra_headers}\r\n{body}").encode()


@pytest.fixture
def sink() -> Iterator[SMTPSink]:
    """A fresh SMTP sink for the test."""
    s = SMTPSink().start()
    yield s
    s.stop()


class QueueHarness:
    """An in-process RelayQueue (real reactor, real spool, real Maildir store, real DNS)."""

    def __init__(self, tmp_path: Path, dns: DNSServer, overrides: dict[str, Any]) -> None:
        from twisted.internet import reactor

        self.reactor = reactor
        base = {"queue.resolver": dns.address, "queue.retry_schedule": [0.5, 1.0], "queue.connect_timeout": 2.0, "queue.command_timeout": 5.0,
                "queue.delay_warning": 0.0}
        base.update(overrides)
        self.config = config_module.parse(render_config(tmp_path / "data", base))
        self.context = ServerContext(config=self.config, reactor=reactor)
        self.store_pool = LeanThreadPool(2, name="test-queue-store")
        self.store_pool.start()
        self.context.store = MaildirStore(self.config.data_path / "mail", runner=Runner(reactor, self.store_pool), clock=reactor)
        self.pool = LeanThreadPool(4, name="test-queue")
        self.resolver = CachingResolver(reactor, dns.address)
        self.context.resolver = self.resolver
        self.spool = Spool(self.config.data_path / "queue")
        self.queue = RelayQueue(self.context, self.spool, self.resolver, self.pool, tls_options_factory(self.context))
        self.context.queue = self.queue
        self.finished: list[str] = []
        self.queue.attempt_listeners.append(self.finished.append)

    def start(self) -> "QueueHarness":
        self.queue.startService()
        return self

    def stop(self) -> None:
        if self.queue.running:
            self.queue.stopService()
        self.context.store.close()
        if self.store_pool.started:
            self.store_pool.stop()

    async def enqueue(self, recipients: list[str], data: bytes | None = None, sender: str = SENDER, **kw: Any) -> str:
        incoming = IncomingMessage.from_bytes(data if data is not None else message())
        return await self.queue.enqueue(Envelope(sender=sender, recipients=tuple(recipients), **kw), incoming)

    async def settle(self, timeout: float = 15.0) -> None:
        """Wait until the queue holds nothing (every message delivered or bounced)."""
        await self.wait(lambda: not self.queue._entries and not self.queue._active, timeout)

    async def wait(self, predicate: Any, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; queue: {[e.to_json() for e in self.queue._entries.values()]}")
            await task.deferLater(self.reactor, 0.05, lambda: None)

    def inbox(self, address: str) -> list[bytes]:
        """Messages in a local user's INBOX (read straight from the Maildir)."""
        local, _, domain = address.rpartition("@")
        root = self.config.data_path / "mail" / domain / local
        out = []
        for sub in ("new", "cur"):
            d = root / sub
            if d.exists():
                out += [p.read_bytes() for p in sorted(d.iterdir())]
        return out


@pytest.fixture
def make_queue(tmp_path: Path, dns: DNSServer) -> Iterator[Any]:
    """Factory: ``h = make_queue(**{"queue.max_age": 2})`` builds and starts an in-process queue."""
    made: list[QueueHarness] = []

    def make(overrides: dict[str, Any] | None = None, start: bool = True, **kw: Any) -> QueueHarness:
        merged = dict(overrides or {})
        merged.update(kw)
        h = QueueHarness(tmp_path / f"q{len(made)}", dns, merged)
        made.append(h)
        return h.start() if start else h

    yield make
    for h in made:
        h.stop()


def remote_records(sink: SMTPSink, domain: str = "remote.test") -> dict[str, Any]:
    """DNS records routing ``domain`` to the sink's loopback address."""
    return {domain: {"MX": [[10, f"mx.{domain}"]]}, f"mx.{domain}": {"A": [sink.host]}}
