"""The one call the SMTP server makes at the end of a message: sign it or check it.

Why a module of its own: the SMTP state machine should not know about DKIM,
SPF or DMARC; it calls :func:`on_message` once the message is complete and
its trace header is built, and gets back the header bytes to put in front of
that trace and the folder local copies go to.

Wiring in ``mailsuite/smtp`` (done by the SMTP owner):

1. ``SessionSettings`` gets ``mailauth: Any = None``; ``listener.settings_for``
   passes ``mailauth=context.mailauth``.
2. Inbound sessions (no authenticated user) pass message bytes through a
   ``ResultsFilter`` while DATA/BDAT chunks arrive
   (``tx.message.write(tx.results_filter.feed_bytes(chunk))``, and
   ``tx.message.write(tx.results_filter.close())`` before ``finish()``), so
   forged ``Authentication-Results: <our hostname>`` fields never get stored.
   :func:`results_filter` gives the filter (None when checks are off).
3. In ``_finish_message``, right after ``trace = self._trace(...)``::

       outcome = await smtp_hook.on_message(self.s.mailauth, self.s.store, authenticated=self.user is not None,
                                            ip=self.ip, helo=self.helo or "", sender=tx.sender_text,
                                            local=list(tx.local), message=message, trace=trace,
                                            session_id=self.session_id, remote=list(tx.remote), sign_domain=sign_domain)
       trace = outcome.header + trace

   and the local deliveries use ``outcome.folder`` instead of "INBOX".
   A reject or tempfail raises the MailError (550 5.7.1 / 451 4.4.3) that
   the session already turns into its reply.

Implementation notes:

* Authenticated senders are signed for ``sign_domain``: the domain of the
  message's From address, which the SMTP policy has checked is the user's
  (``policy.check_header_senders``).  No ``sign_domain``, no signature: never
  the MAIL FROM domain, which says nothing about the From a reader sees.
  :func:`~mailsuite.mailauth.signing.sign_with` checks once more that the
  From names that domain alone.  The signature covers ``trace + message``
  exactly as it will be stored and relayed.
* Quarantine creates the quarantine folder of each local recipient when it
  is missing; if that fails, the copy goes to INBOX (never lost).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from twisted.logger import Logger

from mailsuite.delivery import folder_for
from mailsuite.mailauth.results import ResultsFilter
from mailsuite.mailauth.verdict import QUARANTINE

log = Logger()


@dataclass(frozen=True)
class AuthOutcome:
    """What the SMTP server does next: ``header`` goes before its trace, local copies go to ``folder``."""

    header: bytes = b""
    folder: str = "INBOX"


def results_filter(mailauth: Any, authenticated: bool) -> ResultsFilter | None:
    """The forged-Authentication-Results filter for an inbound message, or None (submission, checks off)."""
    if mailauth is None or authenticated or not mailauth.config.mailauth.verify_inbound:
        return None
    return mailauth.results_filter()  # type: ignore[no-any-return]


async def on_message(mailauth: Any, store: Any, *, authenticated: bool, ip: str, helo: str, sender: str,
                     local: Sequence[str], message: Any, trace: bytes, session_id: str = "-",
                     remote: Sequence[str] = (), sign_domain: str | None = None) -> AuthOutcome:
    """Sign (authenticated user) or check (anyone else) a complete message; MailError on reject/tempfail.

    ``remote``: recipients in other domains (an alias forwarding out); when
    there are any, the message is ARC-sealed (``mailauth.arc_domain``).
    ``sign_domain``: the domain of the message's From, checked to be the
    authenticated user's; None signs nothing.
    """
    if mailauth is None:
        return AuthOutcome()
    if authenticated:
        if not sign_domain:
            return AuthOutcome()
        return AuthOutcome(await mailauth.sign_message(message, sign_domain, header_prefix=trace))
    verdict = await mailauth.check_inbound(ip, helo, sender, message, session_id=session_id)
    error = verdict.error()
    if error is not None:
        raise error
    folder = "INBOX"
    if verdict.action == QUARANTINE and local:
        folder = await folder_for(store, local, verdict.folder, why="quarantine", session_id=session_id)
    header = verdict.header
    if remote and header:
        header = await mailauth.arc_seal_message(message, header_prefix=header + trace) + header
    return AuthOutcome(header, folder)
