"""DKIM signing (RFC 6376) of mail submitted by authenticated users.

Implementation notes:

* relaxed/relaxed canonicalisation (RFC 6376 3.4): survives the header
  refolding and trailing-whitespace changes relays commonly make.
* Header list: :data:`SIGNED_HEADERS` that the message has, each as often
  as it occurs; the fields in :data:`OVERSIGNED` are listed once more than
  they occur, so nobody can add a second From/Subject/... (or a first
  Reply-To/Cc) without breaking the signature (RFC 6376 8.15).
* One signature per key of the domain (an RSA and an Ed25519 key give the
  dual signature RFC 8463 3 recommends); a message without From, or a domain
  without keys, is not signed (``b""``).
* Only a message whose From names the signing domain alone is signed (read
  as DMARC reads it, :func:`~mailsuite.mailauth.dmarc.from_domains`): a
  signature makes DMARC pass for the From domain (RFC 7489 3.1.1), so
  signing a From the sender does not own would vouch for a forgery.  The
  SMTP policy picks the domain from a From it has checked is the user's;
  this is the second lock, should that check ever be skipped.
* Whatever is signed must reach the recipient unchanged: the caller prepends
  the result to exactly the bytes it passed (its own added headers
  included), and the queue must not rewrite headers or re-encode the body.
* dkimpy's slow steps (pure-Python RSA, whole-body regexes) are replaced by
  identical, faster ones in :mod:`.speedups` (imported here).
"""

from __future__ import annotations

from typing import Iterable

import dkim

from mailsuite.mailauth import dmarc, speedups  # noqa: F401  (speedups installs the faster dkimpy steps)

from mailsuite.mailauth.keys import KeyStore, SigningKey

SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from", b"sender", b"reply-to", b"subject", b"date", b"message-id", b"to", b"cc",
    b"mime-version", b"content-type", b"content-transfer-encoding", b"content-id", b"content-description",
    b"resent-date", b"resent-from", b"resent-sender", b"resent-to", b"resent-cc", b"resent-message-id",
    b"in-reply-to", b"references", b"list-id", b"list-help", b"list-unsubscribe", b"list-unsubscribe-post",
    b"list-subscribe", b"list-post", b"list-owner", b"list-archive",
)
OVERSIGNED: frozenset[bytes] = frozenset({b"from", b"reply-to", b"subject", b"date", b"to", b"cc", b"message-id"})


def header_list(field_names: Iterable[bytes]) -> list[bytes]:
    """The h= list for a message whose header has ``field_names`` (in order, repeats included)."""
    counts: dict[bytes, int] = {}
    for name in field_names:
        key = name.strip().lower()
        counts[key] = counts.get(key, 0) + 1
    names: list[bytes] = []
    for name in SIGNED_HEADERS:
        times = counts.get(name, 0) + (1 if name in OVERSIGNED else 0)
        names.extend([name] * times)
    return names


def sign_with(message: bytes, keys: Iterable[SigningKey], *, from_domain_only: bool = True) -> bytes:
    """DKIM-Signature header field(s), CRLF-terminated, for ``message`` under each key.

    ``from_domain_only``: a key signs only when the message's From names its
    domain alone (see the module notes); False is for tests that need a
    signature of some other domain.
    """
    signer = dkim.DKIM(message, linesep=b"\r\n")
    present = [name for name, _ in signer.headers]
    if b"from" not in (n.lower() for n in present):
        return b""
    authors = dmarc.from_domains(value for name, value in signer.headers if name.strip().lower() == b"from")
    include = header_list(present)
    out = []
    for key in keys:
        if from_domain_only and authors != [key.domain.lower()]:
            continue
        out.append(signer.sign(
            key.selector.encode("ascii"), key.domain.encode("ascii"), key.private,
            signature_algorithm=key.algorithm.encode("ascii"),
            canonicalize=(b"relaxed", b"relaxed"), include_headers=include,
        ))
    return b"".join(out)


class Signer:
    """Signs for every domain that has keys in the :class:`KeyStore`."""

    def __init__(self, keys: KeyStore, enabled: bool = True) -> None:
        self.keys = keys
        self.enabled = enabled

    def sign(self, message: bytes, domain: str, *, from_domain_only: bool = True) -> bytes:
        """The DKIM-Signature line(s) to prepend for ``domain``; ``b""`` when disabled, keyless or not the From's domain."""
        if not self.enabled:
            return b""
        keys = self.keys.keys_for(domain)
        if not keys:
            return b""
        return sign_with(message, keys, from_domain_only=from_domain_only)
