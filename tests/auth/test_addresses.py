"""Address and domain validation: what the directory and the CLI accept."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


@given(st.text(max_size=80))
def test_any_text_is_either_refused_or_a_safe_idempotent_address(text: str) -> None:
    """Property: whatever comes in, the result is InvalidName or a path-safe normal form that normalises to itself."""
    try:
        normal = normalise_address(text)
    except InvalidName:
        return
    local, _, domain = normal.rpartition("@")
    assert normalise_address(normal) == normal
    assert domain == domain.lower()
    assert not any(c in normal for c in "/\\\x00\r\n\t ")
    assert local not in (".", "..") and not local.startswith(".")


@given(st.from_regex(r"[a-z0-9!#$%&'*+=?^_`{|}~-]{1,20}(\.[a-z0-9_-]{1,10}){0,2}@([a-z0-9]{1,10}\.){1,3}[a-z]{2,6}", fullmatch=True))
def test_dot_atom_addresses_are_accepted(address: str) -> None:
    """Property: RFC 5322 dot-atom local parts at ordinary domains are accepted unchanged."""
    assert normalise_address(address) == address
