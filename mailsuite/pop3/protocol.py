"""The POP3 server session: RFC 1939 with CAPA (RFC 2449), STLS (RFC 2595),
SASL PLAIN (RFC 5034) and response codes (RFC 2449 8, RFC 3206).

Implementation notes:
- A plain Twisted Protocol with its own line framing (CRLF, a bare LF
  accepted), dispatch and timers, as the SMTP server has; nothing of
  twisted.mail.pop3 is used.  Logins go through the shared authenticator
  (one throttle for SMTP, POP3 and IMAP), messages come from the shared
  store through IUserMailbox / IFolder.
- States (RFC 1939 3): AUTHORIZATION until a login succeeds and the maildrop
  lock is held, TRANSACTION, then UPDATE after QUIT.  Each command is
  accepted only in the states RFC 1939 allows it in.
- Pipelining (RFC 2449 6.6): received bytes wait in one buffer and lines are
  taken from it strictly one at a time; while a command waits for the
  authenticator, the store or the network, later lines wait in the buffer,
  so replies keep their order and a command after PASS never runs before
  the login is decided.
- Flow control, both ways, for the whole connection: the session is the
  transport's streaming producer.  When the client stops reading (the
  transport's write buffer is full and pauses us), no further line is taken
  from the buffer and a RETR/TOP/LIST in progress stops reading the store;
  while lines wait (a command is busy, or output is paused), input beyond
  :data:`MAX_BUFFERED` stops socket reads.  So whatever the client
  pipelines, at most about 64 KiB of replies and MAX_BUFFERED of input are
  held per connection, logged in or not.
- Timeouts are deadlines, not inactivity timers reset by every byte
  (slowloris): a command line must be complete within ``timeout`` seconds
  from its first byte (or from the end of the previous command); output
  sent to a client that is still reading (a long RETR to a slow link) counts
  as progress.  A connection not logged in ``login_timeout`` seconds after
  it opened is closed (``limits.pop3_login_timeout``).  Both answer ``-ERR``
  and close; a client that does not even read its replies is aborted.
- STLS (RFC 2595 4): after "+OK" every byte already received in plaintext
  is discarded (the whole input buffer: pipelined lines and a partial line),
  so nothing injected before the handshake is read as a command after it.
  Before TLS, USER, PASS and AUTH are refused and not advertised unless
  tls.allow_plaintext_auth.
- Exclusive access (RFC 1939 8): the store's maildrop lock is taken after
  authentication and released when the session ends in any way: QUIT
  (after the UPDATE state is done), a lost connection, a timeout.  A second
  session gets ``-ERR [IN-USE]``.  TCP keepalive with short timers notices a
  client that vanished silently within about two minutes, so even then the
  lock does not wait for the idle timeout.
- Deletions happen only in the UPDATE state after QUIT; a lost connection
  or timeout never reaches it (RFC 1939 6).
- RETR and TOP stream the message from the store in chunks read off the
  reactor thread, paused with the connection, so memory stays flat for any
  message size; LIST and UIDL use the snapshot taken at login and read no
  message body.
- SASL mechanisms are :mod:`mailsuite.sasl`'s exchanges; this module only
  frames them ("+ " challenges, one response line each).
- Errors, SASL ones included, become replies in one place
  (:meth:`POP3Session.reply_error`);
  anything unexpected is logged with its traceback and answered
  ``-ERR [SYS/TEMP]``; no password or AUTH payload is ever logged.
"""

from __future__ import annotations

import itertools
import socket
from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsuite import sasl
from mailsuite.errors import AuthenticationFailed, LoginThrottled, MailboxInUse, MailError, NoSuchMessage
from mailsuite.limits import mark_logged_in, peer_ip
from mailsuite.pop3.encoding import TERMINATOR
from mailsuite.pop3.maildrop import Maildrop, NoSuchNumber
from mailsuite.pop3.streaming import ResponseStreamer
from mailsuite.protocol.closing import close_with_grace
from mailsuite.protocol.deadline import Deadline
from mailsuite.protocol.flow import InputThrottle
from mailsuite.protocol.lines import take_line

