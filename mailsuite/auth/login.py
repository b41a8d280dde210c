"""The throttled login every protocol calls (SMTP AUTH, POP3, IMAP).

Implementation notes:

- ``login(ip, username, password)`` normalises the user name (a full
  address; the domain compared case-insensitively), refuses at once with
  :class:`~mailsuite.errors.LoginThrottled` while the IP is blocked, asks the
  portal, and answers a failure with
  :class:`~mailsuite.errors.AuthenticationFailed` only after the throttle's
  delay (``reactor.callLater``: nothing blocks meanwhile).
- Logged: one line per attempt with the connection's IP, the user name and
  the outcome.  Never the password.
- SASL details (PLAIN's authzid, LOGIN's prompts) are the protocols' job.
"""

from __future__ import annotations

from typing import Any

from twisted.cred import credentials, error
from twisted.internet import defer, task
from twisted.logger import Logger

from mailsuite.auth.addresses import normalise_address
from mailsuite.errors import AuthenticationFailed, InvalidName, LoginThrottled, MailError, TemporaryFailure
from mailsuite.interfaces import IMailUser


class Authenticator:
    """Portal login with the login throttle in front of it."""

    log = Logger()

    def __init__(self, portal: Any, throttle: Any, reactor: Any) -> None:
        self.portal = portal
        self.throttle = throttle
        self.reactor = reactor

    def login(self, ip: str, username: str, password: str) -> defer.Deferred[Any]:
        """Fires with the IMailUser avatar, or fails with AuthenticationFailed / LoginThrottled."""
        return defer.ensureDeferred(self._login(ip, username, password))

    async def _login(self, ip: str, username: str, password: str) -> Any:
        try:
            name = normalise_address(username)
        except InvalidName:
            name = username.strip()[:200]
            valid = False
        else:
            valid = True
        if self.throttle.is_blocked(ip, name):
            self.log.warn("login refused (throttled): user={user} ip={ip}", user=name, ip=ip)
            raise LoginThrottled()
        if valid and password:
            try:
                _, avatar, _ = await self.portal.login(credentials.UsernamePassword(name.encode("utf-8"), password.encode("utf-8")), None, IMailUser)
            except error.UnauthorizedLogin:
                pass
            except MailError:
                raise
            except Exception:
                self.log.failure("login error: user={user} ip={ip}", user=name, ip=ip)
                raise TemporaryFailure("Temporary authentication failure") from None
            else:
                self.throttle.record_success(ip, name)
                self.log.info("login ok: user={user} ip={ip}", user=avatar.address, ip=ip)
                return avatar
        self.throttle.record_failure(ip, name)
        delay = self.throttle.delay_for(ip, name)
        self.log.info("login failed: user={user} ip={ip} delay={delay}s", user=name, ip=ip, delay=delay)
        if delay > 0:
            await task.deferLater(self.reactor, delay)
        raise AuthenticationFailed()

