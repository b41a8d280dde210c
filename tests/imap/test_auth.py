"""Logins against real users (created with the admin CLI): failures, throttling, per-user connection cap."""

from __future__ import annotations

import imaplib
from typing import Any

import pytest

from tests.imap.conftest import start_server


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = start_server(
        tmp_path_factory.mktemp("imapauth") / "server",
        {"tls.allow_plaintext_auth": True, "auth.free_failures": 0, "auth.max_failures": 4, "auth.max_delay": 0.0,
         "limits.imap_connections_per_user": 2},
    )
    server.add_user("carol@example.test", "right horse battery")
    server.add_user("dave@example.test", "staple")
    yield server
    server.stop()


def connect(server) -> imaplib.IMAP4:
    return imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=10)


def test_real_user_login_and_wrong_password(auth_server):
    c = connect(auth_server)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        c.login("carol@example.test", "wrong")
    assert c.login("carol@example.test", "right horse battery")[0] == "OK"
    assert c.select("INBOX")[0] == "OK"
    c.logout()
    assert "right horse battery" not in auth_server.log()


def test_connections_per_user_cap(auth_server):
    first, second, third = connect(auth_server), connect(auth_server), connect(auth_server)
    try:
        first.login("dave@example.test", "staple")
        second.login("dave@example.test", "staple")
        with pytest.raises(imaplib.IMAP4.error, match=r"\[LIMIT\]"):
            third.login("dave@example.test", "staple")
        first.logout()
        import time

        time.sleep(0.2)
        assert third.login("dave@example.test", "staple")[0] == "OK"
    finally:
        for c in (second, third):
            try:
                c.logout()
            except Exception:
                pass


def test_repeated_failures_are_throttled_and_disconnected(tmp_path):
    """After auth.max_failures the authenticator refuses: NO [UNAVAILABLE] then BYE and close."""
    auth_server = start_server(tmp_path / "server", {"tls.allow_plaintext_auth": True, "auth.free_failures": 0, "auth.max_failures": 3, "auth.max_delay": 0.0})
    try:
        outcomes = _hammer(auth_server)
    finally:
        auth_server.stop()
    assert outcomes[:3] == [("error", "b'[AUTHENTICATIONFAILED] Authentication failed.'")] * 3, outcomes
    # the refusal comes with BYE (imaplib aborts on it) and the connection closes
    assert outcomes[3] == ("abort", "command: LOGIN => Too many failed logins."), outcomes


def _hammer(auth_server) -> list[tuple[str, str]]:
    outcomes = []
    for _ in range(8):
        c = connect(auth_server)
        try:
            c.login("eve@example.test", "guess")
        except imaplib.IMAP4.abort as e:
            outcomes.append(("abort", str(e)))
            break
        except imaplib.IMAP4.error as e:
            outcomes.append(("error", str(e)))
            if "UNAVAILABLE" in str(e):
                with pytest.raises((imaplib.IMAP4.abort, OSError, EOFError)):
                    c.noop()
                break
        finally:
            try:
                c.shutdown()
            except Exception:
                pass
    return outcomes