AUTHORIZATION = "AUTHORIZATION"
TRANSACTION = "TRANSACTION"
UPDATE = "UPDATE"

#: Message lines per write while streaming LIST / UIDL.
LISTING_BATCH = 1024
#: Failed logins tolerated on one connection before it is closed.
MAX_AUTH_FAILURES = 3
#: Unknown or misplaced commands tolerated before the connection is closed.
MAX_BAD_COMMANDS = 20
#: Unread input kept while lines wait (a busy command, a client not reading replies)
#: before socket reads are paused.  POP3 command lines are short (RFC 2449 4: 255
#: octets), so this is thousands of pipelined commands.
MAX_BUFFERED = 64 * 1024
#: Seconds a connection closed after a timeout may take to hear its last reply
#: before it is aborted (a client that does not read would otherwise hold it open).
CLOSE_GRACE = 10.0
#: SASL mechanisms offered (RFC 5034 / RFC 2449 6.3): PLAIN only, as before the shared module.
SASL_MECHANISMS = ("PLAIN",)

#: Which commands each state accepts (RFC 1939 4-6, RFC 2449 5, RFC 2595 4, RFC 5034 4).
COMMANDS: dict[str, frozenset[bytes]] = {
    AUTHORIZATION: frozenset({b"CAPA", b"USER", b"PASS", b"AUTH", b"STLS", b"QUIT", b"APOP"}),
    TRANSACTION: frozenset({b"CAPA", b"STAT", b"LIST", b"RETR", b"DELE", b"NOOP", b"RSET", b"QUIT", b"TOP", b"UIDL"}),
    UPDATE: frozenset(),
}
KNOWN_COMMANDS = frozenset().union(*COMMANDS.values())

_connection_ids = itertools.count(1)


@dataclass(frozen=True)
class SessionSettings:
    """Everything a session needs from the server, passed in by the factory (no globals)."""

    #: ``login(ip, username, password) -> Deferred[IMailUser]``, throttled (mailsuite.auth).
    authenticator: Any
    hostname: str
    #: Seconds a command line may take from its first byte, and a client may stay
    #: silent between commands (RFC 1939 3: the autologout timer, at least 600).
    timeout: float
    #: Provides callLater and seconds (the reactor, or task.Clock in tests).
    clock: Any
    #: Returns the server TLS connection creator for STLS; None when TLS is not set up.
    tls_creator: Callable[[], Any] | None
    #: The listener wraps connections in TLS from the first byte (port 995).
    implicit_tls: bool = False
    #: tls.allow_plaintext_auth: USER / PASS / AUTH before TLS.
    allow_plaintext_auth: bool = False
    listener: str = "pop3"
    #: Seconds from connect to a successful login (limits.pop3_login_timeout).
    login_timeout: float = 60.0
    #: The test fault plan (mailsuite.testing.faults), read at each use; returns None outside tests.
    faults: Callable[[], Any] = lambda: None


