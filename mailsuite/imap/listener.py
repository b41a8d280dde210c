"""How the IMAP listeners get their protocol factory.

``mailsuite.service`` calls :func:`build_factory` for the "imap" (143,
STARTTLS) and "imaps" (993, TLS from the first byte, wrapped by the service)
listeners.  The factory holds what every connection of the listener shares:
the server context, the per-user connection counts and the connection ids.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol

from mailsuite.config import IMPLICIT_TLS, ListenerConfig


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

    def __init__(self, context: Any, name: str, implicit_tls: bool, user_connections: UserConnections) -> None:
        self.context = context
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
    return IMAPFactory(context, name, name in IMPLICIT_TLS, counter)
