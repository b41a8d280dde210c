"""A milter client: the Sendmail/Postfix content-filter protocol, version 6, as the MTA side.

Milters (rspamd's proxy worker, opendkim, clamav-milter...) listen on a
socket; for each SMTP session the server opens one connection per milter
and reports the session's events to it, then applies what it answers.

Wire format (libmilter's mfdef.h, the protocol's only reference): every
packet is a 4-byte big-endian length (command byte included), a command
byte and its data; strings are NUL-terminated.

Implementation notes:

* Negotiation ('O'): we offer version 6, every action we can carry out
  (:data:`ACTIONS`) and every protocol flag we honour (:data:`OFFERED`):
  the milter may leave steps out (``SMFIP_NO*``) or not answer them
  (``SMFIP_NR_*``); we then neither send nor wait accordingly.
* Events: connect ('C'), HELO ('H'), MAIL ('M'), RCPT ('R'), DATA ('T'),
  each header ('L'), end of headers ('N'), body chunks of at most 65,535
  bytes ('B'), end of message ('E'); 'A' aborts a transaction that did not
  reach the end of message; 'Q' ends the session; 'U' reports a command
  the server does not know (the milter's own refusal replaces our 500).  Macros ('D') carry the
  names rspamd and opendkim look for (``j``, ``{daemon_name}``, ``i``,
  ``{auth_authen}``, ``{client_addr}``...).  The SMTP server reports events
  at RCPT and at the end of a message (see mailsuite.antispam.policy).
* Answers: continue, accept (nothing more for this message), reject,
  tempfail, reply code (a full SMTP reply), discard, skip (no more body);
  'p' (progress) restarts the timeout.  At the end of message the milter
  may first send modifications: add/change/insert header, replace body,
  add/delete recipient, quarantine; they are collected in
  a :class:`Modifications`.
* Every wait has the milter's ``timeout``; a milter that cannot be reached,
  times out or breaks the protocol is "down" (:class:`MilterDown`), and its
  ``default_action`` decides: "tempfail" (451 4.7.1) or "accept" (it is
  left out for the rest of the session).
"""

from __future__ import annotations

import re
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, error as net_error
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from mailsuite.errors import MailError

log = Logger(namespace="mailsuite.antispam")

VERSION = 6
#: Largest packet accepted from a milter (a replaced body comes in chunks of 64 KiB).
MAX_PACKET = 1024 * 1024
CHUNK = 65535

# SMFIF_*: actions a milter may take at the end of a message.
ADDHDRS, CHGBODY, ADDRCPT, DELRCPT, CHGHDRS, QUARANTINE, CHGFROM, ADDRCPT_PAR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
#: Offered: all but CHGFROM (the envelope sender stays as the client gave it).
ACTIONS = ADDHDRS | CHGBODY | ADDRCPT | DELRCPT | CHGHDRS | QUARANTINE | ADDRCPT_PAR

# SMFIP_*: steps a milter may leave out or not answer.
NOCONNECT, NOHELO, NOMAIL, NORCPT, NOBODY, NOHDRS, NOEOH, NR_HDR = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40, 0x80
NOUNKNOWN, NODATA, SKIP, RCPT_REJ = 0x100, 0x200, 0x400, 0x800
NR_CONN, NR_HELO, NR_MAIL, NR_RCPT, NR_DATA, NR_UNKN, NR_EOH, NR_BODY = 0x1000, 0x2000, 0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000
HDR_LEADSPC = 0x100000
#: Everything but RCPT_REJ (we never report refused recipients).
OFFERED = 0x1FFFFF & ~RCPT_REJ

#: Event command -> (flag: the milter does not want it, flag: the milter does not answer it).
STEPS: dict[bytes, tuple[int, int]] = {
    b"C": (NOCONNECT, NR_CONN), b"H": (NOHELO, NR_HELO), b"M": (NOMAIL, NR_MAIL), b"R": (NORCPT, NR_RCPT),
    b"T": (NODATA, NR_DATA), b"L": (NOHDRS, NR_HDR), b"N": (NOEOH, NR_EOH), b"B": (NOBODY, NR_BODY),
    b"U": (NOUNKNOWN, NR_UNKN),
}