@implementer(IPushProducer)
class POP3Session(Protocol):
    """One client connection (see the module notes for the rules it keeps).

    It is also the transport's push producer for the whole connection: when
    the client stops reading, the transport pauses us and no further command
    is taken on.
    """

    log = Logger()
    #: RFC 2449 4: command lines are at most 255 octets; SASL responses may be longer.
    MAX_LENGTH = 8192

    def __init__(self, settings: SessionSettings) -> None:
        self.settings = settings
        self.clock = settings.clock
        self.cid = f"{settings.listener}-{next(_connection_ids)}"
        self.ip = "?"
        self.phase = AUTHORIZATION
        #: What the next line is: "COMMAND", or "AUTH" (a SASL response after "+ ").
        self.state = "COMMAND"
        self.secure = settings.implicit_tls
        self.user: str | None = None
        self.maildrop: Maildrop | None = None
        self._pending_user: bytes | None = None
        self._exchange: sasl.Exchange | None = None  # the SASL exchange waiting for a response line
        self._release: Callable[[], None] | None = None
        self._buffer = bytearray()
        self._busy = False
        self._processing = False
        self._closed = False
        self._write_paused = False  # the transport paused us: the client does not read
        self._streamer: ResponseStreamer | None = None
        self._mid_response = False
        self._auth_failures = 0
        self._bad_commands = 0
        self._deadline = Deadline(self.clock, self._timed_out)  # the client must have done its part by then
        self._login_deadline = Deadline(self.clock, self._login_timed_out)
        self._input: InputThrottle = None  # type: ignore[assignment]  # set once connected

    # -- connection ---------------------------------------------------------
    def connectionMade(self) -> None:
        """Greet (RFC 1939 4; no APOP timestamp since APOP is not offered) and start the timers."""
        self.ip = peer_ip(self.transport.getPeer())
        self.secure = self.settings.implicit_tls or ISSLTransport.providedBy(self.transport)
        self.log.info("{cid} connect from {ip} (tls={tls})", cid=self.cid, ip=self.ip, tls=self.secure)
        sock = tcp_socket(self.transport)
        if sock is not None:
            # A response's last small write must not wait for the ACK of the previous
            # (Nagle + delayed ACK costs ~40 ms per RETR otherwise).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            enable_keepalive(sock)
        self.transport.registerProducer(self, True)
        self._input = InputThrottle(self.transport, MAX_BUFFERED)
        self._expect_client()
        self._login_deadline.set(self.settings.login_timeout)
        greeting = b"+OK " + self.settings.hostname.encode("ascii", "replace") + b" POP3 server ready"
        fault = self._fault("CONNECT")
        if fault is None:
            self._send(greeting)
        else:  # a test's fault (mailsuite.testing.faults): delay, -ERR or drop instead of the greeting
            fault.greet(self.clock, lambda: self._send(greeting), self.transport.write, self._close, self.transport.abortConnection)

    def connectionLost(self, reason: Failure = ConnectionDone()) -> None:  # type: ignore[assignment]
        """Forget buffered input, stop a response under way, give the maildrop lock back (unless UPDATE still runs)."""
        self._closed = True
        self._buffer.clear()
        self._deadline.cancel()
        self._login_deadline.cancel()
        if self._streamer is not None:
            self._streamer.stopProducing()
        if self.phase != UPDATE:
            self._end_session()
        self.log.info("{cid} disconnected", cid=self.cid)

    def _end_session(self) -> None:
        """Close the folder and release the lock; safe to call more than once."""
        maildrop, self.maildrop = self.maildrop, None
        release, self._release = self._release, None
        try:
            if maildrop is not None:
                maildrop.folder.close()
        finally:
            if release is not None:
                release()
                self.log.debug("{cid} released maildrop lock of {user}", cid=self.cid, user=self.user)

    def _close(self, grace: float | None = None) -> None:
        """Say nothing more, send what is written, then close.

        A client that does not read its last replies would keep the
        connection open forever, so it is aborted after ``grace`` seconds
        (the command timeout unless given).
        """
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        self._login_deadline.cancel()
        close_with_grace(self.transport, self._deadline, self.settings.timeout if grace is None else grace)  # _timed_out aborts

    # -- timers ----------------------------------------------------------------
    def _set_deadline(self, seconds: float) -> None:
        self._deadline.set(seconds)

    def _expect_client(self) -> None:
        """The client now has ``timeout`` seconds to do its part: send the next command line, read output."""
        self._set_deadline(self.settings.timeout)

    def _timed_out(self) -> None:
        if self._closed:  # closed, but the client never took its last replies
            self.transport.abortConnection()
            return
        if self._write_paused:  # the client neither reads nor sends: it cannot hear an -ERR either
            self.log.info("{cid} {ip} stopped reading responses; connection aborted", cid=self.cid, ip=self.ip)
            self._abort()
            return
        if self._busy:  # the server, not the client, is slow (a login, the disk): wait for it
            self._expect_client()
            return
        # RFC 1939 3: the autologout timer closes the connection without entering UPDATE
        self.log.info("{cid} timeout after {seconds}s from {ip}", cid=self.cid, seconds=self.settings.timeout, ip=self.ip)
        self.err("Disconnected for inactivity")
        self._close(CLOSE_GRACE)

    def _login_timed_out(self) -> None:
        if self._closed or self.phase != AUTHORIZATION:
            return
        self.log.info("{cid} no login from {ip} within {seconds}s", cid=self.cid, ip=self.ip, seconds=self.settings.login_timeout)
        if self._write_paused:
            self._abort()
            return
        self.err("Disconnected: no login in time")
        self._close(CLOSE_GRACE)

    def _abort(self) -> None:
        self._closed = True
        self._buffer.clear()
        self.transport.abortConnection()

    # -- input: framing, pipelining, flow control, STLS discard ------------------
    def dataReceived(self, data: bytes) -> None:
        """Buffer the bytes and take whole lines from them while the session may."""
        if self._closed:
            return
        if not self._buffer and not self._busy and not self._write_paused:
            self._expect_client()  # the first byte of a line: it has `timeout` from now, not from each byte
        self._buffer += data
        self._process()

    def _process(self) -> None:
        """Handle buffered lines one at a time (RFC 2449 6.6 pipelining), then adjust socket reading."""
        if self._processing:
            return
        self._processing = True
        try:
            while not self._busy and not self._write_paused and not self._closed:
                line = take_line(self._buffer)
                if line is None:
                    if len(self._buffer) > self.MAX_LENGTH:
                        self._line_too_long(len(self._buffer))
                    break
                if len(line) > self.MAX_LENGTH:
                    self._line_too_long(len(line))
                    break
                self._dispatch(line)
        finally:
            self._processing = False
        if self._closed:
            return
        # stop reading the socket while input piles up that cannot be handled yet
        self._input.update(self._busy or self._write_paused, len(self._buffer))

    def _line_too_long(self, length: int) -> None:
        """A line beyond MAX_LENGTH: say so and hang up (the rest of the stream is unframed)."""
        self.log.info("{cid} line too long ({length} bytes)", cid=self.cid, length=length)
        self.err("Line too long")
        self._close()

    def _dispatch(self, line: bytes) -> None:
        try:
            result = self.state_AUTH(line) if self.state == "AUTH" else self.state_COMMAND(line)
        except Exception:
            self.reply_error(Failure())
            result = None
        if isinstance(result, defer.Deferred):
            self._busy = True
            result.addBoth(self._command_done)
        elif not self._closed:
            self._expect_client()

    def _command_done(self, result: Any) -> None:
        self._busy = False
        if isinstance(result, Failure):
            self.reply_error(result)
        if not self._closed:
            self._expect_client()
            self._process()

    # -- IPushProducer: the transport tells us when its write buffer is full ------
    def pauseProducing(self) -> None:
        """The client is not reading: take on no command, pause a response under way."""
        self._write_paused = True
        if self._streamer is not None:
            self._streamer.pauseProducing()

    def resumeProducing(self) -> None:
        """The client read what was queued: go on."""
        if not self._write_paused:
            return
        self._write_paused = False
        if self._streamer is not None:
            self._streamer.resumeProducing()
        if not self._closed:
            self._process()

    def stopProducing(self) -> None:
        """The connection is going away."""
        self._write_paused = True
        if self._streamer is not None:
            self._streamer.stopProducing()

    def state_COMMAND(self, line: bytes) -> Any:
        """Split "VERB argument" and dispatch by state."""
        verb, _, arg = line.partition(b" ")
        verb = verb.upper()
        if verb not in KNOWN_COMMANDS:
            return self._bad_command(b"Unknown command")
        if verb not in COMMANDS[self.phase]:
            return self._bad_command(b"Command not valid in this state")
        handler = getattr(self, "do_" + verb.decode("ascii"))
        fault = self._fault(verb.decode("ascii"))
        if fault is not None:  # a test's fault: delay, -ERR or drop in the command's place
            done = defer.ensureDeferred(fault.perform(self.settings.clock, self.transport.write, self._close, self.transport.abortConnection))
            return done.addCallback(lambda replaced: None if replaced else handler(arg))
        return handler(arg)

    def _fault(self, command: str) -> Any:
        plan = self.settings.faults()
        return plan.take(command, "pop3", transport=self.transport, user=self.user) if plan is not None else None

    def _bad_command(self, text: bytes) -> None:
        self._bad_commands += 1
        self.err(text)
        if self._bad_commands >= MAX_BAD_COMMANDS:
            self.log.info("{cid} too many bad commands", cid=self.cid)
            self._close()

    # -- replies --------------------------------------------------------------
    def _send(self, line: bytes) -> None:
        self.transport.write(line + b"\r\n")

    def ok(self, text: bytes | str = b"") -> None:
        """Send a one-line "+OK"."""
        if isinstance(text, str):
            text = text.encode("utf-8")
        self._send(b"+OK " + text if text else b"+OK")

    def err(self, text: bytes | str, code: bytes | None = None) -> None:
        """Send a one-line "-ERR", with an RFC 2449 8 response code in brackets if given."""
        if isinstance(text, str):
            text = text.encode("utf-8")
        text = text.replace(b"\r", b" ").replace(b"\n", b" ")  # an error text can never add a line
        self._send(b"-ERR " + (b"[" + code + b"] " if code else b"") + text)

    def reply_error(self, failure: Failure) -> None:
        """The one place where exceptions become POP3 replies."""
        error = failure.value
        if isinstance(error, (ConnectionLost, ConnectionDone)) or self._closed:
            self.log.debug("{cid} gave up a command: connection lost", cid=self.cid)
            return
        if self._mid_response:
            # A multi-line response is half sent: no reply can follow it.
            self.log.failure("{cid} failed in the middle of a response", failure, cid=self.cid)
            self._mid_response = False
            self._abort()
            return
        if isinstance(error, NoSuchNumber):
            self.err(error.reason)
        elif isinstance(error, MailboxInUse):
            self.err("Mailbox is locked by another POP3 session", b"IN-USE")  # RFC 2449 8.1.2
        elif isinstance(error, LoginThrottled):
            self.err("Too many failed logins, try again later", b"SYS/TEMP")  # RFC 3206 4
            self._close()
        elif isinstance(error, sasl.Cancelled):
            self.err("Authentication cancelled")  # RFC 5034 4
        elif isinstance(error, sasl.InvalidBase64):
            self.err("Invalid base64 in AUTH response")
        elif isinstance(error, sasl.UnknownMechanism):
            self.err("Unsupported SASL mechanism")
        elif isinstance(error, (AuthenticationFailed, sasl.SASLError)):
            if isinstance(error, sasl.SASLError):
                self._auth_failures += 1  # a malformed PLAIN response, or acting as someone else: a failed login
            self.err("Authentication failed", b"AUTH")  # RFC 3206 5
            if self._auth_failures >= MAX_AUTH_FAILURES:
                self._close()
        elif isinstance(error, NoSuchMessage):
            self.err("Message was removed by another session")
        elif isinstance(error, MailError):
            self.err(error.text, b"SYS/PERM" if error.permanent else b"SYS/TEMP")  # RFC 3206 4
        else:
            self.log.failure("{cid} unexpected error", failure, cid=self.cid)
            self.err("Internal server error, try again later", b"SYS/TEMP")

    # -- AUTHORIZATION state --------------------------------------------------
    def _login_allowed(self) -> bool:
        return self.secure or self.settings.allow_plaintext_auth

    def _tls_available(self) -> bool:
        return not self.secure and self.settings.tls_creator is not None

    def capabilities(self) -> list[bytes]:
        """What this connection can do (RFC 2449 6); the same list in both states (RFC 2449 5)."""
        caps = [b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING"]
        if self._login_allowed():
            caps += [b"USER", b"SASL " + " ".join(SASL_MECHANISMS).encode()]
        if self._tls_available():
            caps.append(b"STLS")
        return caps

    def do_CAPA(self, arg: bytes) -> None:
        """RFC 2449 5."""
        self.transport.write(b"".join([b"+OK Capability list follows\r\n"] + [cap + b"\r\n" for cap in self.capabilities()] + [TERMINATOR]))

    def do_STLS(self, arg: bytes) -> None:
        """RFC 2595 4: start TLS and drop everything received before it."""
        if self.secure:
            return self.err("Already using TLS")
        if self.settings.tls_creator is None:
            return self.err("TLS is not available")
        self.ok("Begin TLS negotiation")
        self._buffer.clear()  # bytes pipelined behind STLS were sent in plaintext
        self._pending_user = None
        self.transport.startTLS(self.settings.tls_creator())
        self.secure = True
        self.log.info("{cid} STLS", cid=self.cid)
        return None

    def _refuse_plaintext(self) -> None:
        self.err("Log in only over TLS: use STLS first", b"AUTH")

    def do_USER(self, arg: bytes) -> None:
        """RFC 1939 7 USER: remember the name for PASS."""
        if not self._login_allowed():
            return self._refuse_plaintext()
        if not arg.strip():
            return self.err("USER needs a name")
        self._pending_user = arg.strip()
        self.ok("Send PASS")
        return None

    def do_PASS(self, arg: bytes) -> defer.Deferred[None] | None:
        """RFC 1939 7 PASS: the whole rest of the line is the password (it may contain spaces)."""
        if not self._login_allowed():
            return self._refuse_plaintext()
        user, self._pending_user = self._pending_user, None
        if user is None:
            return self.err("USER first")
        try:
            name, secret = user.decode("utf-8"), arg.decode("utf-8")
        except UnicodeDecodeError:
            self._auth_failures += 1
            raise AuthenticationFailed() from None
        return defer.Deferred.fromCoroutine(self._login(name, secret))

    def do_APOP(self, arg: bytes) -> None:
        """RFC 1939 7 APOP needs the plaintext password on the server: not offered (hashes are stored)."""
        self.err("APOP is not supported")

    def do_AUTH(self, arg: bytes) -> defer.Deferred[None] | None:
        """RFC 5034 4: AUTH with one of :data:`SASL_MECHANISMS`, with or without an initial response."""
        if not self._login_allowed():
            return self._refuse_plaintext()
        if not arg.strip():
            # Pre-RFC 5034 clients send a bare AUTH to list mechanisms.
            self.transport.write(b"+OK SASL mechanisms follow\r\n" + b"".join(m.encode() + b"\r\n" for m in SASL_MECHANISMS) + TERMINATOR)
            return None
        mechanism, _, initial = arg.strip().partition(b" ")
        exchange = sasl.exchange(mechanism.decode("ascii", "replace"), offered=SASL_MECHANISMS)
        return self._sasl_step(exchange, exchange.start(sasl.decode_response(initial) if initial else None))

    def state_AUTH(self, line: bytes) -> defer.Deferred[None] | None:
        """The client's SASL response line after "+ "."""
        self.state = "COMMAND"
        exchange, self._exchange = self._exchange, None
        assert exchange is not None
        return self._sasl_step(exchange, exchange.respond(sasl.decode_response(line)))

    def _sasl_step(self, exchange: sasl.Exchange, step: sasl.Step) -> defer.Deferred[None] | None:
        """A challenge goes out after "+ " (RFC 5034 4) and the next line answers it; credentials log in."""
        if isinstance(step, sasl.Challenge):
            self.state = "AUTH"
            self._exchange = exchange
            self._send(b"+ " + sasl.encode_challenge(step))
            return None
        return defer.Deferred.fromCoroutine(self._login(step.username, step.password))

    async def _login(self, name: str, secret: str) -> None:
        """Authenticate, take the maildrop lock, open INBOX, snapshot it: TRANSACTION state."""
        try:
            avatar = await defer.maybeDeferred(self.settings.authenticator.login, self.ip, name, secret)
        except AuthenticationFailed:
            self._auth_failures += 1
            self.log.info("{cid} login failed for {user} from {ip}", cid=self.cid, user=name, ip=self.ip)
            raise
        except LoginThrottled:
            self.log.info("{cid} login throttled for {user} from {ip}", cid=self.cid, user=name, ip=self.ip)
            raise
        if self._closed:
            return
        release = await defer.maybeDeferred(avatar.mailbox.lock_exclusive, self)
        if self._closed:
            release()
            return
        self._release = release
        self.user = avatar.address
        try:
            folder = await defer.maybeDeferred(avatar.mailbox.open_folder, "INBOX", read_only=True)
        except BaseException:
            self._end_session()
            raise
        self.maildrop = Maildrop(avatar.mailbox, folder)
        if self._closed:
            self._end_session()
            return
        self.phase = TRANSACTION
        mark_logged_in(self.transport)  # never dropped to make room at the total connection cap
        self._login_deadline.cancel()
        count, octets = self.maildrop.stat()
        self.log.info("{cid} logged in as {user}: {count} messages", cid=self.cid, user=self.user, count=count)
        self.ok(f"Logged in, {count} messages ({octets} octets)")

    # -- TRANSACTION state (RFC 1939 5) ---------------------------------------
    def _drop(self) -> Maildrop:
        assert self.maildrop is not None
        return self.maildrop

    def do_STAT(self, arg: bytes) -> None:
        """RFC 1939 5 STAT: count and octets of messages not marked deleted."""
        count, octets = self._drop().stat()
        self.ok(f"{count} {octets}")

    def do_LIST(self, arg: bytes) -> defer.Deferred[int] | None:
        """RFC 1939 5 LIST [msg]: sizes from the snapshot."""
        if arg.strip():
            n, info, _ = self._drop().get(arg.strip())
            return self.ok(f"{n} {info.size}")
        count, octets = self._drop().stat()
        return self._stream_listing(f"{count} messages ({octets} octets)", (b"%d %d\r\n" % (n, info.size) for n, info, _ in self._drop().listing()))

    def do_UIDL(self, arg: bytes) -> defer.Deferred[int] | None:
        """RFC 1939 7 UIDL [msg]: the store's stable keys."""
        if arg.strip():
            n, _, uid = self._drop().get(arg.strip())
            return self.ok(b"%d %s" % (n, uid))
        return self._stream_listing("Unique-ID listing follows", (b"%d %s\r\n" % (n, uid) for n, _, uid in self._drop().listing()))

    def _stream_listing(self, first_line: str, lines: Any) -> defer.Deferred[int]:
        self.ok(first_line)
        batches = _batched(lines, LISTING_BATCH)

        def source() -> defer.Deferred[bytes | None]:
            return defer.succeed(next(batches, None))

        return self._stream(source)

    def _stream(self, source: Callable[[], defer.Deferred[bytes | None]]) -> defer.Deferred[int]:
        """Write a long response; the session passes the transport's pause/resume on to it."""
        self._mid_response = True
        # every chunk the client takes is progress: a slow but reading client is not timed out
        streamer = self._streamer = ResponseStreamer(self.transport, source, self._expect_client)
        if self._write_paused:
            streamer.pauseProducing()

        def finished(result: Any) -> Any:
            self._streamer = None
            if not isinstance(result, Failure):
                self._mid_response = False
            return result

        return streamer.start().addBoth(finished)

    def do_RETR(self, arg: bytes) -> defer.Deferred[None]:
        """RFC 1939 5 RETR msg: the whole message, streamed."""
        n, info, _ = self._drop().get(arg.strip())
        return defer.Deferred.fromCoroutine(self._send_message(info, None, f"{info.size} octets"))

    def do_TOP(self, arg: bytes) -> defer.Deferred[None] | None:
        """RFC 1939 7 TOP msg n: header, blank line and the first n body lines."""
        parts = arg.split()
        if len(parts) != 2 or not parts[1].isdigit():
            return self.err("Usage: TOP message lines")
        n, info, _ = self._drop().get(parts[0])
        return defer.Deferred.fromCoroutine(self._send_message(info, int(parts[1]), "Top of message follows"))

    async def _send_message(self, info: Any, body_lines: int | None, first_line: str) -> None:
        message = await self._drop().open_encoded(info, body_lines)  # read on the store's threads
        try:
            if self._closed:
                return
            self.ok(first_line)
            await self._stream(message.next_chunk)
        finally:
            message.close()

    def do_DELE(self, arg: bytes) -> None:
        """RFC 1939 5 DELE msg: only marks; the store is changed in the UPDATE state."""
        n = self._drop().mark_deleted(arg.strip())
        self.ok(f"Message {n} marked for deletion")

    def do_NOOP(self, arg: bytes) -> None:
        """RFC 1939 5 NOOP."""
        self.ok()

    def do_RSET(self, arg: bytes) -> None:
        """RFC 1939 5 RSET: unmark every message."""
        self._drop().reset()
        count, octets = self._drop().stat()
        self.ok(f"{count} messages ({octets} octets)")

    def do_QUIT(self, arg: bytes) -> defer.Deferred[None] | None:
        """RFC 1939 4/6 QUIT: in TRANSACTION, enter UPDATE and remove the marked messages."""
        if self.phase == AUTHORIZATION:
            self.ok("Bye")
            self._close()
            return None
        return defer.Deferred.fromCoroutine(self._update())

    async def _update(self) -> None:
        self.phase = UPDATE
        maildrop = self._drop()
        marked = len(maildrop.marked_uids())
        try:
            removed = await maildrop.commit()
        except Exception:
            self.log.failure("{cid} UPDATE failed for {user}", cid=self.cid, user=self.user)
            self._end_session()
            if not self._closed:
                self.err("Some deleted messages were not removed", b"SYS/TEMP")  # RFC 1939 6
                self._close()
            return
        # Release the lock before the client hears +OK, so its next session finds it free.
        self._end_session()
        self.log.info("{cid} QUIT: {removed} of {marked} marked messages removed for {user}", cid=self.cid, removed=removed, marked=marked, user=self.user)
        if not self._closed:
            self.ok(f"Bye, {marked} messages deleted")
            self._close()


#: TCP keepalive timers: a peer that vanished without a FIN or RST is noticed after
#: about KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_PROBES seconds (2 minutes),
#: so its maildrop lock does not wait for the 10-minute inactivity timeout.
KEEPALIVE_IDLE = 60
KEEPALIVE_INTERVAL = 10
KEEPALIVE_PROBES = 6


def tcp_socket(transport: Any) -> socket.socket | None:
    """The TCP socket under a transport, through the TLS and connection-limit wrappers (None if there is none)."""
    for _ in range(6):
        sock = getattr(transport, "socket", None)
        if isinstance(sock, socket.socket):
            return sock
        transport = getattr(transport, "transport", None)
        if transport is None:
            return None
    return None


def enable_keepalive(sock: socket.socket) -> None:
    """Turn on TCP keepalive with short timers where the platform allows it."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL), ("TCP_KEEPCNT", KEEPALIVE_PROBES)):
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


def _batched(lines: Any, size: int) -> Any:
    """Join an iterator of lines into chunks of ``size`` lines, then the terminator."""
    batch: list[bytes] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= size:
            yield b"".join(batch)
            batch = []
    batch.append(TERMINATOR)
    yield b"".join(batch)
