"""Sender Rewriting Scheme: forward mail to other domains without breaking the sender's SPF.

When an alias forwards a message from ``alice@sender.example`` to
``bob@elsewhere.example``, our server becomes the one sending it; under the
original envelope sender the receiving side's SPF check (RFC 7208) would
fail.  SRS rewrites the envelope sender to an address in our domain that
encodes the original one, signed, so that a bounce can be sent back to it
and reversed, and nobody else can use our domain as a bounce relay.

Format (Shevek's SRS paper, as postsrsd and Exim write it)::

    SRS0=HHHH=TT=sender.example=alice@our.example
    SRS1=HHHH=first.example==HHHH=TT=sender.example=alice@our.example

``HHHH`` is the first four base64 characters of HMAC-SHA1(secret, the rest,
case-folded), ``TT`` the day number modulo 1024 in base32; an address older
than ``max_age`` days, or with a wrong hash, is forged.  An address already
rewritten by another forwarder (SRS0 from elsewhere) becomes SRS1, which
keeps the first forwarder's part so the bounce goes back through it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from mailsuite.errors import MailError

_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_DAY = 86400


class ForgedSRS(MailError):
    """An SRS address whose hash or time stamp does not check out: refuse the bounce."""

    code, enhanced, default_text = 550, "5.7.1", "Invalid or expired SRS address"


class SRS:
    """Forward and reverse SRS addresses for one domain and secret."""

    def __init__(self, secret: str, domain: str, *, max_age_days: int = 21, clock: object = None) -> None:
        if not secret:
            raise ValueError("an SRS secret is required")
        self.secret = secret.encode("utf-8")
        self.domain = domain.lower()
        self.max_age_days = max_age_days
        self._clock = clock

    def _now(self) -> float:
        return self._clock.seconds() if self._clock is not None else time.time()  # type: ignore[attr-defined]

    def _hash(self, *parts: str) -> str:
        digest = hmac.new(self.secret, "".join(parts).lower().encode("utf-8"), hashlib.sha1).digest()
        return base64.b64encode(digest).decode("ascii")[:4]

    def _stamp(self) -> str:
        day = int(self._now() // _DAY) % 1024
        return _BASE32[day >> 5] + _BASE32[day & 31]

    def _stamp_ok(self, stamp: str) -> bool:
        if len(stamp) != 2 or any(c not in _BASE32 for c in stamp.upper()):
            return False
        then = (_BASE32.index(stamp[0].upper()) << 5) | _BASE32.index(stamp[1].upper())
        today = int(self._now() // _DAY) % 1024
        return (today - then) % 1024 <= self.max_age_days

    @staticmethod
    def is_srs(address: str) -> bool:
        """True for an SRS0/SRS1 local part (any domain)."""
        return address[:5].upper() in ("SRS0=", "SRS0-", "SRS0+", "SRS1=", "SRS1-", "SRS1+")

    def forward(self, sender: str) -> str:
        """The envelope sender to use when forwarding mail from ``sender`` ("" stays "")."""
        if not sender or "@" not in sender:
            return sender
        local, _, domain = sender.rpartition("@")
        if domain.lower() == self.domain:
            return sender  # already ours (our own SRS or our own user)
        if local[:5].upper() == "SRS0=":
            # SRS0=HHHH=TT=orig.domain=user@first.forwarder -> SRS1=HHHH=first.forwarder==HHHH=TT=...
            rest = local[4:]
            return f"SRS1={self._hash(domain, rest)}={domain}={rest}@{self.domain}"
        if local[:5].upper() == "SRS1=":
            # SRS1=HHHH=first.forwarder==... from another forwarder: keep the first forwarder
            _, first, rest = local[5:].split("=", 2) if local.count("=") >= 3 else ("", domain, local[4:])
            return f"SRS1={self._hash(first, rest)}={first}={rest}@{self.domain}"
        stamp = self._stamp()
        return f"SRS0={self._hash(stamp, domain, local)}={stamp}={domain}={local}@{self.domain}"

    def reverse(self, address: str) -> str:
        """The address an SRS recipient stands for; :class:`ForgedSRS` when it does not verify."""
        local, _, domain = address.rpartition("@")
        kind = local[:4].upper()
        if kind == "SRS0":
            parts = local[5:].split("=", 3)
            if len(parts) != 4:
                raise ForgedSRS()
            hash_, stamp, orig_domain, orig_local = parts
            if not hmac.compare_digest(hash_.lower(), self._hash(stamp, orig_domain, orig_local).lower()) or not self._stamp_ok(stamp):
                raise ForgedSRS()
            return f"{orig_local}@{orig_domain}"
        if kind == "SRS1":
            parts = local[5:].split("=", 2)
            if len(parts) != 3 or not parts[2].startswith("="):
                raise ForgedSRS()
            hash_, first, rest = parts[0], parts[1], parts[2][1:]
            if not hmac.compare_digest(hash_.lower(), self._hash(first, "=" + rest).lower()):
                raise ForgedSRS()
            return f"SRS0={rest}@{first}"  # back to the first forwarder, which reverses its own SRS0
        raise ForgedSRS("Not an SRS address")


def open_srs(context: object) -> None:
    """Set ``context.srs`` when ``srs.enabled`` (a PART of mailsuite.service)."""
    config = context.config  # type: ignore[attr-defined]
    settings = config.srs
    if not settings.enabled:
        return
    domain = settings.domain or (config.domains[0] if config.domains else config.hostname)
    context.srs = SRS(settings.secret, domain, max_age_days=settings.max_age_days)  # type: ignore[attr-defined]
