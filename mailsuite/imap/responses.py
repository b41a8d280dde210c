"""The ONE place where failures become IMAP status responses.

Command code raises :mod:`mailsuite.errors` exceptions (or lets the store's
propagate) and :func:`failure_response` turns them into ``NO [CODE] text`` or
``BAD text``.  Response codes come from RFC 3501 7.1, RFC 5530 (IMAP response
codes) and RFC 7888 (TOOBIG).  Anything unexpected becomes
``NO [SERVERBUG]`` and the caller logs the traceback.

A full disk is not a bug: ``ENOSPC`` from the store (or a MailError with
RFC 3463's X.3.1 "mail system full", as SMTP says 452 4.3.1) becomes
``NO [UNAVAILABLE]``, RFC 5530's temporary failure of a subsystem: the
condition is the server's, not the user's, and passes when space is freed,
so the client should keep the message and retry.  Dovecot answers
``[OVERQUOTA]`` for it, which tells the user to delete mail that may not be
theirs to delete; we keep ``[OVERQUOTA]`` for real quotas: ours
(QuotaExceeded) and the file system's per-user quota (``EDQUOT``).
RFC 5530 has no ``SERVERUNAVAILABLE``; ``UNAVAILABLE`` is its name.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from mailsuite import errors, sasl
from mailsuite.imap.search.keys import BadCharset


class CommandError(Exception):
    """A protocol-level refusal raised by command code: status, optional code, text."""

    def __init__(self, status: str, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.code = code


def bad(text: str) -> CommandError:
    """A BAD response: the command was malformed or not valid in this state."""
    return CommandError("BAD", text)


def no(text: str, code: str | None = None) -> CommandError:
    """A NO response: well-formed but refused."""
    return CommandError("NO", text, code)


@dataclass(frozen=True)
class Response:
    """A tagged status: ``status [code] text``; ``unexpected`` asks the caller to log a traceback."""

    status: str
    text: str
    code: str | None = None
    unexpected: bool = False

    def line(self, tag: str) -> bytes:
        """The wire form of the tagged line."""
        code = f"[{self.code}] " if self.code else ""
        return f"{tag} {self.status} {code}{self.text}\r\n".encode("utf-8", "replace")


#: The tagged answer to a command that failed outside any handler (a bug), logged by the caller.
SERVER_BUG = Response("NO", "Internal error.", "SERVERBUG")


def literal_too_big(limit: int) -> Response:
    """A synchronising literal over the cap, refused before the client sends it (RFC 7888 4)."""
    return Response("NO", f"Literal too large (limit {limit} bytes).", "TOOBIG")


#: Returned by a handler that wrote its own tagged line (STARTTLS must before switching).
ANSWERED = Response("OK", "")

#: Commands whose missing target folder gets [TRYCREATE] (RFC 3501 6.3.11, 6.4.7; RFC 6851).
_TRYCREATE_COMMANDS = frozenset({"APPEND", "COPY", "MOVE"})
_LOGIN_COMMANDS = frozenset({"LOGIN", "AUTHENTICATE"})


def _disk_full(error: BaseException) -> int | None:
    """ENOSPC or EDQUOT when ``error`` is, or was raised from, a full disk or file-system quota."""
    seen: BaseException | None = error
    for _ in range(5):  # the store may wrap the OSError once or twice
        if seen is None:
            return None
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return seen.errno
        if isinstance(seen, errors.MailError) and seen.enhanced.endswith(".3.1"):
            return errno.ENOSPC  # RFC 3463 X.3.1: mail system full
        seen = seen.__cause__ or seen.__context__
    return None


def failure_response(error: BaseException, command: str, parse_error: type[BaseException] | None = None) -> Response:
    """Map an exception raised while running ``command`` to its tagged response."""
    if isinstance(error, CommandError):
        return Response(error.status, error.text, error.code)
    if isinstance(error, sasl.SASLError):  # AUTHENTICATE (RFC 3501 6.2.2)
        if isinstance(error, sasl.Cancelled):
            return Response("BAD", "Authentication aborted by client.")
        if isinstance(error, sasl.UnknownMechanism):
            return Response("NO", "Unsupported authentication mechanism.")
        if isinstance(error, sasl.AuthorizationDenied):
            return Response("NO", "Authorization identity differs from the login name.", "AUTHORIZATIONFAILED")
        return Response("BAD", f"{error}.")
    if isinstance(error, BadCharset):  # SEARCH (RFC 3501 6.4.4)
        return Response("NO", str(error), error.code)
    if parse_error is not None and isinstance(error, parse_error):
        return Response("BAD", f"Error in IMAP command {command}: {error}".rstrip(": "))
    full = _disk_full(error)
    if full == errno.EDQUOT:
        return Response("NO", "Disk quota exceeded", "OVERQUOTA")
    if full is not None:
        return Response("NO", "Not enough disk space, try again later", "UNAVAILABLE")
    if isinstance(error, errors.NoSuchFolder):
        code = "TRYCREATE" if command in _TRYCREATE_COMMANDS else "NONEXISTENT"
        return Response("NO", "Mailbox doesn't exist", code)
    if isinstance(error, errors.FolderExists):
        return Response("NO", "Mailbox already exists", "ALREADYEXISTS")
    if isinstance(error, errors.FolderNotEmpty):
        return Response("NO", "Mailbox has children or messages", "INUSE")
    if isinstance(error, errors.QuotaExceeded):
        return Response("NO", "Quota exceeded (mailbox for user is full)", "OVERQUOTA")
    if isinstance(error, errors.MessageTooLarge):
        return Response("NO", "Message too large", "TOOBIG")
    if isinstance(error, errors.InvalidName):
        if command in _LOGIN_COMMANDS:  # a login name the directory cannot even look up
            return Response("NO", "Authentication failed.", "AUTHENTICATIONFAILED")
        return Response("NO", f"Invalid mailbox name: {error.text}", "CANNOT")
    if isinstance(error, errors.NoSuchMessage):
        return Response("NO", "Some of the requested messages no longer exist", "EXPUNGEISSUED")
    if isinstance(error, errors.MailboxInUse):
        return Response("NO", "Mailbox is in use", "INUSE")
    if isinstance(error, errors.AuthenticationFailed):
        return Response("NO", "Authentication failed.", "AUTHENTICATIONFAILED")
    if isinstance(error, errors.LoginThrottled):
        return Response("NO", "Too many failed logins, try again later", "UNAVAILABLE")
    if isinstance(error, errors.MailError):
        if error.permanent:
            return Response("NO", error.text, "CANNOT")
        return Response("NO", error.text, "UNAVAILABLE")
    return Response("NO", "Internal error occurred. Refer to server log for more information.", "SERVERBUG", unexpected=True)
