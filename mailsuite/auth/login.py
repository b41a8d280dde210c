"""The throttled login every protocol calls (SMTP AUTH, POP3, IMAP).

Implementation notes:

- ``login(ip, username, password)`` normalises the user name (a full
  address; the domain compared case-insensitively), refuses at once with
  :class:`~mailsuite.errors.LoginThrottled` while the IP is blocked, asks the
  portal, and answers a failure with
  :class:`~mailsuite.errors.AuthenticationFailed` only after the throttle's
  delay (``reactor.callLater``: nothing blocks meanwhile).
- Password checks go through :class:`~mailsuite.auth.gate.HashGate`: one
  check per account at a time, the account held through a failure's delay,
  and the hashing slots go to clean sources first.  The block is checked
  again when a check's turn comes, so a guess queued before its IP was
  blocked costs no hash.
- One pending check per account and IP.  An attempt with the same password
  joins it and shares its outcome (a mail client opening several
  connections at once costs one hash); an attempt with another password
  fails at once without a hash, as a failure of the IP, after the IP's
  delay.  So 9 parallel guesses from one IP at one account cost one hash.
  A check stops being pending when its hash is done.
- Unknown and malformed user names take the same path as real ones (the
  directory spends a dummy hash on unknown ones): nothing here tells them
  apart by timing.
- A full hashing queue answers :class:`~mailsuite.errors.TemporaryFailure`
  (try later), counted as no failure.
- Logged: one line per attempt with the connection's IP, the user name and
  the outcome; ``login failed: user=... ip=... delay=...`` is written once
  per password actually checked.  Never the password.
- SASL details (PLAIN's authzid, LOGIN's prompts) are the protocols' job.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any

from twisted.cred import credentials, error
from twisted.internet import defer, task
from twisted.logger import Logger

from mailsuite.auth.addresses import normalise_address
from mailsuite.auth.gate import MAX_WAITING, GateFull, HashGate
from mailsuite.errors import AuthenticationFailed, InvalidName, LoginThrottled, MailError, TemporaryFailure
from mailsuite.interfaces import IMailUser


@dataclass(eq=False)
class _Check:
    """One password check and the attempts waiting for its outcome."""

    ip: str
    name: str
    password: str
    waiters: list[defer.Deferred[Any]] = field(default_factory=list)
    gate_entry: defer.Deferred[Any] | None = None
    started: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.name.lower(), self.ip)

    def leave(self, waiter: defer.Deferred[Any]) -> None:
        """A waiting attempt was cancelled (its client went away); with nobody left, the check is dropped."""
        if waiter in self.waiters:
            self.waiters.remove(waiter)
        if not self.waiters and not self.started and self.gate_entry is not None:
            self.gate_entry.cancel()

    def fail(self, exc: Exception) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            waiter.errback(exc)


class Authenticator:
    """Portal login with the login throttle and the hashing gate in front of it."""

    log = Logger()

    def __init__(self, portal: Any, throttle: Any, reactor: Any, *, slots: int = 2, max_waiting: int = MAX_WAITING) -> None:
        self.portal = portal
        self.throttle = throttle
        self.reactor = reactor
        self.gate = HashGate(slots, throttle.failures, max_waiting=max_waiting)
        self._pending: dict[tuple[str, str], _Check] = {}

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
        if not (valid and password):
            self.throttle.record_failure(ip, name)
            delay = self.throttle.delay_for(ip, name)
            self.log.info("login failed: user={user} ip={ip} delay={delay}s", user=name, ip=ip, delay=delay)
            await self._sleep(delay)
            raise AuthenticationFailed()
        check = self._pending.get((name.lower(), ip))
        if check is not None and not hmac.compare_digest(check.password.encode("utf-8"), password.encode("utf-8")):
            self.throttle.record_failure(ip, None)
            delay = self.throttle.delay_for(ip, None)
            self.log.info("login failed unchecked (another password for this user from this IP is being checked): user={user} ip={ip} delay={delay}s",
                          user=name, ip=ip, delay=delay)
            await self._sleep(delay)
            raise AuthenticationFailed()
        first = check is None
        if check is None:
            check = self._pending[(name.lower(), ip)] = _Check(ip, name, password)
        waiter: defer.Deferred[Any] = defer.Deferred(check.leave)
        check.waiters.append(waiter)
        if first:
            defer.ensureDeferred(self._run(check)).addErrback(lambda f: self.log.failure("login check failed: user={user} ip={ip}", f, user=name, ip=ip))
        return await waiter

    def _forget(self, check: _Check) -> None:
        """The check is no longer pending: new attempts for its account and IP start their own."""
        if self._pending.get(check.key) is check:
            del self._pending[check.key]

    async def _sleep(self, delay: float) -> None:
        if delay > 0:
            await task.deferLater(self.reactor, delay)

    async def _run(self, check: _Check) -> None:
        """Wait for the gate, check the password once, answer every attempt waiting for it."""
        ip, name = check.ip, check.name
        check.gate_entry = self.gate.enter(ip, name.lower(), known=self.throttle.is_known(ip, name))
        try:
            ticket = await check.gate_entry
        except GateFull:
            self._forget(check)
            self.log.warn("login refused (too many checks queued): user={user} ip={ip}", user=name, ip=ip)
            check.fail(TemporaryFailure("Too many logins in progress, try again later"))
            return
        except defer.CancelledError:
            self._forget(check)
            return
        check.started = True
        try:
            if self.throttle.is_blocked(ip, name):
                self._forget(check)
                self.log.warn("login refused (throttled): user={user} ip={ip}", user=name, ip=ip)
                check.fail(LoginThrottled())
                return
            avatar = None
            try:
                _, avatar, _ = await self.portal.login(credentials.UsernamePassword(name.encode("utf-8"), check.password.encode("utf-8")), None, IMailUser)
            except error.UnauthorizedLogin:
                pass
            except MailError as e:
                check.fail(e)
                return
            except Exception:
                self.log.failure("login error: user={user} ip={ip}", user=name, ip=ip)
                check.fail(TemporaryFailure("Temporary authentication failure"))
                return
            finally:
                ticket.release_slot()
                self._forget(check)
            if avatar is not None:
                self.throttle.record_success(ip, name)
                self._succeed(check, avatar)
                return
            self.throttle.record_failure(ip, name)
            delay = self.throttle.delay_for(ip, name)
            self.log.info("login failed: user={user} ip={ip} delay={delay}s", user=name, ip=ip, delay=delay)
            if len(check.waiters) > 1:
                self.log.info("login failed (same password as another attempt, checked once): user={user} ip={ip} attempts={count}",
                              user=name, ip=ip, count=len(check.waiters) - 1)
            await self._sleep(delay)
            check.fail(AuthenticationFailed())
        finally:
            ticket.release_account()

    def _succeed(self, check: _Check, avatar: Any) -> None:
        """The first waiting attempt gets the portal's avatar; the others get their own from the realm."""
        waiters, check.waiters = check.waiters, []
        for i, waiter in enumerate(waiters):
            mine = avatar if i == 0 else self.portal.realm.requestAvatar(avatar.address, None, IMailUser)[1]
            self.log.info("login ok: user={user} ip={ip}", user=mine.address, ip=check.ip)
            waiter.callback(mine)
