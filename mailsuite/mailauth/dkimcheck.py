"""DKIM verification (RFC 6376, ed25519 per RFC 8463) of every signature, with dkimpy on our DNS.

Implementation notes:

* :func:`verify_dkim` blocks (body hashing, RSA, DNS through the bridge): it
  runs in a worker thread.
* Each signature gets its own RFC 8601 2.7.1 result: ``pass``; ``fail``
  (signature or body hash does not match); ``neutral`` (the signature header
  cannot be parsed or lacks required tags); ``permerror`` (no usable key in
  DNS, key too small); ``temperror`` (the key lookup met a DNS failure).
* At most :data:`MAX_SIGNATURES` signatures are checked, topmost first: a
  message cannot make us do unbounded work by carrying hundreds.
* Keys shorter than 1024 bits fail (RFC 8301 3.2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import dkim
from dkim.util import parse_tag_value

from mailsuite.mailauth import speedups  # noqa: F401  (installs the faster dkimpy steps)
from mailsuite.mailauth.bridge import LookupLimitExceeded, ThreadLookups
from mailsuite.resolver import DNSFailure, txt_strings

#: Signatures verified per message, topmost first.
MAX_SIGNATURES = 8
#: Smallest RSA key accepted (RFC 8301 3.2).
MIN_KEY_BITS = 1024

_TOKEN = re.compile(rb"^[A-Za-z0-9._+-]{1,253}$")


@dataclass(frozen=True)
class DKIMResult:
    """The outcome for one DKIM-Signature header (values already safe to print)."""

    result: str
    domain: str = ""
    selector: str = ""
    algorithm: str = ""
    #: The first 8 characters of b= (RFC 6008), telling signatures of one domain apart.
    b_prefix: str = ""
    reason: str = ""


def _token(value: bytes | None) -> str:
    if value is None:
        return ""
    value = value.strip()
    return value.decode("ascii").lower() if _TOKEN.match(value) else ""


def _b_prefix(value: bytes | None) -> str:
    if not value:
        return ""
    clean = re.sub(rb"[^A-Za-z0-9+/]", b"", value)[:8]
    return clean.decode("ascii")


class _KeyLookup:
    """dkimpy's ``dnsfunc`` for one signature: TXT from the bridge, noting what went wrong."""

    def __init__(self, lookups: ThreadLookups) -> None:
        self._lookups = lookups
        self.temporary = False
        self.missing = False

    def __call__(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            answer = self._lookups.lookup(text, "TXT")
        except DNSFailure as e:
            self.temporary = True
            raise dkim.DnsTimeoutError(str(e)) from None
        except LookupLimitExceeded as e:
            self.temporary = True
            raise dkim.DnsTimeoutError(str(e)) from None
        records = txt_strings(answer)
        # RFC 6376 3.6.2.2: one record expected; prefer the one that holds a key.
        keys = [r for r in records if b"p=" in r]
        if not keys:
            self.missing = True
            return None
        return keys[0]


def verify_dkim(message: bytes, lookups: ThreadLookups, max_signatures: int = MAX_SIGNATURES) -> list[DKIMResult]:
    """Results for the DKIM-Signature headers of ``message``, topmost first; [] when unsigned."""
    try:
        verifier = dkim.DKIM(message, minkey=MIN_KEY_BITS)
    except dkim.DKIMException:
        return []
    return verify_parsed(verifier, lookups, max_signatures)


def verify_parsed(verifier: Any, lookups: ThreadLookups, max_signatures: int = MAX_SIGNATURES) -> list[DKIMResult]:
    """Like :func:`verify_dkim` for a message dkimpy has parsed already (``dkim.DKIM(message, minkey=...)``)."""
    signatures = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    results = []
    for idx, header in enumerate(signatures[:max_signatures]):
        results.append(_verify_one(verifier, idx, header, lookups))
    return results


def _verify_one(verifier: Any, idx: int, header: bytes, lookups: ThreadLookups) -> DKIMResult:
    try:
        tags = parse_tag_value(header)
    except Exception:
        return DKIMResult("neutral", reason="unparsable signature")
    described = {
        "domain": _token(tags.get(b"d")),
        "selector": _token(tags.get(b"s")),
        "algorithm": _token(tags.get(b"a")),
        "b_prefix": _b_prefix(tags.get(b"b")),
    }
    try:
        if not verifier.verify_headerprep(idx):
            return DKIMResult("neutral", reason="signature not found", **described)
    except dkim.DKIMException as e:
        return DKIMResult("neutral", reason=f"bad signature header: {type(e).__name__}", **described)
    key_lookup = _KeyLookup(lookups)
    try:
        ok = verifier.verify(idx, dnsfunc=key_lookup)
    except dkim.ValidationError:
        ok = False  # body hash mismatch and the like
    except dkim.KeyFormatError:
        return DKIMResult("permerror", reason="unusable key", **described)  # also: RSA key under 1024 bits
    except dkim.DKIMException as e:
        return DKIMResult("permerror", reason=type(e).__name__, **described)
    except Exception:  # a malformed key or signature dkimpy did not foresee: not our failure, not a pass
        return DKIMResult("permerror", reason="unprocessable signature", **described)
    if key_lookup.temporary:
        return DKIMResult("temperror", reason="key lookup failed", **described)
    if key_lookup.missing:
        return DKIMResult("permerror", reason="no key", **described)
    if ok:
        return DKIMResult("pass", **described)
    return DKIMResult("fail", reason="signature did not verify", **described)
