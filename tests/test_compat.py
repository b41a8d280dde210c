"""Each private internal in mailsuite.compat: present on the versions it was measured on, with a working fallback.

A failure of a ``*_is_used`` test after an upgrade means a shortcut silently
turned itself off (the server still works, more slowly or, for SIGTERM, with
exit status -15): re-measure and adapt mailsuite/compat.py.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sqlite3
from pathlib import Path
from typing import Any

import dkim
import dkim.canonicalization as canonicalization
import pytest
import pytest_twisted
import twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.testing import StringTransport
from twisted.protocols.policies import WrappingFactory

from mailsuite import compat
from mailsuite.interfaces import MessageInfo
from mailsuite.mailauth import speedups


def _major(version: str) -> int:
    return int(version.split(".")[0])


# -- Twisted -------------------------------------------------------------------------------
class _Server(protocol.Protocol):
    def connectionMade(self) -> None:
        self.factory.connected.callback(self)


@pytest_twisted.ensureDeferred
async def test_idle_tcp_socket_is_used_on_plain_tcp_and_refused_elsewhere() -> None:
    """Measured on Twisted 24.3-26.10: a wrapped plain connection with nothing queued gives its socket; queued data or a test transport do not."""
    assert 24 <= _major(twisted.__version__) <= 26, f"re-measure compat.idle_tcp_socket on Twisted {twisted.__version__}"
    factory = protocol.ServerFactory.forProtocol(_Server)
    factory.connected = defer.Deferred()
    port = reactor.listenTCP(0, WrappingFactory(factory), interface="127.0.0.1")
    client = socket.create_connection(("127.0.0.1", port.getHost().port))
    try:
        server = await factory.connected
        sock = compat.idle_tcp_socket(server.transport)
        assert sock is not None and sock.fileno() >= 0
        server.transport.write(b"queued")  # now something waits in Twisted's buffer: the shortcut must step aside
        assert compat.idle_tcp_socket(server.transport) is None
        assert compat.idle_tcp_socket(StringTransport()) is None
    finally:
        client.close()
        server.transport.loseConnection()
        await port.stopListening()


def test_idle_tcp_socket_without_the_buffers_takes_the_ordinary_path() -> None:
    """A connection object lacking Twisted's private buffer attributes never gets the shortcut."""
    from twisted.internet import tcp

    class Bare(tcp.Connection):
        def __init__(self) -> None:  # no buffers, no TLS flag: what a reorganised Twisted might look like
            self.connected = True
            self.disconnecting = False

    assert compat.idle_tcp_socket(Bare()) is None


def test_forget_exit_signal_on_the_real_reactor() -> None:
    """Measured on Twisted 24.3-26.10: the reactor keeps the stopping signal in _exitSignal; without it nothing happens."""
    assert hasattr(reactor, "_exitSignal"), f"re-measure compat.forget_exit_signal on Twisted {twisted.__version__}"
    saved = reactor._exitSignal
    try:
        reactor._exitSignal = signal.SIGTERM
        compat.forget_exit_signal(reactor, signal.SIGTERM)
        assert reactor._exitSignal is None
        reactor._exitSignal = signal.SIGINT
        compat.forget_exit_signal(reactor, signal.SIGTERM)
        assert reactor._exitSignal == signal.SIGINT  # only the documented stop signal is forgotten
    finally:
        reactor._exitSignal = saved
    compat.forget_exit_signal(object(), signal.SIGTERM)  # fallback: no attribute, no error


def test_request_gone() -> None:
    """Measured on Twisted 26.10: twisted.web requests carry _disconnected; without it only .finished counts."""
    from twisted.web.test.requesthelper import DummyRequest
    from twisted.web.server import Request

    assert "_disconnected" in vars(Request) or hasattr(Request, "_disconnected"), "re-measure compat.request_gone"
    request: Any = DummyRequest([b""])
    assert not compat.request_gone(request)
    request._disconnected = True
    assert compat.request_gone(request)
    plain: Any = type("Plain", (), {"finished": True})()
    assert compat.request_gone(plain)
    plain.finished = False
    assert not compat.request_gone(plain)


# -- SQLite ------------------------------------------------------------------------------
def test_wal_header_moves_with_every_commit(tmp_path: Path) -> None:
    """Measured on SQLite 3.40: the -shm file starts with a header each commit rewrites; another journal mode gives None."""
    assert tuple(int(x) for x in sqlite3.sqlite_version.split(".")[:2]) >= (3, 7), "WAL needs SQLite 3.7+"
    path = str(tmp_path / "db.sqlite3")
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE t (x)")
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("PRAGMA data_version").fetchone()
    header = compat.WalHeader.open(reader, path)
    assert header is not None, f"re-measure compat.WalHeader on SQLite {sqlite3.sqlite_version}"
    before = header.read()
    assert header.read() == before
    writer.execute("INSERT INTO t VALUES (1)")
    assert header.read() != before
    header.close()
    other = str(tmp_path / "rollback.sqlite3")
    plain = sqlite3.connect(other, isolation_level=None)
    plain.execute("CREATE TABLE t (x)")
    assert compat.WalHeader.open(plain, other) is None  # fallback: PRAGMA data_version
    for db in (writer, reader, plain):
        db.close()


