"""Password hashes: argon2id for new passwords, Dovecot schemes for migrated ones.

Implementation notes:

- New hashes are argon2id PHC strings (``$argon2id$v=19$...``, RFC 9106)
  with argon2-cffi's default parameters; plaintext is never stored.
- :func:`verify` also accepts Dovecot passwd-file values so users can move
  over without a password reset: ``{ARGON2ID}`` / ``{ARGON2I}``,
  ``{BLF-CRYPT}`` (bcrypt ``$2a$``/``$2b$``/``$2y$``), ``{SHA512-CRYPT}``
  (``$6$``, see :mod:`.sha512crypt`) and ``{CRYPT}`` with one of those, or
  the same strings without the ``{SCHEME}`` prefix.
- Every function here is slow on purpose and blocks: call it off the reactor
  thread (the directory does).
- :func:`verify_dummy` spends about the same time as a real check, so an
  unknown user is not told apart by the answer's speed.
"""

from __future__ import annotations

import argon2
import bcrypt

from mailsuite.auth import sha512crypt

_hasher = argon2.PasswordHasher()
_SCHEMES = ("ARGON2ID", "ARGON2I", "BLF-CRYPT", "SHA512-CRYPT", "CRYPT")
_dummy_hash: str | None = None


class UnknownHashScheme(ValueError):
    """A stored value that is not one of the supported hash formats."""


def hash_password(password: str) -> str:
    """A fresh argon2id hash of ``password`` (random salt)."""
    return _hasher.hash(password)


def split_scheme(stored: str) -> tuple[str, str]:
    """(SCHEME, hash) for a stored value; the scheme comes from ``{...}`` or the hash's ``$id$``."""
    stored = stored.strip()
    if stored.startswith("{"):
        scheme, sep, rest = stored[1:].partition("}")
        scheme = scheme.upper()
        if not sep or scheme not in _SCHEMES:
            raise UnknownHashScheme(f"unsupported password scheme {{{scheme}}} (supported: {', '.join(_SCHEMES)})")
        if scheme != "CRYPT":
            return scheme, rest
        stored = rest
    if stored.startswith("$argon2id$"):
        return "ARGON2ID", stored
    if stored.startswith("$argon2i$"):
        return "ARGON2I", stored
    if stored[:4] in ("$2a$", "$2b$", "$2y$"):
        return "BLF-CRYPT", stored
    if stored.startswith("$6$"):
        return "SHA512-CRYPT", stored
    raise UnknownHashScheme("unsupported password hash (expected argon2, bcrypt $2y$/$2b$ or SHA-512 crypt $6$)")


def check_format(stored: str) -> str:
    """The scheme of a hash an admin imports; UnknownHashScheme if it cannot be verified later."""
    scheme, value = split_scheme(stored)
    if scheme.startswith("ARGON2"):
        try:
            argon2.extract_parameters(value)
        except argon2.exceptions.InvalidHashError:
            raise UnknownHashScheme("malformed argon2 hash") from None
    elif scheme == "BLF-CRYPT" and len(value) != 60:
        raise UnknownHashScheme("malformed bcrypt hash (expected 60 characters)")
    elif scheme == "SHA512-CRYPT" and value.count("$") < 3:
        raise UnknownHashScheme("malformed SHA-512 crypt hash")
    return scheme


def verify(stored: str, password: str) -> bool:
    """True if ``password`` matches ``stored`` (any supported scheme); False for a mismatch.

    Raises UnknownHashScheme when the stored value cannot be checked at all.
    """
    scheme, value = split_scheme(stored)
    if scheme.startswith("ARGON2"):
        try:
            return _hasher.verify(value, password)
        except argon2.exceptions.VerificationError:
            return False
        except argon2.exceptions.InvalidHashError:
            raise UnknownHashScheme("malformed argon2 hash") from None
    if scheme == "BLF-CRYPT":
        # bcrypt's $2y$ is the same algorithm as $2b$ (PHP naming).
        normalised = "$2b$" + value[4:] if value.startswith("$2y$") else value
        # bcrypt only ever used the first 72 bytes (Dovecot's hashes included);
        # bcrypt >= 5 refuses longer input instead of truncating it.
        try:
            return bcrypt.checkpw(password.encode("utf-8")[:72], normalised.encode("ascii"))
        except ValueError:
            raise UnknownHashScheme("malformed bcrypt hash") from None
    return sha512crypt.verify(password, value)


def needs_rehash(stored: str) -> bool:
    """True when a stored hash should be replaced by a fresh argon2id one after a good login."""
    try:
        scheme, value = split_scheme(stored)
    except UnknownHashScheme:
        return False
    if scheme != "ARGON2ID":
        return True
    try:
        return _hasher.check_needs_rehash(value)
    except argon2.exceptions.InvalidHashError:
        return False


def verify_dummy(password: str) -> bool:
    """Spend the time of a real verification for a user that does not exist; always False."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = hash_password("mailsuite-dummy-password")
    verify(_dummy_hash, password)
    return False
