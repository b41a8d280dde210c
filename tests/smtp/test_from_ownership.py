"""From/Sender ownership at the end of DATA and BDAT, on a StringTransport session (real directory and store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailsuite.smtp.headers import HEADER_SCAN_LIMIT
from .harness import ALICE, BOB, World


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def submission(world: World):
    s = world.session("submissions")
    s.cmd("EHLO c")
    assert s.codes(s.login()) == ["235 2.7.0"]
    return s


def test_bdat_with_a_forged_from_is_refused_and_nothing_kept(world: World) -> None:
    """BDAT LAST of a message From Bob: 553 5.7.1 with the address named; no copy, nothing queued; the next transaction works."""
    s = submission(world)
    s.cmd(f"MAIL FROM:<{ALICE}>")
    s.cmd(f"RCPT TO:<{BOB}>")
    s.cmd("RCPT TO:<friend@remote.test>")
    head, rest = b"Subject: forged\r\nFrom: Bob <bob", b"@example.test>\r\n\r\npay\r\n"
    out = s.send(b"BDAT %d\r\n" % len(head) + head + b"BDAT %d LAST\r\n" % len(rest) + rest)
    assert s.codes(out) == ["250 2.0.0", "553 5.7.1"]
    assert b"<bob@example.test> is not owned by alice@example.test" in out
    assert world.inbox(BOB) == [] and world.queue.entries == []
    s.cmd(f"MAIL FROM:<{ALICE}>")
    s.cmd(f"RCPT TO:<{BOB}>")
    body = b"From: alice@example.test\r\nSubject: fine\r\n\r\nok\r\n"
    assert s.codes(s.send(b"BDAT %d LAST\r\n" % len(body) + body)) == ["250 2.0.0"]
    assert len(world.inbox(BOB)) == 1


def test_pipelined_commands_after_a_refused_data_are_answered_in_order(world: World) -> None:
    """A refused DATA ends the transaction only: the pipelined MAIL/RCPT/DATA behind it go on (RFC 2920)."""
    s = submission(world)
    out = s.send(f"MAIL FROM:<{ALICE}>\r\nRCPT TO:<{BOB}>\r\nDATA\r\n".encode()
                 + b"Sender: bob@example.test\r\nFrom: alice@example.test\r\n\r\nx\r\n.\r\n"
                 + f"MAIL FROM:<{ALICE}>\r\nRCPT TO:<{BOB}>\r\nDATA\r\n".encode()
                 + b"Subject: no from\r\n\r\ny\r\n.\r\n")
    assert s.codes(out) == ["250 2.1.0", "250 2.1.5", "354", "553 5.7.1", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0"]
    [stored] = world.inbox(BOB)
    assert b"\r\nFrom: <alice@example.test>\r\n" in stored and b"Subject: no from" in stored


def test_a_header_too_long_to_check_is_refused(world: World) -> None:
    """A header past the 256 KiB the scanner keeps (a From could hide behind it): 553 5.7.1."""
    s = submission(world)
    s.cmd(f"MAIL FROM:<{ALICE}>")
    s.cmd(f"RCPT TO:<{BOB}>")
    s.cmd("DATA")
    padding = b"".join(b"X-Pad: %s\r\n" % (b"p" * 900) for _ in range(HEADER_SCAN_LIMIT // 900 + 1))
    out = s.send(b"From: alice@example.test\r\n" + padding + b"From: bob@example.test\r\n\r\nx\r\n.\r\n")
    assert s.codes(out) == ["553 5.7.1"] and b"256 KiB" in out
    assert world.inbox(BOB) == []

