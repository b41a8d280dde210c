"""The captured mail of a running server, seen through the store's API.

Shared by :class:`mailsuite.testing.MailServer` and the HTTP JSON API, so a
Python test and a curl call see the same messages, the same way POP3 and IMAP
clients do (never through file paths).
"""

from __future__ import annotations

import email.policy
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from twisted.internet import defer, threads

_PARSER = BytesParser(policy=email.policy.default)


def parse_message(raw: bytes) -> EmailMessage:
    """Parse stored bytes (CRLF line ends) into an EmailMessage whose text has Python's "\\n" line ends."""
    return _PARSER.parsebytes(raw.replace(b"\r\n", b"\n"))  # type: ignore[return-value]


@dataclass
class CapturedMessage:
    """One stored message with its envelope, as a test looks at it."""

    mailbox: str  # the recipient mailbox (envelope recipient after alias expansion)
    folder: str
    uid: int
    sender: str  # envelope sender (Return-Path), "" for the null sender
    raw: bytes = field(repr=False)
    message: EmailMessage = field(repr=False)

    @property
    def id(self) -> str:
        """Stable id for the HTTP API: ``mailbox/folder/uid``."""
        return f"{self.mailbox}/{self.folder}/{self.uid}"

    @property
    def recipients(self) -> list[str]:
        """Envelope recipients this copy was delivered for."""
        return [self.mailbox]

    @property
    def subject(self) -> str:
        """The decoded Subject header ("" when missing)."""
        return str(self.message.get("Subject", ""))

    def matches(self, to: str | None = None, from_: str | None = None, subject: str | None = None) -> bool:
        """Case-insensitive substring filters on recipient, sender and subject."""
        if to is not None:
            haystack = " ".join([self.mailbox, str(self.message.get("To", "")), str(self.message.get("Cc", ""))]).lower()
            if to.lower() not in haystack:
                return False
        if from_ is not None:
            haystack = " ".join([self.sender, str(self.message.get("From", ""))]).lower()
            if from_.lower() not in haystack:
                return False
        if subject is not None and subject.lower() not in self.subject.lower():
            return False
        return True


def _envelope_sender(raw: bytes) -> str:
    head = raw.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"return-path:"):
            value = line.split(b":", 1)[1].strip().decode("utf-8", "replace")
            return value[1:-1] if value.startswith("<") and value.endswith(">") else value
    return ""


class Mailroom:
    """Lists, deletes and purges the messages of every mailbox of one server context."""

    def __init__(self, context: Any) -> None:
        self.context = context

    def _addresses(self) -> list[str]:
        directory = self.context.directory
        if hasattr(directory, "addresses"):
            return list(directory.addresses())
        return [user.address if hasattr(user, "address") else str(user) for user in directory.list_users()]

    async def _folders(self, address: str) -> list[str]:
        mailbox = self.context.store.user_mailbox(address)
        return [info.name for info in await mailbox.list_folders() if info.selectable]

    async def messages(self, to: str | None = None, from_: str | None = None, subject: str | None = None) -> list[CapturedMessage]:
        """Every stored message (all mailboxes and folders) matching the substring filters."""
        store = self.context.store
        found: list[CapturedMessage] = []
        for address in self._addresses():
            for name in await self._folders(address):
                folder = await store.user_mailbox(address).open_folder(name, read_only=True)
                try:
                    # read on the store's threads, one trip per folder (never a file opened here)
                    octets = await folder.map_messages([m.uid for m in folder.messages()], lambda uid, data: bytes(data))
                    for meta in folder.messages():
                        raw = octets.get(meta.uid)
                        if raw is None:  # expunged meanwhile
                            continue
                        message = CapturedMessage(address, name, meta.uid, _envelope_sender(raw), raw, parse_message(raw))
                        if message.matches(to, from_, subject):
                            found.append(message)
                finally:
                    folder.close()
        return found

    async def _remove(self, address: str, name: str, uids: list[int] | None) -> list[int]:
        folder = await self.context.store.user_mailbox(address).open_folder(name)
        try:
            present = [m.uid for m in folder.messages()]
            targets = present if uids is None else [u for u in uids if u in present]
            if not targets:
                return []
            await folder.store_flags(targets, ["\\Deleted"], "add")
            return list(await folder.expunge(targets))
        finally:
            folder.close()

    async def delete(self, message_id: str) -> bool:
        """Delete one message by its id; False when it is not there."""
        address, name, uid = split_id(message_id)
        return bool(await self._remove(address, name, [uid]))

    async def purge(self) -> int:
        """Delete every stored message (users and mailboxes stay); returns how many."""
        removed = 0
        for address in self._addresses():
            for name in await self._folders(address):
                removed += len(await self._remove(address, name, None))
        return removed

    def add_user(self, address: str, password: str) -> defer.Deferred[None]:
        """Create a user (strict mode) or pre-create a mailbox (capture mode)."""
        directory = self.context.directory
        if hasattr(directory, "remember"):
            directory.remember(address)
            return defer.succeed(None)
        return threads.deferToThread(directory.add_user, address, password)


def split_id(message_id: str) -> tuple[str, str, int]:
    """Inverse of CapturedMessage.id (folder names may contain "/")."""
    address, _, rest = message_id.partition("/")
    name, _, uid = rest.rpartition("/")
    if not address or not name or not uid.isdigit():
        raise ValueError(f"not a message id: {message_id!r}")
    return address, name, int(uid)