#: Final answers.
CONTINUE, ACCEPT, REJECT, TEMPFAIL, DISCARD, REPLYCODE, SKIP_REPLY = "continue", "accept", "reject", "tempfail", "discard", "replycode", "skip"
_FINAL = {b"c": CONTINUE, b"a": ACCEPT, b"r": REJECT, b"t": TEMPFAIL, b"d": DISCARD, b"y": REPLYCODE, b"s": SKIP_REPLY}


class MilterDown(Exception):
    """The milter cannot be reached, did not answer in time, or broke the protocol."""


@dataclass(frozen=True)
class Reply:
    """A milter's final answer to one event; ``text`` is the SMTP reply of a "replycode"."""

    action: str
    text: str = ""


@dataclass
class Modifications:
    """What a milter asked for at the end of a message."""

    add_headers: list[tuple[str, str]] = field(default_factory=list)
    #: (index, name, value): the index-th (1-based) field of that name; an empty value deletes it.
    change_headers: list[tuple[int, str, str]] = field(default_factory=list)
    #: (index, name, value): insert before the index-th field (0: at the top).
    insert_headers: list[tuple[int, str, str]] = field(default_factory=list)
    body: bytes | None = None
    add_recipients: list[str] = field(default_factory=list)
    delete_recipients: list[str] = field(default_factory=list)
    quarantine: str | None = None

    def touches_message(self) -> bool:
        """True when the stored bytes must change (not only recipients or folder)."""
        return bool(self.add_headers or self.change_headers or self.insert_headers or self.body is not None)


_SCORES = (
    re.compile(r"^\s*(-?[0-9]+(?:\.[0-9]+)?)\s*$"),  # X-Spam-Score: 6.2
    re.compile(r"\bscore=(-?[0-9]+(?:\.[0-9]+)?)"),  # X-Spam-Status: Yes, score=6.2 (SpamAssassin, rspamd)
    re.compile(r"\[\s*(-?[0-9]+(?:\.[0-9]+)?)\s*/"),  # X-Spamd-Result: default: True [6.20 / 15.00]
)
_SCORE_FIELDS = ("x-spam-score", "x-spam-status", "x-spamd-result")
_FLAG_FIELDS = ("x-spam", "x-spam-flag")


def _milter_fields(mods: Modifications) -> list[tuple[str, str]]:
    return list(mods.add_headers) + [(n, v) for _, n, v in mods.change_headers + mods.insert_headers if v]


def spam_score(mods: Modifications) -> float:
    """The highest spam score the milters wrote in the fields they added (0 when none did)."""
    scores = []
    for name, value in _milter_fields(mods):
        if name.lower() in _SCORE_FIELDS:
            for pattern in _SCORES:
                found = pattern.search(value)
                if found:
                    scores.append(float(found.group(1)))
                    break
    return max(scores, default=0.0)


def spam_flagged(mods: Modifications) -> bool:
    """True when a milter added ``X-Spam: Yes`` / ``X-Spam-Flag: YES`` (rspamd's "add header" action)."""
    return any(n.lower() in _FLAG_FIELDS and v.strip().lower().startswith("yes") for n, v in _milter_fields(mods))


def _cstrings(data: bytes) -> list[str]:
    parts = data.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return [p.decode("utf-8", "replace") for p in parts]


def packet(command: bytes, data: bytes = b"") -> bytes:
    """One packet: length (command byte included), command, data."""
    return struct.pack("!I", len(data) + 1) + command + data


def strings(*values: str) -> bytes:
    """NUL-terminated strings, as the protocol writes them."""
    return b"".join(v.encode("utf-8") + b"\0" for v in values)


