"""The protocol factory service.py puts behind "smtp" (25), "submission" (587) and "submissions" (465).

Implementation notes:

- One :class:`~mailsuite.smtp.server.SessionSettings` per listener, built once
  from the shared :class:`~mailsuite.service.ServerContext`.
- "smtp" is the inbound MX role: AUTH only when the listener's ``auth`` is
  true, no AUTH needed for local recipients.  "submission" and "submissions"
  require AUTH before MAIL and always offer it (over TLS).
- "submissions" is wrapped in implicit TLS by service.py; the factory only
  needs to know it so sessions count as TLS from the first byte and do not
  offer STARTTLS.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from mailsuite.config import IMPLICIT_TLS, ListenerConfig
from mailsuite.smtp.server import SessionSettings, SMTPSession

log = Logger(namespace="mailsuite.smtp")

#: Listeners where MAIL requires an authenticated user.
SUBMISSION_LISTENERS = frozenset({"submission", "submissions"})


class SMTPFactory(Factory):
    """Builds one :class:`SMTPSession` per connection with the listener's settings."""

    noisy = False

    def __init__(self, settings: SessionSettings) -> None:
        self.settings = settings

    def buildProtocol(self, addr: IAddress) -> SMTPSession:
        session = SMTPSession(self.settings)
        session.factory = self
        return session


def settings_for(context: Any, name: str, listener_config: ListenerConfig) -> SessionSettings:
    """The session settings for one listener (also used by unit tests with fakes in the context)."""
    config = context.config
    limits = config.limits
    submission = name in SUBMISSION_LISTENERS
    return SessionSettings(
        hostname=config.hostname,
        listener=name,
        submission=submission,
        implicit_tls=name in IMPLICIT_TLS,
        offer_auth=submission or listener_config.auth,
        allow_plaintext_auth=config.tls.allow_plaintext_auth,
        max_message_size=limits.message_size,
        max_recipients=limits.recipients,
        max_line_length=limits.smtp_line_length,
        max_errors=limits.smtp_max_errors,
        timeout=limits.smtp_timeout,
        data_timeout=limits.smtp_data_timeout,
        clock=context.reactor,
        primary_domain=config.domains[0] if config.domains else config.hostname,
        configured_domains=frozenset(d.lower() for d in config.domains),
        tls_creator=context.tls.server_creator if context.tls is not None else None,
        authenticator=context.authenticator,
        directory=context.directory,
        store=context.store,
        queue=context.queue,
        fault_plan=lambda: context.faults,
        mailauth=getattr(context, "mailauth", None),
        login_timeout=limits.submission_login_timeout if submission else None,
        antispam=getattr(context, "antispam", None),
        srs=getattr(context, "srs", None),
    )


def build_factory(context: Any, name: str, listener_config: ListenerConfig) -> Factory:
    """LISTENER_BUILDERS entry for "smtp", "submission" and "submissions"."""
    settings = settings_for(context, name, listener_config)
    if settings.allow_plaintext_auth and not settings.implicit_tls and settings.offer_auth:
        log.warn("{listener}: tls.allow_plaintext_auth is on: SMTP passwords may cross the network unencrypted", listener=name)
    if context.queue is None and not context.config.capture.enabled:
        log.warn("{listener}: no relay queue: remote recipients get 451", listener=name)
    return SMTPFactory(settings)
