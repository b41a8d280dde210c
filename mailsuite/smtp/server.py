"""The SMTP server protocol: one :class:`SMTPSession` per connection.

Implementation notes (invariants this module keeps):

- Own line parser, not twisted.mail.smtp.ESMTP: that server reads line by
  line (no BDAT) and can answer pipelined commands out of order.
- Replies are collected and written together once the buffered input is
  drained or the session waits for the client (RFC 2920 3.1 allows it), so
  a pipelined MAIL/RCPT/DATA batch costs one write.
- When the client stops reading replies (the transport pauses us as its
  producer), no further command is taken on; input beyond
  :data:`MAX_BUFFERED` stops socket reads, so neither replies nor input
  pile up in memory.  TLS pauses us during a handshake too, when no
  application data can arrive anyway.
- Commands run strictly one after another.  A command whose answer needs a
  Deferred (directory, store, queue, login) marks the session busy; bytes that
  arrive meanwhile wait in the buffer (reading is paused past
  :data:`MAX_BUFFERED`), so replies always leave in command order
  (RFC 2920 3.1: PIPELINING).
- Every reply but the greeting, EHLO/HELO answers and the 334/354
  intermediates carries an RFC 3463 enhanced status code (RFC 2034 4).
- Modes: command lines; DATA (bytes go through
  :class:`~mailsuite.smtp.data.DataDecoder`: only CRLF.CRLF ends it, bare CR/LF
  refuses the message with 550 5.6.11, exact dot-unstuffing); BDAT (exactly
  the announced count of octets, RFC 3030); AUTH continuation lines.
- SIZE is checked at MAIL (announced size) and while DATA/BDAT arrive: past the
  limit the rest is counted and dropped, not buffered (552 5.3.4).
- A full disk (ENOSPC, EDQUOT) while the message arrives (a big one goes to
  a spool file) or is stored answers 452 4.3.1 (RFC 3463 X.3.1: mail system
  full) at the end of its data; the rest of the data is dropped.
- STARTTLS (RFC 3207): the 220 goes out in clear, everything the client
  pipelined behind the command is thrown away, and EHLO, AUTH and the
  transaction are forgotten (CVE-2011-0411 class of injection).
- AUTH PLAIN / LOGIN (RFC 4954) only over TLS unless
  ``tls.allow_plaintext_auth``; the mechanisms are :mod:`mailsuite.sasl`'s
  exchanges (this module only frames them: 334 challenges, continuation
  lines); logins go through the shared throttled authenticator;
  a throttled login gets 454 4.7.0 and the connection is closed.  SASL
  payloads, passwords and message bodies are never logged.
- Policy decisions live in :mod:`mailsuite.smtp.policy`; DKIM signing and
  inbound SPF/DKIM/DMARC in :mod:`mailsuite.mailauth.smtp_hook` (called once
  per complete message); the store and queue hand-off in
  :mod:`mailsuite.smtp.delivery`.  250 after DATA/BDAT LAST is
  sent only once every copy is fsynced.
- Spam defence (:mod:`mailsuite.antispam.policy`, when ``antispam.enabled``):
  ``self.screen`` is asked before the greeting (which it may hold or replace
  with a refusal), at each RCPT the policy accepted, and once a message is
  complete (it may rewrite the message, change targets or folder, or drop it).
- :class:`~mailsuite.errors.MailError` and :class:`~mailsuite.sasl.SASLError`
  become replies in :meth:`SMTPSession._fail` (the one place, AUTH's login
  failures included); anything else is logged with its traceback and
  answered 451 4.3.0.
- RFC 5321 4.5.3.2 timeouts are deadlines, never moved by a byte arriving
  (a client trickling a byte at a time must not hold a connection forever):
  a command line must be complete ``limits.smtp_timeout`` seconds after its
  first byte (or after the previous command was answered, when the client
  is silent); the whole DATA phase, or all BDAT chunks of a transaction up
  to BDAT LAST, within ``limits.smtp_data_timeout`` of the DATA / first BDAT
  command.  Then 421 4.4.2 and close.  Time the server itself takes (a
  login, storing) does not count; a client that stops reading replies is
  aborted at the deadline.
- On the submission listeners, where nothing can be done before AUTH, a
  session not authenticated ``limits.submission_login_timeout`` seconds
  after connecting gets 421 4.7.0 and is closed.
- A connection closed by us stays open only while the client reads what we
  still had to send; one that does not is aborted (after
  :data:`CLOSE_GRACE` when closed for a timeout, else after the timeout).
- ``limits.smtp_max_errors`` error replies in one session close it (421 4.7.0).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from types import CoroutineType
from typing import Any, Awaitable, Callable

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsuite import sasl
from mailsuite.compat import start_eagerly
from mailsuite.errors import AuthenticationFailed, LoginThrottled, MailError, MessageTooLarge, storage_error
from mailsuite.limits import mark_logged_in, peer_ip, spare_while
from mailsuite.netwrite import write_now
from mailsuite.mailauth import smtp_hook
from mailsuite.protocol.closing import close_with_grace
from mailsuite.protocol.deadline import Deadline
from mailsuite.protocol.flow import InputThrottle
from mailsuite.protocol.lines import take_bytes, take_line
from mailsuite.smtp import headers, policy
from mailsuite.smtp.address import AddressError, Mailbox, parse_command_argument
from mailsuite.smtp.data import ChunkChecker, DataDecoder
from mailsuite.smtp.delivery import Transaction, hand_off

#: Bytes kept unread while a command waits for a Deferred before reading is paused.
MAX_BUFFERED = 256 * 1024
#: RFC 5321 6.3: more Received fields than this is a mail loop.
MAX_HOPS = 100
#: Seconds a connection closed for a timeout may take to read its 421 before it is aborted.
CLOSE_GRACE = 10.0
#: SASL mechanisms offered by EHLO (RFC 4954 3), in that order.
AUTH_MECHANISMS = ("PLAIN", "LOGIN")

_HELO_NAME = re.compile(r"[A-Za-z0-9._\-\[\]:]{1,255}\Z")
_BDAT_ARGS = re.compile(r"([0-9]{1,15})(?: +(LAST))? *\Z", re.IGNORECASE)
_session_ids = itertools.count(1)

LINE, DATA, BDAT, DISCARD_LINE, CLOSED = "line", "data", "bdat", "discard-line", "closed"


class SMTPReply(MailError):
    """A protocol-level refusal (syntax, sequence) that is not a domain error."""


@dataclass
class SessionSettings:
    """Per-listener settings and shared objects, built once by the listener."""

    hostname: str
    listener: str
    submission: bool  # MAIL requires AUTH (587/465)
    implicit_tls: bool
    offer_auth: bool
    allow_plaintext_auth: bool
    max_message_size: int
    max_recipients: int
    max_line_length: int
    max_errors: int
    timeout: float
    data_timeout: float
    clock: Any
    primary_domain: str
    configured_domains: frozenset[str] = frozenset()  # the config's domains: local without asking the directory
    tls_creator: Callable[[], Any] | None = None
    authenticator: Any = None
    directory: Any = None
    store: Any = None
    queue: Any = None
    fault_plan: Callable[[], Any] = lambda: None  # read at each use: tests install a plan after start-up
    mailauth: Any = None  # mailsuite.mailauth: DKIM signing (submission), SPF/DKIM/DMARC checks (inbound)
    login_timeout: float | None = None  # seconds from connect to AUTH (submission listeners only)
    antispam: Any = None  # mailsuite.antispam.policy.Antispam: port-25 checks, greylisting, rate limits
    srs: Any = None  # mailsuite.srs.SRS: forwarded senders rewritten, bounces to them reversed


class _Tx:
    """One mail transaction (MAIL to the end of DATA / BDAT LAST)."""

    def __init__(self, sender: Mailbox | None, smtputf8: bool, body_8bit: bool, declared_size: int) -> None:
        self.sender = sender
        self.smtputf8 = smtputf8
        self.body_8bit = body_8bit
        self.declared_size = declared_size
        self.recipients: list[str] = []
        self.local: dict[str, None] = {}
        self.remote: dict[str, None] = {}
        self.message: Any = None  # IIncomingMessage once DATA/BDAT starts
        self.bdat = False
        self.bdat_failed: MailError | None = None
        self.size = 0
        self.scanner = headers.HeaderScanner()
        self.checker = ChunkChecker()
        self.results_filter: Any = None  # drops forged Authentication-Results of ours (inbound, mailauth on)
        self.phase_end: float | None = None  # clock time by which DATA / every BDAT chunk must be in
        self.write_error: MailError | None = None  # keeping the arriving message failed (disk full): answered at its end

    @property
    def sender_text(self) -> str:
        return "" if self.sender is None else self.sender.address

    def discard(self) -> None:
        if self.message is not None:
            self.message.discard()
            self.message = None


@implementer(IPushProducer)
class SMTPSession(Protocol):
    """One SMTP connection; see the module notes.

    It is also the transport's push producer: when the client stops reading
    our replies, the transport pauses us and we stop taking on commands.
    """

    log = Logger(namespace="mailsuite.smtp")

    def __init__(self, settings: SessionSettings) -> None:
        self.s = settings
        self.session_id = f"s{next(_session_ids)}"
        self.ip = "?"
        self.tls = settings.implicit_tls
        self.helo: str | None = None
        self.esmtp = False
        self.user: str | None = None
        self.tx: _Tx | None = None
        self.errors = 0
        self._buffer = bytearray()
        self._mode = LINE
        self._busy = False
        self._processing = False
        self._write_paused = False  # the transport's buffer is full: the client is not reading
        self._deadline = Deadline(settings.clock, self._timed_out)  # the client must have done its part by then
        self._login_deadline = Deadline(settings.clock, self._login_timed_out)
        self._input: InputThrottle = None  # type: ignore[assignment]  # set once connected
        self._line_handler: Callable[[bytes], Any] | None = None  # AUTH continuation
        self._verb = ""  # the command being (or last) handled: _fail maps AUTH's errors
        self._decoder: DataDecoder | None = None
        self._bdat_remaining = 0
        self._bdat_last = False
        self._bdat_error: MailError | None = None
        self._out: list[bytes] = []  # replies not yet written (see _send_raw)
        self.screen: Any = None  # mailsuite.antispam ClientScreen: called at connect, RCPT and end of message

    # -- connection ------------------------------------------------------------
    def connectionMade(self) -> None:
        self.ip = peer_ip(self.transport.getPeer())
        self.transport.registerProducer(self, True)
        self._input = InputThrottle(self.transport, MAX_BUFFERED)
        spare_while(self.transport, lambda: self.tx is not None)  # at the connection cap, spared during a mail transaction
        try:
            self.transport.setTcpNoDelay(True)
        except Exception:
            pass
        self.log.info("[{session}] {listener}: connection from {ip}{tls}", session=self.session_id, listener=self.s.listener, ip=self.ip, tls=" (TLS)" if self.tls else "")
        self._expect_client()
        if self.s.submission and self.s.login_timeout is not None:
            self._login_deadline.set(self.s.login_timeout)
        if self.s.antispam is not None:  # may hold the greeting (pregreet) or refuse the client instead
            self.screen = self.s.antispam.screen(self.ip, self.s.listener, self.session_id)
            self.screen.port = getattr(self.transport.getPeer(), "port", 0)
            self._start(self._screened_greeting())
            return
        self._greeting()

    async def _screened_greeting(self) -> None:
        try:
            await self.screen.connect(lambda: None if self._mode == CLOSED else bool(self._buffer))
        except MailError as e:
            self._write(e.code, e.enhanced, e.text)
            self._close()
            return
        if self._mode != CLOSED:
            self._greeting()

    def _greeting(self) -> None:
        fault = self._fault("CONNECT")
        greeting = f"220 {self.s.hostname} ESMTP mailsuite\r\n".encode()
        if fault is None:
            self.transport.write(greeting)  # nothing can be held yet
            return
        self._busy = True

        def act() -> None:
            self._busy = False
            if self._mode == CLOSED:
                return
            if fault.drop:
                self.transport.abortConnection()
            elif fault.code is not None:
                self._send_raw(fault.reply_line())
                if fault.code >= 400:
                    self._close()
                else:
                    self._process()
                    self._flush()
            else:
                self.transport.write(greeting)
                self._process()

        self._later(fault.delay, act)

    def connectionLost(self, reason: Any = None) -> None:
        self._mode = CLOSED
        self._deadline.cancel()
        self._login_deadline.cancel()
        if self.screen is not None:
            self.screen.close()
        if self.tx is not None:
            self.tx.discard()
            self.tx = None
        self.log.debug("[{session}] disconnected", session=self.session_id)

    def dataReceived(self, data: bytes) -> None:
        if self._mode == CLOSED:
            return
        if not self._buffer and self._mode == LINE and not self._busy and not self._write_paused:
            self._expect_client()  # the first byte of a command line: it has smtp_timeout from now on
        self._buffer += data
        self._process()

    # -- timers ----------------------------------------------------------------
    def _set_deadline(self, seconds: float) -> None:
        """The client has ``seconds`` from now (at most until its DATA/BDAT phase ends) to do its part."""
        tx = self.tx
        self._deadline.set(seconds, None if tx is None else tx.phase_end)

    def _expect_client(self) -> None:
        """Waiting for a command line (RFC 5321 4.5.3.2.7: 5 minutes by default)."""
        self._set_deadline(self.s.timeout)

    def _timed_out(self) -> None:
        if self._mode == CLOSED:  # closed by us, but the client never took its last replies
            self.transport.abortConnection()
            return
        if self._write_paused:  # the client neither sends nor reads: it cannot hear a 421 either
            self.log.info("[{session}] {ip} stopped reading replies; connection aborted", session=self.session_id, ip=self.ip)
            self._mode = CLOSED
            self.transport.abortConnection()
            return
        if self._busy:  # the server, not the client, is slow: wait for it
            self._expect_client()
            return
        self.log.info("[{session}] timeout from {ip}", session=self.session_id, ip=self.ip)
        self._write(421, "4.4.2", f"{self.s.hostname} Timeout, closing connection")
        self._close(CLOSE_GRACE)

    def _login_timed_out(self) -> None:
        """Submission: no AUTH within limits.submission_login_timeout of connecting."""
        if self._mode == CLOSED or self.user is not None:
            return
        self.log.info("[{session}] {ip} did not authenticate within {seconds}s", session=self.session_id, ip=self.ip, seconds=self.s.login_timeout)
        if self._write_paused:
            self._mode = CLOSED
            self.transport.abortConnection()
            return
        self._write(421, "4.7.0", f"{self.s.hostname} Authentication required in time, closing connection")
        self._close(CLOSE_GRACE)

    def _later(self, delay: float, f: Callable[[], None]) -> None:
        if delay > 0:
            self.s.clock.callLater(delay, f)
        else:
            f()

    # -- input loop ------------------------------------------------------------
    def _process(self) -> None:
        if self._processing:
            return
        self._processing = True
        try:
            while not self._busy and not self._write_paused and self._mode != CLOSED and self._buffer:
                if self._mode == LINE:
                    if not self._next_line():
                        break
                elif self._mode == DISCARD_LINE:
                    if take_line(self._buffer) is None:
                        self._buffer.clear()
                        break
                    self._mode = LINE
                    self.reply(500, "5.5.2", "Line too long")
                elif self._mode == DATA:
                    self._data_bytes()
                elif self._mode == BDAT:
                    self._bdat_bytes()
        finally:
            self._processing = False
        if not self._busy or not self._buffer:
            self._flush()
        if self._mode == CLOSED:
            return
        # stop reading the socket while input piles up that cannot be processed yet
        # (a command waits for a Deferred, or the client does not read our replies)
        self._input.update(self._busy or self._write_paused, len(self._buffer))

    # -- IPushProducer: the transport tells us when its write buffer is full ------
    def pauseProducing(self) -> None:
        self._write_paused = True

    def resumeProducing(self) -> None:
        if not self._write_paused:
            return
        self._write_paused = False
        if self._mode != CLOSED:
            self._process()

    def stopProducing(self) -> None:
        self._write_paused = True

    def _next_line(self) -> bool:
        line = take_line(self._buffer)
        if line is None:
            if len(self._buffer) > self.s.max_line_length:
                self._buffer.clear()
                self._mode = DISCARD_LINE
            return False
        self._expect_client()  # the next line's time starts now (or at its first byte, if later)
        handler, self._line_handler = self._line_handler, None
        if len(line) > self.s.max_line_length:
            self.reply(500, "5.5.2", "Line too long")
            return True
        if handler is not None:
            self._start(handler(line))
        else:
            self._command(line)
        return True

    def _start(self, result: Any, *, may_finish_now: bool = True) -> None:
        """Run a command's coroutine (if any), keeping later commands waiting until it is done.

        Most commands never wait (the directory answers from memory), so the
        coroutine is first run right here; only one that waits for a Deferred
        goes on under Twisted's driver, from where it stopped.  Starting every
        command with ensureDeferred cost about 13 us of the reactor thread's
        time, three times per message.  ``may_finish_now=False`` (storing a
        message always waits for the disk) goes straight to the driver, which
        then does less after the hand-off to the disk thread: that thread
        starts only when the reactor thread lets go of the interpreter lock.
        """
        if result is None:
            return
        if may_finish_now and isinstance(result, CoroutineType):
            try:
                result = start_eagerly(result)
            except BaseException:
                self._fail_failure(Failure())
                self._done(None)
                return
            if result is None:
                self._done(None)
                return
        self._busy = True
        d = defer.ensureDeferred(result)
        d.addErrback(self._fail_failure)
        d.addBoth(self._done)

    def _done(self, _: Any) -> None:
        self._busy = False
        if self._mode != CLOSED:
            self._expect_client()
            self._process()

    # -- replies ---------------------------------------------------------------
    def _write(self, code: int, enhanced: str | None, text: str, more: list[str] | None = None) -> None:
        lines = (more or []) + [text]
        out = []
        for i, line in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            prefix = f"{code}{sep}{enhanced} " if enhanced else f"{code}{sep}"
            out.append(prefix + line.replace("\r", " ").replace("\n", " ") + "\r\n")
        self._send_raw("".join(out).encode("utf-8"))

    def _send_raw(self, data: bytes) -> None:
        # RFC 2920 3.1: replies may wait while more pipelined commands are buffered;
        # _flush() sends them together once input is drained or the session waits for the client.
        self._out.append(data)

    def _flush(self) -> None:
        if self._out and self._mode != CLOSED:
            write_now(self.transport, b"".join(self._out))
        self._out.clear()

    def reply(self, code: int, enhanced: str | None, text: str, more: list[str] | None = None) -> None:
        """Send a reply; count errors and close the session after too many."""
        if self._mode == CLOSED:
            return
        self._write(code, enhanced, text, more)
        if 400 <= code and code != 421:
            self.errors += 1
            if self.errors >= self.s.max_errors:
                self.log.info("[{session}] too many errors from {ip}", session=self.session_id, ip=self.ip)
                self._write(421, "4.7.0", f"{self.s.hostname} Too many errors, closing connection")
                self._close()

    def _fail(self, error: BaseException) -> None:
        """The one place an error becomes a reply; anything unexpected is a logged 451.

        A MailError carries its reply.  During AUTH (RFC 4954 6): a throttled
        login is refused and the connection closed; a failure of the login
        service itself, which is neither the client's wrong password nor its
        throttling, is the temporary 454 4.7.0; SASL errors of the client's
        responses are syntax errors (501), except an authorization identity
        that is not the login name, a failed login (535).
        """
        if isinstance(error, sasl.SASLError):
            if isinstance(error, sasl.Cancelled):
                self.reply(501, "5.0.0", "Authentication cancelled")
            elif isinstance(error, sasl.UnknownMechanism):
                self.reply(504, "5.5.4", "Unrecognized authentication type")
            elif isinstance(error, sasl.AuthorizationDenied):
                self.reply(535, "5.7.8", "Authentication credentials invalid")
            else:
                self.reply(501, "5.5.2", str(error))
        elif isinstance(error, LoginThrottled):
            self.reply(error.code, error.enhanced, error.text)
            self._close()
        elif isinstance(error, MailError):
            if self._verb == "AUTH" and not isinstance(error, (AuthenticationFailed, SMTPReply)):
                self.reply(454, "4.7.0", "Temporary authentication failure" if error.permanent else error.text)
            else:
                self.reply(error.code, error.enhanced, error.text)
        else:
            self.reply(451, "4.3.0", "Internal error, try again later")

    def _fail_failure(self, failure: Any) -> None:
        if not isinstance(failure.value, (MailError, sasl.SASLError)):
            self.log.failure("[{session}] unexpected error", failure, session=self.session_id)
        self._fail(failure.value)

    def _close(self, grace: float | None = None) -> None:
        """Send what is queued and close; abort after ``grace`` seconds (default: the timeout) if the client does not read it."""
        if self._mode == CLOSED:
            return
        self._flush()
        self._mode = CLOSED
        self._buffer.clear()
        if self.tx is not None:
            self.tx.discard()
            self.tx = None
        self._login_deadline.cancel()
        close_with_grace(self.transport, self._deadline, self.s.timeout if grace is None else grace)  # _timed_out aborts

    def _fault(self, command: str, arg: str = "", tx: _Tx | None = None) -> Any:
        plan = self.s.fault_plan()
        if plan is None:
            return None
        tx = tx or self.tx
        return plan.take(command, "smtp", transport=self.transport, user=self.user, sender=tx.sender_text if tx else None,
                         recipients=tx.recipients if tx else (), arg=arg)

    # -- dispatch --------------------------------------------------------------
    def _command(self, raw: bytes) -> None:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.reply(500, "5.5.2", "Invalid UTF-8 in command")
            return
        verb, _, arg = line.partition(" ")
        verb = self._verb = verb.upper()
        handler = self._COMMANDS.get(verb)
        if handler is None:
            if self.screen is not None and self.screen.wants_unknown(self.user):  # milters hear unknown commands (SMFIC_UNKNOWN)
                self._start(self._unknown(line))
                return
            self.reply(500, "5.5.2", "Command unrecognized")
            return
        fault = self._fault(verb, arg) if verb not in ("DATA", "BDAT") else None
        if fault is None:
            self._start(handler(self, arg))
            return
        self._start(self._faulted(fault, handler, arg))

    async def _unknown(self, line: str) -> None:
        await self.screen.unknown(helo=self.helo or "", user=self.user, line=line)
        self.reply(500, "5.5.2", "Command unrecognized")

    async def _apply_fault(self, fault: Any) -> bool:
        """Carry out a test fault (delay, drop, or a chosen reply); True when it took the real reply's place."""
        if fault.delay:
            await _sleep(self.s.clock, fault.delay)
        if self._mode == CLOSED:
            return True
        if fault.drop:
            self._flush()
            self._mode = CLOSED
            self.transport.abortConnection()
            return True
        if fault.code is not None:
            self._send_raw(fault.reply_line())
            return True
        return False

    async def _faulted(self, fault: Any, handler: Callable[..., Any], arg: str) -> None:
        if await self._apply_fault(fault):
            return
        result = handler(self, arg)
        if result is not None:
            await result

    # -- commands --------------------------------------------------------------
    def do_EHLO(self, arg: str) -> None:
        self._greet(arg, esmtp=True)

    def do_HELO(self, arg: str) -> None:
        self._greet(arg, esmtp=False)

    def _greet(self, arg: str, *, esmtp: bool) -> None:
        name = arg.strip()
        if not _HELO_NAME.match(name):
            self.reply(501, None, "Syntax: EHLO hostname" if esmtp else "Syntax: HELO hostname")
            return
        self._reset_tx()
        self.helo, self.esmtp = name, esmtp
        if not esmtp:
            self.reply(250, None, self.s.hostname)
            return
        ext = [f"{self.s.hostname} Hello {name} [{self.ip}]", "PIPELINING", f"SIZE {self.s.max_message_size}", "8BITMIME",
               "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING"]
        if not self.tls and self.s.tls_creator is not None:
            ext.append("STARTTLS")
        if self._auth_offered():
            ext.append("AUTH " + " ".join(AUTH_MECHANISMS))
        self.reply(250, None, ext[-1], ext[:-1])

    def _auth_offered(self) -> bool:
        return self.s.offer_auth and self.user is None and (self.tls or self.s.allow_plaintext_auth)

    def do_NOOP(self, arg: str) -> None:
        self.reply(250, "2.0.0", "OK")

    def do_RSET(self, arg: str) -> None:
        if arg.strip():
            self.reply(501, "5.5.4", "Syntax: RSET")
            return
        self._reset_tx()
        self.reply(250, "2.0.0", "OK")

    def do_QUIT(self, arg: str) -> None:
        self._write(221, "2.0.0", f"{self.s.hostname} Bye")
        self._close()

    def do_VRFY(self, arg: str) -> None:
        if not arg.strip():
            self.reply(501, "5.5.4", "Syntax: VRFY address")
            return
        # RFC 5321 3.5.3: 252 when the server will not confirm users
        self.reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")

    def do_EXPN(self, arg: str) -> None:
        self.reply(502, "5.5.1", "EXPN not available")

    def do_HELP(self, arg: str) -> None:
        self.reply(214, "2.0.0", "See RFC 5321", ["Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH"])

    def do_STARTTLS(self, arg: str) -> None:
        if arg.strip():
            self.reply(501, "5.5.4", "Syntax: STARTTLS")
            return
        if self.tls:
            self.reply(503, "5.5.1", "TLS already active")
            return
        if self.s.tls_creator is None:
            self.reply(454, "4.7.0", "TLS not available")
            return
        self.reply(220, "2.0.0", "Ready to start TLS")
        self._flush()  # the 220 (and anything before it) leaves in clear text
        # RFC 3207 4.2 / CVE-2011-0411: nothing sent before the handshake counts
        self._buffer.clear()
        self.transport.startTLS(self.s.tls_creator())
        self.tls = True
        self.helo, self.esmtp, self.user = None, False, None
        self._reset_tx()

    async def do_AUTH(self, arg: str) -> None:
        if not self.s.offer_auth:
            self.reply(503, "5.5.1", "AUTH not available on this port")
            return
        if not self.tls and not self.s.allow_plaintext_auth:
            self.reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
            return
        if self.helo is None:
            self.reply(503, "5.5.1", "Send EHLO first")
            return
        if self.user is not None:
            self.reply(503, "5.5.1", "Already authenticated")
            return
        if self.tx is not None:
            self.reply(503, "5.5.1", "AUTH not allowed during a mail transaction")
            return
        parts = arg.split()
        if not parts or len(parts) > 2:
            self.reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
            return
        exchange = sasl.exchange(parts[0], offered=AUTH_MECHANISMS)
        initial = sasl.decode_response(parts[1].encode("ascii", "replace")) if len(parts) == 2 else None
        await self._sasl_step(exchange, exchange.start(initial))

    async def _sasl_step(self, exchange: sasl.Exchange, step: sasl.Step) -> None:
        """RFC 4954 4: a challenge goes out as 334 and the next line answers it; credentials log in."""
        if isinstance(step, sasl.Challenge):
            self._write(334, None, sasl.encode_challenge(step).decode("ascii"))
            self._line_handler = lambda line: self._sasl_respond(exchange, line)
            return
        await self._login(step.username, step.password)

    async def _sasl_respond(self, exchange: sasl.Exchange, line: bytes) -> None:
        await self._sasl_step(exchange, exchange.respond(sasl.decode_response(line)))

    async def _login(self, username: str, password: str) -> None:
        if self.s.authenticator is None:
            raise SMTPReply("Temporary authentication failure", code=454, enhanced="4.7.0")
        avatar = await self.s.authenticator.login(self.ip, username, password)  # failures: see _fail
        if self._mode == CLOSED:
            return
        self.user = avatar.address
        mark_logged_in(self.transport)  # never dropped to make room at the total connection cap
        self._login_deadline.cancel()
        self.log.info("[{session}] authenticated as {user}", session=self.session_id, user=self.user)
        self.reply(235, "2.7.0", "Authentication successful")

    async def do_MAIL(self, arg: str) -> None:
        if self.helo is None:
            raise SMTPReply("Send HELO/EHLO first", code=503, enhanced="5.5.1")
        if self.tx is not None:
            raise SMTPReply("Nested MAIL command", code=503, enhanced="5.5.1")
        try:
            parsed = parse_command_argument(arg, "FROM:", utf8=None, allow_null=True)
        except AddressError as e:
            if e.utf8_required:
                raise SMTPReply("Non-ASCII address requires SMTPUTF8", code=553, enhanced="5.6.7") from None
            raise SMTPReply(f"Bad sender address syntax: {e.reason}", code=501, enhanced="5.1.7") from None
        size, body_8bit, utf8 = 0, False, False
        for key, value in parsed.params.items():
            if key == "SIZE":
                if value is None or not value.isdigit() or len(value) > 20:
                    raise SMTPReply("Syntax: SIZE=number", code=501, enhanced="5.5.4")
                size = int(value)
            elif key == "BODY":
                if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                    raise SMTPReply("Unsupported BODY type", code=555, enhanced="5.5.4")
                body_8bit = value.upper() == "8BITMIME"
            elif key == "SMTPUTF8":
                if value is not None:
                    raise SMTPReply("SMTPUTF8 takes no value", code=555, enhanced="5.5.4")
                utf8 = True
            elif key == "AUTH":
                pass  # RFC 4954 5: may be ignored
            else:
                raise SMTPReply(f"Unsupported parameter {key}", code=555, enhanced="5.5.4")
        if size > self.s.max_message_size:
            raise MessageTooLarge("Message size exceeds fixed maximum message size")
        sender = parsed.mailbox
        await policy.check_sender(self.s.directory, self._facts(), None if sender is None else sender.address)
        if self._mode == CLOSED:
            return
        self.tx = _Tx(sender, utf8, body_8bit or utf8, size)
        self.reply(250, "2.1.0", "Sender OK")

    def _facts(self) -> policy.SessionFacts:
        return policy.SessionFacts(submission=self.s.submission, user=self.user)

    async def do_RCPT(self, arg: str) -> None:
        tx = self.tx
        if tx is None:
            raise SMTPReply("Need MAIL before RCPT", code=503, enhanced="5.5.1")
        if tx.message is not None:
            raise SMTPReply("RCPT not allowed after BDAT", code=503, enhanced="5.5.1")
        if len(tx.recipients) >= self.s.max_recipients:
            raise SMTPReply("Too many recipients", code=452, enhanced="4.5.3")
        if arg[:3].upper() == "TO:" and arg[3:].strip().lower() in ("<postmaster>",):
            mailbox = Mailbox("postmaster", self.s.primary_domain)  # RFC 5321 4.1.1.3
            params: dict[str, str | None] = {}
        else:
            try:
                parsed = parse_command_argument(arg, "TO:", utf8=tx.smtputf8, allow_null=False)
            except AddressError as e:
                if e.utf8_required:
                    raise SMTPReply("Non-ASCII address requires SMTPUTF8", code=553, enhanced="5.6.7") from None
                raise SMTPReply(f"Bad recipient address syntax: {e.reason}", code=501, enhanced="5.1.3") from None
            assert parsed.mailbox is not None
            mailbox, params = parsed.mailbox, parsed.params
        if params:
            raise SMTPReply(f"Unsupported parameter {next(iter(params))}", code=555, enhanced="5.5.4")
        resolution = await policy.check_recipient(
            self.s.directory, self.s.store, self._facts(), mailbox.address, mailbox.domain,
            literal=mailbox.domain.startswith("["), size=tx.declared_size, queue_available=self.s.queue is not None,
            configured_domains=self.s.configured_domains, srs=self.s.srs,
        )
        if self.tx is not tx:
            return
        if self.screen is not None:
            await self.screen.recipient(helo=self.helo or "", user=self.user, sender=tx.sender_text, recipient=mailbox.address, first=not tx.recipients)
            if self.tx is not tx:
                return
        tx.recipients.append(mailbox.address)
        for address in resolution.local:
            tx.local.setdefault(address, None)
        for address in resolution.remote:
            tx.remote.setdefault(address, None)
        self.reply(250, "2.1.5", "Recipient OK")

    def _ready_for_message(self) -> MailError | None:
        if self.tx is None:
            return SMTPReply("Need MAIL command", code=503, enhanced="5.5.1")
        if not self.tx.recipients:
            return SMTPReply("No valid recipients", code=554, enhanced="5.5.1")
        if self.s.store is None:
            return SMTPReply("Mail store not available, try again later", code=451, enhanced="4.3.0")
        return None

    def do_DATA(self, arg: str) -> None:
        if arg.strip():
            self.reply(501, "5.5.4", "Syntax: DATA")
            return
        error = self._ready_for_message()
        if error is None and self.tx is not None and self.tx.bdat:
            error = SMTPReply("DATA not allowed after BDAT", code=503, enhanced="5.5.1")
        if error is not None:
            self._fail(error)
            return
        tx = self.tx
        assert tx is not None
        self._new_message(tx)
        self._decoder = DataDecoder(self._sink, self.s.max_message_size)
        self._mode = DATA
        # RFC 5321 4.5.3.2: the whole data phase, however the bytes trickle in
        tx.phase_end = self.s.clock.seconds() + self.s.data_timeout
        self._set_deadline(self.s.data_timeout)
        self._write(354, None, "End data with <CR><LF>.<CR><LF>")

    def _new_message(self, tx: _Tx) -> None:
        tx.message = self.s.store.new_incoming()
        tx.results_filter = smtp_hook.results_filter(self.s.mailauth, self.user is not None)

    def _sink(self, chunk: bytes) -> None:
        tx = self.tx
        if tx is not None and tx.message is not None:
            if tx.results_filter is not None:
                chunk = tx.results_filter.feed_bytes(chunk)
            if not tx.body_8bit and not chunk.isascii():
                tx.body_8bit = True  # 8-bit data without BODY=8BITMIME: tell the queue anyway
            try:
                tx.message.write(chunk)  # a big message goes to a spool file: the disk may be full
            except OSError as e:
                self._write_failed(tx, e)
                return
            tx.scanner.feed(chunk)

    def _write_failed(self, tx: _Tx, error: OSError) -> None:
        """The message cannot be kept: drop it, count and drop the rest of its data, answer at its end."""
        self.log.warn("[{session}] keeping an arriving message failed: {error}", session=self.session_id, error=error)
        tx.write_error = storage_error(error)
        tx.discard()

    def _data_bytes(self) -> None:
        decoder = self._decoder
        assert decoder is not None
        rest = decoder.feed(bytes(self._buffer))
        self._buffer.clear()
        if rest is None:
            return
        self._buffer += rest
        self._mode = LINE
        self._decoder = None
        if decoder.bare_line_ending:
            self._end_message(SMTPReply("Bare CR or LF in message data not allowed (RFC 5321 2.3.8)", code=550, enhanced="5.6.11"), "DATA")
        elif decoder.too_big:
            self._end_message(MessageTooLarge("Message size exceeds fixed maximum message size"), "DATA")
        elif self.tx is not None and self.tx.write_error is not None:
            self._end_message(self.tx.write_error, "DATA")
        else:
            self._end_message(None, "DATA")

    def do_BDAT(self, arg: str) -> None:
        match = _BDAT_ARGS.match(arg.strip())
        if match is None:
            # the chunk's length is unknown, so the byte stream cannot be followed
            self.reply(501, "5.5.4", "Syntax: BDAT size [LAST]")
            self._close()
            return
        self._bdat_remaining = int(match.group(1))
        self._bdat_last = match.group(2) is not None
        error = self._ready_for_message()
        tx = self.tx
        if error is None and tx is not None:
            if tx.message is not None and not tx.bdat:
                error = SMTPReply("BDAT not allowed after DATA", code=503, enhanced="5.5.1")
            elif tx.bdat_failed is None and tx.message is None:
                tx.bdat = True
                self._new_message(tx)
        self._bdat_error = error
        self._mode = BDAT
        # every chunk of the transaction, up to BDAT LAST, within one data timeout of the first BDAT
        if tx is not None and tx.phase_end is None:
            tx.phase_end = self.s.clock.seconds() + self.s.data_timeout
        self._set_deadline(self.s.data_timeout)
        if self._bdat_remaining == 0:
            self._bdat_chunk_done()

    def _bdat_bytes(self) -> None:
        take = min(self._bdat_remaining, len(self._buffer))
        if take == 0:
            return
        chunk = take_bytes(self._buffer, take)
        self._bdat_remaining -= take
        tx = self.tx
        if self._bdat_error is None and tx is not None and tx.bdat_failed is None:
            tx.size += take
            if tx.size > self.s.max_message_size:
                tx.bdat_failed = MessageTooLarge("Message size exceeds fixed maximum message size")
                tx.discard()
            else:
                tx.checker.feed(chunk)
                self._sink(chunk)
                if tx.write_error is not None:
                    tx.bdat_failed = tx.write_error
        if self._bdat_remaining == 0:
            self._bdat_chunk_done()

    def _bdat_chunk_done(self) -> None:
        self._mode = LINE
        error, self._bdat_error = self._bdat_error, None
        tx = self.tx
        if error is not None:
            # RFC 3030 2: the chunk is consumed and the transaction is over
            if tx is not None:
                self._reset_tx()
            self._fail(error)
            return
        assert tx is not None
        if tx.bdat_failed is not None:
            failed = tx.bdat_failed
            if self._bdat_last:
                self._end_message(failed, "BDAT")
            else:
                self._fail(failed)
            return
        if not self._bdat_last:
            self.reply(250, "2.0.0", f"{tx.size} octets received")
            return
        tx.checker.finish()
        if tx.checker.bare_line_ending:
            self._end_message(SMTPReply("Bare CR or LF in message data not allowed (RFC 5321 2.3.8)", code=550, enhanced="5.6.11"), "BDAT")
        else:
            self._end_message(None, "BDAT")

    def _end_message(self, error: MailError | None, command: str) -> None:
        """The message is complete: answer its fate (after storing it when all is well)."""
        self._start(self._finish_message(error, command), may_finish_now=error is not None)

    async def _finish_message(self, error: MailError | None, command: str) -> None:
        tx = self.tx
        assert tx is not None
        self.tx = None
        try:
            fault = self._fault(command, tx=tx)
            if fault is not None and not fault.after_store and await self._apply_fault(fault):
                return
            if error is not None:
                raise error
            queue_id = headers.new_id()
            message = tx.message
            try:
                if tx.results_filter is not None:
                    message.write(tx.results_filter.close())
                message.finish()  # flushes the spool file's last buffered bytes
            except OSError as e:
                self.log.warn("[{session}] keeping an arriving message failed: {error}", session=self.session_id, error=e)
                raise storage_error(e) from e
            names = tx.scanner.field_names()
            if names.count("received") > MAX_HOPS:
                raise SMTPReply("Too many hops (mail loop?)", code=554, enhanced="5.4.6")
            # an authenticated user's From/Sender must be theirs (553 5.7.1); the DKIM signature is for that From's domain
            sign_domain = await policy.check_header_senders(self.s.directory, self._facts(), tx.scanner.header(), tx.sender_text)
            trace = self._trace(tx, queue_id, names)
            # DKIM signature (submission) or Authentication-Results (inbound) go above our trace
            outcome = await smtp_hook.on_message(self.s.mailauth, self.s.store, authenticated=self.user is not None, ip=self.ip,
                                                 helo=self.helo or "", sender=tx.sender_text, local=list(tx.local), message=message, trace=trace,
                                                 remote=list(tx.remote), session_id=self.session_id, sign_domain=sign_domain)
            if self._mode == CLOSED:
                return
            folder, header = outcome.folder, outcome.header
            if self.screen is not None:  # rate count, milters: may rewrite the message, change recipients or folder, discard
                screened = await self.screen.message(user=self.user, sender=tx.sender_text, recipients=tx.recipients, message=message,
                                                     queue_id=queue_id, local=tx.local, remote=tx.remote)
                message = tx.message = screened.message
                folder, header = screened.folder or folder, screened.header + header
                if screened.discard or not (tx.local or tx.remote):
                    self.reply(250, "2.0.0", f"Ok: queued as {queue_id}")
                    return
            await hand_off(self.s.store, self.s.queue, message, Transaction(
                sender=tx.sender_text, local=list(tx.local), remote=list(tx.remote), smtputf8=tx.smtputf8,
                body_8bit=tx.body_8bit, trace=header + trace, session_id=self.session_id, queue_id=queue_id,
                folder=folder, relay_sender=self._relay_sender(tx),
            ))
            if fault is not None and fault.after_store:  # a test's fault: stored, then dropped before the 250
                await self._apply_fault(fault)
                return
            # the client waits for this reply alone: send it before the log line is written
            self.reply(250, "2.0.0", f"Ok: queued as {queue_id}")
            self._flush()
            self.log.info("[{session}] {qid}: accepted from=<{sender}> local={local} remote={remote} size={size}",
                          session=self.session_id, qid=queue_id, sender=tx.sender_text, local=len(tx.local), remote=len(tx.remote), size=message.size)
        finally:
            tx.discard()

    def _relay_sender(self, tx: _Tx) -> str | None:
        """The SRS envelope sender for copies an alias forwards to other domains (mail from other hosts only)."""
        if self.s.srs is None or not tx.remote or self.user is not None or self.s.submission:
            return None
        return str(self.s.srs.forward(tx.sender_text))

    def _trace(self, tx: _Tx, queue_id: str, names: list[str]) -> bytes:
        protocol = headers.protocol_keyword(esmtp=self.esmtp, tls=self.tls, authenticated=self.user is not None, utf8=tx.smtputf8)
        single = tx.recipients[0] if len(tx.recipients) == 1 else None
        trace = headers.received(helo=self.helo or "unknown", ip=self.ip, hostname=self.s.hostname, protocol=protocol, queue_id=queue_id,
                                 tls=self._tls_info() if self.tls else None, recipient=single)
        if self.s.submission or self.user is not None:
            trace += headers.submission_additions(names, self.s.hostname, queue_id, author=tx.sender_text or self.user or "")
        return trace

    def _tls_info(self) -> headers.TLSInfo | None:
        try:
            handle = self.transport.getHandle()
            version = handle.get_protocol_version_name()
            cipher = handle.get_cipher_name()
            bits = handle.get_cipher_bits()
        except Exception:
            return None
        if not version or not cipher:
            return None
        return headers.TLSInfo(version, cipher, bits)

    def _reset_tx(self) -> None:
        if self.tx is not None:
            self.tx.discard()
        self.tx = None

    _COMMANDS: dict[str, Callable[["SMTPSession", str], Any]] = {
        "EHLO": do_EHLO, "HELO": do_HELO, "MAIL": do_MAIL, "RCPT": do_RCPT, "DATA": do_DATA, "BDAT": do_BDAT,
        "RSET": do_RSET, "NOOP": do_NOOP, "QUIT": do_QUIT, "VRFY": do_VRFY, "EXPN": do_EXPN, "HELP": do_HELP,
        "STARTTLS": do_STARTTLS, "AUTH": do_AUTH,
    }


def _sleep(clock: Any, seconds: float) -> Awaitable[None]:
    d: defer.Deferred[None] = defer.Deferred()
    clock.callLater(seconds, d.callback, None)
    return d
