"""The SMTP client side of relaying: one connection, one transaction, a result per recipient.

Implementation notes:
- Our own protocol rather than twisted.mail.smtp.ESMTPClient: that class
  sends commands one at a time (no PIPELINING), has no SIZE / SMTPUTF8 /
  BODY=8BITMIME parameters, treats every greeting the same, and reports a
  transaction as one success/failure callback, while the queue needs a reply
  per recipient and must try the next MX on a 4xx greeting.
- The conversation is a coroutine over :meth:`SMTPClientProtocol.read_reply`;
  every reply wait has a timeout (RFC 5321 4.5.3.2) after which the
  connection is aborted, so a silent server never holds a queue slot.
- Replies: ``ddd-text`` continuation lines then ``ddd text`` (RFC 5321
  4.2.1); lines longer than MAX_REPLY_LINE abort the connection.
- PIPELINING (RFC 2920): MAIL, every RCPT and DATA go out in one write when
  offered; DATA's reply decides whether the body is sent.  Without it, one
  command at a time.
- The body is read from the spool in chunks off the reactor thread, dot-
  stuffed across chunk boundaries (RFC 5321 4.5.2), and written with
  back-pressure (the transport pauses us as a push producer).
- Per-recipient outcome: RCPT 2xx + final 2xx -> delivered; a 4xx/5xx for
  RCPT or the final reply (or MAIL/DATA failing) decides for each recipient.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from twisted.internet import defer, error as net_error
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsuite.errors import MailError

MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 100
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: the code and its text lines (without the code)."""

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """The lines joined with spaces (for logs and DSN diagnostics)."""
        return " ".join(self.lines)

    @property
    def enhanced(self) -> str:
        """The RFC 3463 status code the server gave, or one derived from the basic code."""
        match = _ENHANCED.match(self.lines[0] if self.lines else "")
        if match and match.group(1) == str(self.code)[0]:
            return match.group(0)
        return f"{str(self.code)[0]}.0.0"

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class ConnectFailed(MailError):
    """No SMTP conversation happened with this host (connect error or a non-2xx greeting): try the next one."""

    code, enhanced, default_text = 451, "4.4.1", "Connection failed"


class ProtocolFailure(MailError):
    """The conversation broke (timeout, lost connection, garbage): temporary for the whole transaction."""

    code, enhanced, default_text = 451, "4.4.2", "Connection broken"


@dataclass
class RecipientResult:
    """What happened to one recipient in one transaction."""

    address: str
    code: int
    enhanced: str
    text: str
    remote_mta: str = ""
    #: The command whose reply this is ("RCPT TO", "end of DATA"...), "" for local outcomes.
    stage: str = ""

    @property
    def delivered(self) -> bool:
        """2xx: done."""
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        """5xx: bounce now."""
        return self.code >= 500


@dataclass
class Transaction:
    """What to send in one SMTP transaction, and how to talk to the server."""

    sender: str
    recipients: list[str]
    size: int
    #: Returns the next chunk of the message (b"" at the end); called repeatedly.
    read_chunk: Callable[[], Awaitable[bytes]]
    helo_name: str
    smtputf8: bool = False
    body_8bit: bool = False
    #: "opportunistic", "required" (STARTTLS must succeed), "none", or "implicit" (already TLS).
    tls: str = "opportunistic"
    #: Makes the TLS options for STARTTLS (hostname known by the caller).
    tls_options: Callable[[], Any] | None = None
    username: str = ""
    password: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def needs_smtputf8(transaction: Transaction) -> bool:
    """True if the envelope asks for SMTPUTF8 or any address is not ASCII (RFC 6531 3.4)."""
    if transaction.smtputf8:
        return True
    return any(not a.isascii() for a in [transaction.sender, *transaction.recipients])


