"""Server-wide POP3 policy over real TCP: plaintext opt-in, per-IP cap, idle timeout, login throttle."""

from __future__ import annotations

import poplib
import time
from typing import Any

import pytest

from .support import AccountPool, LineClient, deliver, new_address

PASSWORD = "policy password"
MSG = b"Subject: policy\r\n\r\nbody\r\n"


@pytest.fixture(scope="module")
def server(mailsuite_module_server: Any) -> Any:
    return mailsuite_module_server(
        {
            "tls.allow_plaintext_auth": True,
            "limits.connections_per_ip": 3,
            "limits.pop3_timeout": 1.5,
            "auth.free_failures": 1000,
            "auth.max_failures": 1000,
        }
    )


@pytest.fixture(scope="module")
def accounts(server: Any) -> AccountPool:
    return AccountPool(server, 3, PASSWORD)


@pytest.fixture
def account(accounts: AccountPool) -> str:
    """A user of its own for each test, so tests never see each other's mail."""
    return accounts.take()


def test_plaintext_login_when_allowed_with_warning_at_start(server: Any, account: str) -> None:
    deliver(server, account, MSG)
    client = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=10)
    caps = client.capa()
    assert "USER" in caps and "STLS" in caps
    client.user(account)
    client.pass_(PASSWORD)
    assert client.stat() == (1, len(MSG))
    client.quit()
    warnings = [line for line in server.log().splitlines() if "POP3 passwords may cross the network unencrypted" in line]
    assert len(warnings) == 1 and "pop3:" in warnings[0]  # port 110 only; 995 is always TLS


def _open_greeted(server: Any, count: int) -> list[LineClient] | None:
    """Open ``count`` connections that are all greeted with +OK, or None (closing them) if one is refused."""
    clients = []
    for _ in range(count):
        client = LineClient(server.ports["pop3"])
        clients.append(client)
        if not client.line().startswith(b"+OK"):
            for c in clients:
                c.close()
            return None
    return clients


def test_per_ip_connection_cap(server: Any) -> None:
    """limits.connections_per_ip = 3: the fourth connection from 127.0.0.1 is refused with [SYS/TEMP]."""
    deadline = time.monotonic() + 5
    while (clients := _open_greeted(server, 3)) is None:  # earlier tests' connections may still be closing
        assert time.monotonic() < deadline
        time.sleep(0.05)
    refused = LineClient(server.ports["pop3"])
    assert refused.line().startswith(b"-ERR [SYS/TEMP]")
    assert refused.closed_by_server()
    refused.close()
    clients.pop().close()
    deadline = time.monotonic() + 5
    while (again := _open_greeted(server, 1)) is None:  # the freed slot becomes usable again
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for client in clients + again:
        client.close()


def test_idle_session_is_closed_and_deletes_nothing(server: Any, account: str) -> None:
    """RFC 1939 3 autologout (1.5 s here): the connection closes without the UPDATE state."""
    deliver(server, account, MSG)
    client = LineClient(server.ports["pop3"])
    client.line()
    client.command(f"USER {account}")
    assert client.command(f"PASS {PASSWORD}").startswith(b"+OK")
    assert client.command("DELE 1").startswith(b"+OK")
    started = time.monotonic()
    assert client.closed_by_server(wait=6)
    assert 1.0 < time.monotonic() - started < 6
    client.close()
    again = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=10)
    again.user(account)
    again.pass_(PASSWORD)
    assert again.stat() == (1, len(MSG))
    again.quit()


def test_throttled_logins_get_sys_temp(mailsuite_server: Any) -> None:
    """The shared login throttle: after the failures it allows, even the right password is refused."""
    address = new_address()
    server = mailsuite_server({"tls.allow_plaintext_auth": True, "auth.free_failures": 0, "auth.max_failures": 2, "auth.max_delay": 0.0}, users={address: PASSWORD})
    replies = []
    for attempt in ("wrong", "wrong", "wrong", PASSWORD):
        client = LineClient(server.ports["pop3"])
        client.line()
        client.command(f"USER {address}")
        replies.append(client.command(f"PASS {attempt}"))
        if replies[-1].startswith(b"-ERR [SYS/TEMP]"):
            assert client.closed_by_server()
        client.close()
    assert replies[0] == b"-ERR [AUTH] Authentication failed"
    assert replies[-1].startswith(b"-ERR [SYS/TEMP]")
