"""Listing a Maildir folder's new/ and cur/: which mtimes can be trusted, which names can be recorded,
and rewriting files other programs delivered with bare LF line ends."""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from typing import Any, Iterator


from mailsuite.store.durable import write_all

#: A directory whose mtime is older than this may be trusted not to have changed unseen (ns);
#: the rule for file systems with whole-second (or unknown) timestamps, as Dovecot's.
SETTLE_NS = 2_000_000_000
#: Linux's CLOCK_REALTIME_COARSE (Python names no constant): the clock local file systems stamp
#: mtimes with (or finer, never coarser: multigrain timestamps).
COARSE_CLOCK = getattr(time, "CLOCK_REALTIME_COARSE", 5 if sys.platform.startswith("linux") else None)
#: Local file systems with nanosecond timestamps from this machine's clock (not NFS/FUSE/SMB,
#: whose mtimes come from another clock).
LOCAL_FS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs", "f2fs", "bcachefs"})


def recordable_name(name: str) -> bool:
    """Can this file name be recorded (no undecodable bytes, which listdir gives as surrogates)?"""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True



def coarse_ns() -> int | None:
    """The coarse real-time clock that stamps file mtimes on Linux (None where there is none)."""
    if COARSE_CLOCK is None:
        return None
    try:
        return time.clock_gettime_ns(COARSE_CLOCK)
    except OSError:
        return None


def fs_type(path: str) -> str | None:
    """The type of the file system holding ``path`` (Linux /proc/self/mountinfo; None if unknown)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        real = os.path.realpath(path)
    except OSError:
        return None
    best, found = -1, None
    for line in lines:
        fields = line.split(" ")
        try:
            mount = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
            kind = fields[fields.index("-", 6) + 1]
        except (IndexError, ValueError):
            continue
        if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) > best:
            best, found = len(mount), kind
    return found



_BARE_LF = re.compile(rb"(?<!\r)\n")


def _crlf_chunks(f: Any, *, convert: bool) -> Iterator[bytes]:
    """Chunks of a file with bare LFs turned into CRLF (``convert``), or the bare-LF chunks only (not)."""
    prev_cr = False
    while chunk := f.read(1 << 20):
        head = b""
        if prev_cr and chunk[:1] == b"\n":
            head, chunk = b"\n", chunk[1:]
        prev_cr = chunk[-1:] == b"\r" if chunk else prev_cr
        if convert:
            yield head + _BARE_LF.sub(b"\r\n", chunk)
        elif _BARE_LF.search(chunk):
            yield chunk
            return


def normalize_line_ends(path: str, tmp_dir: str) -> os.stat_result | None:
    """Rewrite a message that has bare LF line ends with CRLF, in place and atomically.

    Postfix's local delivery, procmail and mutt write LF; IMAP sizes and
    POP3 framing want CRLF (what SMTP hands us).  The converted copy is
    written in tmp/, fsynced and renamed over the original name, so the base
    name (the message's key) is kept and a crash leaves either version.
    Returns the new stat, or None when the file needed no change.
    """
    with open(path, "rb") as f:
        if next(_crlf_chunks(f, convert=False), None) is None:
            return None
        f.seek(0)
        tmp = os.path.join(tmp_dir, f".crlf.{os.getpid()}.{threading.get_ident()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for chunk in _crlf_chunks(f, convert=True):
                write_all(fd, chunk)
            os.fsync(fd)
            original = os.fstat(f.fileno())
        finally:
            os.close(fd)
    try:
        os.utime(tmp, ns=(original.st_atime_ns, original.st_mtime_ns))  # keep the internal date
        if not os.path.exists(path):
            raise FileNotFoundError(path)  # the other program moved it meanwhile; the next sync sees it
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return os.stat(path)

