"""Hostile clients against POP3 and SMTP over real TCP (issue 15: items 1 and 7 for POP3/SMTP, item 10's disk full).

- A POP3 client that pipelines commands and never reads the replies (a tiny
  receive window) must not grow the server: before, 30 MB of unread ``CAPA``
  grew its RSS by 2.3 GB.  Measured from /proc/PID/status of the server.
- Slowloris: one byte at a time must not hold a connection past the
  configured deadlines (a command line, the DATA phase, the login on POP3
  and on submission).  The server runs with 2-3 s limits so the tests are fast.
- Disk full while storing a message: ``452 4.3.1`` (RFC 3463: mail system
  full), on a small tmpfs mounted as the data root (outside CI skipped when mount is
  not allowed, e.g. not root; in CI a failure).
"""

from __future__ import annotations

import select
import smtplib
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import ServerProcess
from tests.support.needs import fill_disk, mount_tmpfs, unmount
from tests.support.procmem import rss_kib

USERS = {"alice@example.test": "alice-password-1"}


def unread_by_server(server_port: int, client_port: int) -> int | None:
    """Bytes waiting in the server socket's receive queue (/proc/net/tcp), None if the connection is not listed."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            return int(fields[4].split(":")[1], 16)
    return None


def settle(server_port: int, client_port: int, pid: int) -> int:
    """The server's RSS (KiB) once it has read all it is going to read: its socket's queue is empty or stays put."""
    last, since = unread_by_server(server_port, client_port), time.monotonic()
    give_up = time.monotonic() + 60
    while time.monotonic() < give_up and last and time.monotonic() - since < 1.5:
        time.sleep(0.1)
        now = unread_by_server(server_port, client_port)
        if now != last:
            last, since = now, time.monotonic()
    time.sleep(0.5)  # and has handled the last lines it read
    return rss_kib(pid)


def never_reading_client(port: int) -> socket.socket:
    """A connection with a tiny receive window whose greeting is read, and nothing after."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(10)
    assert sock.recv(200).startswith(b"+OK")
    return sock


def push(sock: socket.socket, chunk: bytes, total: int, stall: float = 1.5) -> int:
    """Send up to ``total`` bytes of repeated ``chunk``; stop when the server takes nothing for ``stall`` seconds."""
    sock.setblocking(False)
    sent = 0
    last_progress = time.monotonic()
    while sent < total and time.monotonic() - last_progress < stall:
        _, writable, _ = select.select([], [sock], [], 0.1)
        if writable:
            try:
                sent += sock.send(chunk)
                last_progress = time.monotonic()
            except BlockingIOError:
                pass
    return sent


# -- item 1: output backpressure -------------------------------------------------------


@pytest.fixture
def server(mailsuite_server: Any) -> Any:
    """A fresh server per flood: memory another test freed would hide this one's growth."""
    return mailsuite_server({"tls.allow_plaintext_auth": True}, users=USERS)


def _login(sock: socket.socket) -> None:
    sock.sendall(b"USER alice@example.test\r\nPASS alice-password-1\r\n")
    reply = b""
    while b"Logged in" not in reply:
        data = sock.recv(200)
        assert data, reply
        reply += data


@pytest.mark.parametrize("logged_in, command", [(False, b"CAPA\r\n"), (True, b"CAPA\r\n")])
def test_pop3_client_that_never_reads_cannot_grow_the_server(server: Any, logged_in: bool, command: bytes) -> None:
    """Pipelined commands with no reader: the server stops reading; RSS grows < 50 MiB for up to 4 MB sent (was +338 MiB for CAPA)."""
    pid = server.process.pid
    sock = never_reading_client(server.ports["pop3"])
    try:
        if logged_in:
            _login(sock)
        before = rss_kib(pid)
        sent = push(sock, command * 10000, 4 * 1024 * 1024)
        after = settle(server.ports["pop3"], sock.getsockname()[1], pid)
        growth_mib = (after - before) / 1024
        print(f"POP3 {command.split()} flood (logged in: {logged_in}): sent {sent / 1e6:.1f} MB unread, server RSS +{growth_mib:.1f} MiB")
        assert growth_mib < 50, f"RSS grew {growth_mib:.0f} MiB for {sent / 1e6:.1f} MB of unread {command!r}"
        assert "Traceback" not in server.log()
        # the flood holds no one else up
        started = time.monotonic()
        other = socket.create_connection(("127.0.0.1", server.ports["pop3"]), timeout=10)
        assert other.recv(200).startswith(b"+OK")
        other.sendall(b"CAPA\r\n")
        assert other.recv(200).startswith(b"+OK")
        other.close()
        assert time.monotonic() - started < 5
    finally:
        sock.close()


