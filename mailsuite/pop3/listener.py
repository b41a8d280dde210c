"""The protocol factory service.py puts behind the "pop3" (110) and "pop3s" (995) listeners.

Implementation notes:
- One :class:`SessionSettings` per listener, built once from the shared
  :class:`~mailsuite.service.ServerContext`: the authenticator, the TLS
  provider, the reactor (for timers) and the config.
- "pop3s" is wrapped in implicit TLS by service.py; the factory only needs
  to know it so sessions allow logins and do not offer STLS.
- Message octets are read through the store (IFolder.open_reader, on the
  store's threads); no thread is chosen here or in the protocol.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from mailsuite.config import IMPLICIT_TLS, ListenerConfig
from mailsuite.pop3.protocol import POP3Session, SessionSettings

log = Logger()


class POP3Factory(Factory):
    """Builds one :class:`POP3Session` per connection with the listener's settings."""

    noisy = False

    def __init__(self, settings: SessionSettings) -> None:
        self.settings = settings

    def buildProtocol(self, addr: IAddress) -> POP3Session:
        session = POP3Session(self.settings)
        session.factory = self
        return session


def build_factory(context: Any, name: str, listener_config: ListenerConfig) -> Factory:
    """LISTENER_BUILDERS entry for "pop3" and "pop3s"."""
    config = context.config
    implicit = name in IMPLICIT_TLS
    tls_creator = context.tls.server_creator if context.tls is not None else None
    if config.tls.allow_plaintext_auth and not implicit:
        log.warn("{listener}: tls.allow_plaintext_auth is on: POP3 passwords may cross the network unencrypted", listener=name)
    if context.authenticator is None:
        # service.PARTS opens the auth part (or capture mode's) before any listener is built
        raise RuntimeError(f"{name}: POP3 needs context.authenticator (the auth part was not opened)")
    settings = SessionSettings(
        authenticator=context.authenticator,
        hostname=config.hostname,
        timeout=config.limits.pop3_timeout,
        login_timeout=config.limits.pop3_login_timeout,
        clock=context.reactor,
        tls_creator=tls_creator,
        implicit_tls=implicit,
        allow_plaintext_auth=config.tls.allow_plaintext_auth,
        listener=name,
        faults=lambda: context.faults,
    )
    return POP3Factory(settings)

