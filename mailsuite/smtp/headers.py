"""Trace and missing header fields added to accepted messages.

Implementation notes:

- Everything here is written into the ``header_prefix`` handed to the store
  (per local mailbox) and to the queue, never into the message bytes, so the
  received message is stored exactly as sent, behind the added lines.
- Received (RFC 5321 4.4): ``from <helo> ([ip]) by <hostname> with
  <protocol> id <id> [(TLS details)] [for <rcpt>]; <date>``.  The protocol
  keyword comes from the RFC 3848 / RFC 6531 registry (ESMTP, ESMTPS, ESMTPA,
  ESMTPSA, UTF8SMTP...).  The authenticated user's name is not shown (as
  Postfix does by default); ``A`` in the keyword says there was one.
- Return-Path (RFC 5321 4.4) and Delivered-To (the final local mailbox) are
  added only for local delivery.
- On submission, Message-ID and Date are added when the message has none
  (RFC 6409 8.2, 8.3), and From (RFC 5322 3.6: required) with the envelope
  sender, or the authenticated user for ``MAIL FROM:<>``, as Postfix does
  for its rewrite clients.  The policy has checked that address is theirs.
- :meth:`HeaderScanner.header` hands the header block to the policy's
  From/Sender check; :func:`field_values` unfolds fields (RFC 5322 2.2.3).
- Header field values are folded at 78 columns where they may be long and
  never contain CR or LF from client input (the HELO name is checked by the
  server, addresses by the parser).
"""

from __future__ import annotations

import email.utils
import functools
import itertools
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from email import errors as email_errors
from email.headerregistry import AddressHeader

#: How much of the message's start is examined for existing header fields.
HEADER_SCAN_LIMIT = 256 * 1024

_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.MULTILINE)


@dataclass(frozen=True)
class TLSInfo:
    """Negotiated TLS parameters for the Received header."""

    version: str  # "TLSv1.3"
    cipher: str  # "TLS_AES_256_GCM_SHA384"
    bits: int | None = None


def protocol_keyword(*, esmtp: bool, tls: bool, authenticated: bool, utf8: bool) -> str:
    """The ``with`` keyword of RFC 3848 / RFC 6531 3.7.3 for a session's state."""
    if utf8:
        base = "UTF8SMTP"
    else:
        base = "ESMTP" if esmtp else "SMTP"
        if not esmtp and (tls or authenticated):
            base = "ESMTP"  # TLS and AUTH exist only with EHLO
    return base + ("S" if tls else "") + ("A" if authenticated else "")


_ID_PROCESS = secrets.token_hex(3)  # tells this process's ids from other processes'
_ID_COUNTER = itertools.count(1)


def new_id() -> str:
    """A short unique id for logs and the Received header (also the Message-ID's left part).

    Milliseconds, a per-process random part and a counter: unique without a
    random draw (a system call) per message.
    """
    return f"{int(time.time() * 1000):x}{_ID_PROCESS}{next(_ID_COUNTER):x}"


_date_cache: list[tuple[int, str]] = [(-1, "")]


def date_text(when: float | None = None) -> str:
    """RFC 5322 date-time of ``when`` (now by default).

    It names whole seconds, so the text is made once per second:
    email.utils.formatdate took about 20 us, a few percent of the reactor
    thread's work per accepted message.
    """
    second = int(time.time() if when is None else when)
    cached_second, text = _date_cache[0]
    if cached_second != second:
        text = email.utils.formatdate(second, localtime=False)
        _date_cache[0] = (second, text)
    return text


def received(*, helo: str, ip: str, hostname: str, protocol: str, queue_id: str, tls: TLSInfo | None, recipient: str | None, when: float | None = None) -> bytes:
    """One Received field, folded, CRLF-terminated."""
    literal = f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"
    lines = [f"Received: from {helo} ({literal})", f"\tby {hostname} (mailsuite) with {protocol} id {queue_id}"]
    if tls is not None:
        bits = f" ({tls.bits}/{tls.bits} bits)" if tls.bits else ""
        lines.append(f"\t(using {tls.version} with cipher {tls.cipher}{bits})")
    if recipient is not None:
        lines.append(f"\tfor <{recipient}>")
    lines[-1] += ";"
    lines.append("\t" + date_text(when))
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


