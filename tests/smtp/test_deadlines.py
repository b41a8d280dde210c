"""SMTP timeouts as deadlines, on a StringTransport and task.Clock (issue 15 item 7: slowloris).

RFC 5321 4.5.3.2 gives minimum times per command and for the data phase;
here a trickle of single bytes must not move them.
"""

from __future__ import annotations

from pathlib import Path

from mailsuite.smtp.server import CLOSE_GRACE
from .harness import ALICE, World


def envelope(s, rcpt: str = ALICE) -> None:
    s.cmd("EHLO client.test")
    s.cmd("MAIL FROM:<someone@remote.test>")
    assert s.codes(s.cmd(f"RCPT TO:<{rcpt}>")) == ["250 2.1.5"]


def test_command_line_has_smtp_timeout_from_its_first_byte(tmp_path: Path) -> None:
    """One byte a second keeps nothing open: 421 4.4.2 at smtp_timeout after the line's first byte."""
    world = World(tmp_path, limits={"smtp_timeout": 30.0})
    s = world.session()
    world.clock.advance(20)  # silent, then the first byte: the line has 30 s from here
    s.send(b"N")
    for _ in range(29):
        world.clock.advance(1)
        assert s.send(b"O") == b""
    assert not s.closed
    world.clock.advance(1)
    assert s.codes(s.take()) == ["421 4.4.2"] and s.closed


def test_complete_commands_each_get_a_fresh_deadline(tmp_path: Path) -> None:
    world = World(tmp_path, limits={"smtp_timeout": 30.0})
    s = world.session()
    for _ in range(6):
        world.clock.advance(25)
        assert s.codes(s.cmd("NOOP")) == ["250 2.0.0"]
    assert not s.closed


def test_data_phase_is_one_deadline(tmp_path: Path) -> None:
    """The whole DATA phase within smtp_data_timeout of the 354, however the bytes trickle."""
    world = World(tmp_path, limits={"smtp_timeout": 30.0, "smtp_data_timeout": 100.0})
    s = world.session()
    envelope(s)
    s.cmd("DATA")
    for _ in range(99):
        world.clock.advance(1)
        s.send(b"x")
    assert not s.closed
    world.clock.advance(1)
    assert s.codes(s.take()) == ["421 4.4.2"] and s.closed
    assert world.inbox(ALICE) == []


def test_bdat_chunks_share_one_deadline(tmp_path: Path) -> None:
    """BDAT: every chunk up to BDAT LAST within smtp_data_timeout of the first BDAT, not per chunk."""
    world = World(tmp_path, limits={"smtp_timeout": 30.0, "smtp_data_timeout": 100.0})
    s = world.session()
    envelope(s)
    for _ in range(4):
        assert s.codes(s.send(b"BDAT 1\r\nx")) == ["250 2.0.0"]
        world.clock.advance(20)
    assert not s.closed
    s.send(b"BDAT 1\r\nx")
    world.clock.advance(20)  # 100 s since the first BDAT, each chunk quick
    assert s.codes(s.take()) == ["421 4.4.2"] and s.closed


def test_after_the_data_phase_the_command_deadline_applies(tmp_path: Path) -> None:
    world = World(tmp_path, limits={"smtp_timeout": 30.0, "smtp_data_timeout": 100.0})
    s = world.session()
    envelope(s)
    s.cmd("BDAT 3")
    world.clock.advance(50)
    assert s.codes(s.send(b"abc")) == ["250 2.0.0"]
    assert s.codes(s.cmd("BDAT 0 LAST")) == ["250 2.0.0"]
    world.clock.advance(29)
    assert s.codes(s.cmd("MAIL FROM:<someone@remote.test>")) == ["250 2.1.0"]
    world.clock.advance(29)
    assert not s.closed  # the new transaction has no data phase yet: 30 s per command, not 100 since BDAT
    world.clock.advance(2)
    assert s.closed


def test_closed_connection_not_read_is_aborted_after_the_grace(tmp_path: Path) -> None:
    """A client that does not take its 421 cannot hold the connection open."""
    world = World(tmp_path, limits={"smtp_timeout": 30.0})
    s = world.session()
    world.clock.advance(30)
    assert s.closed and not s.transport.aborted
    world.clock.advance(CLOSE_GRACE)
    assert s.transport.aborted


def test_submission_needs_auth_within_the_login_timeout(tmp_path: Path) -> None:
    """587/465: EHLO and NOOP every few seconds do not keep a session that never authenticates."""
    world = World(tmp_path, limits={"submission_login_timeout": 10.0}, allow_plaintext_auth=True)
    s = world.session("submission")
    s.cmd("EHLO client.test")
    for _ in range(4):
        world.clock.advance(2)
        assert s.codes(s.cmd("NOOP")) == ["250 2.0.0"]
    world.clock.advance(2)
    assert s.codes(s.take()) == ["421 4.7.0"] and s.closed


def test_login_timeout_spares_authenticated_and_port_25_sessions(tmp_path: Path) -> None:
    world = World(tmp_path, limits={"submission_login_timeout": 10.0}, allow_plaintext_auth=True)
    user = world.session("submission")
    user.cmd("EHLO client.test")
    assert user.codes(user.login()) == ["235 2.7.0"]
    inbound = world.session("smtp")
    inbound.cmd("EHLO client.test")
    for _ in range(10):
        world.clock.advance(2)
        assert user.codes(user.cmd("NOOP")) == ["250 2.0.0"]
        assert inbound.codes(inbound.cmd("NOOP")) == ["250 2.0.0"]
    assert not user.closed and not inbound.closed


def test_login_timeout_aborts_a_client_that_does_not_read(tmp_path: Path) -> None:
    world = World(tmp_path, limits={"submission_login_timeout": 10.0})
    s = world.session("submission")
    s.protocol.pauseProducing()
    s.send(b"EHLO client.test\r\n")
    world.clock.advance(10)
    assert s.transport.aborted
