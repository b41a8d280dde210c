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
  (RFC 6409 8.2, 8.3).
- Header field values are folded at 78 columns where they may be long and
  never contain CR or LF from client input (the HELO name is checked by the
  server, addresses by the parser).
"""

from __future__ import annotations

import email.utils
import itertools
import re
import secrets
import time
from dataclasses import dataclass

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

    def field_names(self) -> list[str]:
        """Lower-cased names of the header fields seen, in order."""
        return [m.group(1).decode("ascii").lower() for m in _FIELD.finditer(bytes(self._buffer))]


def submission_additions(names: list[str], hostname: str, queue_id: str, when: float | None = None) -> bytes:
    """Message-ID and Date fields for a submitted message that lacks them (RFC 6409 8.2, 8.3)."""
    out = b""
    if "message-id" not in names:
        out += f"Message-ID: <{queue_id}@{hostname}>\r\n".encode("utf-8")
    if "date" not in names:
        out += f"Date: {date_text(when)}\r\n".encode("ascii")
    return out