@implementer(IPushProducer)
class SMTPClientProtocol(Protocol):
    """Line framing, reply parsing with timeouts, and a writable-wait for the body."""

    log = Logger()

    def __init__(self, reactor: Any, command_timeout: float, conn_id: str = "") -> None:
        self.reactor = reactor
        self.command_timeout = command_timeout
        self.conn_id = conn_id
        self._buffer = b""
        self._partial: list[str] = []
        self._replies: list[Reply] = []
        self._waiters: list[defer.Deferred[Reply]] = []
        self._lost: Failure | None = None
        self._paused: defer.Deferred[None] | None = None
        self.connected_d: defer.Deferred[None] = defer.Deferred()
        self.lost_d: defer.Deferred[None] = defer.Deferred()

    # -- transport events ---------------------------------------------
    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = net_error.ConnectionDone) -> None:  # type: ignore[assignment]
        self._lost = reason
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(ProtocolFailure(f"connection lost: {reason.getErrorMessage()}"))
        if self._paused is not None:
            paused, self._paused = self._paused, None
            paused.errback(ProtocolFailure(f"connection lost: {reason.getErrorMessage()}"))
        if not self.lost_d.called:
            self.lost_d.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while True:
            line, sep, rest = self._buffer.partition(b"\n")
            if not sep:
                if len(self._buffer) > MAX_REPLY_LINE:
                    self._abort("reply line too long")
                return
            self._buffer = rest
            self._line(line.rstrip(b"\r"))
            if self._lost is not None:
                return

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace")
        if len(text) < 3 or not text[:3].isdigit() or (len(text) > 3 and text[3] not in " -"):
            self._abort(f"malformed reply line {text[:40]!r}")
            return
        self._partial.append(text[4:])
        if len(self._partial) > MAX_REPLY_LINES:
            self._abort("reply has too many lines")
            return
        if len(text) > 3 and text[3] == "-":
            return
        reply = Reply(int(text[:3]), tuple(self._partial))
        self._partial = []
        if self._waiters:
            self._waiters.pop(0).callback(reply)
        else:
            self._replies.append(reply)

    def _abort(self, why: str) -> None:
        self.log.warn("[{conn}] aborting: {why}", conn=self.conn_id, why=why)
        self._lost = Failure(ProtocolFailure(why))
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # -- IPushProducer: the transport tells us when its buffer is full --
    def pauseProducing(self) -> None:
        if self._paused is None:
            self._paused = defer.Deferred()

    def resumeProducing(self) -> None:
        if self._paused is not None:
            paused, self._paused = self._paused, None
            paused.callback(None)

    def stopProducing(self) -> None:
        pass

    # -- API for the conversation -------------------------------------
    def send(self, data: bytes) -> None:
        """Write raw bytes (commands end in CRLF)."""
        if self._lost is None:
            self.transport.write(data)  # type: ignore[union-attr]

    def read_reply(self, timeout: float | None = None) -> defer.Deferred[Reply]:
        """The next reply; fails with ProtocolFailure on timeout (the connection is aborted) or loss."""
        if self._replies:
            return defer.succeed(self._replies.pop(0))
        if self._lost is not None:
            return defer.fail(ProtocolFailure(f"connection lost: {self._lost.getErrorMessage()}"))
        d: defer.Deferred[Reply] = defer.Deferred()
        self._waiters.append(d)
        call = self.reactor.callLater(timeout or self.command_timeout, self._timed_out, d)

        def cancel_timer(result: Any) -> Any:
            if call.active():
                call.cancel()
            return result

        return d.addBoth(cancel_timer)

    def _timed_out(self, d: defer.Deferred[Reply]) -> None:
        if d in self._waiters:
            self._waiters.remove(d)
            self._abort("timeout waiting for a reply")
            d.errback(ProtocolFailure("timeout waiting for the server's reply"))

    async def writable(self) -> None:
        """Wait until the transport wants more data (or fail after the command timeout)."""
        if self._paused is None:
            return
        paused = self._paused
        call = self.reactor.callLater(self.command_timeout, self._abort, "timeout sending the message")
        try:
            await paused
        finally:
            if call.active():
                call.cancel()

    def close(self) -> None:
        """Close politely (after QUIT) or now."""
        if self.transport is not None and self._lost is None:
            self.transport.loseConnection()


def _parse_extensions(reply: Reply) -> dict[str, str]:
    """EHLO keywords (upper-cased) -> parameters (RFC 5321 4.1.1.1)."""
    out: dict[str, str] = {}
    for line in reply.lines[1:]:
        keyword, _, params = line.strip().partition(" ")
        if keyword:
            out[keyword.upper()] = params.strip()
    return out


def _xtext_free(address: str) -> str:
    return address.replace("\r", "").replace("\n", "").replace(">", "")


