"""The shared SASL exchanges: PLAIN and LOGIN steps, response decoding, every malformed input refused clearly."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailsuite import sasl


def test_plain_with_and_without_an_initial_response() -> None:
    """PLAIN answers at once with an initial response, else after one empty challenge (RFC 4616 2)."""
    assert sasl.exchange("plain").start(b"\x00alice@example.test\x00s3cret") == sasl.Credentials("alice@example.test", "s3cret")
    ex = sasl.exchange("PLAIN")
    assert ex.start(None) == sasl.Challenge(b"")
    assert ex.respond(b"alice@example.test\x00alice@example.test\x00p\xc3\xa4ss") == sasl.Credentials("alice@example.test", "päss")


@pytest.mark.parametrize("data, error", [
    (b"alice\x00secret", sasl.MalformedResponse),  # two fields
    (b"\x00\x00secret", sasl.MalformedResponse),  # empty login name
    (b"a\x00b\x00c\x00d", sasl.MalformedResponse),
    (b"\x00alice\x00\xff", sasl.MalformedResponse),  # not UTF-8
    (b"bob\x00alice\x00secret", sasl.AuthorizationDenied),
])
def test_plain_refusals(data: bytes, error: type[Exception]) -> None:
    """Each malformed PLAIN response raises its own error, never a login attempt."""
    with pytest.raises(error):
        sasl.exchange("PLAIN").start(data)


def test_login_asks_for_user_then_password() -> None:
    """LOGIN: "Username:" then "Password:", or the user name as initial response."""
    ex = sasl.exchange("login")
    assert ex.start(None) == sasl.Challenge(b"Username:")
    assert ex.respond(b"alice@example.test") == sasl.Challenge(b"Password:")
    assert ex.respond(b"pw") == sasl.Credentials("alice@example.test", "pw")
    ex = sasl.exchange("LOGIN")
    assert ex.start(b"bob@example.test") == sasl.Challenge(b"Password:")
    with pytest.raises(sasl.MalformedResponse):
        ex.respond(b"\xff")


def test_decode_response_forms() -> None:
    """``*`` cancels, ``=`` is an empty response, base64 is strict."""
    with pytest.raises(sasl.Cancelled):
        sasl.decode_response(b"*\r\n")
    assert sasl.decode_response(b"=") == b""
    assert sasl.decode_response(base64.b64encode(b"\x00a\x00b")) == b"\x00a\x00b"
    for bad in (b"not base64!", b"AAA", b"QQ==QQ=="):
        with pytest.raises(sasl.InvalidBase64):  # a MalformedResponse POP3 answers apart
            sasl.decode_response(bad)
    assert sasl.encode_challenge(sasl.Challenge(b"Username:")) == b"VXNlcm5hbWU6"


def test_unknown_or_not_offered_mechanism() -> None:
    """A mechanism we lack, or one a protocol does not offer, is refused before any step."""
    with pytest.raises(sasl.UnknownMechanism):
        sasl.exchange("CRAM-MD5")
    with pytest.raises(sasl.UnknownMechanism):
        sasl.exchange("LOGIN", offered=("PLAIN",))


@given(st.binary(max_size=200))
def test_any_response_gives_credentials_a_challenge_or_a_sasl_error(data: bytes) -> None:
    """Whatever the client sends, the exchange answers with a step or a SASLError (never another exception)."""
    for name in sasl.MECHANISMS:
        try:
            step = sasl.exchange(name).start(data)
            assert isinstance(step, (sasl.Challenge, sasl.Credentials))
        except sasl.SASLError:
            pass
    try:
        sasl.decode_response(data)
    except sasl.SASLError:
        pass
