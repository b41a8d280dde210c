"""write_now over real loopback TCP: immediate sends keep every byte, in order, with Twisted's own buffering."""

from __future__ import annotations

import socket

import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.threads import deferToThread
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from mailsuite.netwrite import write_now


class _Server(protocol.Protocol):
    def connectionMade(self) -> None:
        self.factory.connected.callback(self)


def _listen(wrap: bool) -> tuple[object, defer.Deferred]:
    factory = protocol.ServerFactory.forProtocol(_Server)
    factory.connected = defer.Deferred()
    port = reactor.listenTCP(0, WrappingFactory(factory) if wrap else factory, interface="127.0.0.1")
    return port, factory.connected


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


@pytest_twisted.ensureDeferred
async def test_replies_leave_at_once_and_what_the_socket_cannot_take_keeps_its_order() -> None:
    """A small reply is on the wire before the reactor runs again; a large one and later writes follow in order."""
    for wrap in (False, True):  # bare TCP, and through a pass-through ProtocolWrapper (the connection counter)
        port, connected = _listen(wrap)
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        client.settimeout(10)
        try:
            server = await connected
            transport = server.transport
            assert isinstance(transport, ProtocolWrapper) == wrap
            write_now(transport, b"250 ok\r\n")
            assert client.recv(100) == b"250 ok\r\n"  # no reactor turn in between: it was sent by write_now itself
            big = bytes(range(256)) * 40000  # 10 MB, far more than the socket buffers hold
            write_now(transport, big)
            write_now(transport, b"after-big")  # must queue behind the unsent rest of big
            transport.write(b"+plain")
            data = await deferToThread(_read_exactly, client, len(big) + len(b"after-big+plain"))
            assert data == big + b"after-big+plain"
        finally:
            client.close()
            await port.stopListening()