async def run_transaction(proto: SMTPClientProtocol, t: Transaction, remote: str) -> list[RecipientResult]:
    """Talk to a connected server: greeting, EHLO, STARTTLS, AUTH, MAIL, RCPTs, DATA, QUIT.

    Raises ConnectFailed for a non-2xx greeting (the caller tries the next
    host), ProtocolFailure for a broken conversation; otherwise returns a
    result for every recipient.
    """
    try:
        greeting = await proto.read_reply()
    except ProtocolFailure as e:
        # No greeting (timeout, closed at once): as good as a failed connection, try the next host.
        raise ConnectFailed(f"{remote}: no greeting: {e}") from None
    if greeting.code // 100 != 2:
        # RFC 5321 3.1 / 5.1: a refusing greeting sends us to the next MX.
        proto.send(b"QUIT\r\n")
        proto.close()
        raise ConnectFailed(f"{remote} greeted with {greeting}", code=greeting.code if greeting.code >= 400 else 451)
    extensions = await _ehlo(proto, t.helo_name)

    secure = t.tls == "implicit"
    if not secure and t.tls != "none" and "STARTTLS" in extensions and t.tls_options is not None:
        proto.send(b"STARTTLS\r\n")
        reply = await proto.read_reply()
        if reply.code == 220:
            proto.transport.startTLS(t.tls_options())  # type: ignore[union-attr]
            secure = True
            extensions = await _ehlo(proto, t.helo_name)  # RFC 3207 4.2: forget what we knew
        elif t.tls == "required":
            _quit(proto)
            return _all(t, 451, "4.7.4", f"STARTTLS refused by {remote}: {reply}", remote)
    if t.tls == "required" and not secure:
        _quit(proto)
        return _all(t, 451, "4.7.4", f"TLS is required but {remote} does not offer STARTTLS", remote)

    if t.username:
        failure = await _authenticate(proto, extensions, t, secure)
        if failure is not None:
            _quit(proto)
            return _all(t, failure.code if failure.code >= 400 else 451, failure.enhanced, f"authentication at {remote} failed: {failure}", remote)

    # RFC 6531 3.4: without SMTPUTF8 at the server the message cannot go there.
    utf8 = needs_smtputf8(t)
    if utf8 and "SMTPUTF8" not in extensions:
        _quit(proto)
        return _all(t, 553, "5.6.7", f"{remote} does not support SMTPUTF8, which this message needs", remote)
    # RFC 1870 6: do not send what the server declared too big.
    limit = extensions.get("SIZE", "")
    if limit.isdigit() and int(limit) > 0 and t.size > int(limit):
        _quit(proto)
        return _all(t, 552, "5.3.4", f"message size {t.size} exceeds {remote}'s limit of {limit}", remote)

    # RFC 6152 3: 8-bit data must not go to a server without 8BITMIME; we do not downgrade to 7 bit.
    if t.body_8bit and "8BITMIME" not in extensions:
        _quit(proto)
        return _all(t, 554, "5.6.3", f"{remote} does not accept 8-bit data (no 8BITMIME) and the message is not converted", remote)
    params = ""
    if "SIZE" in extensions:
        params += f" SIZE={t.size}"
    if t.body_8bit and "8BITMIME" in extensions:
        params += " BODY=8BITMIME"
    if utf8:
        params += " SMTPUTF8"
    mail = f"MAIL FROM:<{_xtext_free(t.sender)}>{params}\r\n".encode("utf-8")
    rcpts = [f"RCPT TO:<{_xtext_free(r)}>\r\n".encode("utf-8") for r in t.recipients]

    results: dict[str, RecipientResult] = {}
    accepted: list[str] = []
    if "PIPELINING" in extensions:
        proto.send(mail + b"".join(rcpts) + b"DATA\r\n")
        mail_reply = await proto.read_reply()
        rcpt_replies = [await proto.read_reply() for _ in rcpts]
        data_reply = await proto.read_reply()
        if mail_reply.code // 100 != 2:
            _quit(proto)
            return _all_reply(t, mail_reply, remote, "MAIL FROM")
    else:
        proto.send(mail)
        mail_reply = await proto.read_reply()
        if mail_reply.code // 100 != 2:
            _quit(proto)
            return _all_reply(t, mail_reply, remote, "MAIL FROM")
        rcpt_replies = []
        for line in rcpts:
            proto.send(line)
            rcpt_replies.append(await proto.read_reply())
        data_reply = None
    for address, reply in zip(t.recipients, rcpt_replies):
        if reply.code // 100 == 2:
            accepted.append(address)
        else:
            results[address] = RecipientResult(address, reply.code, reply.enhanced, str(reply), remote, "RCPT TO")
    if not accepted:
        # RFC 2920 3.1: a pipelined DATA after no accepted RCPT is refused; nothing to send.
        if data_reply is not None and data_reply.code == 354:
            proto.send(b".\r\n")  # an empty message the server must refuse for lack of recipients
            await proto.read_reply()
        _quit(proto)
        return [results[a] for a in t.recipients]
    if data_reply is None:
        proto.send(b"DATA\r\n")
        data_reply = await proto.read_reply()
    if data_reply.code != 354:
        _quit(proto)
        for a in accepted:
            results[a] = RecipientResult(a, data_reply.code, data_reply.enhanced, str(data_reply), remote, "DATA")
        return [results[a] for a in t.recipients]

    await _send_body(proto, t)
    final = await proto.read_reply(proto.command_timeout * 2)  # RFC 5321 4.5.3.2.6: 10 minutes
    for a in accepted:
        results[a] = RecipientResult(a, final.code, final.enhanced, str(final), remote, "end of DATA")
    _quit(proto)
    return [results[a] for a in t.recipients]


