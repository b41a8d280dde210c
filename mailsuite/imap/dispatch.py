"""The command table: which IMAP command runs which coroutine, in which states.

Command modules register their handlers with :func:`command`; the protocol
(:mod:`mailsuite.imap.server`) looks them up by name and checks the state
(RFC 3501 3: not authenticated, authenticated, selected) before parsing
arguments.  A handler is ``async def handler(server, tag, args)`` where
``args`` is the argument reader over the rest of the command; it returns
None (a plain ``OK <NAME> completed``) or a :class:`~mailsuite.imap.responses.Response`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable

NOT_AUTHENTICATED = "not-authenticated"
AUTHENTICATED = "authenticated"
SELECTED = "selected"

ANY_STATE = frozenset({NOT_AUTHENTICATED, AUTHENTICATED, SELECTED})
LOGGED_IN = frozenset({AUTHENTICATED, SELECTED})
ONLY_SELECTED = frozenset({SELECTED})
ONLY_NOT_AUTHENTICATED = frozenset({NOT_AUTHENTICATED})

Handler = Callable[[Any, str, Any], Awaitable[Any]]


@dataclass(frozen=True)
class CommandSpec:
    """One command: its handler, the states it is valid in, and how it treats pending updates.

    ``expunge_ok`` is False for FETCH, STORE and SEARCH (non-UID forms):
    RFC 3501 7.4.1 forbids untagged EXPUNGE while they run and right after.
    """

    name: str
    handler: Handler
    states: frozenset[str]
    expunge_ok: bool = True


COMMANDS: dict[str, CommandSpec] = {}
UID_COMMANDS: dict[str, CommandSpec] = {}


def command(name: str, states: frozenset[str], *, expunge_ok: bool = True, uid: bool = False) -> Callable[[Handler], Handler]:
    """Register ``handler`` for ``name`` (or ``UID name`` when ``uid``)."""

    def register(handler: Handler) -> Handler:
        table = UID_COMMANDS if uid else COMMANDS
        table[name] = CommandSpec(name if not uid else f"UID {name}", handler, states, expunge_ok)
        return handler

    return register
