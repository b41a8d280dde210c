"""How the IMAP listeners get their protocol factory.

``mailsuite.service`` calls :func:`build_factory` for the "imap" (143,
STARTTLS) and "imaps" (993, TLS from the first byte, wrapped by the service)
listeners.  The factory holds what every connection of the listener shares:
the narrow :class:`IMAPSettings` taken from the server context (the protocol
never sees the context itself), the per-user connection counts and the
connection ids.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol

from mailsuite.config import IMPLICIT_TLS, LimitsConfig, ListenerConfig


@dataclass(frozen=True)
class IMAPSettings:
    """What IMAP sessions need from the server: names, limits and the shared parts they call."""

    hostname: str
    limits: LimitsConfig
    allow_plaintext_auth: bool  # tls.allow_plaintext_auth: LOGIN / AUTHENTICATE before TLS
    reactor: Any  # IReactorTime (timers) and callLater for the session
    store: Any  # IMessageStore
    authenticator: Any  # .login(ip, username, password) -> Deferred[IMailUser]
    tls: Any = None  # TLS provider (.server_creator()) for STARTTLS; None: not offered
    faults: Callable[[], Any] = lambda: None  # the test fault plan, read at each use (None outside tests)


def settings_for(context: Any) -> IMAPSettings:
    """The IMAP settings of a server context."""
    config = context.config
    return IMAPSettings(
        hostname=config.hostname, limits=config.limits, allow_plaintext_auth=config.tls.allow_plaintext_auth,
        reactor=context.reactor, store=context.store, authenticator=context.authenticator, tls=context.tls,
        faults=lambda: context.faults,
    )


class UserConnections:
    """Counts authenticated IMAP sessions per user (``limits.imap_connections_per_user``).

    Shared by both IMAP listeners so a user cannot double the cap by using
    143 and 993 at the same time.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: Counter[str] = Counter()

    def acquire(self, address: str) -> bool:
        """Take a slot for ``address``; False when the user is at the cap."""
        key = address.lower()
        if self.open[key] >= self.limit:
            return False
        self.open[key] += 1
        return True

    def release(self, address: str) -> None:
        """Give back a slot taken by :meth:`acquire`."""
        key = address.lower()
        self.open[key] -= 1
        if self.open[key] <= 0:
            del self.open[key]


#: One counter per ServerContext (both listeners of one server share it).
_USER_COUNTERS: dict[int, UserConnections] = {}
_IDS = itertools.count(1)


class IMAPFactory(Factory):
    """Builds :class:`mailsuite.imap.server.IMAPServer` connections for one listener."""

    noisy = False

    def __init__(self, settings: IMAPSettings, name: str, implicit_tls: bool, user_connections: UserConnections) -> None:
        self.settings = settings
        self.name = name
        self.implicit_tls = implicit_tls
        self.user_connections = user_connections

    def next_id(self) -> str:
        """A short connection id for log lines ("imap-17")."""
        return f"{self.name}-{next(_IDS)}"

    def buildProtocol(self, addr: IAddress) -> Protocol:
        from mailsuite.imap.server import IMAPServer

        protocol = IMAPServer(self)
        protocol.factory = self
        return protocol


def build_factory(context: Any, name: str, listener_config: ListenerConfig) -> Factory:
    """The protocol factory for the "imap" or "imaps" listener (see service.LISTENER_BUILDERS)."""
    counter = _USER_COUNTERS.get(id(context))
    if counter is None:
        counter = _USER_COUNTERS[id(context)] = UserConnections(context.config.limits.imap_connections_per_user)
    return IMAPFactory(settings_for(context), name, name in IMPLICIT_TLS, counter)
