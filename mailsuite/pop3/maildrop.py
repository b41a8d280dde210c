"""One POP3 session's view of a user's INBOX (RFC 1939 TRANSACTION and UPDATE states).

Implementation notes:
- The message list is copied from the folder's snapshot once, at login,
  and never refreshed: message numbers stay valid for the whole session
  and mail that arrives meanwhile is seen by the next session only
  (RFC 1939 5 numbers messages for the session).
- The session reads through a read-only folder, so POP3 never changes
  \\Recent or \\Seen that IMAP clients of the same mailbox rely on.
- DELE only marks a number; nothing touches the store before QUIT.  RSET
  clears the marks.  :meth:`commit` (the UPDATE state, RFC 1939 6) opens
  INBOX for writing, sets \\Deleted on the marked UIDs and expunges exactly
  those, so a dropped
  connection, which never calls commit, deletes nothing, and messages
  another session marked \\Deleted are not expunged by us.
- The unique-id listing (RFC 1939 7 UIDL) is the store's stable message
  key (the Maildir base name), which survives flag changes, other
  expunges, restarts and UIDVALIDITY changes.  A key that is not a legal
  unique-id (1 to 70 characters 0x21..0x7E) is replaced by a digest of
  itself, which is just as stable.
- Sizes are the store's sizes (CRLF line ends, before byte-stuffing),
  which RFC 1939 LIST asks for; no message body is read for STAT, LIST or
  UIDL.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Iterator

from twisted.internet import defer

from mailsuite.errors import NoSuchMessage
from mailsuite.interfaces import IMessageReader, MessageInfo
from mailsuite.pop3.encoding import MessageEncoder

#: RFC 1939 7: a unique-id is 1 to 70 characters in the range 0x21 to 0x7E.
_UNIQUE_ID = re.compile(rb"[\x21-\x7e]{1,70}")


def unique_id(key: str) -> bytes:
    """The UIDL string for a store key: the key itself when RFC 1939 allows it, else its SHA-1."""
    raw = key.encode("utf-8", "surrogateescape")
    if _UNIQUE_ID.fullmatch(raw):
        return raw
    return hashlib.sha1(raw).hexdigest().encode("ascii")


class NoSuchNumber(Exception):
    """The client named a message number that is not in this session (or is marked deleted)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Maildrop:
    """Message numbers, sizes, unique ids and deletion marks for one session."""

    def __init__(self, mailbox: Any, folder: Any) -> None:
        self.mailbox = mailbox
        self.folder = folder
        # Plain parallel lists: building this for 50,000 messages is part of every login.
        self._infos: list[MessageInfo] = sorted(folder.messages(), key=lambda info: info.uid)
        self._uids: list[bytes] = [unique_id(info.key) for info in self._infos]
        self._deleted: set[int] = set()  # 0-based indexes marked by DELE

    def __len__(self) -> int:
        return len(self._infos)

    def stat(self) -> tuple[int, int]:
        """(messages, octets) not marked deleted (RFC 1939 5 STAT)."""
        if not self._deleted:
            return len(self._infos), sum(info.size for info in self._infos)
        live = [info.size for i, info in enumerate(self._infos) if i not in self._deleted]
        return len(live), sum(live)

    def get(self, number: bytes | str | int) -> tuple[int, MessageInfo, bytes]:
        """The message behind a client's 1-based number: (number, info, unique id).

        Raises NoSuchNumber for a malformed, out of range or deleted number.
        """
        if isinstance(number, (bytes, str)) and not (number.isdigit() and len(number) <= 10):
            raise NoSuchNumber("invalid message number")
        n = int(number)
        if not 1 <= n <= len(self._infos):
            raise NoSuchNumber("no such message")
        if n - 1 in self._deleted:
            raise NoSuchNumber(f"message {n} already deleted")
        return n, self._infos[n - 1], self._uids[n - 1]

    def listing(self) -> Iterator[tuple[int, MessageInfo, bytes]]:
        """(number, info, unique id) of every message not marked deleted, in order."""
        deleted = self._deleted
        for i, (info, uid) in enumerate(zip(self._infos, self._uids)):
            if i not in deleted:
                yield i + 1, info, uid

    def mark_deleted(self, number: bytes | str | int) -> int:
        """DELE: mark a message; returns its number."""
        n, _, _ = self.get(number)
        self._deleted.add(n - 1)
        return n

    def reset(self) -> None:
        """RSET: unmark everything."""
        self._deleted.clear()

    def marked_uids(self) -> list[int]:
        """UIDs marked for deletion."""
        return [self._infos[i].uid for i in sorted(self._deleted)]

    def open_encoded(self, info: MessageInfo, body_lines: int | None) -> defer.Deferred[EncodedMessage]:
        """RETR / TOP's response body for a message, read through the store's reader
        (IFolder.open_reader, on the store's threads); fails with NoSuchMessage."""
        return self.folder.open_reader(info.uid).addCallback(EncodedMessage, body_lines)

    async def commit(self) -> int:
        """UPDATE state: remove the marked messages from the store; returns how many were removed.

        Messages another session expunged meanwhile count as removed
        (they are gone, which is what the client asked for).
        """
        uids = self.marked_uids()
        if not uids:
            return 0
        folder = await defer.maybeDeferred(self.mailbox.open_folder, self.folder.name)
        try:
            try:
                await defer.maybeDeferred(folder.store_flags, uids, ["\\Deleted"], "add")
            except NoSuchMessage:
                pass
            removed = await defer.maybeDeferred(folder.expunge, uids)
        finally:
            folder.close()
        return len(removed)


#: Octets read from a stored message per step of RETR / TOP.
READ_CHUNK = 128 * 1024


class EncodedMessage:
    """A stored message as RETR / TOP send it (byte-stuffed, CRLF, ``.`` line at the end;
    RFC 1939 3), read and encoded a chunk at a time through an
    :class:`~mailsuite.interfaces.IMessageReader` on the store's threads (one chunk at a time,
    so the encoder's state is never touched by two threads at once).  :meth:`close` waits for
    a read under way before releasing the reader, so a connection that drops mid-message never
    frees a descriptor being read."""

    def __init__(self, reader: IMessageReader, body_lines: int | None) -> None:
        self._reader = reader
        self._encoder = MessageEncoder(body_lines)
        self._position = 0
        self._finished = False
        self._reading: defer.Deferred[Any] | None = None
        self._closed = False

    def next_chunk(self) -> defer.Deferred[bytes | None]:
        """The next piece of the response (None once the terminating line has been given)."""
        if self._finished or self._closed:
            return defer.succeed(None)
        if self._encoder.done:  # TOP's lines are all out: the rest of the file is not needed
            return defer.succeed(self._chunk(b""))
        # read and encoded on the store's thread; the next read is asked for once this one is back
        reading = self._reading = self._reader.read(self._position, READ_CHUNK, self._chunk)
        return reading.addBoth(self._read_done)

    def _read_done(self, result: Any) -> Any:
        self._reading = None
        if self._closed:
            self._reader.close()  # closed while this read was under way
        return result

    def _chunk(self, data: bytes) -> bytes:
        """The response piece for octets just read (on the store's thread, or for TOP's end here)."""
        if not data:
            self._finished = True
            return self._encoder.finish()
        self._position += len(data)
        return self._encoder.feed(data)

    def close(self) -> None:
        """Release the reader (at once, or when the read under way ends)."""
        if self._closed:
            return
        self._closed = True
        if self._reading is None:
            self._reader.close()
