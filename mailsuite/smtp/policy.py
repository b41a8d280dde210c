"""Who may send as whom, and relay where: the SMTP session's policy, apart from the wire.

Implementation notes:

- Port 25 (``submission=False``) without AUTH: any sender; recipients only in
  local domains (users, aliases, catch-alls); anything else is
  :class:`~mailsuite.errors.RelayDenied` (554 5.7.1).
- Submission (587/465, ``submission=True``): MAIL needs an authenticated
  user (:class:`AuthenticationRequired`, 530 5.7.0).
- Any authenticated user (on any listener) may send to any address, but only
  from one of the addresses the directory lists for them (their own, aliases
  leading only to them, extra addresses the admin granted, ``@domain`` for a
  whole domain), or the null path (RFC 3834 auto-replies); else
  :class:`~mailsuite.errors.SenderNotAllowed` (553 5.7.1).
- The same holds for the message's author fields (:func:`check_header_senders`,
  once the message is complete, before it is stored or queued): every address
  in every From and Sender field (RFC 5322 3.6.2) must be the user's, else
  553 5.7.1 after DATA.  Several From addresses (allowed with a Sender) must
  each be theirs: a co-author named in From is as good as a forged one to a
  reader and to DMARC.  Groups (RFC 6854) are flattened; an empty group, a
  value the parsers read differently or with control characters, and a
  header too long to read whole are refused too.  Display names (plain or
  RFC 2047 encoded) are free text and not checked; an encoded word standing
  where the address belongs is no address and is refused.  Header bytes are
  read as UTF-8 (RFC 6532), so SMTPUTF8 addresses compare like any other.
  Resent-* fields are not checked (nothing aligns with them), so redirecting
  someone else's message with its From kept is refused.  A message without
  From gets one from the server (``headers.submission_additions``).  Mail
  from other hosts (no AUTH) is not checked here: that is SPF/DKIM/DMARC's
  job.
- Addresses compare with the domain case-insensitive and IDNA-normalised
  (``bücher.example`` is ``xn--bcher-kva.example``) and the local part
  ASCII-case-insensitive, as the directory's ``COLLATE NOCASE`` does.
- :func:`check_header_senders` answers the domain to DKIM-sign for: the first
  From address's (in A-labels), whose ownership it just checked.
- Alias expansion belongs to the directory; this module only decides and, for
  local targets, asks the store whether the quota still has room (so a full
  mailbox is refused per recipient at RCPT, 552 5.2.2).
- Remote targets need the relay queue; without one they are a temporary
  failure (451 4.3.0), never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection

import idna

from mailsuite.errors import InvalidName, MailError, NoSuchUser, RelayDenied, SenderNotAllowed, TemporaryFailure
from mailsuite.interfaces import RecipientResolution
from mailsuite.smtp import headers


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


def _domain_key(domain: str) -> str:
    domain = domain.lower()
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        return domain


def _address_key(address: str) -> tuple[str, str]:
    """(local part ASCII-lower-cased, domain in A-labels) for comparing addresses."""
    local, _, domain = address.rpartition("@")
    return local.encode("utf-8", "surrogatepass").lower().decode("utf-8", "surrogatepass"), _domain_key(domain)


def owns(allowed: Collection[str], user: str, address: str) -> bool:
    """True if ``address`` is ``user``'s or in ``allowed`` (the directory's sender addresses; ``@domain``: all of it)."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return False
    if address in allowed:  # the usual exact spelling (and capture mode's set of every address)
        return True
    key = _address_key(address)
    for entry in (user, *allowed):
        if entry.startswith("@"):
            if _domain_key(entry[1:]) == key[1]:
                return True
        elif _address_key(entry) == key:
            return True
    return False


async def check_sender(directory: Any, facts: SessionFacts, sender: str | None) -> None:
    """Raise unless this session may use ``sender`` (None: the null path ``<>``) in MAIL FROM."""
    if facts.user is None:
        if facts.submission:
            raise AuthenticationRequired()
        return
    if sender is None:
        return  # RFC 3834 3.3: automatic responses use the null path
    allowed = await directory.sender_addresses(facts.user)
    if not owns(allowed, facts.user, sender):
        raise SenderNotAllowed()


#: The header fields naming who wrote and who sent a message (RFC 5322 3.6.2).
AUTHOR_FIELDS = ("From", "Sender")


def _shown(address: str) -> str:
    return address if address.isascii() else address.encode("ascii", "backslashreplace").decode("ascii")


async def check_header_senders(directory: Any, facts: SessionFacts, header: bytes | None, envelope_sender: str) -> str | None:
    """Raise SenderNotAllowed unless every From/Sender address of the message is the user's; the domain to sign for.

    ``header`` is the message's header block (None: too long to have been
    kept whole), ``envelope_sender`` the MAIL FROM address ("" for ``<>``).
    Without an authenticated user nothing is checked and None is returned.
    A message without From gets ``From: <envelope sender or user>`` from the
    server, so that address's domain is returned.
    """
    if facts.user is None:
        return None
    if header is None:
        raise SenderNotAllowed(f"Message header over {headers.HEADER_SCAN_LIMIT // 1024} KiB: its From address cannot be checked")
    fields = [(name, value) for name in AUTHOR_FIELDS for value in headers.field_values(header, name)]
    # No From: the server adds one naming the (checked) envelope sender, or the user.
    sign_domain = None if any(name == "From" for name, _ in fields) else _domain_key((envelope_sender or facts.user).rpartition("@")[2])
    if not fields:
        return sign_domain
    allowed = await directory.sender_addresses(facts.user)
    for name, value in fields:
        try:
            addresses = headers.mailbox_addresses(value)
        except ValueError as e:
            raise SenderNotAllowed(f"{name} header {e}: it must name your own address") from None
        for address in addresses:
            if not owns(allowed, facts.user, address):
                raise SenderNotAllowed(f"{name} header address <{_shown(address)}> is not owned by {_shown(facts.user)}")
        if sign_domain is None and name == "From":
            sign_domain = _domain_key(addresses[0].rpartition("@")[2])
    return sign_domain


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
