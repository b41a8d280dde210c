"""Password hashes: new argon2id hashes and migrated Dovecot passwd-file values."""

from __future__ import annotations

import pytest

from mailsuite.auth import hashing
from mailsuite.auth.sha512crypt import sha512_crypt

# Generated with Dovecot's `doveadm pw -s SCHEME -p 'correct horse'` (Dovecot 2.3, Debian).
DOVECOT_HASHES = {
    "ARGON2ID": "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$TEUZW9tSZ5NmcgbfZVp7cw$EK8rMyA1XK6TIiVocn9J+RMBofFXH/+WZkW1MYWUGTQ",
    "BLF-CRYPT": "{BLF-CRYPT}$2y$05$nst3Oa6wyRqk/4V9htsuK.WrCT/vMql.eJrmeAGsd/yLsO4yLFTUG",
    "SHA512-CRYPT": "{SHA512-CRYPT}$6$5tFz0EvPjwiddK5Z$hJNVi.O8njfubCZP/qbsxxk2/5IM.QrI92I9AIXKuvVoOzIya.1TNldyv/n6Q5lW15pHqboYQ65YO7IcF7njN.",
}


@pytest.mark.parametrize("scheme", sorted(DOVECOT_HASHES))
def test_dovecot_hashes_verify(scheme: str) -> None:
    """Each Dovecot scheme accepts its password and refuses another."""
    stored = DOVECOT_HASHES[scheme]
    assert hashing.split_scheme(stored)[0] == scheme
    assert hashing.verify(stored, "correct horse") is True
    assert hashing.verify(stored, "correct horsf") is False
    assert hashing.verify(stored, "") is False


@pytest.mark.parametrize("scheme", sorted(DOVECOT_HASHES))
def test_dovecot_hashes_without_prefix_and_with_crypt_prefix(scheme: str) -> None:
    """The bare crypt string and Dovecot's {CRYPT} wrapper are understood too."""
    bare = DOVECOT_HASHES[scheme].split("}", 1)[1]
    assert hashing.verify(bare, "correct horse")
    if scheme != "ARGON2ID":
        assert hashing.verify("{CRYPT}" + bare, "correct horse")


def test_sha512_crypt_matches_the_specification_vectors() -> None:
    """Test vectors from Drepper's "Unix crypt using SHA-256 and SHA-512"."""
    assert sha512_crypt("Hello world!", "$6$saltstring") == (
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
    )
    assert sha512_crypt("Hello world!", "$6$rounds=10000$saltstringsaltstring") == (
        "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."
    )
    assert sha512_crypt("we have a short salt string but not a short password", "$6$rounds=77777$short") == (
        "$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOxFmtlcGZelFl5CxtgfiAc0"
    )
    # Rounds below the minimum are clamped to 1000 (spec: "rounds=10" means 1000).
    assert sha512_crypt("the minimum number is still observed", "$6$rounds=10$roundstoolow") == (
        "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX."
    )


def test_new_hashes_are_salted_argon2id() -> None:
    """Two hashes of one password differ and both verify; the scheme is argon2id."""
    first, second = hashing.hash_password("s3cret"), hashing.hash_password("s3cret")
    assert first != second
    assert first.startswith("$argon2id$")
    assert "s3cret" not in first
    assert hashing.verify(first, "s3cret") and hashing.verify(second, "s3cret")
    assert not hashing.verify(first, "S3cret")


def test_unknown_or_malformed_hashes_are_reported() -> None:
    """A value that cannot be checked raises instead of silently failing every login."""
    for stored in ("{PLAIN}secret", "{MD5}abc", "plaintext", "$1$abc$def"):
        with pytest.raises(hashing.UnknownHashScheme):
            hashing.verify(stored, "secret")
    for stored in ("{BLF-CRYPT}$2y$05$short", "$argon2id$garbage"):
        with pytest.raises(hashing.UnknownHashScheme):
            hashing.check_format(stored)


def test_legacy_schemes_need_rehash() -> None:
    """Migrated hashes are upgraded after a good login; fresh argon2id ones are not."""
    assert hashing.needs_rehash(DOVECOT_HASHES["SHA512-CRYPT"])
    assert hashing.needs_rehash(DOVECOT_HASHES["BLF-CRYPT"])
    assert not hashing.needs_rehash(hashing.hash_password("x"))


def test_long_password_against_bcrypt_is_a_plain_mismatch() -> None:
    """bcrypt looks at 72 bytes; a longer wrong password is just wrong, not an error."""
    assert hashing.verify(DOVECOT_HASHES["BLF-CRYPT"], "x" * 500) is False