# -- item 7: deadlines, not inactivity timers reset by each byte --------------------------

TIMEOUTS = {"tls.allow_plaintext_auth": True, "limits.smtp_timeout": 2.0, "limits.smtp_data_timeout": 3.0, "limits.pop3_timeout": 2.0}
LOGIN_TIMEOUTS = {"tls.allow_plaintext_auth": True, "limits.submission_login_timeout": 3.0, "limits.pop3_login_timeout": 3.0}
#: Give up on a connection after this long: with the limits above every one must be gone well before.
GIVE_UP = 12.0


@pytest.fixture(scope="module")
def slow_server(mailsuite_module_server: Any) -> Any:
    return mailsuite_module_server(TIMEOUTS, users=USERS)


@pytest.fixture(scope="module")
def login_server(mailsuite_module_server: Any) -> Any:
    return mailsuite_module_server(LOGIN_TIMEOUTS, users=USERS)


def trickle(sock: socket.socket, piece: bytes, interval: float = 0.25) -> tuple[float, bytes]:
    """Send ``piece`` every ``interval`` until the server closes; (seconds the connection lived, what it said)."""
    started = time.monotonic()
    said = b""
    sock.setblocking(False)
    while time.monotonic() - started < GIVE_UP:
        try:
            sock.send(piece)
        except OSError:
            break
        end = time.monotonic() + interval
        closed = False
        while (left := end - time.monotonic()) > 0:
            readable, _, _ = select.select([sock], [], [], left)
            if not readable:
                continue
            try:
                data = sock.recv(4096)
            except OSError:
                closed = True
                break
            if not data:
                closed = True
                break
            said += data
        if closed:
            break
    sock.close()
    return time.monotonic() - started, said


