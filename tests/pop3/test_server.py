"""POP3 against the real server over loopback TCP with poplib and raw lines.

One server for the module (default policy: no plaintext logins, the real
store, users made with the real CLI); each test uses a fresh user so the
tests do not depend on each other.  The throttle is loosened here so the
wrong-password tests do not lock 127.0.0.1 out; throttling has its own
server in test_policy.py.
"""

from __future__ import annotations

import poplib
import socket
import struct
import time
from typing import Any

import pytest

from .support import AccountPool, LineClient, deliver, drop_into_new, set_flags
from tests.support.procmem import PeakRSS

PASSWORD = "pop3 test password"
MSG = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: hello\r\n\r\nHello there.\r\n"
DOTS = (
    b"From: dots@example.test\r\nSubject: dots\r\n\r\n"
    b".\r\n"
    b"..\r\n"
    b".leading dot\r\n"
    b"...three\r\n"
    b"middle . dot\r\n"
    b". \r\n"
    b"last line\r\n"
)


@pytest.fixture(scope="module")
def server(mailsuite_module_server: Any) -> Any:
    return mailsuite_module_server({"auth.free_failures": 1000, "auth.max_failures": 1000})


@pytest.fixture(scope="module")
def accounts(server: Any) -> AccountPool:
    return AccountPool(server, 14, PASSWORD)


@pytest.fixture
def account(accounts: AccountPool) -> str:
    """A user of its own for each test, so tests never see each other's mail."""
    return accounts.take()


def connect_stls(server: Any) -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=10)
    client.stls(context=server.client_tls())
    return client


def login(server: Any, address: str, *, implicit: bool = False) -> poplib.POP3:
    if implicit:
        client: poplib.POP3 = poplib.POP3_SSL("127.0.0.1", server.ports["pop3s"], context=server.client_tls(), timeout=10)
    else:
        client = connect_stls(server)
    client.user(address)
    client.pass_(PASSWORD)
    return client


