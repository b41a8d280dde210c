"""User and folder names -> paths inside the Maildir tree, refusing anything unsafe.

Implementation notes:
- Every path the store touches is built here from a validated address or
  IMAP folder name; nothing else joins user input onto a path.  A name that
  could escape the tree or confuse it (``..``, ``/``, an absolute path, NUL,
  control characters, over-long names) raises :class:`InvalidName`.
- On-disk folder encoding (Maildir++, as Courier and Dovecot use it): the
  folder ``A/B`` of a user is the directory ``.A.B`` in the user's Maildir
  root; INBOX is the root itself.  Each component is written in modified
  UTF-7 (RFC 3501 5.1.3), so ``Entwürfe`` is ``.Entw&APw-rfe``.  Because
  ``.`` is the on-disk hierarchy separator, a literal ``.`` inside an IMAP
  name component is encoded too, as ``&AC4-`` (a valid modified UTF-7
  sequence for U+002E, so any modified UTF-7 decoder reads it back as ``.``).
- INBOX is matched case-insensitively (RFC 3501 5.1) and always spelled
  ``INBOX``, also as the first component of a child (``INBOX/Sub``).
"""

from __future__ import annotations

import base64
import binascii
import unicodedata

from mailsuite.errors import InvalidName

#: Longest local part and domain we accept (RFC 5321 4.5.3.1.1 / 4.5.3.1.2).
MAX_LOCALPART = 64
MAX_DOMAIN = 255
#: Longest single directory name (the usual file system limit, in bytes).
MAX_DIRNAME = 255
#: Longest IMAP folder name (characters) and deepest nesting we accept.
MAX_FOLDER_NAME = 200
MAX_DEPTH = 16


def _has_control(text: str) -> bool:
    if text.isascii():  # the common case, without a per-character loop
        return not text.isprintable()  # for ASCII exactly the controls 0x00-0x1F and 0x7F
    return any(ord(c) < 0x20 or ord(c) == 0x7F or unicodedata.category(c) in ("Cc", "Cs") for c in text)


def _safe_component(text: str, what: str) -> str:
    """Refuse a single path component that is empty, dot-ish, or contains separators/controls."""
    if not text:
        raise InvalidName(f"empty {what}")
    if text in (".", ".."):
        raise InvalidName(f"{what} must not be {text!r}")
    if "/" in text or "\\" in text or "\x00" in text:
        raise InvalidName(f"{what} must not contain '/', '\\' or NUL")
    if _has_control(text):
        raise InvalidName(f"{what} must not contain control characters")
    return text


def split_address(address: str) -> tuple[str, str]:
    """(localpart, lower-cased domain) of a user address, or InvalidName.

    The pair becomes ``<mail root>/<domain>/<localpart>/``, so both parts
    must be single safe path components: no separators, no dot names, no
    leading dot (which would also hide the directory), sane lengths.
    """
    if not isinstance(address, str) or "@" not in address:
        raise InvalidName("an address needs the form localpart@domain")
    local, _, domain = address.rpartition("@")
    domain = domain.lower()
    _safe_component(local, "local part")
    _safe_component(domain, "domain")
    if local.startswith(".") or domain.startswith("."):
        raise InvalidName("address parts must not start with '.'")
    if any(c.isspace() for c in domain):
        raise InvalidName("domain must not contain white space")
    if len(local.encode("utf-8")) > MAX_LOCALPART:
        raise InvalidName(f"local part longer than {MAX_LOCALPART} octets")
    if len(domain.encode("utf-8")) > MAX_DOMAIN:
        raise InvalidName(f"domain longer than {MAX_DOMAIN} octets")
    return local, domain


# -- modified UTF-7 (RFC 3501 5.1.3), with "." also encoded for the disk -----


def _b64_run(chars: list[str]) -> str:
    raw = "".join(chars).encode("utf-16-be")
    return "&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-"


def encode_component(text: str) -> str:
    """One IMAP name component as it is written on disk (modified UTF-7, '.' encoded)."""
    out: list[str] = []
    run: list[str] = []
    for ch in text:
        if 0x20 <= ord(ch) <= 0x7E and ch != ".":
            if run:
                out.append(_b64_run(run))
                run = []
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    if run:
        out.append(_b64_run(run))
    return "".join(out)


def decode_component(text: str) -> str:
    """Inverse of :func:`encode_component`; ValueError for text that is not modified UTF-7."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "&":
            if not 0x20 <= ord(ch) <= 0x7E:
                raise ValueError("raw non-ASCII in modified UTF-7")
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise ValueError("unterminated modified UTF-7 run")
        if end == i + 1:
            out.append("&")
        else:
            b64 = text[i + 1 : end].replace(",", "/")
            b64 += "=" * (-len(b64) % 4)
            try:
                out.append(base64.b64decode(b64, validate=True).decode("utf-16-be"))
            except (binascii.Error, UnicodeDecodeError) as e:
                raise ValueError(f"bad modified UTF-7 run: {e}") from None
        i = end + 1
    return "".join(out)


# -- IMAP folder names ----------------------------------------------------------


def normalize_folder(name: str) -> str:
    """The canonical IMAP name (INBOX upper-cased), or InvalidName if unsafe.

    Refused: empty names and components (``A//B``, a leading ``/`` as in an
    absolute path, a trailing ``/``), ``.`` and ``..`` components, NUL and
    control characters, over-long or over-deep names.
    """
    if not isinstance(name, str) or not name:
        raise InvalidName("empty folder name")
    if len(name) > MAX_FOLDER_NAME:
        raise InvalidName(f"folder name longer than {MAX_FOLDER_NAME} characters")
    parts = name.split("/")
    if len(parts) > MAX_DEPTH:
        raise InvalidName(f"folder nested deeper than {MAX_DEPTH} levels")
    for part in parts:
        if not part:
            raise InvalidName("folder name has an empty component (leading, trailing or double '/')")
        if part in (".", ".."):
            raise InvalidName(f"folder name component must not be {part!r}")
        if "\x00" in part or _has_control(part):
            raise InvalidName("folder name must not contain NUL or control characters")
    if parts[0].upper() == "INBOX":
        parts[0] = "INBOX"
    canonical = "/".join(parts)
    if canonical != "INBOX" and len(folder_dirname(canonical).encode("utf-8")) > MAX_DIRNAME:
        raise InvalidName("folder name too long once encoded for the disk")
    return canonical


def folder_dirname(canonical: str) -> str:
    """The Maildir++ directory name of a (normalized, non-INBOX) folder: ``.A.B``."""
    return "." + ".".join(encode_component(p) for p in canonical.split("/"))


def dirname_to_folder(dirname: str) -> str | None:
    """The IMAP name of a Maildir++ directory name, or None if it is not one of ours to show."""
    if not dirname.startswith(".") or dirname in (".", ".."):
        return None
    parts = dirname[1:].split(".")
    try:
        decoded = [decode_component(p) for p in parts]
    except ValueError:
        return None
    if any(not p or p in (".", "..") or "/" in p or _has_control(p) for p in decoded):
        return None
    if decoded[0].upper() == "INBOX":
        if len(decoded) == 1:
            return None  # ".INBOX" itself never stands for INBOX
        decoded[0] = "INBOX"
    return "/".join(decoded)


#: Folders every new mailbox gets, with their RFC 6154 special-use attribute.
DEFAULT_FOLDERS: dict[str, str] = {
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}
