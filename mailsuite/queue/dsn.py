"""Delivery Status Notifications (RFC 3464) for failed and delayed recipients.

Why: a sender must learn which recipients failed, why (the remote server's
reply quoted verbatim in Diagnostic-Code), and which message it was (the
original header block attached as text/rfc822-headers, RFC 6522).  The DSN
itself goes out with a null reverse-path so it can never bounce back
(RFC 5321 4.5.5); the caller never makes one for a null-sender message.
For an internationalized message (SMTPUTF8, or UTF-8 in its header or an
address) the report uses RFC 6533's types, whose fields may carry UTF-8:
multipart/report; report-type=global-delivery-status with
message/global-delivery-status and message/global-headers.
"""

from __future__ import annotations

import email.utils
import secrets
from dataclasses import dataclass
from typing import Sequence

#: Longest header-field body we write; longer diagnostics are cut (RFC 5322 2.1.1: 998 per line).
MAX_FIELD = 900


@dataclass(frozen=True)
class RecipientReport:
    """One recipient's line in a DSN."""

    address: str
    action: str  # "failed" or "delayed" (RFC 3464 2.3.3)
    status: str  # RFC 3463 code, e.g. "5.1.1"
    diagnostic: str  # the reply, e.g. "550 5.1.1 No such user" (quoted as smtp; ...)
    remote_mta: str = ""
    stage: str = ""  # the command the reply answered, for the human-readable part


def _clean(text: str) -> str:
    text = " ".join(text.replace("\r", " ").replace("\n", " ").split())
    return text[:MAX_FIELD]


def _address_field(address: str) -> str:
    # RFC 6533 3: non-ASCII addresses use the utf-8 address type.
    return f"utf-8; {address}" if not address.isascii() else f"rfc822; {address}"


def _date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, localtime=False, usegmt=True)


def build_dsn(
    *,
    reporting_mta: str,
    sender: str,
    queue_id: str,
    arrival: float,
    now: float,
    reports: Sequence[RecipientReport],
    original_headers: bytes,
    retry_until: float | None = None,
    utf8: bool = False,
) -> bytes:
    """The whole DSN message (CRLF line ends), ready to be queued or stored.

    ``utf8``: the original was an SMTPUTF8 transaction; non-ASCII headers or
    addresses switch to the RFC 6533 types as well.
    """
    utf8 = utf8 or not original_headers.isascii() or not all(r.address.isascii() for r in reports)
    report_type, status_type, headers_type = (
        ("global-delivery-status", "message/global-delivery-status", "message/global-headers") if utf8
        else ("delivery-status", "message/delivery-status", "text/rfc822-headers")
    )
    boundary = f"=_mailsuite_dsn_{secrets.token_hex(12)}"
    delayed = all(r.action == "delayed" for r in reports)
    subject = "Delayed Mail (still being retried)" if delayed else "Undelivered Mail Returned to Sender"
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{sender}>",
        f"Subject: {subject}",
        f"Date: {_date(now)}",
        f"Message-ID: <{queue_id}.{secrets.token_hex(4)}.dsn@{reporting_mta}>",
        "Auto-Submitted: auto-replied",  # RFC 3834 5
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type={report_type}; boundary="{boundary}"',
        "",
        "This is a MIME-formatted message.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        f"This is the mail system at {reporting_mta}.",
        "",
    ]
    if delayed:
        lines += ["Your message has not been delivered yet to the recipients below.", "The mail system keeps trying; you need not send it again.", ""]
        if retry_until:
            lines += [f"It gives up at {_date(retry_until)}.", ""]
    else:
        lines += ["Your message could not be delivered to the recipients below.", ""]
    for r in reports:
        where = f" ({r.remote_mta} said{' in reply to ' + r.stage if r.stage else ''})" if r.remote_mta else (f" ({r.stage})" if r.stage else "")
        lines.append(f"<{r.address}>{where}: {_clean(r.diagnostic)}")
    lines += ["", "The headers of your message are attached.", "", f"--{boundary}", f"Content-Type: {status_type}", ""]
    # RFC 3464 2.2: per-message fields, a blank line, then one block per recipient.
    lines += [f"Reporting-MTA: dns; {reporting_mta}", f"X-Mailsuite-Queue-ID: {queue_id}", f"Arrival-Date: {_date(arrival)}"]
    for r in reports:
        lines += ["", f"Final-Recipient: {_address_field(r.address)}", f"Action: {r.action}", f"Status: {r.status}"]
        if r.remote_mta:
            lines.append(f"Remote-MTA: dns; {r.remote_mta}")
        lines.append(f"Diagnostic-Code: smtp; {_clean(r.diagnostic)}")
        lines.append(f"Last-Attempt-Date: {_date(now)}")
        if r.action == "delayed" and retry_until:
            lines.append(f"Will-Retry-Until: {_date(retry_until)}")
    lines += ["", f"--{boundary}", f"Content-Type: {headers_type}", ""]
    head = "\r\n".join(lines).encode("utf-8") + b"\r\n"
    headers = original_headers.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n").rstrip(b"\r\n") + b"\r\n"
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + headers + tail


def count_received(header: bytes) -> int:
    """Received: fields in a header block (the hop count of RFC 5321 6.3)."""
    count = 0
    for line in header.split(b"\n"):
        if line[:9].lower() == b"received:":
            count += 1
    return count
