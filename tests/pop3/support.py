"""Helpers for the POP3 integration tests: putting mail in, a raw line client."""

from __future__ import annotations

import itertools
import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.python.failure import Failure

_names = itertools.count(1)


def result_of(d: defer.Deferred[Any]) -> Any:
    """The result of an already-fired Deferred (the store runs inline here)."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "Deferred did not fire synchronously"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def open_store(server: Any) -> Any:
    """The real Maildir store over the server's data root, running inline in this process."""
    from mailsuite.store import InlineRunner, MaildirStore

    return MaildirStore(server.data_root / "mail", runner=InlineRunner(), clock=task.Clock())


def deliver(server: Any, address: str, *bodies: bytes) -> None:
    """Store messages in a user's INBOX through the store's API (fsynced, as SMTP would)."""
    from mailsuite.interfaces import Delivery

    store = open_store(server)
    try:
        for body in bodies:
            message = store.new_incoming()
            message.write(body)
            message.finish()
            results = result_of(store.deliver(message, [Delivery(address)]))
            message.discard()
            assert results[0].error is None, results[0].error
    finally:
        store.close()


def set_flags(server: Any, address: str, uids_of_keys: Any, flags: list[str]) -> None:
    """Change flags the way an IMAP STORE does, through the store in this process."""
    store = open_store(server)
    try:
        folder = result_of(store.user_mailbox(address).open_folder("INBOX"))
        uids = [info.uid for info in folder.messages() if uids_of_keys(info)]
        result_of(folder.store_flags(uids, flags, "add"))
        folder.close()
    finally:
        store.close()


def drop_into_new(maildir: Path, body: bytes) -> str:
    """Write a message into Maildir new/ as any other delivery program would (tmp/ then rename)."""
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    name = f"{int(time.time())}.P{os.getpid()}Q{next(_names)}.testhost"
    tmp = maildir / "tmp" / name
    tmp.write_bytes(body)
    os.replace(tmp, maildir / "new" / name)
    return name


def new_address() -> str:
    return f"pop{os.getpid()}x{next(_names)}@example.test"


class AccountPool:
    """Users made up front; each test takes a fresh one so no test sees another's mail.

    The first user goes through the real admin CLI (``mailsuite user add``,
    argon2id); the rest through the same directory code in this process
    with an imported low-cost bcrypt hash (a supported migrated-user scheme),
    because a CLI process per user and an argon2 check per login cost
    seconds on a loaded machine, and these tests are about POP3.
    """

    def __init__(self, server: Any, count: int, password: str) -> None:
        import bcrypt

        self.server = server
        first = new_address()
        server.add_user(first, password)
        self.free = [first]
        self.hash = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
        self.add(count - 1)

    def add(self, count: int) -> None:
        from mailsuite.auth.service import open_directory
        from mailsuite.config import load

        directory = open_directory(load(self.server.config_path))
        try:
            self.free += [directory.add_user(new_address(), password_hash=self.hash) for _ in range(count)]
        finally:
            directory.close()

    def take(self) -> str:
        if not self.free:
            self.add(4)
        return self.free.pop(0)


class LineClient:
    """A bare POP3 connection for what poplib cannot do (pipelining, STLS injection, raw codes)."""

    def __init__(self, port: int, *, tls: ssl.SSLContext | None = None, timeout: float = 10.0) -> None:
        self.sock: Any = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; unread {self.buffer!r}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def multiline(self) -> list[bytes]:
        lines = []
        while (line := self.line()) != b".":
            lines.append(line[1:] if line.startswith(b".") else line)
        return lines

    def command(self, text: str) -> bytes:
        self.send(text.encode() + b"\r\n")
        return self.line()

    def starttls(self, context: ssl.SSLContext) -> None:
        assert self.buffer == b""
        self.sock = context.wrap_socket(self.sock)

    def closed_by_server(self, wait: float = 5.0) -> bool:
        self.sock.settimeout(wait)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buffer += chunk
        except (ConnectionResetError, ssl.SSLError):
            return True
        except socket.timeout:
            return False

    def close(self) -> None:
        self.sock.close()
