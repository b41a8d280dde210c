"""Commands valid in every state: CAPABILITY, NOOP, LOGOUT, ID, ENABLE (RFC 3501 6.1, RFC 2971, RFC 5161)."""

from __future__ import annotations

from typing import Any

import mailsuite
from mailsuite.imap.args import Arguments, ParseError
from mailsuite.imap.dispatch import ANY_STATE, AUTHENTICATED, command
from mailsuite.imap.responses import Response


@command("CAPABILITY", ANY_STATE)
async def capability(server: Any, tag: str, args: Arguments) -> None:
    """RFC 3501 6.1.1: what works now (it changes with TLS and login)."""
    args.end()
    server.write(("* CAPABILITY " + " ".join(server.capabilities()) + "\r\n").encode())


@command("NOOP", ANY_STATE)
async def noop(server: Any, tag: str, args: Arguments) -> None:
    """RFC 3501 6.1.2: the classic poll; pending updates are sent by the dispatcher."""
    args.end()
    server.dirty = True


@command("LOGOUT", ANY_STATE)
async def logout(server: Any, tag: str, args: Arguments) -> Response:
    """RFC 3501 6.1.3: BYE, then the tagged OK, then close."""
    args.end()
    server.write(b"* BYE Logging out\r\n")
    server.close_selected()
    server.logging_out = True
    return Response("OK", "Logout completed.")


@command("ID", ANY_STATE)
async def id_(server: Any, tag: str, args: Arguments) -> None:
    """RFC 2971: remember what the client says (for logs) and name ourselves."""
    args.space()
    if args.accept(b"NIL"):
        params: dict[str, str] = {}
    else:
        if args.peek() != 0x28:
            raise ParseError("Expected ( or NIL")
        args.pos += 1
        params = {}
        while not args.accept(b")"):
            if params:
                args.space()
            key = args.string().decode("utf-8", "replace")
            args.space()
            value = args.nstring_or_nil()
            if len(params) < 30:
                params[key[:30]] = (value or b"").decode("utf-8", "replace")[:1024]
    args.end()
    if params and server.client_id is None:  # logged once per connection: ID may be sent any number of times
        server.log.info("{cid}: client ID {params}", cid=server.cid, params=params)
    server.client_id = params
    server.write(f'* ID ("name" "mailsuite" "version" "{mailsuite.__version__}")\r\n'.encode())


@command("ENABLE", frozenset({AUTHENTICATED}))
async def enable(server: Any, tag: str, args: Arguments) -> None:
    """RFC 5161: CONDSTORE is the one extension here that needs enabling (authenticated state only, 3.1)."""
    args.space()
    names = [args.atom().upper()]
    while args.maybe_space():
        names.append(args.atom().upper())
    args.end()
    enabled = []
    for name in names:
        if name == "CONDSTORE" and "CONDSTORE" not in server.enabled:
            server.enabled.add(name)
            server.condstore = True
            enabled.append(name)
    server.write(("* ENABLED" + "".join(" " + n for n in enabled) + "\r\n").encode())
