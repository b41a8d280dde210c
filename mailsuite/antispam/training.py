"""The user's verdicts, for training a spam filter later: moves into and out of the junk folder.

A user who moves a message to Junk says "spam"; out of Junk to anywhere but
the trash, "not spam".  For now each such move is one log line (namespace
``mailsuite.antispam.training``) that a script can feed to ``rspamc
learn_spam`` / ``learn_ham`` or sa-learn; the IMAP server calls
:func:`note_move` after every successful COPY or MOVE.
"""

from __future__ import annotations

from twisted.logger import Logger

log = Logger(namespace="mailsuite.antispam.training")

#: The folder name that means "spam" (the special-use \\Junk folder's usual name, RFC 6154).
JUNK = "junk"
#: Folders a message leaves Junk for without meaning "not spam".
TRASH = frozenset({"trash", "deleted messages", "deleted items"})


def verdict(source: str, destination: str) -> str | None:
    """"spam", "ham" or None for a move from ``source`` to ``destination``."""
    src, dst = source.lower(), destination.lower()
    if dst == JUNK and src != JUNK:
        return "spam"
    if src == JUNK and dst != JUNK and dst not in TRASH:
        return "ham"
    return None


def note_move(session: str, user: str, source: str, destination: str, uids: list[int], *, move: bool) -> str | None:
    """Log a user's spam/ham verdict when a COPY/MOVE crosses the junk folder; returns the verdict."""
    said = verdict(source, destination)
    if said is not None:
        log.info("{session}: training {verdict}: user={user} {action} {count} message(s) {source} -> {destination} uids={uids}",
                 session=session, verdict=said, user=user, action="moved" if move else "copied", count=len(uids),
                 source=source, destination=destination, uids=",".join(map(str, uids)))
    return said