# -- CPython -----------------------------------------------------------------------------
def test_paused_gc_nests_and_restores_the_collector() -> None:
    """Measured on CPython 3.11: bulk work pauses the cyclic collector; the last pause out turns it back on, never one that was off."""
    assert hasattr(gc, "freeze")
    assert gc.isenabled()
    with compat.paused_gc():
        with compat.paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()
        with compat.paused_gc(False):
            assert not gc.isenabled()
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0  # the freeze+unfreeze leaves nothing permanently frozen
    gc.disable()
    try:
        with compat.paused_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_frozen_instance_equals_the_constructor() -> None:
    """The fast constructor gives objects equal (and hashing equal) to MessageInfo(...); a slotted class keeps its own."""
    import dataclasses
    import datetime

    fields = dict(uid=7, flags=frozenset({"\\Seen"}), size=120, internal_date=datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc),
                  modseq=3, key="1.M2.host")
    build = compat.frozen_instance(MessageInfo)
    assert build is not MessageInfo, "MessageInfo has a __dict__ on CPython 3.11: the fast path should be taken"
    fast, slow = build(**fields), MessageInfo(**fields)
    assert fast == slow and hash(fast) == hash(slow) and type(fast) is MessageInfo
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.uid = 8  # type: ignore[misc]

    @dataclasses.dataclass(frozen=True, slots=True)
    class Slotted:
        a: int

    assert compat.frozen_instance(Slotted) is Slotted


# -- dkimpy ------------------------------------------------------------------------------
def test_dkim_steps_are_installed_on_the_measured_dkimpy() -> None:
    """Measured on dkimpy 1.1.8: the three steps are replaced; a dkimpy lacking one is left alone."""
    assert speedups.INSTALLED, "re-measure mailsuite.mailauth.speedups on this dkimpy"
    assert dkim.RSASSA_PKCS1_v1_5_sign is speedups.rsa_sign
    assert dkim.rfc822_parse is speedups.rfc822_parse
    assert canonicalization.Relaxed.canonicalize_body is speedups.relaxed_body


def test_dkim_steps_left_alone_when_one_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """If dkimpy reorganised (a step missing), nothing is replaced."""
    monkeypatch.delattr(dkim, "rfc822_parse")
    before = dkim.RSASSA_PKCS1_v1_5_sign
    assert compat.install_dkim_steps(lambda *a: b"", lambda b: b, lambda m: ([], m)) is False
    assert dkim.RSASSA_PKCS1_v1_5_sign is before


def test_twistd_default_observer_uses_twistds_own_logger(tmp_path: Path) -> None:
    """Measured on Twisted 24.3-26.10: twistd's runner builds the observer for -l FILE; without it, standard output."""
    from twisted.scripts import twistd

    assert hasattr(getattr(twistd, "_SomeApplicationRunner", None), "loggerFactory"), "re-measure compat.twistd_default_observer"
    logfile = tmp_path / "twistd.log"
    observer = compat.twistd_default_observer({"logfile": str(logfile), "nodaemon": True, "syslog": False, "logger": None})
    observer({"log_format": "hello {who}", "who": "file", "log_time": 0.0, "log_level": None, "log_namespace": "t", "log_system": "-"})
    assert "hello file" in logfile.read_text()


def test_renew_forked_reactor_on_the_epoll_reactor() -> None:
    """Measured on Twisted 26.10: a fresh epoll reactor gets a new poller and waker; another reactor kind is refused."""
    from twisted.internet.epollreactor import EPollReactor
    from twisted.internet.selectreactor import SelectReactor

    fresh = EPollReactor()
    old_poller, old_waker = fresh._poller, fresh.waker
    try:
        assert compat.renew_forked_reactor(fresh), f"re-measure compat.renew_forked_reactor on Twisted {twisted.__version__}"
        assert fresh._poller is not old_poller and fresh.waker is not old_waker and fresh.waker is not None
    finally:
        fresh._poller.close()
        for fd in (fresh.waker.i, fresh.waker.o):
            os.close(fd)
    other = SelectReactor()
    try:
        assert compat.renew_forked_reactor(other) is False  # fallback: the fixture starts a new interpreter
    finally:
        for fd in (other.waker.i, other.waker.o):
            os.close(fd)


# -- Twisted: coroutines started eagerly -------------------------------------------------
def test_start_eagerly_is_used() -> None:
    """Measured on Twisted 24.3-26.10: a coroutine waiting for an unfired Deferred yields it again when resumed."""
    assert 24 <= _major(twisted.__version__) <= 26, f"re-measure compat.start_eagerly on Twisted {twisted.__version__}"
    assert compat.EAGER_COROUTINES


def test_start_eagerly_finishes_a_coroutine_that_never_waits() -> None:
    ran = []

    async def quick() -> None:
        ran.append(1)

    assert compat.start_eagerly(quick()) is None
    assert ran == [1]


def test_start_eagerly_raises_what_the_first_step_raises() -> None:
    async def broken() -> None:
        raise ValueError("first step")

    with pytest.raises(ValueError, match="first step"):
        compat.start_eagerly(broken())


@pytest.mark.parametrize("eager", [True, False])
def test_a_waiting_coroutine_goes_on_under_ensure_deferred(monkeypatch: pytest.MonkeyPatch, eager: bool) -> None:
    """Whether the first step ran here or (the fallback) not, ensureDeferred drives it to the end with each result."""
    monkeypatch.setattr(compat, "EAGER_COROUTINES", eager)
    first: defer.Deferred[int] = defer.Deferred()
    second: defer.Deferred[int] = defer.Deferred()
    steps = []

    async def waits() -> int:
        steps.append("start")
        a = await first
        steps.append(a)
        b = await second
        return a + b

    rest = compat.start_eagerly(waits())
    assert rest is not None
    assert steps == (["start"] if eager else [])
    d = defer.ensureDeferred(rest)
    assert steps == ["start"]
    first.callback(2)
    assert steps == ["start", 2] and not d.called
    second.callback(3)
    assert d.result == 5
