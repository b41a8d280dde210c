"""Errors with a meaning, carrying the reply they deserve.

Each protocol turns a :class:`MailError` into its own wire form in one place
(SMTP reply, IMAP ``NO [CODE]``, POP3 ``-ERR [CODE]``); the code that raises
never writes protocol wording itself.
"""

from __future__ import annotations

import errno


class MailError(Exception):
    """A failure a client should hear about, with an SMTP-style basic and enhanced code.

    ``code`` is the RFC 5321 reply code (4xx temporary, 5xx permanent) and
    ``enhanced`` the RFC 3463 status code; POP3 and IMAP map the class instead.
    """

    code: int = 451
    enhanced: str = "4.3.0"
    default_text: str = "Temporary local problem, try again later"

    def __init__(self, text: str | None = None, *, code: int | None = None, enhanced: str | None = None) -> None:
        self.text = text if text is not None else self.default_text
        if code is not None:
            self.code = code
        if enhanced is not None:
            self.enhanced = enhanced
        super().__init__(self.text)

    @property
    def permanent(self) -> bool:
        """True when retrying the same request cannot succeed."""
        return self.code >= 500


class TemporaryFailure(MailError):
    """Something local went wrong that may pass (disk, lock, DNS); the client should retry."""


class StorageFull(TemporaryFailure):
    """The file system holding mail (or its disk quota) is full: RFC 3463 X.3.1, mail system full."""

    code, enhanced, default_text = 452, "4.3.1", "Mail system full, try again later"


#: errno values that mean "no room left" rather than a broken disk.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def storage_error(error: BaseException) -> TemporaryFailure:
    """The MailError for a failed write of mail to disk: StorageFull when there is no room, else a TemporaryFailure."""
    if isinstance(error, OSError) and error.errno in _FULL:
        return StorageFull()
    return TemporaryFailure(f"Local storage error: {getattr(error, 'strerror', None) or error}")


class NoSuchUser(MailError):
    """The address names no local user, alias or catch-all."""

    code, enhanced, default_text = 550, "5.1.1", "No such user here"


class RelayDenied(MailError):
    """The sender is not allowed to send to a non-local domain."""

    code, enhanced, default_text = 554, "5.7.1", "Relaying denied"


class SenderNotAllowed(MailError):
    """An authenticated user tried to send as an address that is not theirs."""

    code, enhanced, default_text = 553, "5.7.1", "Sender address not owned by the authenticated user"


class QuotaExceeded(MailError):
    """Storing the message would take the mailbox over its byte or message quota."""

    code, enhanced, default_text = 552, "5.2.2", "Mailbox full"


class MessageTooLarge(MailError):
    """The message exceeds the configured size limit."""

    code, enhanced, default_text = 552, "5.3.4", "Message too big"


class InvalidName(MailError):
    """A user, domain or folder name that is unsafe or malformed (``..``, ``/``, NUL, too long)."""

    code, enhanced, default_text = 501, "5.1.3", "Invalid name"


class NoSuchFolder(MailError):
    """The folder does not exist (IMAP answers ``NO [TRYCREATE]`` or ``NO [NONEXISTENT]``)."""

    code, enhanced, default_text = 550, "5.2.0", "No such folder"


class FolderExists(MailError):
    """A folder of that name exists already (IMAP ``NO [ALREADYEXISTS]``)."""

    code, enhanced, default_text = 550, "5.2.0", "Folder already exists"


class FolderNotEmpty(MailError):
    """The operation needs a folder without children or messages."""

    code, enhanced, default_text = 550, "5.2.0", "Folder has children"


class NoSuchMessage(MailError):
    """The message (UID) is gone: expunged by another session or process."""

    code, enhanced, default_text = 550, "5.2.0", "No such message"


class ReadOnlyFolder(MailError):
    """The folder was opened read-only (EXAMINE): flags and expunges are refused."""

    code, enhanced, default_text = 550, "5.2.0", "Folder is open read-only"


class MailboxInUse(MailError):
    """Another session holds the exclusive lock (POP3 ``-ERR [IN-USE]``)."""

    code, enhanced, default_text = 450, "4.2.0", "Mailbox is in use"


class AuthenticationFailed(MailError):
    """Bad user name or password; never says which."""

    code, enhanced, default_text = 535, "5.7.8", "Authentication credentials invalid"


class LoginThrottled(MailError):
    """Too many recent login failures from this client or for this account."""

    code, enhanced, default_text = 454, "4.7.0", "Too many failed logins, try again later"


class ConfigError(Exception):
    """The configuration file cannot be used; the message names file, key and reason."""

    def __init__(self, file: str, key: str | None, reason: str) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        where = f"{file}: {key}: " if key else f"{file}: "
        super().__init__(where + reason)
