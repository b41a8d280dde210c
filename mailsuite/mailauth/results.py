"""The Authentication-Results header (RFC 8601): writing ours, removing forged ones.

Implementation notes:

* Our header names this host (``authserv-id`` = config ``hostname``) and
  lists one ``method=result`` per check with its properties (RFC 8601 2.2):
  ``spf`` with ``smtp.mailfrom`` and ``smtp.helo``, each ``dkim`` signature
  with ``header.d``/``header.s``/``header.a``/``header.b`` (RFC 6008), and
  ``dmarc`` with ``header.from``.  Values come only from checked tokens;
  a local part that is not a dot-atom is left out (the domain stays).
* RFC 8601 5: an incoming Authentication-Results field whose authserv-id is
  ours is a forgery (or a loop) and is removed before delivery.
  :class:`ResultsFilter` does that while the message streams in, holding
  only the lines of the Authentication-Results field being read.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Sequence

from mailsuite.mailauth.names import is_domain_name

if TYPE_CHECKING:  # the checks' modules pull in dkimpy and pyspf; the SMTP server needs only the filter
    from mailsuite.mailauth.dkimcheck import DKIMResult
    from mailsuite.mailauth.dmarc import DMARCOutcome
    from mailsuite.mailauth.spfcheck import SPFResult

_DOT_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_FIELD = b"authentication-results"
#: An Authentication-Results field longer than this is dropped whoever it claims to be from.
MAX_HELD = 64 * 1024


def _address_value(address: str, domain: str) -> str:
    local, at, _ = address.rpartition("@")
    if at and _DOT_ATOM.match(local) and is_domain_name(domain):
        return f"{local}@{domain}"
    return domain if is_domain_name(domain) else ""


def format_header(authserv_id: str, *, client_ip: str = "", spf_mail_from: SPFResult | None = None,
                  spf_helo: SPFResult | None = None, dkim_results: Sequence[DKIMResult] = (),
                  arc: str | None = None, dmarc: DMARCOutcome | None = None) -> bytes:
    """The ``Authentication-Results:`` field, folded, CRLF-terminated."""
    parts: list[str] = []
    try:
        ip = str(ipaddress.ip_address(client_ip))
    except ValueError:
        ip = ""
    if spf_mail_from is not None:
        value = _address_value(spf_mail_from.subject, spf_mail_from.domain)
        comment = f" (sender IP is {ip})" if ip else ""
        parts.append(f"spf={spf_mail_from.result}{comment}" + (f" smtp.mailfrom={value}" if value else ""))
    if spf_helo is not None and spf_helo.domain:
        parts.append(f"spf={spf_helo.result} smtp.helo={spf_helo.domain}")
    for r in dkim_results:
        props = []
        if r.domain:
            props.append(f"header.d={r.domain}")
        if r.selector:
            props.append(f"header.s={r.selector}")
        if r.algorithm:
            props.append(f"header.a={r.algorithm}")
        if r.b_prefix:
            props.append(f'header.b="{r.b_prefix}"')
        reason = f" ({r.reason})" if r.reason else ""
        parts.append(f"dkim={r.result}{reason}" + "".join(" " + p for p in props))
    if arc is not None:
        parts.append(f"arc={arc}")  # RFC 8617 4.4: the chain validation status we saw
    if dmarc is not None:
        comment = f" (p={dmarc.policy} dis={dmarc.disposition})" if dmarc.result in ("pass", "fail") else ""
        domain = f" header.from={dmarc.from_domain}" if dmarc.from_domain and is_domain_name(dmarc.from_domain) else ""
        parts.append(f"dmarc={dmarc.result}{comment}{domain}")
    if not parts:
        parts.append("none")  # RFC 8601 2.2: no method was applied
    text = f"Authentication-Results: {authserv_id};\r\n\t" + ";\r\n\t".join(parts) + "\r\n"
    return text.encode("ascii", "replace")


def authserv_id_of(value: bytes) -> str:
    """The authserv-id at the start of an Authentication-Results value (comments and folding skipped)."""
    text = value.decode("ascii", "replace")
    i, depth = 0, 0
    while i < len(text):
        c = text[i]
        if depth:
            if c == "\\":
                i += 1
            elif c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
        elif c == "(":
            depth = 1
        elif not c.isspace():
            break
        i += 1
    match = re.match(r"[^\s;()]+", text[i:])
    return match.group(0).lower() if match else ""


class ResultsFilter:
    """Streams a message through, dropping Authentication-Results fields that claim ``authserv_id``.

    ``feed(line)`` takes one line (with its line end), ``feed_bytes(chunk)``
    any piece of the data as it arrives; both return the bytes to keep so far.
    ``close()`` returns whatever is still held.  Everything after the header
    passes untouched; only the lines of an Authentication-Results field are
    held (at most :data:`MAX_HELD` bytes, beyond which the field is dropped).
    """

    def __init__(self, authserv_id: str) -> None:
        self.authserv_id = authserv_id.lower()
        self._in_body = False
        self._held: list[bytes] = []
        self._held_size = 0
        self._dropping = False  # inside a field dropped early (over-long): its continuation lines go too
        self._partial = b""  # feed_bytes: the start of a line whose end has not come yet
        self._line_mode: str | None = None  # rest of an over-long line: "pass" or "drop"
        #: How many fields were dropped (for logs and tests).
        self.removed = 0

    def feed(self, line: bytes) -> bytes:
        """The bytes to write for this line (maybe earlier held lines too, maybe nothing yet)."""
        if self._in_body:
            return line
        if line[:1] in (b" ", b"\t"):
            if self._dropping:
                return b""
            if self._held:
                self._held.append(line)
                self._held_size += len(line)
                return b""
            return line
        out = self._release()
        self._dropping = False
        if line in (b"\r\n", b"\n"):
            self._in_body = True
            return out + line
        name = line.split(b":", 1)[0].strip().lower()
        if name == _FIELD and b":" in line:
            self._held = [line]
            self._held_size = len(line)
            return out
        return out + line

    def feed_bytes(self, data: bytes) -> bytes:
        """Like :meth:`feed` for arbitrary chunks (DATA/BDAT pieces): lines are reassembled here."""
        if self._in_body and not self._partial:
            return data
        out: list[bytes] = []
        pos = 0
        while pos < len(data):
            if self._in_body:
                out.append(data[pos:])
                break
            end = data.find(b"\n", pos)
            if end < 0:
                piece = data[pos:]
                if self._line_mode == "pass":
                    out.append(piece)
                elif self._line_mode is None:
                    self._partial += piece
                    if len(self._partial) > MAX_HELD:
                        out.append(self._overlong())
                break
            piece, pos = data[pos:end + 1], end + 1
            if self._line_mode is not None:
                if self._line_mode == "pass":
                    out.append(piece)
                self._line_mode = None
                continue
            line, self._partial = self._partial + piece, b""
            out.append(self.feed(line))
        return b"".join(out)

    def _overlong(self) -> bytes:
        """A header line longer than MAX_HELD with no end yet: decide on its start, pass or drop the rest."""
        fragment, self._partial = self._partial, b""
        if fragment[:1] in (b" ", b"\t"):
            if self._held or self._dropping:
                if self._held:
                    self._held, self._held_size = [], 0
                    self.removed += 1
                self._dropping, self._line_mode = True, "drop"
                return b""
            self._line_mode = "pass"
            return fragment
        out = self._release()
        self._dropping = False
        if fragment.split(b":", 1)[0].strip().lower() == _FIELD:
            self.removed += 1
            self._dropping, self._line_mode = True, "drop"
            return out
        self._line_mode = "pass"
        return out + fragment

    def close(self) -> bytes:
        """What is still held at the end of the message."""
        out = b""
        if self._partial:
            line, self._partial = self._partial, b""
            out = self.feed(line)
        return out + self._release()

    def _release(self) -> bytes:
        if not self._held:
            return b""
        field = b"".join(self._held)
        self._held, self._held_size = [], 0
        value = field.split(b":", 1)[1]
        if self._held_size > MAX_HELD or len(field) > MAX_HELD or authserv_id_of(value) == self.authserv_id:
            self.removed += 1
            return b""
        return field


def strip_results(message: bytes, authserv_id: str) -> bytes:
    """``message`` without the Authentication-Results fields claiming ``authserv_id`` (RFC 8601 5)."""
    f = ResultsFilter(authserv_id)
    out = [f.feed(line) for line in message.splitlines(keepends=True)]
    out.append(f.close())
    return b"".join(out)
