"""Not-authenticated state: STARTTLS, LOGIN, AUTHENTICATE PLAIN (RFC 3501 6.2, RFC 4959, RFC 4616).

Every login goes through ``context.authenticator`` (the shared twisted.cred
portal with login throttling).  Passwords and SASL payloads are never logged.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from mailsuite import errors, sasl
from mailsuite.imap.args import Arguments
from mailsuite.imap.dispatch import ONLY_NOT_AUTHENTICATED, command
from mailsuite.imap.responses import ANSWERED, Response, bad, no


@command("STARTTLS", ONLY_NOT_AUTHENTICATED)
async def starttls(server: Any, tag: str, args: Arguments) -> Response:
    """RFC 3501 6.2.1: OK, then the TLS handshake; the client must ask CAPABILITY again."""
    args.end()
    if server.tls:
        raise bad("TLS is already active.")
    if server.s.tls is None:
        raise bad("TLS is not available.")
    server.write(Response("OK", "Begin TLS negotiation now.").line(tag))
    server.start_tls()
    return ANSWERED


async def _login(server: Any, username: str, password: str) -> Response:
    """Shared by LOGIN and AUTHENTICATE: authenticate, take a connection slot, enter AUTHENTICATED."""
    authenticator = server.s.authenticator
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


#: SASL mechanisms offered (CAPABILITY AUTH=...): PLAIN only, as before the shared module.
SASL_MECHANISMS = ("PLAIN",)


@command("AUTHENTICATE", ONLY_NOT_AUTHENTICATED)
async def authenticate(server: Any, tag: str, args: Arguments) -> Response:
    """RFC 3501 6.2.2 with SASL-IR (RFC 4959): the :mod:`mailsuite.sasl` exchange framed as ``+`` lines.

    SASL errors (cancelled, malformed, another authorization identity) are
    answered in :func:`mailsuite.imap.responses.failure_response`.
    """
    args.space()
    mechanism = args.atom().upper()
    initial: bytes | None = None
    if args.maybe_space():
        initial = str(args.atom()).encode("ascii")  # base64 and "=" are atom characters
    args.end()
    exchange = sasl.exchange(mechanism, offered=SASL_MECHANISMS)
    if not server.plaintext_auth_allowed():
        raise no("Plaintext authentication disallowed on non-secure connections.", "PRIVACYREQUIRED")
    step = exchange.start(None if initial is None else sasl.decode_response(initial))
    while isinstance(step, sasl.Challenge):
        server.write(b"+ " + sasl.encode_challenge(step) + b"\r\n")
        step = exchange.respond(sasl.decode_response(await _response_line(server)))
    return await _login(server, step.username, step.password)


async def _response_line(server: Any) -> bytes:
    """The client's next line, the answer to a challenge (RFC 3501 6.2.2)."""
    answer: defer.Deferred[bytes] = defer.Deferred()

    def line(data: bytes) -> None:
        server.set_line_hook(None)
        answer.callback(data)

    server.set_line_hook(line)
    remove = server.on_lost(lambda: None if answer.called else answer.cancel())
    try:
        return await answer
    finally:
        remove()