async def _ehlo(proto: SMTPClientProtocol, name: str) -> dict[str, str]:
    proto.send(f"EHLO {name}\r\n".encode())
    reply = await proto.read_reply()
    if reply.code // 100 == 2:
        return _parse_extensions(reply)
    # RFC 5321 3.2: fall back to HELO for servers that do not know EHLO.
    proto.send(f"HELO {name}\r\n".encode())
    reply = await proto.read_reply()
    if reply.code // 100 != 2:
        raise ProtocolFailure(f"HELO refused: {reply}", code=reply.code)
    return {}


async def _authenticate(proto: SMTPClientProtocol, extensions: dict[str, str], t: Transaction, secure: bool) -> MailError | None:
    mechanisms = extensions.get("AUTH", "").upper().split()
    if not secure:
        return MailError("refusing to send credentials without TLS", code=451, enhanced="4.7.0")
    if "PLAIN" in mechanisms:
        token = base64.b64encode(b"\0" + t.username.encode() + b"\0" + t.password.encode()).decode()
        proto.send(f"AUTH PLAIN {token}\r\n".encode())
        reply = await proto.read_reply()
    elif "LOGIN" in mechanisms:
        proto.send(b"AUTH LOGIN\r\n")
        reply = await proto.read_reply()
        for secret in (t.username, t.password):
            if reply.code != 334:
                break
            proto.send(base64.b64encode(secret.encode()) + b"\r\n")
            reply = await proto.read_reply()
    else:
        return MailError("server offers no AUTH PLAIN or LOGIN", code=451, enhanced="4.7.0")
    if reply.code == 235:
        return None
    # Bad credentials are our configuration's fault: keep the mail queued (temporary).
    return MailError(str(reply), code=451, enhanced=reply.enhanced.replace("5.", "4.", 1) if reply.enhanced.startswith("5.") else reply.enhanced)


async def _send_body(proto: SMTPClientProtocol, t: Transaction) -> None:
    at_line_start = True
    while True:
        chunk = await t.read_chunk()
        if not chunk:
            break
        stuffed = chunk.replace(b"\n.", b"\n..")
        if at_line_start and chunk[:1] == b".":
            stuffed = b"." + stuffed
        at_line_start = chunk.endswith(b"\n")
        await proto.writable()
        proto.send(stuffed)
    proto.send(b".\r\n" if at_line_start else b"\r\n.\r\n")


#: Seconds to wait for the answer to QUIT before closing anyway.
QUIT_REPLY_WAIT = 5.0


def _quit(proto: SMTPClientProtocol) -> None:
    """Say QUIT and close once the server has answered it (RFC 5321 4.1.1.10), or after QUIT_REPLY_WAIT.

    Waiting for the 221 means that when the connection ends (and its concurrency
    slot is given back) the server has finished with the session too.
    """
    proto.send(b"QUIT\r\n")
    proto.read_reply(timeout=QUIT_REPLY_WAIT).addBoth(lambda _: proto.close())


def _all(t: Transaction, code: int, enhanced: str, text: str, remote: str) -> list[RecipientResult]:
    return [RecipientResult(a, code, enhanced, text, remote) for a in t.recipients]


def _all_reply(t: Transaction, reply: Reply, remote: str, command: str) -> list[RecipientResult]:
    return [RecipientResult(a, reply.code, reply.enhanced, str(reply), remote, command) for a in t.recipients]