class _Wire(Protocol):
    """Frames packets from a milter and hands them to whoever waits."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._packets: deque[tuple[bytes, bytes]] = deque()
        self._waiter: defer.Deferred[tuple[bytes, bytes]] | None = None
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 4:
            (length,) = struct.unpack("!I", self._buffer[:4])
            if length < 1 or length > MAX_PACKET:
                self._fail(MilterDown(f"bad packet length {length}"))
                return
            if len(self._buffer) < 4 + length:
                return
            command, payload = bytes(self._buffer[4:5]), bytes(self._buffer[5:4 + length])
            del self._buffer[:4 + length]
            if self._waiter is not None:
                waiter, self._waiter = self._waiter, None
                waiter.callback((command, payload))
            else:
                self._packets.append((command, payload))

    def _fail(self, why: Exception) -> None:
        self.lost = True
        if self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            waiter.errback(why)
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True
        if self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            waiter.errback(MilterDown("connection closed by the milter"))

    def send(self, command: bytes, data: bytes = b"") -> None:
        if self.lost:
            raise MilterDown("connection closed")
        self.transport.write(packet(command, data))

    def receive(self) -> defer.Deferred[tuple[bytes, bytes]]:
        if self._packets:
            return defer.succeed(self._packets.popleft())
        if self.lost:
            return defer.fail(MilterDown("connection closed"))

        def cancel(_: Any) -> None:
            self._waiter = None

        self._waiter = defer.Deferred(cancel)
        return self._waiter

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.loseConnection()


def endpoint_description(address: str) -> str:
    """A Twisted client endpoint for ``inet:host:port``, ``host:port``, ``inet6:[::1]:port`` or ``unix:/path``."""
    if address.startswith("unix:"):
        return "unix:path=" + address[5:].replace(":", "\\:")
    for prefix in ("inet6:", "inet:"):
        if address.startswith(prefix):
            address = address[len(prefix):]
    host, _, port = address.rpartition(":")
    host = host.strip("[]").replace(":", "\\:")
    return f"tcp:host={host}:port={int(port)}"


class MilterClient:
    """One connection to one milter for one SMTP session."""

    def __init__(self, reactor: Any, address: str, timeout: float, name: str = "") -> None:
        self.reactor = reactor
        self.address = address
        self.timeout = timeout
        self.name = name or address
        self.actions = 0
        self.protocol = 0
        self._wire: _Wire | None = None

    async def _next(self) -> tuple[bytes, bytes]:
        assert self._wire is not None
        d = self._wire.receive()
        d.addTimeout(self.timeout, self.reactor)
        try:
            return await d
        except defer.TimeoutError:
            self._wire.close()
            raise MilterDown(f"no answer within {self.timeout:g} s") from None

    async def open(self) -> None:
        """Connect and negotiate (SMFIC_OPTNEG)."""
        endpoint = clientFromString(self.reactor, f"{endpoint_description(self.address)}:timeout={max(1, int(self.timeout))}")
        try:
            self._wire = await connectProtocol(endpoint, _Wire())
        except (net_error.ConnectError, OSError) as e:
            raise MilterDown(f"cannot connect: {e}") from None
        self._wire.send(b"O", struct.pack("!III", VERSION, ACTIONS, OFFERED))
        command, data = await self._next()
        if command != b"O" or len(data) < 12:
            raise MilterDown(f"bad negotiation answer {command!r}")
        version, actions, protocol = struct.unpack("!III", data[:12])
        if version < 2:
            raise MilterDown(f"milter protocol version {version} too old")
        self.actions, self.protocol = actions & ACTIONS, protocol & OFFERED

    def wants(self, command: bytes) -> bool:
        """False when the milter asked not to get this step."""
        skip = STEPS.get(command, (0, 0))[0]
        return not (self.protocol & skip)

    def macros(self, for_command: bytes, values: dict[str, str]) -> None:
        """Send macros (SMFIC_MACRO) for the next event."""
        if self._wire is None or not values:
            return
        data = for_command + b"".join(strings(k, v) for k, v in values.items() if v)
        self._wire.send(b"D", data)

    async def event(self, command: bytes, data: bytes = b"") -> Reply:
        """Send one event and wait for its answer (continue when the milter does not answer this step)."""
        if not self.wants(command):
            return Reply(CONTINUE)
        assert self._wire is not None
        try:
            self._wire.send(command, data)
        except MilterDown:
            raise
        except Exception as e:
            raise MilterDown(str(e)) from None
        if self.protocol & STEPS.get(command, (0, 0))[1]:
            return Reply(CONTINUE)
        return await self._final()

    async def _final(self, mods: Modifications | None = None) -> Reply:
        while True:
            command, data = await self._next()
            if command == b"p":
                continue  # progress: keep waiting, the timeout starts again
            if command in _FINAL:
                text = data.rstrip(b"\0").decode("utf-8", "replace") if command == b"y" else ""
                return Reply(_FINAL[command], text)
            if mods is None:
                raise MilterDown(f"unexpected answer {command!r}")
            _modify(mods, command, data)

    async def end_of_message(self, body_chunks: list[bytes] | None = None) -> tuple[Reply, Modifications]:
        """Send SMFIC_BODYEOB and gather the modifications before the final answer."""
        assert self._wire is not None
        self._wire.send(b"E")
        mods = Modifications()
        reply = await self._final(mods)
        return reply, mods

    def abort(self) -> None:
        """SMFIC_ABORT: forget the current message, keep the connection."""
        if self._wire is not None and not self._wire.lost:
            self._wire.send(b"A")

    def quit(self) -> None:
        """SMFIC_QUIT and close."""
        if self._wire is not None and not self._wire.lost:
            try:
                self._wire.send(b"Q")
            finally:
                self._wire.close()


def _modify(mods: Modifications, command: bytes, data: bytes) -> None:
    if command == b"h":
        name, value = (_cstrings(data) + ["", ""])[:2]
        mods.add_headers.append((name, value))
    elif command in (b"m", b"i"):
        (index,) = struct.unpack("!I", data[:4])
        name, value = (_cstrings(data[4:]) + ["", ""])[:2]
        (mods.change_headers if command == b"m" else mods.insert_headers).append((index, name, value))
    elif command == b"b":
        mods.body = (mods.body or b"") + data
    elif command in (b"+", b"2"):
        mods.add_recipients.append(_cstrings(data)[0].strip("<>"))
    elif command == b"-":
        mods.delete_recipients.append(_cstrings(data)[0].strip("<>"))
    elif command == b"q":
        mods.quarantine = (_cstrings(data) or ["quarantined by milter"])[0]
    else:
        raise MilterDown(f"unknown modification {command!r}")


def split_message(raw: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """(header fields as (name, value), body) of a message with CRLF line ends; values unfolded to LF folds.

    The value is sent without the space after the colon, as Sendmail and
    Postfix do unless the milter asked for SMFIP_HDR_LEADSPC.
    """
    end = raw.find(b"\r\n\r\n")
    if raw.startswith(b"\r\n"):
        head, body = b"", raw[2:]
    elif end < 0:
        head, body = raw, b""
    else:
        head, body = raw[:end + 2], raw[end + 4:]
    fields: list[tuple[str, str]] = []
    for line in head.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + "\n" + line.decode("utf-8", "surrogateescape"))
            continue
        name, _, value = line.partition(b":")
        fields.append((name.decode("utf-8", "surrogateescape").strip(), value.decode("utf-8", "surrogateescape")))
    return fields, body


def apply_modifications(raw: bytes, mods: Modifications) -> bytes:
    """The message with a milter's header and body changes applied (RFC 5322 fields, CRLF line ends)."""
    fields, body = split_message(raw)
    for index, name, value in mods.change_headers:
        seen = 0
        for i, (n, _) in enumerate(fields):
            if n.lower() == name.lower():
                seen += 1
                if seen == max(index, 1):
                    fields[i] = (n, _spaced(value)) if value else ("", "")
                    break
        else:
            if value:
                fields.append((name, _spaced(value)))
    fields = [f for f in fields if f[0]]
    for index, name, value in mods.insert_headers:
        fields.insert(min(index, len(fields)), (name, _spaced(value)))
    for name, value in mods.add_headers:
        fields.append((name, _spaced(value)))
    head = b"".join(f"{n}:{v}".replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8", "surrogateescape") + b"\r\n" for n, v in fields)
    new_body = body if mods.body is None else mods.body
    return head + b"\r\n" + new_body


def _spaced(value: str) -> str:
    """A field value as written after the colon: one space first unless the milter gave its own (SMFIP_HDR_LEADSPC)."""
    return value if value.startswith((" ", "\t")) else " " + value


def reply_error(reply: Reply, stage: str) -> MailError | None:
    """The refusal a final answer means at ``stage`` ("rcpt" or "message"), or None to go on."""
    if reply.action == REJECT:
        return MailError("Command rejected" if stage == "rcpt" else "Message content rejected", code=550, enhanced="5.7.1")
    if reply.action == TEMPFAIL:
        return MailError("Service temporarily unavailable, try again later", code=451, enhanced="4.7.1")
    if reply.action == REPLYCODE:
        code, enhanced, text = parse_reply(reply.text)
        return MailError(text, code=code, enhanced=enhanced)
    return None


def parse_reply(text: str) -> tuple[int, str, str]:
    """``550 5.7.1 Spam message rejected`` -> (550, "5.7.1", "Spam message rejected"); other shapes made safe."""
    parts = text.replace("\r", " ").replace("\n", " ").split(" ", 2)
    code = int(parts[0]) if parts and parts[0].isdigit() and len(parts[0]) == 3 and parts[0][0] in "45" else 550
    rest = parts[1:] if parts and parts[0].isdigit() else parts
    enhanced = f"{code // 100}.7.1"
    if rest and rest[0].count(".") == 2 and rest[0].replace(".", "").isdigit() and rest[0][0] == str(code // 100):
        enhanced, rest = rest[0], rest[1:]
    return code, enhanced, " ".join(rest) or ("Message rejected" if code >= 500 else "Try again later")


@dataclass
class _Milter:
    config: Any  # mailsuite.config.MilterConfig
    client: MilterClient
    opened: bool = False
    down: bool = False
    helo: str | None = None
    done: bool = False  # accepted (or discarded) the current message: no more events for it
    done_session: bool = False  # accepted at connect or HELO: nothing more for the whole session
    in_message: bool = False


@dataclass
class MessageVerdict:
    """What the milters decided about a complete message."""

    mods: Modifications = field(default_factory=Modifications)
    discard: bool = False


class MilterChain:
    """The milters of one SMTP session, asked in order; see the module notes."""

    def __init__(self, reactor: Any, configs: list[Any], *, ip: str, port: int, hostname: str, client_name: str,
                 session_id: str = "-") -> None:
        self.reactor = reactor
        self.ip = ip
        self.port = port
        self.hostname = hostname
        self.client_name = client_name
        self.session_id = session_id
        self.milters = [_Milter(c, MilterClient(reactor, c.address, c.timeout)) for c in configs]
        self.discard = False

    def _down(self, milter: _Milter, why: Exception) -> None:
        milter.down = True
        milter.client.quit()
        action = milter.config.default_action
        log.warn("[{session}] milter {address} down: {why}; default action {action}", session=self.session_id,
                 address=milter.config.address, why=str(why), action=action)
        if action == "tempfail":
            raise MailError("Content filter unavailable, try again later", code=451, enhanced="4.7.1")

    async def _ensure_open(self, milter: _Milter, helo: str) -> None:
        client = milter.client
        if not milter.opened:
            milter.opened = True
            await client.open()
            client.macros(b"C", {"j": self.hostname, "{daemon_name}": "mailsuite", "{client_addr}": self.ip, "{client_name}": self.client_name})
            family = b"6" if ":" in self.ip else b"4"
            reply = await client.event(b"C", strings(self.client_name) + family + struct.pack("!H", self.port) + strings(self.ip))
            self._check(milter, reply, "rcpt")
            milter.done_session = milter.done  # accept at connect: the milter wants nothing more of this session
        if helo and milter.helo != helo and not milter.done_session:
            milter.helo = helo
            self._check(milter, await client.event(b"H", strings(helo)), "rcpt")
            milter.done_session = milter.done

    def _check(self, milter: _Milter, reply: Reply, stage: str) -> None:
        if reply.action == ACCEPT:
            milter.done = True
        elif reply.action == DISCARD:
            milter.done = True
            self.discard = True
        else:
            err = reply_error(reply, stage)
            if err is not None:
                log.info("[{session}] milter {address}: {action} {text}", session=self.session_id, address=milter.config.address,
                         action=reply.action, text=reply.text)
                raise err

    async def recipient(self, *, helo: str, user: str | None, sender: str, recipient: str, first: bool) -> None:
        """MAIL (for the first recipient of a message) and RCPT; MailError on a refusal."""
        if first:
            self.discard = False
        for milter in self.milters:
            if milter.down or milter.done_session:
                continue
            try:
                if first:
                    if milter.in_message:
                        milter.client.abort()  # the last message never reached its end (RSET, refused)
                    milter.done, milter.in_message = False, False
                await self._ensure_open(milter, helo)
                if milter.done:
                    continue
                if first:
                    milter.in_message = True
                    milter.client.macros(b"M", {"{auth_authen}": user or "", "{mail_addr}": sender})
                    self._check(milter, await milter.client.event(b"M", strings(f"<{sender}>")), "rcpt")
                    if milter.done:
                        continue
                milter.client.macros(b"R", {"{rcpt_addr}": recipient})
                self._check(milter, await milter.client.event(b"R", strings(f"<{recipient}>")), "rcpt")
            except MilterDown as e:
                self._down(milter, e)

    async def unknown(self, *, helo: str, line: str) -> None:
        """SMFIC_UNKNOWN: a command the server does not know; MailError when a milter answers with a refusal of its own."""
        for milter in self.milters:
            if milter.down or milter.done_session:
                continue
            try:
                await self._ensure_open(milter, helo)
                if milter.done_session:
                    continue
                reply = await milter.client.event(b"U", strings(line))
                if reply.action in (REJECT, TEMPFAIL, REPLYCODE):
                    error = reply_error(reply, "rcpt")
                    assert error is not None
                    raise error
            except MilterDown as e:
                self._down(milter, e)

    async def message(self, raw: bytes, queue_id: str) -> MessageVerdict:
        """DATA, the header fields, EOH, the body and EOM; the modifications of every milter, in order."""
        verdict = MessageVerdict()
        fields, body = split_message(raw)
        for milter in self.milters:
            if milter.down or milter.done or not milter.in_message:
                continue
            client = milter.client
            try:
                client.macros(b"T", {"i": queue_id})
                self._check(milter, await client.event(b"T"), "message")
                for name, value in fields if not milter.done else ():
                    if not client.protocol & HDR_LEADSPC:
                        value = value[1:] if value.startswith(" ") else value
                    self._check(milter, await client.event(b"L", strings(name, value)), "message")
                    if milter.done:
                        break
                if not milter.done:
                    self._check(milter, await client.event(b"N"), "message")
                for start in range(0, len(body), CHUNK) if not milter.done else ():
                    reply = await client.event(b"B", body[start:start + CHUNK])
                    if reply.action == SKIP_REPLY:
                        break
                    self._check(milter, reply, "message")
                    if milter.done:
                        break
                if not milter.done:
                    client.macros(b"E", {"i": queue_id})
                    reply, mods = await client.end_of_message()
                    self._check(milter, reply, "message")
                    _merge(verdict.mods, mods)
                milter.in_message = False
            except MilterDown as e:
                self._down(milter, e)
        verdict.discard = self.discard
        return verdict

    def close(self) -> None:
        """SMFIC_QUIT to every open milter."""
        for milter in self.milters:
            if milter.opened and not milter.down:
                milter.client.quit()


def _merge(into: Modifications, more: Modifications) -> None:
    into.add_headers += more.add_headers
    into.change_headers += more.change_headers
    into.insert_headers += more.insert_headers
    if more.body is not None:
        into.body = more.body
    into.add_recipients += more.add_recipients
    into.delete_recipients += more.delete_recipients
    into.quarantine = more.quarantine or into.quarantine