def _connect(port: int, *commands: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.recv(200)
    for command in commands:
        sock.sendall(command)
        time.sleep(0.05)
        sock.recv(4096)
    return sock


def test_smtp_command_line_byte_by_byte_is_cut_at_smtp_timeout(slow_server: Any) -> None:
    """Port 25, one byte every 0.25 s, never a whole line: 421 4.4.2 about 2 s after the first byte (was: kept forever)."""
    lived, said = trickle(_connect(slow_server.ports["smtp"]), b"N")
    print(f"SMTP command slowloris lived {lived:.1f}s")
    assert lived < 6 and b"421 4.4.2" in said


def test_smtp_data_byte_by_byte_is_cut_at_smtp_data_timeout(slow_server: Any) -> None:
    """The DATA phase is one deadline (3 s here), however the bytes trickle in (was: kept forever)."""
    sock = _connect(slow_server.ports["smtp"], b"EHLO x\r\n", b"MAIL FROM:<a@remote.test>\r\n", b"RCPT TO:<alice@example.test>\r\n")
    sock.sendall(b"DATA\r\n")
    assert sock.recv(100).startswith(b"354")
    lived, said = trickle(sock, b"x")
    print(f"SMTP DATA slowloris lived {lived:.1f}s")
    assert lived < 7 and b"421 4.4.2" in said


def test_submission_without_auth_is_closed_at_the_login_timeout(login_server: Any) -> None:
    """587: NOOP every 0.25 s but never AUTH: 421 4.7.0 at submission_login_timeout (was: kept forever)."""
    lived, said = trickle(_connect(login_server.ports["submission"], b"EHLO x\r\n"), b"NOOP\r\n")
    print(f"submission without AUTH lived {lived:.1f}s")
    assert lived < 7 and b"421 4.7.0" in said


def test_pop3_without_login_is_closed_at_the_login_timeout(login_server: Any) -> None:
    """POP3: CAPA every 0.25 s but never a login: -ERR at pop3_login_timeout (was: kept forever)."""
    lived, said = trickle(_connect(login_server.ports["pop3"]), b"CAPA\r\n")
    print(f"POP3 without login lived {lived:.1f}s")
    assert lived < 7 and said.endswith(b"-ERR Disconnected: no login in time\r\n")


def test_pop3_command_line_byte_by_byte_is_cut_at_pop3_timeout(slow_server: Any) -> None:
    """Logged in, one byte every 0.25 s: -ERR about 2 s after the line's first byte (this one held before too)."""
    sock = _connect(slow_server.ports["pop3"], b"USER alice@example.test\r\n", b"PASS alice-password-1\r\n")
    lived, said = trickle(sock, b"N")
    assert lived < 6 and said.endswith(b"-ERR Disconnected for inactivity\r\n")


# -- item 10: disk full --------------------------------------------------------------------


@pytest.fixture
def full_disk_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    """A server whose data root is a 24 MB tmpfs, and the path of a file that can fill it."""
    server = ServerProcess(tmp_path, {"tls.allow_plaintext_auth": True})
    mount_tmpfs(server.data_root, "24m", mode="0700")
    try:
        for address, password in USERS.items():
            server.add_user(address, password)
        server.start()
        yield server, server.data_root / "filler"
    finally:
        server.stop()
        unmount(server.data_root)



def send(port: int, body: bytes) -> tuple[int, bytes]:
    """DATA's final reply for one message to alice on port 25."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("someone@remote.test")
        client.rcpt("alice@example.test")
        client.putcmd("data")
        code, text = client.getreply()
        assert code == 354
        client.send(body + b"\r\n.\r\n")
        return client.getreply()


def send_bdat(port: int, body: bytes) -> tuple[int, bytes]:
    """BDAT LAST's reply for one message to alice on port 25 (RFC 3030), in two chunks."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("someone@remote.test")
        client.rcpt("alice@example.test")
        half = len(body) // 2
        client.send(b"BDAT %d\r\n" % half + body[:half])
        client.getreply()  # 250, or already the refusal: the chunk is consumed either way (RFC 3030 2)
        client.send(b"BDAT %d LAST\r\n" % (len(body) - half) + body[half:])
        return client.getreply()


def test_disk_full_answers_452_4_3_1(full_disk_server: tuple[ServerProcess, Path]) -> None:
    """ENOSPC while storing: 452 4.3.1 (mail system full), for a small message and for big ones spilled to disk as they arrive."""
    server, filler = full_disk_server
    small = b"Subject: small\r\n\r\nhello\r\n"
    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 3000  # 3 MB: goes to a spool file while it arrives
    fill_disk(filler)
    results = {}
    for name, how, body in (("small", send, small), ("big", send, big), ("big BDAT", send_bdat, big)):
        try:
            results[name] = how(server.ports["smtp"], body)
        except smtplib.SMTPServerDisconnected as e:
            results[name] = (0, f"disconnected: {e}".encode())
    print(f"disk full: {results}")
    for name, (code, text) in results.items():
        assert (code, text[:5]) == (452, b"4.3.1"), f"{name}: {code} {text!r}"
    # space again: mail flows
    filler.unlink()
    assert send(server.ports["smtp"], small)[0] == 250
    assert send(server.ports["smtp"], big)[0] == 250
    assert send_bdat(server.ports["smtp"], big)[0] == 250
    assert len(list((server.mail_dir("alice@example.test") / "new").iterdir())) == 3
