"""The relay and sender policy, on its own, over the real SQLite directory and Maildir store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer

from mailsuite.errors import NoSuchUser, QuotaExceeded, RelayDenied, SenderNotAllowed
from mailsuite.smtp.policy import AuthenticationRequired, RelayUnavailable, SessionFacts, check_recipient, check_sender
from .harness import ALICE, BOB, World


def run(coro: Any) -> Any:
    d = defer.ensureDeferred(coro)
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "policy must not wait on anything here"
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path)
    w.directory.add_alias("sales@example.test", [ALICE, "partner@remote.test"])
    w.directory.add_alias("me@example.test", [ALICE])
    return w


MX = SessionFacts(submission=False)
SUB = SessionFacts(submission=True)
AUTHED = SessionFacts(submission=True, user=ALICE)


def rcpt(world: World, facts: SessionFacts, address: str, *, size: int = 0, queue: bool = True) -> Any:
    domain = address.rpartition("@")[2]
    return run(check_recipient(world.directory, world.store, facts, address, domain, literal=domain.startswith("["), size=size, queue_available=queue))


def test_mx_accepts_local_users_and_aliases(world: World) -> None:
    """Port 25 without AUTH: local users and aliases (with their remote targets) are accepted."""
    assert rcpt(world, MX, BOB).local == (BOB,)
    resolution = rcpt(world, MX, "sales@example.test")
    assert resolution.local == (ALICE,) and resolution.remote == ("partner@remote.test",)


def test_mx_refuses_relay_and_unknown(world: World) -> None:
    """Other domains (and address literals) are relaying: RelayDenied; unknown local users NoSuchUser."""
    for address in ("x@remote.test", "x@[192.0.2.7]"):
        with pytest.raises(RelayDenied):
            rcpt(world, MX, address)
    with pytest.raises(NoSuchUser):
        rcpt(world, MX, "nobody@example.test")
    with pytest.raises(NoSuchUser):
        rcpt(world, MX, '"odd name"@example.test')


def test_authenticated_may_send_anywhere(world: World) -> None:
    """An authenticated user may send to another domain; without a queue that is a temporary failure."""
    assert rcpt(world, AUTHED, "x@remote.test").remote == ("x@remote.test",)
    with pytest.raises(RelayUnavailable):
        rcpt(world, AUTHED, "x@remote.test", queue=False)
    with pytest.raises(RelayUnavailable):
        rcpt(world, MX, "sales@example.test", queue=False)


def test_configured_domains_are_local_without_a_lookup(world: World) -> None:
    """A domain from the config is local even before the directory is asked; others are looked up."""
    asked: list[str] = []
    real = world.directory.is_local_domain
    world.directory.is_local_domain = lambda d: asked.append(d) or real(d)  # type: ignore[method-assign]
    resolution = run(check_recipient(world.directory, world.store, MX, BOB, "example.test", literal=False, size=0, queue_available=True,
                                     configured_domains=frozenset({"example.test"})))
    assert resolution.local == (BOB,) and asked == []
    with pytest.raises(RelayDenied):
        run(check_recipient(world.directory, world.store, MX, "x@other.test", "other.test", literal=False, size=0, queue_available=True,
                            configured_domains=frozenset({"example.test"})))
    assert asked == ["other.test"]


def test_quota_refused_per_recipient(world: World) -> None:
    """A mailbox without room for the announced size is refused (QuotaExceeded) at RCPT."""
    world.directory.set_quota(BOB, 1000, None)
    assert rcpt(world, MX, BOB, size=500).local == (BOB,)
    with pytest.raises(QuotaExceeded):
        rcpt(world, MX, BOB, size=5000)


def test_sender_rules(world: World) -> None:
    """Submission needs AUTH; an authenticated user may use own addresses and aliases only to them, or <>."""
    run(check_sender(world.directory, MX, "anyone@anywhere.test"))
    with pytest.raises(AuthenticationRequired):
        run(check_sender(world.directory, SUB, ALICE))
    run(check_sender(world.directory, AUTHED, ALICE))
    run(check_sender(world.directory, AUTHED, "Alice@EXAMPLE.test"))
    run(check_sender(world.directory, AUTHED, "me@example.test"))
    run(check_sender(world.directory, AUTHED, None))
    for other in (BOB, "sales@example.test", "alice@remote.test"):
        with pytest.raises(SenderNotAllowed):
            run(check_sender(world.directory, AUTHED, other))


def header_check(world: World, header: bytes | None, facts: SessionFacts = AUTHED, envelope: str = ALICE) -> Any:
    from mailsuite.smtp.policy import check_header_senders

    return run(check_header_senders(world.directory, facts, header, envelope))


def test_header_senders_own_alias_extra_and_case(world: World) -> None:
    """From/Sender naming the user, an alias only to them, an extra address or domain, in any case: the From domain to sign for."""
    world.directory.add_senders(ALICE, ["office@example.test", "@Partner.test", "me@b\u00fccher.example"])
    assert header_check(world, b"From: Alice <alice@example.test>\r\n") == "example.test"
    assert header_check(world, b"From: ALICE@Example.TEST\r\nSender: Me@EXAMPLE.test\r\n") == "example.test"
    assert header_check(world, b"From: office@example.test, alice@example.test\r\nSender: alice@example.test\r\n") == "example.test"
    with pytest.raises(SenderNotAllowed):  # @partner.test does not cover its subdomains
        header_check(world, b"From: anyone@sub.partner.test\r\n")
    assert header_check(world, b"From: Anyone <anyone@PARTNER.test>\r\n") == "partner.test"
    assert header_check(world, b"From: me@xn--bcher-kva.example\r\n") == "xn--bcher-kva.example"
    assert header_check(world, "From: me@B\u00dcCHER.example\r\n".encode()) == "xn--bcher-kva.example"
    run(check_sender(world.directory, AUTHED, "Anyone@partner.TEST"))  # the extras count for MAIL FROM too
    run(check_sender(world.directory, AUTHED, "office@example.test"))


def test_header_senders_refused(world: World) -> None:
    """Someone else's address in From or Sender, an alias shared with others, unclear values, a huge header: 553 5.7.1."""
    for header in (b"From: bob@example.test\r\n", b"From: sales@example.test\r\n", b"From: alice@remote.test\r\n",
                   b"From: alice@example.test\r\nSender: bob@example.test\r\n", b"From: alice@example.test, bob@example.test\r\n",
                   b"From: alice@example.test\r\nFrom: bob@example.test\r\n", b"From: team: alice@example.test, ceo@bank.test;\r\n",
                   b"From: Alice\r\n <bob@example.test>\r\n", b"From: alice@example.test <bob@example.test>\r\n", b"From: undisclosed:;\r\n",
                   b"From: =?utf-8?q?bob=40example.test?=\r\n", b"From: alice@example.test.\r\n", b"From: \r\n", None):
        with pytest.raises(SenderNotAllowed) as refused:
            header_check(world, header)
        assert (refused.value.code, refused.value.enhanced) == (553, "5.7.1")
    with pytest.raises(SenderNotAllowed, match="<bob@example.test> is not owned by alice@example.test"):
        header_check(world, b"Subject: x\r\nSender: bob@example.test\r\n")


def test_header_senders_missing_from_and_no_user(world: World) -> None:
    """No From: the server adds the envelope sender's (or the user's); without AUTH nothing is checked or signed."""
    assert header_check(world, b"Subject: no from\r\n", envelope="me@example.test") == "example.test"
    assert header_check(world, b"Subject: no from\r\n", envelope="") == "example.test"
    assert header_check(world, b"From: ceo@bank.test\r\n", facts=MX) is None
    assert header_check(world, None, facts=MX) is None
