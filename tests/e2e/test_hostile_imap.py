"""Hostile IMAP clients against a real server over TCP (issue 15, the IMAP connection-level items).

Each test plays one attacker: a client that pipelines commands and never
reads the answers (tiny receive window), sessions announcing huge literals
in SEARCH, APPENDs the server must refuse before ``+``, clients hanging up
while their LOGIN is verified, a disk that fills up under APPEND, and
clients sending one byte at a time.  Memory is the server process's own
VmRSS from /proc.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from typing import Any, Iterator

import pytest
from tests.support.needs import fill_disk, mount_tmpfs, unmount
from tests.support.procmem import PeakRSS

ALICE, BOB, CAROL, DAVE, FRANK = (f"{name}@example.test" for name in ("alice", "bob", "carol", "dave", "frank"))
SEARCHERS = [ALICE, BOB, DAVE]  # 10 sessions, at most PER_USER each
PASSWORD = "hostile-test-pw-1"
USERS = {address: PASSWORD for address in (ALICE, BOB, CAROL, DAVE, FRANK)}
MESSAGE_SIZE = 50 * 1024 * 1024  # the default limits.message_size
PER_USER = 4


class Client:
    """A raw IMAP connection: send bytes, read lines."""

    def __init__(self, port: int, rcvbuf: int | None = None, timeout: float = 10.0, tls: ssl.SSLContext | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the window is small from the start
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname="mail.example.test")
        self.buffer = b""
        self.greeting = self.line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(self.buffer)
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def until_tagged(self, tag: bytes) -> list[bytes]:
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def login(self, user: str = ALICE) -> None:
        self.send(b'L LOGIN %s "%s"\r\n' % (user.encode(), PASSWORD.encode()))
        assert self.until_tagged(b"L")[-1].startswith(b"L OK"), user

    def closed_by_server(self, timeout: float) -> bool:
        """True once the server closed (EOF or reset) within ``timeout`` seconds; what came is kept."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buffer += chunk
        except (socket.timeout, TimeoutError):
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def server(mailsuite_module_server: Any) -> Any:
    return mailsuite_module_server({
        "tls.allow_plaintext_auth": True,
        "limits.imap_connections_per_user": PER_USER,
    }, users=USERS)


def other_client_noop(server: Any) -> None:
    """Another client is served normally meanwhile."""
    other = Client(server.ports["imap"])
    other.send(b"n NOOP\r\n")
    assert other.until_tagged(b"n")[-1] == b"n OK NOOP completed."
    other.close()


