"""Who may send as whom, and relay where: the SMTP session's policy, apart from the wire.

Implementation notes:

- Port 25 (``submission=False``) without AUTH: any sender; recipients only in
  local domains (users, aliases, catch-alls); anything else is
  :class:`~mailsuite.errors.RelayDenied` (554 5.7.1).
- Submission (587/465, ``submission=True``): MAIL needs an authenticated
  user (:class:`AuthenticationRequired`, 530 5.7.0).
- Any authenticated user (on any listener) may send to any address, but only
  from one of the addresses the directory lists for them, or the null path
  (RFC 3834 auto-replies); else :class:`~mailsuite.errors.SenderNotAllowed`
  (553 5.7.1).
- Alias expansion belongs to the directory; this module only decides and, for
  local targets, asks the store whether the quota still has room (so a full
  mailbox is refused per recipient at RCPT, 552 5.2.2).
- Remote targets need the relay queue; without one they are a temporary
  failure (451 4.3.0), never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailsuite.errors import InvalidName, MailError, NoSuchUser, RelayDenied, SenderNotAllowed, TemporaryFailure
from mailsuite.interfaces import RecipientResolution


class AuthenticationRequired(MailError):
    """Submission needs AUTH before MAIL (RFC 4954 6, RFC 6409 4.3)."""

    code, enhanced, default_text = 530, "5.7.0", "Authentication required"


class RelayUnavailable(TemporaryFailure):
    """A remote recipient cannot be accepted while no relay queue runs."""

    code, enhanced, default_text = 451, "4.3.0", "Relay queue not available, try again later"


@dataclass(frozen=True)
class SessionFacts:
    """What the policy needs to know about the session asking."""

    submission: bool  # the listener is 587/465: AUTH is mandatory
    user: str | None = None  # the authenticated user's address, if any


def _same_address(a: str, b: str) -> bool:
    la, _, da = a.rpartition("@")
    lb, _, db = b.rpartition("@")
    return la.lower() == lb.lower() and da.lower() == db.lower()


async def check_sender(directory: Any, facts: SessionFacts, sender: str | None) -> None:
    """Raise unless this session may use ``sender`` (None: the null path ``<>``) in MAIL FROM."""
    if facts.user is None:
        if facts.submission:
            raise AuthenticationRequired()
        return
    if sender is None:
        return  # RFC 3834 3.3: automatic responses use the null path
    allowed = await directory.sender_addresses(facts.user)
    if sender in allowed or _same_address(sender, facts.user):
        return
    domain_lowered = sender.rpartition("@")[0] + "@" + sender.rpartition("@")[2].lower()
    if domain_lowered in allowed or any(_same_address(sender, a) for a in allowed):
        return
    raise SenderNotAllowed()


async def check_recipient(directory: Any, store: Any, facts: SessionFacts, address: str, domain: str, *, literal: bool, size: int,
                          queue_available: bool, configured_domains: frozenset[str] = frozenset(), srs: Any = None) -> RecipientResolution:
    """Decide one RCPT: where it goes (local mailboxes, remote addresses) or the error to answer.

    ``configured_domains`` (the config's ``domains``, always local) spares the
    directory a lookup for the common case; other domains are asked about.
    ``srs`` (mailsuite.srs.SRS): a bounce to one of its addresses goes back to
    the sender it stands for; a forged one is refused (550 5.7.1).
    """
    if srs is not None and domain.lower() == srs.domain and srs.is_srs(address):
        original = srs.reverse(address)
        if not queue_available:
            raise RelayUnavailable()
        return RecipientResolution(remote=(original,))
    if literal:
        local_domain = False
    elif domain.lower() in configured_domains:
        local_domain = True
    else:
        local_domain = await directory.is_local_domain(domain.lower())
    if not local_domain:
        if facts.user is None:
            raise RelayDenied()
        if not queue_available:
            raise RelayUnavailable()
        return RecipientResolution(remote=(address,))
    try:
        resolution: RecipientResolution = await directory.resolve(address)
    except InvalidName:
        raise NoSuchUser() from None
    if resolution.remote and not queue_available:
        raise RelayUnavailable()
    if store is None and resolution.local:
        raise TemporaryFailure("Mail store not available, try again later")
    for target in resolution.local:
        await store.check_quota(target, size)
    return resolution
