"""Not-authenticated state: STARTTLS, LOGIN, AUTHENTICATE PLAIN (RFC 3501 6.2, RFC 4959, RFC 4616).

Every login goes through ``context.authenticator`` (the shared twisted.cred
portal with login throttling).  Passwords and SASL payloads are never logged.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from twisted.internet import defer

from mailsuite import errors
from mailsuite.imap.args import Arguments, ParseError
from mailsuite.imap.dispatch import ONLY_NOT_AUTHENTICATED, command
from mailsuite.imap.responses import ANSWERED, Response, bad, no


@command("STARTTLS", ONLY_NOT_AUTHENTICATED)
async def starttls(server: Any, tag: str, args: Arguments) -> Response:
    """RFC 3501 6.2.1: OK, then the TLS handshake; the client must ask CAPABILITY again."""
    args.end()
    if server.tls:
        raise bad("TLS is already active.")
    if server.context.tls is None:
        raise bad("TLS is not available.")
    server.write(Response("OK", "Begin TLS negotiation now.").line(tag))
    server.start_tls()
    return ANSWERED


async def _login(server: Any, username: str, password: str) -> Response:
    """Shared by LOGIN and AUTHENTICATE: authenticate, take a connection slot, enter AUTHENTICATED."""
    authenticator = server.context.authenticator
    if authenticator is None:
        raise no("Logins are not available yet.", "UNAVAILABLE")
    try:
        user = await defer.maybeDeferred(authenticator.login, server.ip, username, password)
    except errors.LoginThrottled:
        server.log.info("{cid}: login throttled for {ip}", cid=server.cid, ip=server.ip)
        server.logging_out = True  # ILoginThrottle: refuse and disconnect
        server.write(b"* BYE Too many failed logins.\r\n")
        raise
    except errors.AuthenticationFailed:
        server.log.info("{cid}: login failed for {user}", cid=server.cid, user=username[:100])
        raise
    except errors.InvalidName:
        raise no("Authentication failed.", "AUTHENTICATIONFAILED") from None
    if server.closing:
        # the client hung up (or the login deadline passed) while the password was checked:
        # no session, no connection slot (see IMAPServer.logged_in)
        raise defer.CancelledError()
    if not server.logged_in(user):
        raise no("Maximum number of connections for this user exceeded.", "LIMIT")
    if not server.tls:
        # allowed by tls.allow_plaintext_auth (test set-ups); the user must hear about it (RFC 3501 7.1 ALERT)
        server.write(b"* OK [ALERT] Your password was sent without encryption; use TLS (port 993 or STARTTLS).\r\n")
    caps = " ".join(server.capabilities())
    return Response("OK", "Logged in", f"CAPABILITY {caps}")


@command("LOGIN", ONLY_NOT_AUTHENTICATED)
async def login(server: Any, tag: str, args: Arguments) -> Response:
    """RFC 3501 6.2.3; refused before TLS unless tls.allow_plaintext_auth (LOGINDISABLED)."""
    args.space()
    username = args.text_astring()
    args.space()
    password = args.text_astring()
    args.end()
    if not server.plaintext_auth_allowed():
        raise no("Plaintext authentication disallowed on non-secure connections.", "PRIVACYREQUIRED")
    return await _login(server, username, password)


def _decode_plain(line: bytes) -> tuple[str, str]:
    """RFC 4616: ``authzid NUL authcid NUL passwd``, base64 encoded."""
    try:
        data = base64.b64decode(line.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise bad("Invalid base64 data.") from None
    parts = data.split(b"\0")
    if len(parts) != 3:
        raise bad("Invalid PLAIN response.")
    try:
        authzid, authcid, password = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError:
        raise bad("Invalid PLAIN response (not UTF-8).") from None
    if authzid and authzid != authcid:
        raise no("Authorization identity differs from the login name.", "AUTHORIZATIONFAILED")
    return authcid, password


@command("AUTHENTICATE", ONLY_NOT_AUTHENTICATED)
async def authenticate(server: Any, tag: str, args: Arguments) -> Response:
    """RFC 3501 6.2.2 with SASL-IR (RFC 4959); PLAIN is the one mechanism offered."""
    args.space()
    mechanism = args.atom().upper()
    initial: bytes | None = None
    if args.maybe_space():
        initial = str(args.atom()).encode("ascii")  # base64 and "=" are atom characters
    args.end()
    if mechanism != "PLAIN":
        raise no("Unsupported authentication mechanism.")
    if not server.plaintext_auth_allowed():
        raise no("Plaintext authentication disallowed on non-secure connections.", "PRIVACYREQUIRED")
    if initial is None:
        server.write(b"+ \r\n")
        answer: defer.Deferred[bytes] = defer.Deferred()

        def line(data: bytes) -> None:
            server.set_line_hook(None)
            answer.callback(data)

        server.set_line_hook(line)
        server.on_lost(lambda: None if answer.called else answer.cancel())
        initial = await answer
        if initial.strip() == b"*":
            raise bad("Authentication aborted by client.")
    elif initial == b"=":
        initial = b""
    authcid, password = _decode_plain(initial)
    return await _login(server, authcid, password)
