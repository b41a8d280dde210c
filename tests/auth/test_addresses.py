"""Address and domain validation: what the directory and the CLI accept."""

from __future__ import annotations

import pytest

from mailsuite.auth.addresses import normalise_address, normalise_domain
from mailsuite.errors import InvalidName


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("alice@example.org", "alice@example.org"),
        ("Alice@EXAMPLE.Org", "Alice@example.org"),
        ("<bob@example.org>", "bob@example.org"),
        (" first.last+tag@sub.example.org ", "first.last+tag@sub.example.org"),
        ("o'neil@example.org", "o'neil@example.org"),
        ("jörg@bücher.example", "jörg@bücher.example"),
        ("postmaster@localhost", "postmaster@localhost"),
    ],
)
def test_valid_addresses_are_normalised(given: str, normal: str) -> None:
    """Domains are lower-cased, local parts keep their case."""
    assert normalise_address(given) == normal


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("alice", "no @domain"),
        ("@example.org", "missing local part"),
        ("alice@", "empty domain"),
        ("a b@example.org", "not allowed"),
        ("../etc@example.org", "dot"),
        ("a..b@example.org", "dot"),
        ("a/b@example.org", "not allowed"),
        ('"quoted"@example.org', "quoted"),
        ("alice@exa_mple.org", "not a valid domain"),
        ("alice@-example.org", "not a valid domain"),
        ("alice@example..org", "not a valid domain"),
        ("x" * 65 + "@example.org", "longer than 64"),
        ("alice@" + "a" * 64 + ".org", "not a valid domain"),
    ],
)
def test_bad_addresses_are_rejected_with_a_reason(bad: str, reason: str) -> None:
    """Each malformed address is refused with a message saying what is wrong."""
    with pytest.raises(InvalidName, match=reason):
        normalise_address(bad)


def test_domain_length_limit() -> None:
    """A domain over 253 octets is refused (RFC 1035 2.3.4)."""
    with pytest.raises(InvalidName, match="too long"):
        normalise_domain(".".join(["a" * 63] * 4) + ".org")
