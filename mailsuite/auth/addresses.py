"""Validating and normalising mail addresses and domain names.

Implementation notes:

- The normal form of an address is ``local@domain`` with the domain
  lower-cased; the local part keeps its case (the directory compares it
  ASCII-case-insensitively).
- Only dot-atom local parts are accepted (RFC 5322 3.4.1), plus UTF-8
  (RFC 6531 3.3), without ``/`` and ``\\`` because the local part names a
  Maildir directory.  Quoted local parts are refused with a clear message.
- Domains: dot-separated labels of letters, digits and hyphens, no label
  longer than 63 octets, the whole at most 253 (RFC 1035 2.3.4, RFC 5321
  4.5.3.1.2); non-ASCII labels must be valid IDNA (RFC 5890) and are kept as
  given (lower-cased).
"""

from __future__ import annotations

import re

import idna

from mailsuite.errors import InvalidName

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# RFC 5322 3.2.3 atext, minus "/" (a path separator in the Maildir layout).
_ATEXT = re.compile(r"^[A-Za-z0-9!#$%&'*+\-=?^_`{|}~\u0080-\U0010ffff]+$")


def normalise_domain(domain: str) -> str:
    """The lower-cased domain, or InvalidName saying what is wrong with it."""
    value = domain.strip().lower()
    if not value:
        raise InvalidName("empty domain name")
    if len(value.encode("utf-8")) > 253:
        raise InvalidName(f"domain name too long: {domain!r}")
    for label in value.split("."):
        if label.isascii():
            if not _LABEL.match(label):
                raise InvalidName(f"not a valid domain name: {domain!r} (labels are letters, digits and inner hyphens)")
        else:
            try:
                idna.encode(label, uts46=False)
            except idna.IDNAError as e:
                raise InvalidName(f"not a valid internationalised domain name: {domain!r} ({e})") from None
    return value


def normalise_local_part(local: str, address: str) -> str:
    """The local part unchanged, or InvalidName."""
    if not local:
        raise InvalidName(f"missing local part before @: {address!r}")
    if local.startswith('"'):
        raise InvalidName(f"quoted local parts are not supported: {address!r}")
    if len(local.encode("utf-8")) > 64:  # RFC 5321 4.5.3.1.1
        raise InvalidName(f"local part longer than 64 octets: {address!r}")
    atoms = local.split(".")
    if any(not atom for atom in atoms):
        raise InvalidName(f"local part may not start or end with a dot or contain '..': {address!r}")
    for atom in atoms:
        if not _ATEXT.match(atom):
            raise InvalidName(f"local part contains a character that is not allowed (space, /, \\, quotes, brackets...): {address!r}")
    return local


def normalise_address(address: str) -> str:
    """``local@domain`` with the domain lower-cased; InvalidName for anything else."""
    value = address.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    local, at, domain = value.rpartition("@")
    if not at:
        raise InvalidName(f"not an address (no @domain): {address!r}")
    return f"{normalise_local_part(local, address)}@{normalise_domain(domain)}"


def domain_of(address: str) -> str:
    """The domain part of a normalised address."""
    return address.rpartition("@")[2]
