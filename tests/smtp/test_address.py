"""The strict RFC 5321 / RFC 6531 path parser."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailsuite.smtp.address import AddressError, parse_command_argument, parse_parameters, parse_path


@pytest.mark.parametrize("text, address", [
    ("<user@example.test>", "user@example.test"),
    ("<first.last+tag@sub.example.test>", "first.last+tag@sub.example.test"),
    ("<@relay.test,@other.test:user@example.test>", "user@example.test"),  # source route ignored
    ('<"joe"@example.test>', "joe@example.test"),  # quoted dot-string is the dot-string
    ('<"john doe"@example.test>', '"john doe"@example.test'),
    ("<user@[192.0.2.1]>", "user@[192.0.2.1]"),
    ("<user@[IPv6:2001:db8::1]>", "user@[IPv6:2001:db8::1]"),
])
def test_valid_paths(text: str, address: str) -> None:
    """Paths the RFC 5321 grammar allows are accepted and normalised."""
    mailbox, rest = parse_path(text, utf8=False, allow_null=False)
    assert mailbox is not None and mailbox.address == address and rest == ""


@pytest.mark.parametrize("text", [
    "user@example.test", "<user@example.test", "<user>", "<@example.test>", "<user@>", "<user@-bad.test>",
    "<user@exa mple.test>", "<us er@example.test>", "<user..x@example.test>", "<.user@example.test>",
    "<user@[300.1.1.1]>", "<user@[IPv6:zz::1]>", '<"unterminated@example.test>', "<" + "a" * 65 + "@example.test>",
    "<user@" + "a" * 250 + ".test>", "<user@exam_ple.test>",
])
def test_invalid_paths(text: str) -> None:
    """Anything outside the grammar is refused."""
    with pytest.raises(AddressError):
        parse_path(text, utf8=False, allow_null=False)


def test_null_path_only_where_allowed() -> None:
    """<> is the reverse-path of bounces, never a recipient."""
    assert parse_path("<>", utf8=False, allow_null=True) == (None, "")
    with pytest.raises(AddressError):
        parse_path("<>", utf8=False, allow_null=False)


def test_utf8_needs_smtputf8() -> None:
    """Non-ASCII local parts and U-label domains need SMTPUTF8 (RFC 6531 3.4)."""
    for text in ("<jöran@example.test>", "<user@bücher.example>"):
        with pytest.raises(AddressError) as info:
            parse_path(text, utf8=False, allow_null=False)
        assert info.value.utf8_required
        mailbox, _ = parse_path(text, utf8=True, allow_null=False)
        assert mailbox is not None and not mailbox.is_ascii


def test_mail_from_learns_utf8_from_its_own_parameters() -> None:
    """MAIL FROM:<ü@x> SMTPUTF8 is valid; without the parameter it is not."""
    arg = parse_command_argument("FROM:<jöran@example.test> SMTPUTF8 BODY=8BITMIME", "FROM:", utf8=None, allow_null=True)
    assert arg.mailbox is not None and arg.mailbox.local == "jöran"
    assert arg.params == {"SMTPUTF8": None, "BODY": "8BITMIME"}
    with pytest.raises(AddressError):
        parse_command_argument("FROM:<jöran@example.test>", "FROM:", utf8=None, allow_null=True)


def test_command_argument_forms() -> None:
    """Case-insensitive FROM:/TO:, a tolerated space after the colon, parameters after a space."""
    assert parse_command_argument("from: <a@b.test>", "FROM:", utf8=None, allow_null=True).mailbox.address == "a@b.test"  # type: ignore[union-attr]
    with pytest.raises(AddressError):
        parse_command_argument("FROM:<a@b.test>SIZE=1", "FROM:", utf8=None, allow_null=True)
    with pytest.raises(AddressError):
        parse_command_argument("TO <a@b.test>", "TO:", utf8=False, allow_null=False)


def test_parameters() -> None:
    """Keywords are case-insensitive, values restricted, duplicates refused."""
    assert parse_parameters(" size=100  body=7BIT") == {"SIZE": "100", "BODY": "7BIT"}
    for bad in ("SIZE=1 size=2", "-X=1", "X=a=b", "X=\x01"):
        with pytest.raises(AddressError):
            parse_parameters(bad)


atext = st.sampled_from(list("abcXYZ019!#$%&'*+-/=?^_`{|}~"))
atom = st.text(atext, min_size=1, max_size=8)
label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)


@settings(max_examples=100, deadline=None)
@given(local=st.lists(atom, min_size=1, max_size=4), domain=st.lists(label, min_size=1, max_size=4))
def test_generated_valid_addresses_round_trip(local: list[str], domain: list[str]) -> None:
    """Every dot-string@domain from the grammar parses back to itself."""
    address = ".".join(local) + "@" + ".".join(domain)
    if len(".".join(local)) > 64:
        return
    mailbox, _ = parse_path(f"<{address}>", utf8=False, allow_null=False)
    assert mailbox is not None and mailbox.address == address


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=60))
def test_arbitrary_text_parses_or_raises_address_error(text: str) -> None:
    """The parser never fails any other way, and what it accepts has no space, CR, LF or control character."""
    try:
        arg = parse_command_argument("TO:" + text, "TO:", utf8=True, allow_null=False)
    except AddressError:
        return
    assert arg.mailbox is not None
    address = arg.mailbox.address
    if not arg.mailbox.local.startswith('"'):
        assert not any(c in address for c in " \r\n\t\x00")


def _both(arg: str, prefix: str, utf8: bool | None) -> tuple[object, object]:
    """(fast-path answer, general parser's answer): a value or the AddressError text."""
    from mailsuite.smtp.address import _parse_general

    answers = []
    for parse in (lambda: parse_command_argument(arg, prefix, utf8=utf8, allow_null=True),
                  lambda: _parse_general(arg[len(prefix):].lstrip(" "), utf8=utf8, allow_null=True)):
        try:
            answers.append(parse())
        except AddressError as e:
            answers.append(f"error: {e.reason}")
    return answers[0], answers[1]


@pytest.mark.parametrize("path", [
    "<a@b>", "<" + "a" * 64 + "@example.test>", "<" + "a" * 65 + "@example.test>",
    "<user@" + "a" * 63 + ".test>", "<user@" + "a" * 64 + ".test>",
    "<" + "a" * 64 + "@" + ".".join(["b" * 62, "b" * 62, "b" * 63]) + ">",  # inner of 254 octets: the longest
    "<" + "a" * 64 + "@" + ".".join(["b" * 62, "b" * 62, "b" * 62, "c"]) + ">",  # 255: too long
    "<user@a-b.test>", "<user@-ab.test>", "<user@ab-.test>", "<user@a..test>", "<user@.test>", "<user@test.>",
    "<a.b.c@x.y>", "<.a@x>", "<a.@x>", "<a..b@x>", "<{weird}+'tag'@x.test>", "<user@x.test>SIZE=1",
    "<user@x.test> SIZE=1 BODY=8BITMIME", "<user@x.test>  ", "<user@x.test> X=\x01", "<user@x.test> SIZE=1 size=2",
    '<"quoted"@x.test>', "<@r.test:user@x.test>", "<user@[192.0.2.1]>", "<jöran@x.test> SMTPUTF8", "<user@x_y.test>",
])
def test_common_path_shortcut_answers_as_the_general_parser(path: str) -> None:
    """MAIL/RCPT take a shortcut for plain ASCII addresses; its answer (value or refusal) is the full grammar's."""
    for prefix in ("FROM:", "TO:"):
        fast, general = _both(prefix + path, prefix, utf8=None if prefix == "FROM:" else False)
        assert fast == general


@settings(max_examples=200, deadline=None)
@given(local=st.lists(atom, min_size=1, max_size=12), domain=st.lists(label, min_size=1, max_size=30),
       params=st.sampled_from(["", " SIZE=10", " BODY=7BIT SMTPUTF8", "SIZE=1", " =x"]))
def test_generated_paths_answer_as_the_general_parser(local: list[str], domain: list[str], params: str) -> None:
    """Generated addresses of every length around the limits: shortcut and general parser agree."""
    arg = "FROM:<" + ".".join(local) + "@" + ".".join(domain) + ">" + params
    fast, general = _both(arg, "FROM:", utf8=None)
    assert fast == general