def login_retrying(server: Any, address: str, seconds: float = 10.0) -> poplib.POP3:
    """Log in, waiting while a just-dropped session's lock is being released."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return login(server, address)
        except poplib.error_proto as e:
            if b"[IN-USE]" not in e.args[0] or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def uidl_map(client: poplib.POP3) -> dict[int, bytes]:
    _, lines, _ = client.uidl()
    return {int(n): uid for n, uid in (line.split() for line in lines)}


def kill(client: poplib.POP3) -> None:
    """Drop the connection abruptly (RST, no QUIT), like a crashed client."""
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.file.close()  # poplib's reader holds the descriptor open too
    client.sock.close()


# -- clients and TLS ----------------------------------------------------------


def test_poplib_stls_retrieve_and_delete(server: Any, account: str) -> None:
    """poplib on port 110: STLS, USER/PASS, STAT, LIST, RETR, DELE, QUIT removes the message."""
    deliver(server, account, MSG, DOTS)
    client = login(server, account)
    assert client.stat() == (2, len(MSG) + len(DOTS))
    _, listing, _ = client.list()
    assert listing == [b"1 %d" % len(MSG), b"2 %d" % len(DOTS)]
    _, lines, octets = client.retr(1)
    assert b"\r\n".join(lines) + b"\r\n" == MSG
    client.dele(1)
    assert client.quit().startswith(b"+OK")
    client = login(server, account)
    assert client.stat() == (1, len(DOTS))
    client.quit()


def test_poplib_implicit_tls(server: Any, account: str) -> None:
    """POP3_SSL on port 995: logins allowed at once, STLS not offered."""
    deliver(server, account, MSG)
    client = poplib.POP3_SSL("127.0.0.1", server.ports["pop3s"], context=server.client_tls(), timeout=10)
    caps = client.capa()
    assert "STLS" not in caps and "USER" in caps and caps["SASL"] == ["PLAIN"]
    client.user(account)
    client.pass_(PASSWORD)
    assert client.stat() == (1, len(MSG))
    client.quit()


def test_capa_before_and_after_stls(server: Any) -> None:
    client = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=10)
    before = client.capa()
    assert "STLS" in before and "USER" not in before and "SASL" not in before
    assert {"TOP", "UIDL", "PIPELINING", "RESP-CODES", "AUTH-RESP-CODE"} <= set(before)
    assert not {"EXPIRE", "LOGIN-DELAY", "APOP", "IMPLEMENTATION"} & set(before)
    client.stls(context=server.client_tls())
    after = client.capa()
    assert "STLS" not in after and "USER" in after and after["SASL"] == ["PLAIN"]
    client.quit()


def test_login_refused_before_tls(server: Any, account: str) -> None:
    client = LineClient(server.ports["pop3"])
    assert client.line().startswith(b"+OK")
    assert client.command(f"USER {account}").startswith(b"-ERR [AUTH]")
    assert client.command(f"PASS {PASSWORD}").startswith(b"-ERR [AUTH]")
    assert client.command("AUTH PLAIN AGFsaWNlAHNlY3JldA==").startswith(b"-ERR [AUTH]")
    client.close()


def test_bytes_pipelined_after_stls_are_discarded(server: Any, account: str) -> None:
    """RFC 2595 4: a plaintext USER injected behind STLS is not executed after the handshake."""
    client = LineClient(server.ports["pop3"])
    client.line()
    client.send(f"STLS\r\nUSER {account}\r\n".encode())
    assert client.line() == b"+OK Begin TLS negotiation"
    client.starttls(server.client_tls())
    assert client.command(f"PASS {PASSWORD}") == b"-ERR USER first"
    assert client.command(f"USER {account}").startswith(b"+OK")
    assert client.command(f"PASS {PASSWORD}").startswith(b"+OK Logged in")
    client.command("QUIT")
    client.close()


# -- response codes and the lock ----------------------------------------------


def test_wrong_password_gets_auth_code(server: Any, account: str) -> None:
    client = connect_stls(server)
    client.user(account)
    with pytest.raises(poplib.error_proto) as error:
        client.pass_("not the password")
    assert error.value.args[0] == b"-ERR [AUTH] Authentication failed"
    client.user("nobody@example.test")
    with pytest.raises(poplib.error_proto) as error:
        client.pass_(PASSWORD)
    assert error.value.args[0] == b"-ERR [AUTH] Authentication failed"  # unknown user: same answer
    client.close()


def test_second_session_gets_in_use(server: Any, account: str) -> None:
    first = login(server, account)
    second = connect_stls(server)
    second.user(account)
    with pytest.raises(poplib.error_proto) as error:
        second.pass_(PASSWORD)
    assert error.value.args[0].startswith(b"-ERR [IN-USE]")
    first.quit()
    second.user(account)
    assert second.pass_(PASSWORD).startswith(b"+OK")  # freed by QUIT, immediately
    second.quit()


def test_crash_before_quit_deletes_nothing_and_frees_the_lock(server: Any, account: str) -> None:
    deliver(server, account, MSG, DOTS, MSG)
    client = login(server, account)
    for n in (1, 2, 3):
        client.dele(n)
    kill(client)
    again = login_retrying(server, account)
    assert again.stat()[0] == 3
    again.quit()


def test_crash_over_implicit_tls_frees_the_lock(server: Any, account: str) -> None:
    deliver(server, account, MSG)
    client = login(server, account, implicit=True)
    client.dele(1)
    kill(client)
    again = login_retrying(server, account)
    assert again.stat()[0] == 1
    again.quit()


# -- content and UIDL ---------------------------------------------------------


def test_lines_starting_with_dots_survive_retr_and_top(server: Any, account: str) -> None:
    deliver(server, account, DOTS)
    client = login(server, account)
    _, lines, _ = client.retr(1)
    assert b"\r\n".join(lines) + b"\r\n" == DOTS
    _, lines, _ = client.top(1, 3)
    assert lines == [b"From: dots@example.test", b"Subject: dots", b"", b".", b"..", b".leading dot"]
    client.quit()


def test_large_message_is_exact(server: Any, account: str) -> None:
    body = b"Subject: big\r\n\r\n" + b"".join(b"%s line %d\r\n" % (b"." if i % 7 == 0 else b"x", i) for i in range(60000))
    deliver(server, account, body)
    client = login(server, account)
    _, lines, _ = client.retr(1)
    assert b"\r\n".join(lines) + b"\r\n" == body
    client.quit()


def test_uidl_stable_across_sessions_flags_and_expunges(server: Any, account: str) -> None:
    """UIDL values never change: not across sessions, flag changes, or other messages' removal."""
    deliver(server, account, MSG, DOTS, MSG, DOTS)
    client = login(server, account)
    first = uidl_map(client)
    assert len(set(first.values())) == 4
    assert all(0 < len(u) <= 70 and all(0x21 <= b <= 0x7E for b in u) for u in first.values())
    assert client.uidl(3).split()[2] == first[3]
    client.quit()

    client = login(server, account)
    assert uidl_map(client) == first
    client.quit()

    # IMAP-style flag changes (through the store, as an IMAP STORE does) keep the ids.
    set_flags(server, account, lambda info: True, ["\\Seen", "\\Flagged", "$Work"])
    client = login(server, account)
    assert uidl_map(client) == first
    client.dele(2)
    client.quit()

    client = login(server, account)
    after = uidl_map(client)
    assert sorted(after.values()) == sorted(v for k, v in first.items() if k != 2)
    client.quit()


