"""ARC (RFC 8617): checking an incoming chain and sealing mail we forward, with dkimpy.

Why: a message forwarded through an alias to another domain arrives there
from our IP (SPF fails for the original sender) and possibly with a footer
or refolded headers; the ARC set we add vouches for the results we saw.

Implementation notes:

* :func:`verify_arc` and :func:`seal` block (DNS through the bridge, RSA):
  worker threads only.
* Incoming chain: ``arc=pass|fail|none`` (``temperror`` when a key lookup
  met a DNS failure) goes into our Authentication-Results, which is what
  the seal's ``cv=`` is taken from (RFC 8617 5.1.1).
* Sealing needs our Authentication-Results field on top of the message (the
  ARC-Authentication-Results copy is made from it) and an RSA key of
  ``mailauth.arc_domain`` (RFC 8617 allows rsa-sha256 only for now).
"""

from __future__ import annotations

from typing import Any

import dkim

from mailsuite.mailauth.bridge import LookupLimitExceeded, ThreadLookups
from mailsuite.mailauth.dkimcheck import MIN_KEY_BITS
from mailsuite.resolver import DNSFailure, txt_strings
from mailsuite.mailauth.keys import SigningKey

#: ARC sets checked at most (RFC 8617 4.2.1 allows 50 instances).
MAX_INSTANCES = 50


def has_arc(headers: list[tuple[bytes, bytes]]) -> bool:
    """True when the message carries any ARC-Seal field."""
    return any(name.strip().lower() == b"arc-seal" for name, _ in headers)


def verify_arc(message: bytes, lookups: ThreadLookups) -> str:
    """The chain validation result of ``message``: pass, fail, none or temperror."""
    temporary = [False]

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            answer = lookups.lookup(text, "TXT")
        except (DNSFailure, LookupLimitExceeded) as e:
            temporary[0] = True
            raise dkim.DnsTimeoutError(str(e)) from None
        keys = [r for r in txt_strings(answer) if b"p=" in r]
        return keys[0] if keys else None

    try:
        cv, _results, _comment = dkim.arc_verify(message, dnsfunc=dnsfunc, minkey=MIN_KEY_BITS)
    except Exception:  # malformed chains dkimpy did not foresee: a broken chain
        cv = dkim.CV_Fail
    if temporary[0] and cv != dkim.CV_Pass:
        return "temperror"
    result = cv.decode("ascii") if isinstance(cv, bytes) else str(cv)
    return result if result in ("pass", "fail", "none") else "fail"


def seal(message: bytes, key: SigningKey, authserv_id: str) -> bytes:
    """The ARC set (ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results) to prepend; b"" if impossible.

    ``message`` must start with our Authentication-Results field.
    """
    if not key.algorithm.startswith("rsa"):
        return b""
    try:
        fields: list[Any] = dkim.arc_sign(message, key.selector.encode("ascii"), key.domain.encode("ascii"), key.private,
                                          authserv_id.encode("ascii"), linesep=b"\r\n")
    except dkim.DKIMException:
        return b""  # no From, too many instances...: forward unsealed rather than not at all
    return b"".join(fields)
