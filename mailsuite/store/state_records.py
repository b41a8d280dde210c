"""The state files' format: file names, one message's entry and its record line, flag letters, checksums.

See :mod:`mailsuite.store.state` for the format itself and the rules that keep it crash-safe."""

from __future__ import annotations

import datetime
import re
import zlib


from mailsuite.compat import frozen_instance
from mailsuite.errors import MailError
from mailsuite.interfaces import SYSTEM_FLAGS, MessageInfo

STATE_FILE = "mailsuite-state"
LOG_FILE = "mailsuite-state.log"
LOCK_FILE = "mailsuite-state.lock"
MAX_KEYWORDS = 26
#: A sync or claim touching more messages than this writes a new snapshot instead of one log
#: record per message (the log would be compacted right away anyway; formatting and CRC-ing
#: 100,000 records first was a large part of a big folder's first SELECT).
BULK_RECORDS = 1000

FLAG_LETTER = {flag.lower(): letter for letter, flag in SYSTEM_FLAGS.items()}
_UTC = datetime.timezone.utc


class TooManyKeywords(MailError):
    """The folder already uses every keyword letter Maildir offers (a-z)."""

    code, enhanced, default_text = 550, "5.2.0", "Too many keywords in this folder"


class Entry:
    """One message as the state knows it (mutable; only changed with the lock held)."""

    __slots__ = ("uid", "modseq", "size", "idate", "where", "suffix", "base", "info")

    def __init__(self, uid: int, modseq: int, size: int, idate: int, where: str, suffix: str, base: str) -> None:
        self.uid = uid
        self.modseq = modseq
        self.size = size
        self.idate = idate
        self.where = where  # "new" or "cur"
        self.suffix = suffix  # "" or ":2,<letters>"
        self.base = base
        self.info: MessageInfo | None = None

    @property
    def filename(self) -> str:
        """Path relative to the folder directory."""
        return f"{self.where}/{self.base}{self.suffix}"

    def line(self) -> str:
        return f"{self.uid} {self.modseq} {self.size} {self.idate} {self.where[0]} {self.suffix or '-'} {self.base}"


def split_name(name: str) -> tuple[str, str]:
    """(base, info suffix) of a Maildir file name; the suffix is ``:2,<letters>`` or ''."""
    i = name.rfind(":2,")
    if i >= 0 and (i + 3 == len(name) or name[i + 3 :].isalpha()):
        return name[:i], name[i:]
    return name, ""


SIZE_FIELD = re.compile(r",S=(\d+)")


def size_from_base(base: str) -> int | None:
    """The ``,S=<size>`` Maildir++ size field of a base name, if present."""
    m = SIZE_FIELD.search(base)
    return int(m.group(1)) if m else None


#: MessageInfo(...) without the frozen dataclass __init__ (one object.__setattr__ per field,
#: ~2.5x slower): opening a 100,000-message folder builds one per message (see mailsuite.compat).
message_info = frozen_instance(MessageInfo)


DATES: dict[int, datetime.datetime] = {}


def date_of(idate: int) -> datetime.datetime:
    """Timezone-aware internal date for a Unix time (small cache: deliveries share seconds)."""
    d = DATES.get(idate)
    if d is None:
        if len(DATES) > 4096:
            DATES.clear()
        d = DATES[idate] = datetime.datetime.fromtimestamp(idate, _UTC)
    return d



def letters_of(suffix: str) -> str:
    return suffix[3:] if suffix else ""


def crc(text: str) -> str:
    return f"{zlib.crc32(text.encode('utf-8')) & 0xFFFFFFFF:08x}"



class CorruptState(Exception):
    """A snapshot file that cannot be trusted (truncated or malformed)."""