def test_mail_arriving_during_a_session_waits_for_the_next(server: Any, account: str) -> None:
    deliver(server, account, MSG)
    client = login(server, account)
    deliver(server, account, DOTS)
    assert client.stat() == (1, len(MSG))
    with pytest.raises(poplib.error_proto):
        client.retr(2)
    client.quit()
    client = login(server, account)
    assert client.stat() == (2, len(MSG) + len(DOTS))
    client.quit()


def test_maildir_file_dropped_into_new_is_listed(server: Any, account: str) -> None:
    deliver(server, account, MSG)  # creates the user's Maildir
    drop_into_new(server.mail_dir(account), DOTS)
    client = login(server, account)
    assert client.stat() == (2, len(MSG) + len(DOTS))
    _, lines, _ = client.retr(2)
    assert b"\r\n".join(lines) + b"\r\n" == DOTS
    client.quit()


def test_pipelined_commands_answer_in_order(server: Any, account: str) -> None:
    deliver(server, account, MSG, DOTS)
    client = LineClient(server.ports["pop3s"], tls=server.client_tls())
    client.line()
    client.send(f"USER {account}\r\nPASS {PASSWORD}\r\nSTAT\r\nUIDL\r\nRETR 2\r\nLIST 1\r\nDELE 1\r\nRSET\r\nQUIT\r\n".encode())
    assert client.line() == b"+OK Send PASS"
    assert client.line().startswith(b"+OK Logged in, 2 messages")
    assert client.line() == b"+OK 2 %d" % (len(MSG) + len(DOTS))
    assert client.line().startswith(b"+OK") and len(client.multiline()) == 2
    assert client.line().startswith(b"+OK") and b"\r\n".join(client.multiline()) + b"\r\n" == DOTS
    assert client.line() == b"+OK 1 %d" % len(MSG)
    assert client.line().startswith(b"+OK Message 1")
    assert client.line().startswith(b"+OK 2 messages")
    assert client.line().startswith(b"+OK Bye, 0 messages deleted")
    assert client.closed_by_server()


def test_uidl_unchanged_by_a_real_imap_session(server: Any, account: str) -> None:
    """An IMAP client reading, flagging and expunging must not change any POP3 unique-id."""
    import imaplib

    deliver(server, account, MSG, DOTS, MSG)
    client = login(server, account)
    before = uidl_map(client)
    client.quit()

    imap = imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=server.client_tls())
    imap.login(account, PASSWORD)
    imap.select("INBOX")
    assert imap.store("1", "+FLAGS", "(\\Seen \\Flagged)")[0] == "OK"
    assert imap.store("2", "+FLAGS", "(\\Deleted)")[0] == "OK"
    assert imap.expunge()[0] == "OK"
    imap.logout()

    client = login(server, account)
    assert list(uidl_map(client).values()) == [before[1], before[3]]
    client.quit()


@pytest.mark.slow
def test_fifty_megabyte_retr_keeps_server_memory_flat(server: Any, account: str) -> None:
    """RETR streams from disk: the server's resident memory does not grow with a 50 MB message."""

    deliver(server, account, MSG)  # creates the Maildir
    line = b".dotted line that must be stuffed, and some more text to make it longer\r\n"
    body = b"Subject: big\r\n\r\n" + line * (50 * 1024 * 1024 // len(line))
    drop_into_new(server.mail_dir(account), body)
    client = LineClient(server.ports["pop3s"], tls=server.client_tls())
    client.line()
    client.command(f"USER {account}")
    assert client.command(f"PASS {PASSWORD}").startswith(b"+OK")
    pid = server.process.pid
    with PeakRSS(pid, interval=0.01) as peak:
        assert client.command("RETR 2") == b"+OK %d octets" % len(body)
        received, tail = len(client.buffer), client.buffer[-5:]
        client.buffer = b""
        while tail != b"\r\n.\r\n":
            chunk = client.sock.recv(1 << 20)
            assert chunk
            received += len(chunk)
            tail = (tail + chunk)[-5:]
    assert received == len(body) + body.count(b"\r\n.") + 3  # stuffed dots and the terminator
    assert peak.peak - peak.before < 20 * 1024, (peak.before, peak.peak)
    client.command("QUIT")
