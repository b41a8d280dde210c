"""open_auth: the parts a server gets, and that logins hash on the auth thread pool."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

from twisted.cred.portal import Portal
from zope.interface.verify import verifyObject

from mailsuite import config
from mailsuite.auth import hashing
from mailsuite.auth.service import AuthService, open_auth
from mailsuite.interfaces import ILoginThrottle, IUserDirectory
from mailsuite.service import ServerContext

from .conftest import result
from .test_directory import _ThreadReactor


class Store:
    def user_mailbox(self, address: str) -> str:
        return "mailbox of " + address


def test_open_auth_fills_the_context_and_hashes_on_its_pool(tmp_path: Path, monkeypatch: Any) -> None:
    """directory/throttle/portal/authenticator are set; a login's hash runs on the AuthService pool thread."""
    cfg = dataclasses.replace(config.parse('domains = ["example.test"]\n[auth]\nmax_failures = 4\n'), data_root=str(tmp_path))
    reactor = _ThreadReactor()
    context = ServerContext(config=cfg, reactor=reactor)
    auth_service = open_auth(context)
    assert isinstance(auth_service, AuthService)
    assert verifyObject(IUserDirectory, context.directory) and verifyObject(ILoginThrottle, context.throttle)
    assert isinstance(context.portal, Portal)
    assert context.directory.path == tmp_path / "users.sqlite3"
    assert context.throttle.max_failures == 4
    assert context.directory.pool is auth_service.pool
    context.directory.add_user("alice@example.test", "pw")
    context.store = Store()  # the store part opens after auth; the realm looks it up at login

    threads: list[str] = []
    original = hashing.verify

    def spy(stored: str, password: str) -> bool:
        threads.append(threading.current_thread().name)
        return original(stored, password)

    monkeypatch.setattr(hashing, "verify", spy)
    auth_service.startService()
    try:
        d = context.authenticator.login("192.0.2.1", "alice@example.test", "pw")
        assert not d.called
        assert reactor.ready.wait(10)
        f, args, kw = reactor.calls.pop()
        f(*args, **kw)
        avatar = result(d)
    finally:
        auth_service.stopService()
    assert avatar.address == "alice@example.test" and avatar.mailbox == "mailbox of alice@example.test"
    assert threads and "mailsuite-auth" in threads[0] and threads[0] != threading.current_thread().name