class HeaderScanner:
    """Watches the start of a message for its header field names (Message-ID, Date, Received count)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.complete = False
        self.truncated = False  # the header ran past HEADER_SCAN_LIMIT: its end was not seen

    def feed(self, data: bytes) -> None:
        """Look at the next message bytes (cheap once the header has been seen)."""
        if self.complete:
            return
        self._buffer += data[: HEADER_SCAN_LIMIT - len(self._buffer) + 4]
        end = self._buffer.find(b"\r\n\r\n")
        if self._buffer.startswith(b"\r\n"):
            end = 0
        if end >= 0:
            del self._buffer[end + 2 :]
            self.complete = True
        elif len(self._buffer) >= HEADER_SCAN_LIMIT:
            self.complete = True
            self.truncated = True

    def header(self) -> bytes | None:
        """The header block seen (the whole message when it has no body), or None when it was too long to keep."""
        return None if self.truncated else bytes(self._buffer)

    def field_names(self) -> list[str]:
        """Lower-cased names of the header fields seen, in order."""
        return [m.group(1).decode("ascii").lower() for m in _FIELD.finditer(bytes(self._buffer))]


def field_values(header: bytes, name: str) -> list[str]:
    """The unfolded values of every ``name`` field (case-insensitive) in a header block, in order.

    Bytes are read as UTF-8 (RFC 6532); one that is not becomes U+FFFD, which
    no address contains.  Every line that starts with the name and a colon
    is a field, also after a line that is neither a field nor a
    continuation (a reader may go on reading fields there).  Unfolding
    removes the CRLFs only (RFC 5322 2.2.3).
    """
    text = header.decode("utf-8", "replace")
    return [m.group(1).replace("\r\n", "") for m in _field_pattern(name).finditer(text)]


@functools.lru_cache(maxsize=16)
def _field_pattern(name: str) -> re.Pattern[str]:
    # RFC 5322 3.6.8 / 4.5: a field name, optional white space (obsolete syntax), a colon,
    # the rest of the line and every continuation line after it (CR and LF only come as CRLF).
    return re.compile(rf"^{re.escape(name)}[ \t]*:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", re.IGNORECASE | re.MULTILINE | re.ASCII)


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: What the strict parser may note about an address list that still names its addresses plainly:
#: obsolete forms (route, empty list elements, RFC 5322 4.4) and UTF-8 local parts (RFC 6532 3.2).
_HARMLESS_DEFECTS = (email_errors.ObsoleteHeaderDefect, email_errors.NonASCIILocalPartDefect)


_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"  # RFC 5322 3.2.3
_PLAIN_ADDRESS = rf"{_ATEXT}+(?:\.{_ATEXT}+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PLAIN_NAME = rf'(?:{_ATEXT}+(?:[ \t]+{_ATEXT}+)*|"[ \t!#-\[\]-~]*")'
#: ``addr@domain`` or ``Name <addr@domain>`` in plain ASCII: what nearly every client writes, read
#: without the stdlib's slow parser (~0.1-0.5 ms); tests check both readings agree.
_PLAIN_MAILBOX = re.compile(rf"[ \t]*(?:({_PLAIN_ADDRESS})|(?:{_PLAIN_NAME}[ \t]*)?<({_PLAIN_ADDRESS})>)[ \t]*\Z")


def mailbox_addresses(value: str) -> list[str]:
    """Every address (``local@domain``) an address-list field value names, groups flattened; ValueError if unclear.

    For deciding who a From or Sender field claims to be, a value is read by
    two parsers: the standard library's strict RFC 5322 one (which must find
    nothing worse than obsolete syntax) and its lenient one (what much mail
    software does).  Every address either finds is returned, so a value they
    read differently (``alice@a.test <ceo@a.test>``, quotes, control
    characters) cannot hide an address from the check.  Encoded words
    (RFC 2047) are not decoded: a display name is not an address, and an
    encoded word where an address belongs is no address.
    """
    if value.isascii() and "=?" not in value:
        plain = _PLAIN_MAILBOX.match(value)
        if plain:
            return [plain.group(1) or plain.group(2)]
    return _parsed_addresses(value)


def _parsed_addresses(value: str) -> list[str]:
    """:func:`mailbox_addresses` by the two parsers (any value)."""
    if _CONTROL.search(value):
        raise ValueError("control character in the field")
    parsed: dict[str, Any] = {}
    try:
        AddressHeader.parse(value, parsed)
    except Exception as e:  # the parser trips over some malformed values (IndexError on "<")
        raise ValueError("cannot be parsed") from e
    bad = [d for d in parsed["defects"] if not isinstance(d, _HARMLESS_DEFECTS)]
    if bad:
        raise ValueError(f"cannot be parsed ({bad[0]})")
    found: dict[str, None] = {}
    for group in parsed["groups"]:
        for mailbox in group.addresses:
            found[f"{mailbox.username}@{mailbox.domain}" if mailbox.domain else mailbox.username] = None
    for _name, address in email.utils.getaddresses([value]):
        if address:
            local, at, domain = address.rpartition("@")
            if len(local) >= 2 and local[0] == local[-1] == '"':
                address = email.utils.unquote(local) + at + domain
            found.setdefault(address, None)
    if not found:
        raise ValueError("names no address")
    return list(found)


def submission_additions(names: list[str], hostname: str, queue_id: str, when: float | None = None, author: str = "") -> bytes:
    """Message-ID, Date and From fields for a submitted message that lacks them (RFC 6409 8.2, 8.3; RFC 5322 3.6)."""
    out = b""
    if author and "from" not in names:
        out += f"From: <{author}>\r\n".encode("utf-8")
    if "message-id" not in names:
        out += f"Message-ID: <{queue_id}@{hostname}>\r\n".encode("utf-8")
    if "date" not in names:
        out += f"Date: {date_text(when)}\r\n".encode("ascii")
    return out
