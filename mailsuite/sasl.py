"""Server-side SASL exchanges (RFC 4422) shared by SMTP AUTH, IMAP AUTHENTICATE and POP3 AUTH.

Why one module: the three protocols frame SASL differently (``334``, ``+``,
``+ `` challenges; ``=`` for an empty initial response; ``*`` to cancel) but
the mechanisms are the same, and three copies of the PLAIN decoder had
drifted apart.  Each protocol keeps only its framing and maps the errors
below to its replies in one place.

An exchange is a small state machine: :meth:`Exchange.start` takes the
initial response (None when the client sent none) and every later
:meth:`Exchange.respond` one decoded client response; each returns either a
:class:`Challenge` to send or the :class:`Credentials` to verify.  A
mechanism with server-side state across several steps (SCRAM) fits the same
shape.

Mechanisms: PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login: the
server asks "Username:" then "Password:").
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

#: Mechanisms every protocol offers (once TLS is up or plaintext auth is allowed).
MECHANISMS = ("PLAIN", "LOGIN")


class SASLError(Exception):
    """The client's side of the exchange is unusable; the text is safe to show it."""


class Cancelled(SASLError):
    """The client sent ``*`` (RFC 4422 3.5): the exchange ends without a login attempt."""


class MalformedResponse(SASLError):
    """Not base64, wrong field count or not UTF-8: a syntax error in the client's response."""


class InvalidBase64(MalformedResponse):
    """A response line that is not base64 (POP3 answers it apart from other malformed responses)."""


class AuthorizationDenied(SASLError):
    """An authorization identity other than the login name (we support no proxy logins)."""


class UnknownMechanism(SASLError):
    """A mechanism this server does not offer."""


@dataclass(frozen=True)
class Challenge:
    """Server data to send to the client (the protocol base64-encodes it)."""

    data: bytes


@dataclass(frozen=True)
class Credentials:
    """The login name and password the exchange produced, for the authenticator."""

    username: str
    password: str


Step = Challenge | Credentials


def decode_response(line: bytes) -> bytes:
    """One client response line as octets: ``*`` cancels, ``=`` is empty (RFC 4954 4), else base64."""
    text = line.strip()
    if text == b"*":
        raise Cancelled("Authentication cancelled")
    if text == b"=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidBase64("Invalid base64 data") from None


def encode_challenge(challenge: Challenge) -> bytes:
    """The challenge as the base64 text protocols send (empty data gives an empty string)."""
    return base64.b64encode(challenge.data)


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedResponse("Invalid UTF-8 in credentials") from None


class Exchange:
    """One mechanism's run for one login attempt."""

    name = ""

    def start(self, initial: bytes | None) -> Step:
        """Begin with the client's initial response (decoded), or None when it sent none."""
        raise NotImplementedError

    def respond(self, data: bytes) -> Step:
        """Continue with the client's decoded answer to the last challenge."""
        raise NotImplementedError


class Plain(Exchange):
    """RFC 4616: ``[authzid] NUL authcid NUL passwd`` in one response."""

    name = "PLAIN"

    def start(self, initial: bytes | None) -> Step:
        if initial is None:
            return Challenge(b"")  # RFC 4616 2: the server's first challenge is empty
        return self.respond(initial)

    def respond(self, data: bytes) -> Step:
        fields = data.split(b"\x00")
        if len(fields) != 3:
            raise MalformedResponse("Invalid PLAIN response")
        authzid, authcid, password = (_text(f) for f in fields)
        if not authcid:
            raise MalformedResponse("Invalid PLAIN response (empty login name)")
        if authzid and authzid != authcid:
            raise AuthorizationDenied("Authorization identity differs from the login name")
        return Credentials(authcid, password)


class Login(Exchange):
    """The LOGIN mechanism: user name, then password, each asked for by a challenge."""

    name = "LOGIN"

    def __init__(self) -> None:
        self._username: str | None = None

    def start(self, initial: bytes | None) -> Step:
        if initial is None:
            return Challenge(b"Username:")
        return self.respond(initial)

    def respond(self, data: bytes) -> Step:
        if self._username is None:
            self._username = _text(data)
            return Challenge(b"Password:")
        return Credentials(self._username, _text(data))


_EXCHANGES: dict[str, type[Exchange]] = {"PLAIN": Plain, "LOGIN": Login}


def exchange(mechanism: str, offered: tuple[str, ...] = MECHANISMS) -> Exchange:
    """A new exchange for ``mechanism`` (case-insensitive) if it is among ``offered``."""
    name = mechanism.upper()
    if name not in offered or name not in _EXCHANGES:
        raise UnknownMechanism("Unrecognized authentication type")
    return _EXCHANGES[name]()
