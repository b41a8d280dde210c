"""The message store: every user's mail in Maildir++ directories, shared by SMTP, POP3 and IMAP.

Implementation notes (the rules a contributor must keep):
- Layout: ``<data root>/mail/<domain lower-cased>/<localpart>/`` is a
  standard Maildir (``tmp/ new/ cur/``), readable by mutt and friends, with
  Maildir++ folders ``.Sent .Drafts .Trash .Junk .Archive`` made for every new
  user and user folders nested as ``.Parent.Child``.  IMAP names use ``/`` on
  the wire; on disk each component is modified UTF-7 and a literal ``.`` is
  written ``&AC4-`` (names.py).
- Delivery: unique name in tmp/, write, fsync, rename/link into new/, fsync
  new/ -- only then does the Deferred fire (maildir.py, durable.py).
- IMAP state per folder (UIDVALIDITY, UIDNEXT, UID and MODSEQ per message,
  keywords) lives in ``mailsuite-state`` + ``mailsuite-state.log`` under an
  flock, identical for every process and crash-safe (state.py).  Flags are
  the Maildir info suffix ``:2,`` with D F P R S T and keyword letters a-z.
- Messages dropped into new/ by any program get UIDs at the next sync.
- Change notification: in-process immediately, other processes by polling
  (watch.py), well within a second.
- Disk work runs in the store's thread pool; every API returns Deferreds.
- Names that could escape the tree raise InvalidName (names.py).

Public names: :class:`MaildirStore` (the IMessageStore), :class:`IncomingMessage`,
:func:`mailsuite.store.service.open_store` (the server part), and
:class:`mailsuite.store.memory.MemoryStore`, an in-memory fake that passes the
same contract tests (for fast protocol tests).
"""

from mailsuite.store.incoming import IncomingMessage
from mailsuite.store.maildir import InlineRunner, MaildirStore
from mailsuite.store.quota import QuotaLimits
from mailsuite.threads import Runner  # the store runs its disk work through the server's one runner kind

__all__ = ["IncomingMessage", "InlineRunner", "MaildirStore", "QuotaLimits", "Runner"]
