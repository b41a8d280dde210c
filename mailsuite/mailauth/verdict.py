"""What the SMTP server does with an inbound message after the checks.

The :class:`Verdict` is the only thing the SMTP server needs to read: the
header to prepend and one action.  :func:`decide` is the whole receiver
policy in one function, driven by the ``[mailauth]`` options.

Decision order (first match wins):

1. DNS trouble that could change the outcome -> ``tempfail`` (451 4.4.3):
   DMARC ``temperror``, or SPF (MAIL FROM) / any DKIM ``temperror`` while
   DMARC has not passed.  Off with ``tempfail_on_dns_error = false``.
2. ``spf_reject_fail`` and SPF ``fail`` while DMARC has not passed ->
   ``reject`` (550 5.7.1, RFC 7208 8.4).
3. ``dmarc_enforce`` and DMARC ``fail``: disposition reject ->
   ``dmarc_reject_action`` (reject 550 5.7.1 by default, or quarantine);
   disposition quarantine -> ``quarantine`` (delivered to the Junk folder).
   A From field naming several domains (DMARC ``permerror``) -> quarantine.
4. Otherwise ``accept``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from mailsuite.config import MailAuthConfig
from mailsuite.errors import MailError

if TYPE_CHECKING:  # annotations only: keep dkimpy and pyspf out of the SMTP server's imports
    from mailsuite.mailauth.dkimcheck import DKIMResult
    from mailsuite.mailauth.dmarc import DMARCOutcome
    from mailsuite.mailauth.spfcheck import SPFResult

ACCEPT, QUARANTINE, REJECT, TEMPFAIL = "accept", "quarantine", "reject", "tempfail"


class AuthenticationRejected(MailError):
    """The sender's own published policy (DMARC, SPF) says to refuse this message."""

    code, enhanced, default_text = 550, "5.7.1", "Message rejected by sender authentication policy"


class AuthenticationTempFail(MailError):
    """A DNS lookup the verdict depends on failed: the sender should retry (RFC 7208 8.6, RFC 7489 6.6.3)."""

    code, enhanced, default_text = 451, "4.4.3", "Temporary DNS failure checking the sender, try again later"


@dataclass(frozen=True)
class Verdict:
    """The outcome of the inbound checks.

    ``header`` is the Authentication-Results field (CRLF-terminated) to put
    in front of the message (e.g. in ``Delivery.header_prefix``); ``action``
    is accept, quarantine (deliver to ``folder``), reject or tempfail;
    ``text`` explains a reject or tempfail.
    """

    action: str
    header: bytes = b""
    text: str = ""
    folder: str = "INBOX"
    spf: SPFResult | None = None
    spf_helo: SPFResult | None = None
    dkim: tuple[DKIMResult, ...] = field(default_factory=tuple)
    dmarc: DMARCOutcome | None = None
    code: int = 250
    enhanced: str = "2.0.0"
    #: ARC chain validation of the incoming message (RFC 8617), None when it had no ARC set.
    arc: str | None = None

    def error(self) -> MailError | None:
        """The MailError to answer with (550 5.7.1 / 451 4.4.3), or None when the message is taken."""
        if self.action == REJECT:
            return AuthenticationRejected(self.text or None, code=self.code, enhanced=self.enhanced)
        if self.action == TEMPFAIL:
            return AuthenticationTempFail(self.text or None, code=self.code, enhanced=self.enhanced)
        return None


def decide(config: MailAuthConfig, spf: SPFResult, dkim_results: Sequence[DKIMResult],
           dmarc: DMARCOutcome) -> tuple[str, int, str, str]:
    """(action, code, enhanced code, text) by the decision order in the module docstring."""
    dmarc_passed = dmarc.result == "pass"
    if config.tempfail_on_dns_error:
        if dmarc.result == "temperror":
            return TEMPFAIL, 451, "4.4.3", f"Temporary DNS failure looking up the DMARC policy of {dmarc.from_domain or 'the sender'}"
        if not dmarc_passed and (spf.result == "temperror" or any(r.result == "temperror" for r in dkim_results)):
            what = "SPF" if spf.result == "temperror" else "DKIM"
            return TEMPFAIL, 451, "4.4.3", f"Temporary DNS failure checking {what}, try again later"
    if config.spf_reject_fail and spf.result == "fail" and not dmarc_passed:
        return REJECT, 550, "5.7.1", f"SPF: {spf.domain} does not allow this host to send its mail"
    if config.dmarc_enforce:
        if dmarc.result == "fail" and dmarc.disposition == "reject":
            if config.dmarc_reject_action == "reject":
                return REJECT, 550, "5.7.1", f"DMARC: {dmarc.from_domain} asks to reject unauthenticated mail (p=reject)"
            return QUARANTINE, 250, "2.0.0", ""
        if dmarc.result == "fail" and dmarc.disposition == "quarantine":
            return QUARANTINE, 250, "2.0.0", ""
        if dmarc.result == "permerror":
            return QUARANTINE, 250, "2.0.0", ""
    return ACCEPT, 250, "2.0.0", ""
