"""Load: a thousand concurrent connections, slow clients, and the connection caps.

The client side is one thread multiplexing raw sockets with ``selectors``, so
the test measures the server, not the test's own threads.
"""

from __future__ import annotations

import selectors
import socket
import time
from typing import Any

import pytest
from tests.support.procmem import rss_kib

GREETINGS = {"smtp": b"220 ", "pop3": b"+OK", "imap": b"* OK"}
NOOPS = {"smtp": (b"NOOP\r\n", b"250 "), "pop3": (b"NOOP\r\n", b"-ERR"), "imap": (b"n1 NOOP\r\n", b"n1 OK")}


def open_many(server: Any, count: int, protocols: tuple[str, ...], timeout: float = 60.0) -> tuple[list[socket.socket], dict[str, int]]:
    """Open ``count`` connections spread over the protocols; wait until every one has its greeting."""
    selector = selectors.DefaultSelector()
    sockets: list[socket.socket] = []
    waiting: dict[socket.socket, tuple[str, bytes]] = {}
    greeted: dict[str, int] = {p: 0 for p in protocols}
    for n in range(count):
        protocol = protocols[n % len(protocols)]
        sock = socket.create_connection(("127.0.0.1", server.ports[protocol]), timeout=10)
        sock.setblocking(False)
        sockets.append(sock)
        waiting[sock] = (protocol, b"")
        selector.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1.0):
            sock = key.fileobj  # type: ignore[assignment]
            protocol, seen = waiting[sock]
            data = sock.recv(4096)
            seen += data
            if b"\r\n" in seen or not data:
                selector.unregister(sock)
                del waiting[sock]
                if seen.startswith(GREETINGS[protocol]):
                    greeted[protocol] += 1
            else:
                waiting[sock] = (protocol, seen)
    selector.close()
    return sockets, greeted


def round_trip(server: Any, protocol: str) -> tuple[float, float]:
    """A fresh client: seconds to its greeting, then to the answer of a NOOP."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.ports[protocol]), timeout=30) as sock:
        greeting = sock.recv(4096)
        greeted = time.monotonic()
        assert greeting.startswith(GREETINGS[protocol]), greeting
        command, answer = NOOPS[protocol]
        sock.sendall(command)
        reply = b""
        while b"\r\n" not in reply:
            reply += sock.recv(4096)
        assert reply.startswith(answer), reply
        return greeted - started, time.monotonic() - greeted


@pytest.fixture(scope="module")
def server(mailsuite_module_server: Any) -> Any:
    return mailsuite_module_server({"limits.connections_total": 1500, "limits.connections_per_ip": 1200})


def test_thousand_concurrent_connections(server: Any) -> None:
    """1,000 connections over SMTP, POP3 and IMAP are all greeted; a newcomer is still served quickly; memory stays bounded."""
    before = rss_kib(server.process.pid)
    sockets, greeted = open_many(server, 1000, ("smtp", "pop3", "imap"))
    try:
        assert sum(greeted.values()) == 1000, greeted
        during = rss_kib(server.process.pid)
        greeting, noop = round_trip(server, "imap")
        print(f"1000 connections: RSS {before} -> {during} KiB ({(during - before) / 1000:.1f} KiB each); newcomer greeting {greeting * 1000:.0f} ms, NOOP {noop * 1000:.0f} ms")
        # Generous bounds: a server that stalled or leaked per connection fails them by far.
        assert during - before < 200 * 1024, "more than 200 KiB per idle connection"
        assert greeting < 5 and noop < 5
    finally:
        for sock in sockets:
            sock.close()


def test_slow_clients_do_not_delay_others(server: Any) -> None:
    """Clients dribbling one byte per second (slowloris) leave everyone else's answers prompt."""
    slow = []
    for n in range(30):
        protocol = ("smtp", "pop3", "imap")[n % 3]
        sock = socket.create_connection(("127.0.0.1", server.ports[protocol]), timeout=10)
        sock.recv(4096)
        slow.append(sock)
    try:
        worst = 0.0
        for _second in range(4):
            for sock in slow:
                sock.send(b"N")  # one byte per client per second, never a full line
            for protocol in ("smtp", "pop3", "imap"):
                greeting, noop = round_trip(server, protocol)
                worst = max(worst, greeting, noop)
            time.sleep(1)
        print(f"with 30 slow clients: worst greeting/NOOP {worst * 1000:.0f} ms")
        assert worst < 3
    finally:
        for sock in slow:
            sock.close()


def _connect(server: Any, protocol: str, source: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.ports[protocol]), timeout=10, source_address=(source, 0))
    return sock


def _refused(server: Any, protocol: str, source: str) -> bool:
    refusal = {"smtp": b"421 4.7.0", "pop3": b"-ERR", "imap": b"* BYE"}[protocol]
    with _connect(server, protocol, source) as sock:
        first = sock.recv(4096)
        return first.startswith(refusal) and sock.recv(4096) == b""


def test_connection_caps_hold(mailsuite_server: Any) -> None:
    """Over the per-IP cap a connection gets its protocol's refusal; at the total cap the oldest idle one is dropped instead."""
    server = mailsuite_server({"limits.connections_per_ip": 4, "limits.connections_total": 6})
    held = []
    try:
        for protocol in ("smtp", "pop3", "imap", "smtp"):
            sock = _connect(server, protocol, "127.0.0.1")
            assert sock.recv(4096).startswith(GREETINGS[protocol])
            held.append(sock)
        assert all(_refused(server, protocol, "127.0.0.1") for protocol in ("smtp", "pop3", "imap"))  # per-IP cap
        for protocol in ("pop3", "imap"):
            sock = _connect(server, protocol, "127.0.0.2")  # another client IP still gets in...
            assert sock.recv(4096).startswith(GREETINGS[protocol])
            held.append(sock)
        # ...and at the total cap the oldest connection not logged in makes room (more in test_hostile_slots.py)
        sock = _connect(server, "smtp", "127.0.0.3")
        held.append(sock)
        assert sock.recv(4096).startswith(GREETINGS["smtp"])
        oldest = held.pop(0)
        assert oldest.recv(4096).startswith(b"421 4.7.0") and oldest.recv(4096) == b""
        oldest.close()
    finally:
        for sock in held:
            sock.close()