@pytest.mark.parametrize(("listener", "logged_in"), [("imap", False), ("imap", True), ("imaps", False)], ids=["pre-login", "logged-in", "tls"])
def test_client_that_never_reads_is_held_back(server: Any, listener: str, logged_in: bool) -> None:
    """Pipelining 20 MB of commands without reading: the server stops reading, its memory stays flat.

    Before: every command was answered into the transport's unbounded write
    buffer; 20 MB of ``a CAPABILITY`` grew the server by about 240 MB.
    """
    flood = Client(server.ports[listener], rcvbuf=4096, tls=server.client_tls() if listener == "imaps" else None)
    command = b"a CAPABILITY\r\n"
    if logged_in:
        flood.login(BOB)
        command = b"a NOOP\r\n"
    chunk = command * (65536 // len(command))
    sent = 0
    with PeakRSS(server.process.pid) as peak:
        # until 20 MB are sent or the server has read nothing for 3 s (a busy server catches up sooner)
        flood.sock.settimeout(0.25)
        progress = time.monotonic()
        while sent < 20_000_000 and time.monotonic() - progress < 3:
            try:
                sent += flood.sock.send(chunk)
                progress = time.monotonic()
            except (socket.timeout, TimeoutError):
                pass
        # the server answers others meanwhile, and still reads nothing more from the flood
        other_client_noop(server)
        flood.sock.settimeout(0.25)
        more, start = 0, time.monotonic()
        while time.monotonic() - start < 1 and more < 1_000_000:
            try:
                more += flood.sock.send(chunk)
            except (socket.timeout, TimeoutError):
                pass
    flood.close()
    print(f"never-reading client ({listener}, {'logged in' if logged_in else 'pre-login'}): sent {sent / 1e6:.1f} MB (+{more} after a pause), RSS +{peak.growth_mb:.1f} MB")
    assert sent < 20_000_000, "the server read everything a client that never reads sent"
    assert more < 1_000_000, "an idle server still reads from a client that does not read its answers"
    assert peak.growth_mb < 30, peak.growth_mb


def test_big_literals_outside_append_are_refused(server: Any) -> None:
    """SEARCH/other literals are capped at 64 KiB: a synchronising one gets NO [TOOBIG] before ``+``,
    a non-synchronising one ``* BYE [TOOBIG]``; ten sessions sending 5 MB literals cost no memory.

    Before: the cap was message_size, so each session buffered its literal
    (10 x 52 MB took 500 MB).
    """
    c = Client(server.ports["imap"])
    c.login(CAROL)
    c.send(b"s SELECT INBOX\r\n")
    c.until_tagged(b"s")
    c.send(b"a SEARCH TEXT {70000}\r\n")
    assert c.line().startswith(b"a NO [TOOBIG]")
    c.send(b"b SEARCH TEXT {60000}\r\n")
    assert c.line() == b"+ OK"  # under the cap: accepted
    c.send(b"x" * 60000 + b"\r\n")
    assert c.until_tagged(b"b")[-1].startswith(b"b OK")
    c.close()

    size = 5_000_000
    sessions = []
    for i in range(10):
        s = Client(server.ports["imap"])
        s.login(SEARCHERS[i % len(SEARCHERS)])
        sessions.append(s)
    for s in sessions:
        s.send(b"s SELECT INBOX\r\n")
        s.until_tagged(b"s")
    time.sleep(0.5)  # measured from here: the logins' argon2 hashes (64 MiB each) are not the literals' cost
    with PeakRSS(server.process.pid) as peak:
        for s in sessions:
            try:
                s.sock.settimeout(5)
                s.send(b"a SEARCH TEXT {%d+}\r\n" % size + b"y" * (size - 1))
            except (BrokenPipeError, ConnectionResetError, socket.timeout):
                pass  # refused and closed while we were still sending: what we want
        time.sleep(0.5)
        answers = []
        for s in sessions:
            s.closed_by_server(3)
            answers.append(s.buffer)
    for s in sessions:
        s.close()
    print(f"10 sessions with {size / 1e6:.0f} MB SEARCH literals: RSS +{peak.growth_mb:.1f} MB")
    assert all(b"* BYE [TOOBIG]" in a for a in answers), answers
    assert peak.growth_mb < 20, peak.growth_mb


def test_append_is_checked_before_the_continuation(server: Any) -> None:
    """APPEND refuses a message over message_size, over the user's quota, or into a missing folder
    before ``+`` (NO [TOOBIG] / NO [OVERQUOTA] / NO [TRYCREATE]), so the client never uploads it.

    Before: the quota and the folder were checked after the upload.
    """
    server.cli("user", "quota", CAROL, "--quota", "100K")
    try:
        c = Client(server.ports["imap"])
        c.login(CAROL)
        c.send(b"a APPEND INBOX {%d}\r\n" % (MESSAGE_SIZE + 1))
        assert c.line().startswith(b"a NO [TOOBIG]")
        c.send(b"b APPEND INBOX (\\Seen) {200000}\r\n")
        assert c.line().startswith(b"b NO [OVERQUOTA]")
        c.send(b"c APPEND Nowhere {100}\r\n")
        assert c.line().startswith(b"c NO [TRYCREATE]")
        message = b"Subject: fits\r\n\r\n" + b"z" * 1000 + b"\r\n"
        c.send(b"d APPEND INBOX {%d}\r\n" % len(message))
        assert c.line() == b"+ OK"
        c.send(message + b"\r\n")
        assert c.until_tagged(b"d")[-1].startswith(b"d OK [APPENDUID")
        c.close()
    finally:
        server.cli("user", "quota", CAROL, "--quota", "0")


def test_hangups_during_login_leave_no_slot_taken(server: Any) -> None:
    """Clients that hang up while their LOGIN is verified hold no per-user connection slot.

    Before: each such hang-up kept one of the user's slots until restart.
    """
    for _ in range(PER_USER + 2):
        c = Client(server.ports["imap"])
        c.send(b'L LOGIN %s "%s"\r\n' % (FRANK.encode(), PASSWORD.encode()))
        c.close()
    time.sleep(1.5)  # the verifications (argon2, in threads) finish after the hang-ups
    sessions = []
    for _ in range(PER_USER):
        s = Client(server.ports["imap"])
        s.login(FRANK)
        sessions.append(s)
    for s in sessions:
        s.send(b"z LOGOUT\r\n")
        s.until_tagged(b"z")
        s.close()


@pytest.fixture
def tiny_disk_server(mailsuite_server: Any) -> Iterator[Any]:
    """A server whose user's Maildir is a 4 MiB tmpfs (the machine's root may mount one)."""
    server = mailsuite_server({"tls.allow_plaintext_auth": True}, users={ALICE: PASSWORD})
    mounts = [server.mail_dir(ALICE), server.data_root / "mail" / ".incoming"]
    mount_tmpfs(mounts[0], "4m")
    try:
        yield server
    finally:
        server.stop()
        for path in mounts:
            if os.path.ismount(path):
                unmount(path)


def test_disk_full_during_append_is_not_a_server_bug(tiny_disk_server: Any) -> None:
    """APPEND on a full disk answers NO [UNAVAILABLE] (temporary, RFC 5530), never NO [SERVERBUG],
    whether the Maildir or the spool of a big incoming message is full; the session stays usable
    and the same APPEND works once space is freed.

    Before: NO [SERVERBUG] with a traceback in the log.
    """
    server = tiny_disk_server
    c = Client(server.ports["imap"])
    c.login(ALICE)
    c.send(b"s SELECT INBOX\r\n")  # creates the Maildir on the tmpfs
    c.until_tagged(b"s")
    filler = server.mail_dir(ALICE) / "filler"
    fill_disk(filler)
    message = b"Subject: big\r\n\r\n" + b"q" * 200_000 + b"\r\n"
    for tag, literal in ((b"a", b"{%d}" % len(message)), (b"b", b"{%d+}" % len(message))):
        c.send(tag + b" APPEND INBOX " + literal + b"\r\n")
        if not literal.endswith(b"+}"):
            assert c.line() == b"+ OK"
        c.send(message + b"\r\n")
        answer = c.until_tagged(tag)[-1]
        assert answer.startswith(tag + b" NO [UNAVAILABLE]"), answer
    os.unlink(filler)
    c.send(b"c APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\n")
    assert c.until_tagged(b"c")[-1].startswith(b"c OK [APPENDUID")

    # a message over 1 MiB is spilled to the spool while it arrives: that disk is full now
    mount_tmpfs(server.data_root / "mail" / ".incoming", "512k")
    big = b"Subject: bigger\r\n\r\n" + b"r" * 1_500_000 + b"\r\n"
    c.send(b"d APPEND INBOX {%d}\r\n" % len(big))
    assert c.line() == b"+ OK"
    c.send(big + b"\r\n")
    assert c.until_tagged(b"d")[-1].startswith(b"d NO [UNAVAILABLE]")
    assert list((server.data_root / "mail" / ".incoming").iterdir()) == []  # the partial spill was removed
    c.send(b"e NOOP\r\n")
    assert c.until_tagged(b"e")[-1] == b"e OK NOOP completed."
    c.close()
    log = server.log()
    assert "Traceback" not in log and "SERVERBUG" not in log


@pytest.fixture(scope="module")
def timeout_server(mailsuite_module_server: Any) -> Any:
    # capture mode: any password logs in at once (no argon2 hash racing the 1 s login deadline)
    return mailsuite_module_server({
        "tls.allow_plaintext_auth": True,
        "capture.enabled": True,
        "limits.imap_login_timeout": 1.0,
        "limits.imap_timeout": 3.0,
    }, users={ALICE: PASSWORD})


def test_pre_login_timeout_is_a_deadline(timeout_server: Any) -> None:
    """A connection that has not logged in within limits.imap_login_timeout is closed with BYE, busy or not."""
    c = Client(timeout_server.ports["imap"])
    start = time.monotonic()
    try:
        while time.monotonic() - start < 8:
            c.send(b"n NOOP\r\n")
            if c.closed_by_server(0.2):
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert time.monotonic() - start < 8, "a chatty client was never logged out"
    assert b"* BYE" in c.buffer
    c.close()


def test_one_byte_at_a_time_does_not_hold_the_connection(timeout_server: Any) -> None:
    """A command line trickled a byte at a time must be complete within limits.imap_timeout of its first byte.

    Before: every byte restarted the inactivity timer, so 1 byte/s held the connection forever.
    """
    c = Client(timeout_server.ports["imap"])
    c.login(ALICE)
    start = time.monotonic()
    closed = False
    try:
        for byte in b"a SEARCH TEXT " + b"x" * 100:
            c.send(bytes([byte]))
            if c.closed_by_server(0.25):
                closed = True
                break
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    assert closed and time.monotonic() - start < 10
    assert b"* BYE" in c.buffer
    c.close()


def test_idle_outlives_the_login_deadline(timeout_server: Any) -> None:
    """IDLE after login is not cut by the pre-login deadline or a command deadline."""
    c = Client(timeout_server.ports["imap"])
    c.login(ALICE)
    c.send(b"s SELECT INBOX\r\n")
    c.until_tagged(b"s")
    c.send(b"i IDLE\r\n")
    assert c.line().startswith(b"+")
    assert not c.closed_by_server(2.0)
    c.send(b"DONE\r\n")
    assert c.until_tagged(b"i")[-1] == b"i OK Idle completed."
    c.close()
