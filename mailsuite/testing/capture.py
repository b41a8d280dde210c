"""Capture mode: every address is a local mailbox, every password is right.

A client under test can send to any address and read it back over POP3 or
IMAP as that address with any password; nothing is ever relayed, because
every recipient resolves to a local mailbox.  The real store, the real SMTP,
POP3 and IMAP code run unchanged: only the directory and the authenticator
are swapped, by :func:`open_capture` (a ``service.PARTS`` opener).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet import defer
from zope.interface import implementer

from mailsuite.errors import InvalidName
from mailsuite.interfaces import IMailUser, IUserDirectory, RecipientResolution, UserRecord


class EveryAddress(frozenset[str]):
    """A set that contains every address: in capture mode a user may send as anyone."""

    def __contains__(self, item: object) -> bool:
        return isinstance(item, str)


def normalise(address: str, default_domain: str) -> str:
    """``local@domain`` with the domain lower-cased; a bare name gets the default domain."""
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, default_domain
    if not local or not domain or any(c in address for c in "\x00\r\n/\\") or ".." in domain:
        raise InvalidName(f"not a usable address: {address!r}")
    return f"{local}@{domain.lower()}"


@implementer(IUserDirectory)
class CaptureDirectory:
    """Knows every address; remembers the ones it has seen so tests can list their mail."""

    def __init__(self, default_domain: str) -> None:
        self.default_domain = default_domain
        self._seen: dict[str, None] = {}
        self._lock = threading.Lock()
        #: Called with each address the first time it is seen (the fixture's index opens its folders).
        self.on_new: list[Callable[[str], None]] = []

    def remember(self, address: str) -> str:
        """Record an address (normalised) as having a mailbox; returns the normal form."""
        address = normalise(address, self.default_domain)
        with self._lock:
            new = address not in self._seen
            self._seen[address] = None
        if new:
            for callback in self.on_new:
                callback(address)
        return address

    def addresses(self) -> list[str]:
        """Every address that received mail or logged in, in first-seen order."""
        with self._lock:
            return list(self._seen)

    def forget_all(self) -> None:
        """Start over (purge)."""
        with self._lock:
            self._seen.clear()

    def is_local_domain(self, domain: str) -> defer.Deferred[bool]:
        return defer.succeed(True)

    def resolve(self, address: str) -> defer.Deferred[RecipientResolution]:
        try:
            return defer.succeed(RecipientResolution(local=(self.remember(address),)))
        except InvalidName as e:
            return defer.fail(e)

    def get_user(self, address: str) -> defer.Deferred[UserRecord | None]:
        return defer.succeed(UserRecord(address=normalise(address, self.default_domain)))

    def sender_addresses(self, user: str) -> defer.Deferred[frozenset[str]]:
        return defer.succeed(EveryAddress())

    def verify_password(self, address: str, password: str) -> defer.Deferred[bool]:
        return defer.succeed(True)


@implementer(IMailUser)
@dataclass
class CapturedUser:
    """The avatar of a capture-mode login."""

    address: str
    mailbox: Any


class CaptureAuthenticator:
    """Lets anyone in as the address they name, creating the mailbox on first use."""

    def __init__(self, directory: CaptureDirectory, context: Any) -> None:
        self.directory = directory
        self.context = context

    def login(self, ip: str, username: str, password: str) -> defer.Deferred[IMailUser]:
        """Succeeds for any password; the username becomes (or names) the mailbox."""
        try:
            address = self.directory.remember(username)
        except InvalidName as e:
            return defer.fail(e)
        return defer.succeed(CapturedUser(address, self.context.store.user_mailbox(address)))


def open_capture(context: Any) -> None:
    """In capture mode, swap the directory and the authenticator for the permissive ones."""
    config = context.config
    if not config.capture.enabled:
        return None
    default_domain = config.domains[0] if config.domains else "example.test"
    directory = CaptureDirectory(default_domain)
    context.directory = directory
    context.authenticator = CaptureAuthenticator(directory, context)
    return None
