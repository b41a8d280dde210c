"""SPF (RFC 7208) for the MAIL FROM and HELO identities, with pyspf on our DNS.

Why pyspf: it is the reference-grade evaluator (macros, include/redirect,
void-lookup and ten-term limits, RFC 7208 4.6.4).  Its only DNS entry point
is the module function ``spf.DNSLookup``; we replace it, once, by a
dispatcher that answers from the :class:`~mailsuite.mailauth.bridge.ThreadLookups`
of the check running in the current thread (a thread-local), and falls back
to pyspf's own function for any other caller in the process.

Implementation notes:

* :func:`check_spf` blocks: it runs in a worker thread, never on the reactor.
* DNS failures become pyspf ``TempError`` -> ``temperror``; exceeding our
  per-message query cap becomes ``PermError`` -> ``permerror``.
* A null reverse-path is checked as ``postmaster@<HELO>`` (RFC 7208 2.4).
* A HELO that is not a fully qualified domain name (an address literal,
  a bare word) gets ``none`` without any lookup (RFC 7208 2.3).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import spf

from mailsuite.mailauth.bridge import LookupLimitExceeded, ThreadLookups
from mailsuite.resolver import DNSFailure
from mailsuite.mailauth.names import is_domain_name

#: Whole-check time limit handed to pyspf (RFC 7208 4.6.4 says at least 20 seconds).
QUERY_TIME = 20
#: SPF results as RFC 8601 2.7.2 names them.
RESULTS = frozenset({"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"})


_current = threading.local()
_library_lookup = spf.DNSLookup


def _dns_lookup(name: str, qtype: str, strict: Any = True, timeout: Any = None) -> list[tuple[tuple[str, str], Any]]:
    """pyspf's DNS entry point: (name, type) -> [((name, type), value), ...]."""
    lookups: ThreadLookups | None = getattr(_current, "lookups", None)
    if lookups is None:
        return _library_lookup(name, qtype, strict, timeout)  # type: ignore[no-any-return]
    if qtype not in ("A", "AAAA", "MX", "TXT", "PTR"):
        return []  # type SPF (99) is obsolete (RFC 7208 3.1)
    try:
        answer = lookups.lookup(name, qtype)
    except DNSFailure as e:
        raise spf.TempError(f"DNS {e}") from None
    except LookupLimitExceeded as e:
        raise spf.PermError(str(e)) from None
    if qtype == "TXT":
        return [((name, qtype), list(parts)) for parts in answer.values]
    return [((name, qtype), value) for value in answer.values]


spf.DNSLookup = _dns_lookup


@dataclass(frozen=True)
class SPFResult:
    """One SPF evaluation: ``identity`` is "mailfrom" or "helo"; ``subject`` the checked address or name."""

    identity: str
    result: str
    subject: str
    domain: str
    explanation: str = ""



def _evaluate(lookups: ThreadLookups, ip: str, sender: str, helo: str, receiver: str) -> tuple[str, str]:
    _current.lookups = lookups
    try:
        query = spf.query(i=ip, s=sender, h=helo, receiver=receiver, strict=True, querytime=QUERY_TIME)
        result, _code, explanation = query.check()
    finally:
        _current.lookups = None
    result = str(result).lower()
    if result not in RESULTS:
        result = "permerror"
    return result, str(explanation)


def check_helo(lookups: ThreadLookups, ip: str, helo: str, receiver: str) -> SPFResult:
    """SPF for the HELO identity (RFC 7208 2.3); blocks, run in a worker thread."""
    name = helo.rstrip(".").lower()
    if not is_domain_name(name):
        return SPFResult("helo", "none", helo, "", "HELO is not a domain name")
    result, explanation = _evaluate(lookups, ip, f"postmaster@{name}", name, receiver)
    return SPFResult("helo", result, name, name, explanation)


def check_mail_from(lookups: ThreadLookups, ip: str, mail_from: str, helo: str, receiver: str,
                    helo_result: SPFResult | None = None) -> SPFResult:
    """SPF for the MAIL FROM identity (RFC 7208 2.4); blocks, run in a worker thread.

    A null reverse-path reuses the HELO result (postmaster@HELO is the identity).
    """
    if not mail_from:
        helo_result = helo_result or check_helo(lookups, ip, helo, receiver)
        return SPFResult("mailfrom", helo_result.result, f"postmaster@{helo_result.domain}" if helo_result.domain else "",
                         helo_result.domain, helo_result.explanation)
    local, at, domain = mail_from.rpartition("@")
    domain = domain.rstrip(".").lower()
    if not at or not local or not is_domain_name(domain):
        return SPFResult("mailfrom", "none", mail_from, domain, "MAIL FROM domain is not a domain name")
    result, explanation = _evaluate(lookups, ip, mail_from, helo or domain, receiver)
    return SPFResult("mailfrom", result, mail_from, domain, explanation)
