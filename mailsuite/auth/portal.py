"""The twisted.cred pieces every login goes through: checker, realm, avatar.

Implementation notes:

- :class:`DirectoryChecker` accepts IUsernamePassword credentials and asks
  the directory, whose hash verification runs on a thread pool; it fires
  with the address *as stored* so every protocol sees one spelling.
- :class:`MailRealm` builds the :class:`~mailsuite.interfaces.IMailUser`
  avatar at login time and reads ``context.store`` then, not when the realm
  is made: the store part opens after the auth part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from zope.interface import implementer

from mailsuite.interfaces import IMailUser


@implementer(IMailUser)
@dataclass
class MailUser:
    """A logged-in user: their address and their mailbox (IUserMailbox)."""

    address: str
    mailbox: Any


@implementer(ICredentialsChecker)
class DirectoryChecker:
    """Checks user name and password against an IUserDirectory."""

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, directory: Any) -> None:
        self.directory = directory

    def requestAvatarId(self, creds: Any) -> defer.Deferred[str]:  # type: ignore[override]  # our avatar ids are str addresses, cred's stubs say bytes
        username = creds.username.decode("utf-8", "replace") if isinstance(creds.username, bytes) else creds.username
        password = creds.password.decode("utf-8", "replace") if isinstance(creds.password, bytes) else creds.password
        if hasattr(self.directory, "authenticate"):
            d = self.directory.authenticate(username, password)
        else:
            d = self.directory.verify_password(username, password).addCallback(lambda ok: username if ok else None)

        def decided(address: str | None) -> str:
            if address is None:
                raise error.UnauthorizedLogin("bad credentials")
            return address

        result: defer.Deferred[str] = d.addCallback(decided)
        return result


@implementer(IRealm)
class MailRealm:
    """Makes the IMailUser avatar with the store current at login time."""

    def __init__(self, context: Any) -> None:
        self.context = context

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> tuple[Any, Any, Any]:
        if IMailUser not in interfaces:
            raise NotImplementedError("mailsuite only hands out IMailUser avatars")
        address = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else avatarId
        store = self.context.store
        mailbox = store.user_mailbox(address) if store is not None else None
        return IMailUser, MailUser(address, mailbox), lambda: None


def make_portal(context: Any, directory: Any) -> Portal:
    """The one portal: a directory checker and the mail realm."""
    return Portal(MailRealm(context), [DirectoryChecker(directory)])
