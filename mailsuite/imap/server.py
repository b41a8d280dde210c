"""The IMAP4rev1 server protocol (RFC 3501) and its extensions.

Implementation notes
====================

Why not ``twisted.mail.imap4.IMAP4Server``: its FETCH builds whole messages
through ``IMessage`` objects (no streaming with flow control, bodies read
even for ``RFC822.SIZE``), it addresses messages by sequence number at the
mailbox interface (our store speaks UIDs and each session needs its own
sequence view), its IDLE never pushes anything, its literal handling
accepts a literal before checking state or size, and UIDPLUS, CONDSTORE,
MOVE, ENABLE, LIST-EXTENDED are missing.  Extending it would mean replacing
the parser, the dispatcher, FETCH and the mailbox seam, i.e. everything, so
this is a protocol of our own on ``twisted.internet.protocol.Protocol``
with Twisted's ``TimeoutMixin``, TLS (``startTLS``) and producer/consumer
flow control.  Argument syntax lives in :mod:`mailsuite.imap.wire`, message
structure in :mod:`mailsuite.imap.mime`, SEARCH in :mod:`mailsuite.imap.search`.

Invariants this module keeps:

* Framing: a command is one or more lines joined by literals ``{n}``
  (synchronising: answered ``+`` only after the tag, command, state and
  size were checked, RFC 3501 7.5) or ``{n+}`` (LITERAL+, RFC 7888).  A
  synchronising literal over the cap is refused with a tagged ``NO [TOOBIG]``
  before the client sends it; a non-synchronising one over the cap gets
  ``* BYE [TOOBIG]`` and the connection closes (RFC 7888 4), while one
  refused for another reason (state, unknown command) is read to its end
  and answered BAD.  The literals of one command are capped together:
  APPEND's at ``limits.imap_literal_size`` and ``limits.message_size``,
  every other command's at :data:`COMMAND_LITERAL_LIMIT` (64 KiB, as
  Dovecot's line limit: a SEARCH or a folder name never needs more, and ten
  sessions each holding a 50 MB SEARCH literal took 500 MB), and before
  login at :data:`PREAUTH_LITERAL_LIMIT`.  APPEND's message literal (64 KiB
  and more) is written into the store's incoming message as it arrives,
  never held in memory.
* APPEND with a synchronising literal is checked before the ``+``: size,
  the target folder's existence (``NO [TRYCREATE]``) and the user's quota
  (``NO [OVERQUOTA]``, RFC 9208 / RFC 5530), so a refused message is never
  uploaded.  Input is held while the store answers.
* A line longer than ``limits.imap_line_length`` is answered ``BAD`` and
  skipped up to its end; the connection stays usable.  Garbage without a
  valid tag gets an untagged ``* BAD``; after many errors in a row ``* BYE``.
* Commands run one at a time in arrival order; while one runs, input is
  only buffered (IDLE's ``DONE`` and AUTHENTICATE's continuation lines go to
  a line hook instead).  Every command ends with exactly one tagged line,
  whatever happens: failures are mapped in :mod:`.responses` (one place),
  unexpected ones logged with their traceback and answered ``NO [SERVERBUG]``.
* Pending folder changes (other sessions, deliveries) are announced before
  a command's tagged response, EXPUNGEs only where RFC 3501 7.4.1 allows.
  A selected folder that was deleted or renamed ends the session with
  ``* BYE`` (after the running command's tagged answer; at once in IDLE).
* After STARTTLS anything the client pipelined in plaintext is discarded
  (the CVE-2011-0411 class of injection).
* Output backpressure: the protocol is the transport's push producer for
  the whole connection.  While the transport's write buffer is full (the
  peer does not read) no further command is taken on, and once
  :data:`INPUT_HIGH_WATER` bytes of input wait the socket is not read
  either, so a client that pipelines forever without reading costs at most
  that much input plus one command's output.  A connection being closed
  whose peer stopped reading is aborted after a grace period.
* Timeouts are deadlines, not reset by each byte (RFC 3501 5.4 asks for at
  least 30 minutes of inactivity before an autologout):
  ``limits.imap_timeout`` between commands; the same value for a command
  from its first byte to its last (literals included), so trickling one
  byte a second cannot hold a connection; and
  ``limits.imap_login_timeout`` from connect to a successful login.  While
  a command runs the client is only waited for when the command waits for
  it: IDLE and AUTHENTICATE waiting for a line, or output the client does
  not read (each drain of the write buffer is progress, so a long FETCH
  read by the client is never cut).
* No password, AUTHENTICATE payload or message content is ever logged.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsuite import errors
from mailsuite.imap import dispatch
from mailsuite.imap.args import Arguments, ParseError
from mailsuite.imap.dispatch import AUTHENTICATED, NOT_AUTHENTICATED, SELECTED, CommandSpec
from mailsuite.imap.responses import ANSWERED, SERVER_BUG, Response, failure_response, literal_too_big
from mailsuite.limits import mark_logged_in, peer_ip
from mailsuite.protocol.closing import close_with_grace
from mailsuite.protocol.deadline import Deadline
from mailsuite.protocol.flow import InputThrottle
from mailsuite.protocol.lines import take_bytes, take_line

# Handlers register themselves in dispatch.COMMANDS when imported.
from mailsuite.imap import commands_any, commands_auth, commands_folders, commands_messages, idle  # noqa: F401,E402

#: ``{123}`` or ``{123+}`` at the end of a line announces a literal (RFC 3501 4.3, RFC 7888).
_LITERAL = re.compile(rb"\{(\d{1,20})(\+?)\}$")
#: A tag: astring characters except "+" (RFC 3501 9 "tag").
_TAG = re.compile(rb"^([\x21\x23\x24\x26\x27\x2c-\x5b\x5e-\x7a\x7c\x7e]+) ")
#: Largest literal accepted before login (LOGIN / AUTHENTICATE with a literal password).
PREAUTH_LITERAL_LIMIT = 8192
#: Largest literal (all of one command's together) of any command but APPEND, as Dovecot's
#: imap_max_line_length: search keys and folder names never need more.
COMMAND_LITERAL_LIMIT = 64 * 1024
#: APPEND literals from this size on are streamed to the store instead of buffered.
STREAM_LITERAL_MIN = 64 * 1024
#: Seconds a closing connection may take to flush before it is aborted.
CLOSE_GRACE = 10.0
#: Consecutive malformed commands tolerated before ``* BYE``.
MAX_ERRORS = 20
#: Input buffered while it cannot be handled (a command runs, or the peer does not read
#: our output) before reading from the socket pauses.
INPUT_HIGH_WATER = 256 * 1024

#: What the connection timer is waiting for (see _arm).
_WAIT_COMMAND = "command"  # between commands: limits.imap_timeout of inactivity
_IN_COMMAND = "in-command"  # a command is arriving: its deadline counts from its first byte
_RUNNING = "running"  # a command runs: only the client's own silence counts


class _Discard:
    """A literal sink that drops what it is given (literals of a refused LITERAL+ command)."""

    def write(self, data: bytes) -> None:
        pass


_DISCARD = _Discard()


@implementer(IPushProducer)
class IMAPServer(Protocol):
    """One IMAP connection."""

    log = Logger()

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.s = factory.settings  # IMAPSettings: names, limits and the shared parts (never the server context)
        self.reactor = self.s.reactor
        limits = self.s.limits
        self.max_line = limits.imap_line_length
        self.max_literal = limits.imap_literal_size or limits.message_size
        self.message_size = limits.message_size
        self.idle_timeout = limits.imap_timeout
        self.login_timeout = limits.imap_login_timeout
        self.cid = factory.next_id()
        self.ip = "?"
        self.state = NOT_AUTHENTICATED
        self.user: Any = None  # IMailUser after login
        self.mailbox: Any = None  # its IUserMailbox
        self.selected: Any = None  # session.SelectedFolder
        self.tls = bool(factory.implicit_tls)
        self.condstore = False  # RFC 7162 3.1: "CONDSTORE enabled" for this connection
        self.enabled: set[str] = set()
        self.client_id: dict[str, str] | None = None
        self.dirty = False  # the selected folder reported a change not yet fetched
        self._slot_taken = False
        self._buffer = bytearray()
        self._parts: list[bytes] = []
        self._command_size = 0
        self._literal_total = 0  # bytes of literals in the command being read (capped as a whole)
        self._literal_left = 0
        self._literal = bytearray()
        self._literal_sink: Any = None
        self._doomed: bytes | None = None  # the refusal owed once a swallowed command ends
        #: The IIncomingMessage holding the current APPEND's streamed message, if any.
        self.streamed_literal: Any = None
        self._discard_line = False
        self._busy = False
        self._draining = False
        self._line_hook: Callable[[bytes], None] | None = None
        self._closing = False
        self._errors = 0
        self._write_paused = False
        self._writable: list[defer.Deferred[None]] = []
        self._producing = False  # registered as the transport's producer
        self._on_lost: list[Callable[[], None]] = []
        self._change_listeners: list[Callable[[], None]] = []
        self.logging_out = False
        self._abort_deadline = Deadline(self.reactor, self._abort)  # set by disconnect
        self._lost = False
        self._deadline = Deadline(self.reactor, self._timer_fired)  # the one connection timer, see _arm
        self._timer_kind = _WAIT_COMMAND
        self._login_deadline = Deadline(self.reactor, self._login_timed_out)
        self._input: InputThrottle = None  # type: ignore[assignment]  # set once connected
        #: Why writing a streamed APPEND literal failed (disk full...), answered by APPEND.
        self.streamed_literal_error: BaseException | None = None

    # ------------------------------------------------------------------
    # connection life
    # ------------------------------------------------------------------
    def connectionMade(self) -> None:
        self.ip = peer_ip(self.transport.getPeer())
        if ISSLTransport.providedBy(self.transport):
            self.tls = True
        self.transport.registerProducer(self, True)
        self._producing = True
        self._input = InputThrottle(self.transport, INPUT_HIGH_WATER)
        self._arm(_WAIT_COMMAND, self.idle_timeout)
        self._login_deadline.set(self.login_timeout)
        try:  # small responses must not wait for delayed ACKs (Nagle)
            self.transport.setTcpNoDelay(True)
        except Exception:
            pass
        self.log.info("{cid}: connection from {ip} (tls={tls})", cid=self.cid, ip=self.ip, tls=self.tls)
        caps = " ".join(self.capabilities())
        greeting = f"* OK [CAPABILITY {caps}] {self.s.hostname} mailsuite IMAP ready.\r\n".encode()
        fault = self._take_fault("CONNECT")
        if fault is None:
            self.write(greeting)
        else:  # a test's fault (mailsuite.testing.faults): delay, BYE or drop instead of the greeting
            fault.greet(self.reactor, lambda: self.write(greeting), self.write, self.disconnect, self.transport.abortConnection)

    def _take_fault(self, command: str, **target: Any) -> Any:
        """A test's fault for this command (mailsuite.testing.faults), or None (always outside tests)."""
        plan = self.s.faults()
        return plan.take(command, "imap", transport=self.transport, **target) if plan is not None else None

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._closing = True
        self._lost = True
        self._abort_deadline.cancel()
        self._deadline.cancel()
        self._login_deadline.cancel()
        for hook in self._on_lost:
            try:
                hook()
            except Exception:
                self.log.failure("{cid}: cleanup failed", cid=self.cid)
        self._on_lost.clear()
        self.close_selected()
        self.discard_streamed_literal()
        if self._slot_taken and self.user is not None:
            self.factory.user_connections.release(self.user.address)
            self._slot_taken = False
        for d in self._writable:
            d.errback(ConnectionError("connection lost"))
        self._writable.clear()
        self.log.info("{cid}: closed", cid=self.cid)

    @property
    def closing(self) -> bool:
        """True once the connection is being closed (or is gone): a late result must change nothing."""
        return self._closing

    def on_lost(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Run ``hook`` when the connection ends; returns a function removing it."""
        self._on_lost.append(hook)

        def remove() -> None:
            if hook in self._on_lost:
                self._on_lost.remove(hook)

        return remove

    # ------------------------------------------------------------------
    # timeouts: deadlines, see the module notes
    # ------------------------------------------------------------------
    def _arm(self, kind: str, seconds: float) -> None:
        """Close the connection ``seconds`` from now unless the timer is armed again first.

        A later deadline costs no heap operation (see mailsuite.protocol.deadline).
        """
        self._timer_kind = kind
        self._deadline.set(seconds)

    def _timer_fired(self) -> None:
        if self._closing:
            return
        if self._timer_kind == _RUNNING and self._line_hook is None and not self._write_paused:
            # the server, not the client, is slow (a big SEARCH, a slow disk): never cut its work
            self._arm(_RUNNING, self.idle_timeout)
            return
        self.timeoutConnection()

    def _waiting_for_command(self) -> None:
        """A command ended: the inactivity timer runs, or the next (pipelined) command's deadline."""
        if self._busy:
            return  # a running command's own line (IDLE, AUTHENTICATE) was refused: it still runs
        if self._buffer or self._parts or self._literal_left:
            self._arm(_IN_COMMAND, self.idle_timeout)
        else:
            self._arm(_WAIT_COMMAND, self.idle_timeout)

    def timeoutConnection(self) -> None:
        # RFC 3501 5.4: an inactivity timer of at least 30 minutes
        if self._timer_kind == _IN_COMMAND:
            self.log.info("{cid}: command not completed within {seconds} s", cid=self.cid, seconds=self.idle_timeout)
            self.write(b"* BYE Command not completed in time.\r\n")
        else:
            self.log.info("{cid}: inactivity timeout", cid=self.cid)
            self.write(b"* BYE Disconnected for inactivity.\r\n")
        self.disconnect()

    def _login_timed_out(self) -> None:
        """limits.imap_login_timeout passed since connect without a login: BYE, whatever the client does."""
        if self._closing or self.state != NOT_AUTHENTICATED:
            return
        self.log.info("{cid}: no login within {seconds} s", cid=self.cid, seconds=self.login_timeout)
        self.write(b"* BYE Login timeout.\r\n")
        self.disconnect()

    def disconnect(self) -> None:
        """Stop reading and close once everything written has been sent.

        A peer that stopped reading would keep the socket forever (the
        write buffer never drains), so the connection is aborted after
        ``CLOSE_GRACE`` seconds if it is still open.
        """
        if self._closing and self._abort_deadline.pending:
            return
        self._closing = True
        self._buffer.clear()
        unregister, self._producing = self._producing, False
        close_with_grace(self.transport, self._abort_deadline, CLOSE_GRACE, unregister=unregister)

    def _abort(self) -> None:
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None and not self._lost:
            self.log.info("{cid}: peer not reading; connection aborted", cid=self.cid)
            abort()

    # ------------------------------------------------------------------
    # output and flow control
    # ------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Send bytes (responses are built complete, CRLF included)."""
        self.transport.write(data)

    def wait_writable(self) -> defer.Deferred[None]:
        """Fires once the transport can take more (at once when it can now)."""
        if self._closing:
            return defer.fail(ConnectionError("connection closing"))
        if not self._write_paused:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._writable.append(d)
        return d

    def pauseProducing(self) -> None:
        """The transport's write buffer is full: the peer is not reading (see _drain)."""
        self._write_paused = True

    def resumeProducing(self) -> None:
        if not self._write_paused:
            return
        self._write_paused = False
        if self._timer_kind == _RUNNING:
            self._arm(_RUNNING, self.idle_timeout)  # the client reads what a command writes: progress
        waiting, self._writable = self._writable, []
        for d in waiting:
            d.callback(None)
        if not self._closing:
            self._drain()

    def stopProducing(self) -> None:
        self._closing = True
        waiting, self._writable = self._writable, []
        for d in waiting:
            d.errback(ConnectionError("connection lost"))

    # ------------------------------------------------------------------
    # capabilities
    # ------------------------------------------------------------------
    def plaintext_auth_allowed(self) -> bool:
        """RFC 3501 6.2.3 / 11.1: no cleartext passwords before TLS unless configured."""
        return self.tls or self.s.allow_plaintext_auth

    def capabilities(self) -> list[str]:
        """Exactly what works in the current state (RFC 3501 6.1.1)."""
        caps = ["IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE"]
        if self.state == NOT_AUTHENTICATED:
            if not self.tls and self.s.tls is not None:
                caps.append("STARTTLS")
            if self.plaintext_auth_allowed():
                caps.append("AUTH=PLAIN")
            else:
                caps.append("LOGINDISABLED")
            return caps
        caps += ["NAMESPACE", "UNSELECT", "UIDPLUS", "MOVE", "CHILDREN", "SPECIAL-USE",
                 "LIST-EXTENDED", "LIST-STATUS", "CONDSTORE"]
        return caps

    # ------------------------------------------------------------------
    # input framing
    # ------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        if self._timer_kind == _WAIT_COMMAND and data:
            # a command starts: it has until its deadline, however slowly it trickles in
            self._arm(_IN_COMMAND, self.idle_timeout)
        self._buffer += data
        self._drain()

    def pause_input(self) -> None:
        """Stop handling input (a command is running); bytes keep being buffered."""
        self._busy = True

    def resume_input(self) -> None:
        """Handle buffered input again."""
        self._busy = False
        if not self._closing:
            self._waiting_for_command()
        if self._draining:
            return  # the running _drain loop goes on with the buffer
        self._flow()
        if self._buffer and not self._closing:
            self.reactor.callLater(0, self._drain)

    def _flow(self) -> None:
        """Pause reading the socket while too much input waits that cannot be handled yet."""
        if self._closing:
            return
        self._input.update(self._write_paused or (self._busy and self._line_hook is None), len(self._buffer))

    def set_line_hook(self, hook: Callable[[bytes], None] | None) -> None:
        """Route whole input lines to ``hook`` (IDLE, AUTHENTICATE) instead of the parser."""
        self._line_hook = hook
        if hook is not None and self._buffer:
            self.reactor.callLater(0, self._drain)

    def _drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        try:
            self._drain_buffer()
        finally:
            self._draining = False
        self._flow()

    def _drain_buffer(self) -> None:
        # A line hook (IDLE's DONE, AUTHENTICATE's answer) is served even while output is held:
        # it ends the command, whose one tagged line is all it writes.
        while self._buffer and not self._closing and (
            self._line_hook is not None or (not self._busy and not self._write_paused)
        ):
            if self._literal_left:
                chunk = take_bytes(self._buffer, self._literal_left)
                self._literal_left -= len(chunk)
                if self._literal_sink is not None:
                    self._write_literal(chunk)
                    if not self._literal_left:
                        self._parts.append(b"")  # the data went to the store, see streamed_literal
                        self._literal_sink = None
                    continue
                self._literal += chunk
                if not self._literal_left:
                    self._parts.append(bytes(self._literal))
                    self._literal = bytearray()
                continue
            line = take_line(self._buffer)
            if line is None:
                if len(self._buffer) > self.max_line:
                    self._line_too_long(bytes(self._buffer[:200]), complete=False)
                break
            if self._discard_line:
                self._discard_line = False
                continue
            if len(line) > self.max_line:
                self._line_too_long(line[:200], complete=True)
                continue
            self._line_received(line)
        if not self._busy and not self._closing and not self._buffer and not self._parts and not self._literal_left and self._timer_kind == _IN_COMMAND:
            self._arm(_WAIT_COMMAND, self.idle_timeout)  # only empty lines came: nothing is arriving

    def _write_literal(self, chunk: bytes) -> None:
        """Pass literal bytes to the current sink; a sink that fails (disk full) is replaced by a discarding one.

        The rest of the literal is still read (the client sends it anyway) and
        APPEND answers the error once the command is complete.
        """
        try:
            self._literal_sink.write(chunk)
        except Exception as e:  # noqa: BLE001 - answered by the command, see streamed_literal_error
            if self._literal_sink is self.streamed_literal:
                self.streamed_literal_error = e
                sink, self.streamed_literal = self.streamed_literal, None
                sink.discard()
            self._literal_sink = _DISCARD

    def _line_too_long(self, head: bytes, *, complete: bool) -> None:
        first = self._parts[0] if self._parts else head
        self._parts = []
        self._command_size = 0
        self._literal_total = 0
        if not complete:
            self._buffer.clear()
            self._discard_line = True
        self._waiting_for_command()
        self._protocol_error(first, "Command line too long")

    def _protocol_error(self, line: bytes, text: str) -> None:
        """Answer a framing/syntax error: tagged BAD when the tag is readable, else untagged."""
        m = _TAG.match(line if b" " in line else line + b" ")
        tag = m.group(1).decode("ascii") if m else "*"
        self.write(f"{tag} BAD {text}\r\n".encode())
        self.count_error()

    def count_error(self) -> None:
        """One more malformed command in a row; too many end the connection."""
        self._errors += 1
        if self._errors >= MAX_ERRORS and not self._closing:
            self.write(b"* BYE Too many invalid IMAP commands.\r\n")
            self.disconnect()

    def _line_received(self, line: bytes) -> None:
        if self._line_hook is not None:
            self._line_hook(line)
            return
        if not self._parts and not line.strip():
            return  # stray empty line (e.g. CRLF after a literal): ignored
        self._command_size += len(line)
        if self._command_size > self.max_line:
            self._line_too_long(line[:200], complete=True)
            return
        m = _LITERAL.search(line)
        if m is None:
            self._parts.append(line)
            parts, self._parts, self._command_size, self._literal_total = self._parts, [], 0, 0
            self._waiting_for_command()  # this one is complete; the next one's deadline, if it started
            doomed, self._doomed = self._doomed, None
            if doomed is not None:
                self.write(doomed)
                self.count_error()
                return
            self._command(parts)
            return
        size, nonsync = int(m.group(1)), bool(m.group(2))
        first = self._parts[0] if self._parts else line
        refusal = self._doomed or self._literal_refusal(first, size)
        if refusal is not None and nonsync and b"[TOOBIG]" not in refusal and size <= self.max_literal:
            # the data is on its way: swallow it and the rest of the command, then refuse it
            self._doomed = refusal
            self._parts.append(line)
            self._literal_sink = _DISCARD
            if size == 0:
                self._parts.append(b"")
                self._literal_sink = None
            else:
                self._literal_left = size
            return
        if refusal is not None:
            self._parts, self._command_size, self._literal_total = [], 0, 0
            self._doomed = None
            self._waiting_for_command()
            if nonsync:
                # RFC 7888 4: the data is on its way and cannot be skipped safely
                self.log.info("{cid}: non-synchronising literal of {size} bytes refused", cid=self.cid, size=size)
                self.write(b"* BYE [TOOBIG] Literal too large.\r\n")
                self.disconnect()
            else:
                self.write(refusal)
                self.count_error()
            return
        self._literal_total += size
        tag = _TAG.match(first)
        append = self._lookup(first[tag.end():])[0] == "APPEND" and self.s.store is not None
        if append and not nonsync and self.state != NOT_AUTHENTICATED:
            target = self._append_target(line[: m.start()])
            if target is not None:
                self._check_append(tag.group(1).decode("ascii"), target, line, m.start(), size)
                return
        self._accept_literal(line, m.start(), size, nonsync, append)

    def _accept_literal(self, line: bytes, start: int, size: int, nonsync: bool, append: bool) -> None:
        """Read the literal announced at ``line[start:]`` (asking for it with ``+`` when synchronising)."""
        if size >= STREAM_LITERAL_MIN and append:
            # APPEND's message goes straight into the store's incoming message (spilled to
            # disk when large) instead of memory; the command line sees an empty literal
            self.discard_streamed_literal()
            self.streamed_literal = self._literal_sink = self.s.store.new_incoming()
            line = line[:start] + (b"{0+}" if nonsync else b"{0}")
        self._parts.append(line)
        if size == 0:
            self._parts.append(b"")
        else:
            self._literal_left = size
        if not nonsync:
            self.write(b"+ OK\r\n")

    def _append_target(self, head: bytes) -> str | None:
        """The folder of an APPEND whose message literal is announced after ``head``, else None.

        None also when the literal being announced is the folder name itself,
        or the command does not parse (it is then answered BAD as a whole).
        """
        parts = self._parts
        raw = b"".join(p + b"\r\n" if i % 2 == 0 else p for i, p in enumerate(parts)) + head
        m = _TAG.match(raw)
        if m is None:
            return None
        _, sep, rest = raw[m.end():].partition(b" ")
        try:
            args = Arguments(sep + rest)
            args.space()
            name = args.mailbox()
            if args.at_end():
                return None  # the literal is the folder name
            args.space()
            if args.peek() == 0x28:
                args.flag_list()
                args.space()
            if args.peek() == 0x22:
                args.date_time()
                args.space()
            return name if args.at_end() else None
        except Exception:  # noqa: BLE001 - any parse problem: let the whole command be answered
            return None

    def _check_append(self, tag: str, name: str, line: bytes, start: int, size: int) -> None:
        """Before ``+``: does the folder exist, does the message fit the quota (RFC 3501 6.3.11, RFC 9208 5)?

        Input is held meanwhile (the client waits for the continuation); a
        refusal ends the command with its tagged NO and the message is never sent.
        """
        self._busy = True

        async def check() -> None:
            if not await self.mailbox.folder_exists(name):
                raise errors.NoSuchFolder()
            await self.s.store.check_quota(self.user.address, size)

        def done(result: Any) -> None:
            self._busy = False
            if self._closing:
                return
            if isinstance(result, Failure):
                response = failure_response(result.value, "APPEND")
                if response.unexpected:
                    self.log.failure("{cid}: APPEND check failed", result, cid=self.cid)
                self._parts, self._command_size, self._literal_total = [], 0, 0
                self._waiting_for_command()
                self.write(response.line(tag))
            else:
                self._accept_literal(line, start, size, False, True)
            self._drain()

        defer.Deferred.fromCoroutine(check()).addBoth(done)

    def _literal_refusal(self, first: bytes, size: int) -> bytes | None:
        """The tagged refusal of a literal announced in a command starting with ``first``, or None."""
        m = _TAG.match(first)
        if m is None:
            return b"* BAD Invalid tag.\r\n"
        tag = m.group(1).decode("ascii")
        name, spec = self._lookup(first[m.end():])
        if spec is None:
            return f"{tag} BAD Unknown command.\r\n".encode()
        if self.state not in spec.states:
            return f"{tag} BAD {name} not allowed now.\r\n".encode()
        if self.state == NOT_AUTHENTICATED:
            limit = PREAUTH_LITERAL_LIMIT
        elif name == "APPEND":
            limit = min(self.max_literal, self.message_size)
        else:
            limit = min(self.max_literal, COMMAND_LITERAL_LIMIT)
        if size > limit or self._literal_total + size > limit:
            return literal_too_big(limit).line(tag)
        return None

    def _lookup(self, rest: bytes) -> tuple[str, CommandSpec | None]:
        name, _, rest = rest.partition(b" ")
        upper = name.decode("ascii", "replace").upper()
        if upper == "UID":
            sub = rest.split(b" ", 1)[0].decode("ascii", "replace").upper()
            return f"UID {sub}", dispatch.UID_COMMANDS.get(sub)
        return upper, dispatch.COMMANDS.get(upper)

    # ------------------------------------------------------------------
    # dispatch
    # ------------------------------------------------------------------
    def _command(self, parts: list[bytes]) -> None:
        first = parts[0]
        m = _TAG.match(first + (b" " if b" " not in first else b""))
        if m is None:
            self._protocol_error(first, "Error in IMAP command received by server.")
            return
        tag = m.group(1).decode("ascii")
        # the whole command as sent, literals inline (RFC 3501 4.3)
        raw = b"".join(p + b"\r\n" if i % 2 == 0 and i + 1 < len(parts) else p for i, p in enumerate(parts))
        rest = raw[m.end():] if len(first) > m.end() - 1 else b""
        name_bytes, sep, args_bytes = rest.partition(b" ")
        args_bytes = sep + args_bytes  # handlers read the separating space themselves
        if not name_bytes:
            self._protocol_error(first, "Missing command.")
            return
        name = name_bytes.decode("ascii", "replace").upper()
        spec: CommandSpec | None
        if name == "UID":
            sub, sep, args_bytes = args_bytes[1:].partition(b" ")
            args_bytes = sep + args_bytes
            sub_name = sub.decode("ascii", "replace").upper()
            spec = dispatch.UID_COMMANDS.get(sub_name)
            name = f"UID {sub_name}"
        else:
            spec = dispatch.COMMANDS.get(name)
        if spec is None:
            self.write(f"{tag} BAD Error in IMAP command {name[:40]}: Unknown command.\r\n".encode("utf-8", "replace"))
            self.count_error()
            return
        if self.state not in spec.states:
            why = {NOT_AUTHENTICATED: "Not logged in", AUTHENTICATED: "No mailbox selected", SELECTED: "Not allowed while a mailbox is selected"}[self.state]
            if self.state != NOT_AUTHENTICATED and spec.states == dispatch.ONLY_NOT_AUTHENTICATED:
                why = "Already logged in"
            self.write(f"{tag} BAD {why}.\r\n".encode())
            self.count_error()
            return
        self.pause_input()
        self._arm(_RUNNING, self.idle_timeout)
        d = defer.Deferred.fromCoroutine(self._run(spec, tag, args_bytes))
        d.addErrback(self._crashed, tag)

    async def _run(self, spec: CommandSpec, tag: str, args_bytes: bytes) -> None:
        self.log.debug("{cid}: {tag} {command}", cid=self.cid, tag=tag, command=spec.name)
        fault = self._take_fault(spec.name, user=self.user)
        if fault is not None and await fault.perform(self.reactor, self.write, self.disconnect, self.transport.abortConnection, tag):
            self.discard_streamed_literal()  # a test's fault answered (or dropped) in the command's place
            return None if self._closing else self.resume_input()
        try:
            args = Arguments(args_bytes)
            result = await spec.handler(self, tag, args)
        except GeneratorExit:  # the coroutine itself is being closed: nothing more may run
            raise
        except BaseException as e:  # noqa: BLE001 - every failure becomes one tagged line
            if isinstance(e, defer.CancelledError) and self._closing:
                return
            response = failure_response(e, spec.name.split()[-1], ParseError)
            if response.unexpected:
                self.log.failure("{cid}: {command} failed", Failure(e), cid=self.cid, command=spec.name)
            bad_command = response.status == "BAD"
        else:
            bad_command = False
            response = result if isinstance(result, Response) else Response("OK", f"{spec.name} completed.")
        self.discard_streamed_literal()
        if response is ANSWERED:
            if not self._closing:
                self.resume_input()
            return
        if not self._closing:
            try:
                await self.announce(expunge_ok=spec.expunge_ok)
            except Exception:
                self.log.failure("{cid}: announcing changes failed", cid=self.cid)
        self.write(response.line(tag))
        if bad_command:
            self.count_error()
        else:
            self._errors = 0
        if self.logging_out:
            self.disconnect()
        elif not self._closing:
            self.resume_input()

    def discard_streamed_literal(self) -> None:
        """Free a streamed APPEND literal nobody took (failed command, lost connection)."""
        sink, self.streamed_literal = self.streamed_literal, None
        self._literal_sink = None
        self.streamed_literal_error = None
        if sink is not None:
            sink.discard()

    def _crashed(self, failure: Failure, tag: str) -> None:
        self.log.failure("{cid}: internal error", failure, cid=self.cid)
        self.write(SERVER_BUG.line(tag))
        self.resume_input()

    # ------------------------------------------------------------------
    # the selected folder
    # ------------------------------------------------------------------
    def folder_changed(self) -> None:
        """The store's watch callback: something changed in the selected folder."""
        self.dirty = True
        for listener in list(self._change_listeners):
            listener()

    def add_change_listener(self, listener: Callable[[], None]) -> None:
        """IDLE's hook: called (besides setting ``dirty``) when the selected folder changes."""
        self._change_listeners = [*self._change_listeners, listener]

    def remove_change_listener(self, listener: Callable[[], None]) -> None:
        self._change_listeners = [x for x in self._change_listeners if x is not listener]

    async def refresh(self) -> None:
        """Fetch the store's changes into the session view (responses wait for announce)."""
        selected = self.selected
        if selected is None:
            return
        self.dirty = False
        try:
            change = await selected.folder.refresh()
        except errors.NoSuchFolder:
            if self.selected is selected:
                self.selected_vanished()
            return
        if self.selected is selected:
            selected.apply(change)

    def selected_vanished(self) -> None:
        """The selected folder was deleted or renamed (here or by another session): BYE and close.

        Its sequence numbers and UIDs mean nothing any more and RFC 3501 has
        no response that leaves the selected state, so, as other servers do,
        the session ends with an untagged BYE (RFC 3501 7.1.5) and the client
        reconnects and lists the folders again.
        """
        self.log.info("{cid}: selected folder is gone; closing", cid=self.cid)
        self.write(b"* BYE The selected mailbox was deleted or renamed.\r\n")
        self.close_selected()
        if self._line_hook is not None:
            self.disconnect()  # IDLE: no tagged answer is due before DONE
        else:
            self.logging_out = True  # the running command's tagged answer goes out, then the close

    async def announce(self, *, expunge_ok: bool, force: bool = False) -> None:
        """Send the untagged responses owed for changes (RFC 3501 7.3, 7.4.1)."""
        if self.selected is None:
            return
        if self.dirty or force:
            await self.refresh()
        if self.selected is None:
            return
        lines = self.selected.pending(allow_expunge=expunge_ok, condstore=self.condstore)
        if lines:
            self.write(b"".join(lines))

    def close_selected(self) -> None:
        """Leave the selected state (CLOSE, UNSELECT, SELECT of another folder, logout)."""
        selected, self.selected = self.selected, None
        if selected is not None:
            unwatch = getattr(selected, "unwatch", None)
            if unwatch is not None:
                try:
                    unwatch()
                except Exception:
                    self.log.failure("{cid}: unwatch failed", cid=self.cid)
            try:
                selected.folder.close()
            except Exception:
                self.log.failure("{cid}: closing the folder failed", cid=self.cid)
        self.dirty = False
        if self.state == SELECTED:
            self.state = AUTHENTICATED

    def logged_in(self, user: Any) -> bool:
        """Enter the authenticated state; False (and nothing changes) when the user is at the connection cap.

        A connection that is closing (the client hung up while its password
        was verified) takes no slot: connectionLost, which gives slots back,
        has run or is about to, and would never see this one.
        """
        if self._closing:
            return False
        if not self.factory.user_connections.acquire(user.address):
            return False
        self._login_deadline.cancel()
        self._slot_taken = True
        self.user = user
        self.mailbox = user.mailbox
        self.state = AUTHENTICATED
        mark_logged_in(self.transport)  # never dropped to make room at the total connection cap
        self.log.info("{cid}: logged in as {user}", cid=self.cid, user=user.address)
        return True

    def start_tls(self) -> None:
        """Switch the transport to TLS after ``OK Begin TLS`` (RFC 3501 6.2.1)."""
        self._buffer.clear()  # nothing pipelined in plaintext survives the switch
        self._parts = []
        self.transport.startTLS(self.s.tls.server_creator())
        self.tls = True
