"""Slot exhaustion: idle connections that never log in cannot lock real clients out.

At ``limits.connections_total`` the oldest connection that has not logged in
is dropped with its protocol's closing line to make room (as Dovecot does);
logged-in sessions and port-25 sessions inside a mail transaction are
never dropped; the per-IP cap stays a hard refusal.  Real TCP on loopback,
idle clients bound to several 127.0.0.x source addresses.
"""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
from typing import Any

USERS = {"alice@example.test": "alice-password-1", "bob@example.test": "bob-password-22"}
GREETINGS = {"smtp": b"220 ", "pop3": b"+OK", "imap": b"* OK"}
#: What a connection dropped to make room (or refused) hears first.
CLOSINGS = {"smtp": b"421 4.7.0", "pop3": b"-ERR", "imap": b"* BYE"}
TOTAL = 20
PER_IP = 6


def _idle(server: Any, protocol: str, source: str) -> socket.socket:
    """A greeted connection from ``source`` that then says nothing."""
    sock = socket.create_connection(("127.0.0.1", server.ports[protocol]), timeout=10, source_address=(source, 0))
    greeting = sock.recv(4096)
    assert greeting.startswith(GREETINGS[protocol]), (protocol, source, greeting)
    return sock


def _closed_with(sock: socket.socket, protocol: str) -> bool:
    """True if the server sent ``protocol``'s closing line and then hung up."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.startswith(CLOSINGS[protocol])


def test_full_cap_of_idle_connections_makes_room(mailsuite_server: Any) -> None:
    """At the total cap a newcomer is greeted and logs in; the oldest idle pre-login connections go, logged-in ones stay."""
    server = mailsuite_server({"limits.connections_total": TOTAL, "limits.connections_per_ip": PER_IP, "tls.allow_plaintext_auth": True},
                              users=USERS)
    # The oldest connections: sessions doing real work (four from 127.0.0.1).
    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=10)
    imap.login("alice@example.test", USERS["alice@example.test"])
    pop = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=10)
    pop.user("bob@example.test")
    pop.pass_(USERS["bob@example.test"])
    submission = smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10)
    submission.login("alice@example.test", USERS["alice@example.test"])
    mta = smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10)  # port 25: no login, but inside a mail transaction
    mta.ehlo("mx.remote.example")
    assert mta.mail("someone@remote.example")[0] == 250
    assert mta.rcpt("alice@example.test")[0] == 250
    # The other 16 slots: idle greeted connections that never log in, from 4 addresses, 3 protocols.
    protocols = ("imap", "pop3", "smtp")
    idle = [(protocols[n % 3], _idle(server, protocols[n % 3], f"127.0.0.{50 + n // 4}")) for n in range(TOTAL - 4)]
    held: list[Any] = []
    try:
        # Full.  A newcomer (from an address with room under the per-IP cap) is served and logs in...
        newcomer = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=10)
        newcomer.login("bob@example.test", USERS["bob@example.test"])
        assert newcomer.noop()[0] == "OK"
        # ...and it was the oldest idle connection that made room.
        protocol, oldest = idle.pop(0)
        assert _closed_with(oldest, protocol)
        oldest.close()
        # A flood of further idle connections from new addresses only ever replaces idle ones.
        flood = [(protocols[n % 3], _idle(server, protocols[n % 3], f"127.0.0.{60 + n // 5}")) for n in range(3 * TOTAL)]
        for protocol, sock in idle + flood[:-(TOTAL - 5)]:
            assert _closed_with(sock, protocol)
            sock.close()
        idle = flood[-(TOTAL - 5):]
        # The working sessions never noticed.
        assert imap.noop()[0] == "OK"
        assert imap.select("INBOX")[0] == "OK"
        assert pop.stat()[0] == 0
        assert submission.noop()[0] == 250
        assert newcomer.noop()[0] == "OK"
        code, _ = mta.data(b"Subject: in a transaction\r\n\r\nspared while the slots churned\r\n")
        assert code == 250
        # The per-IP cap is still a hard refusal, even with idle connections to drop elsewhere.
        crowded = f"127.0.0.{60 + (3 * TOTAL - 1) // 5}"
        extra = [_idle(server, "smtp", crowded) for _ in range(PER_IP - 5)]
        held += extra
        refused = socket.create_connection(("127.0.0.1", server.ports["imap"]), timeout=10, source_address=(crowded, 0))
        held.append(refused)
        assert _closed_with(refused, "imap")
        assert "to make room" in server.log()
        newcomer.logout()
    finally:
        for sock in held:
            try:
                sock.close()
            except Exception:
                pass
        for _, sock in idle:
            sock.close()
        for hang_up in (imap.logout, pop.quit, submission.close, mta.close):
            try:
                hang_up()
            except Exception:
                pass
