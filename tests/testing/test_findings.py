"""Issue 22's findings against the fixture, each reproduced as an outside project met it."""

from __future__ import annotations

import imaplib
import json
import os
import signal
import smtplib
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from mailsuite.testing import MailServer, MailServerError


def send(server: MailServer, recipients: list[str], subject: str, sender: str = "app@sender.example") -> None:
    with smtplib.SMTP(server.host, server.smtp_port) as client:
        client.sendmail(sender, recipients, f"From: {sender}\r\nTo: {recipients[0]}\r\nSubject: {subject}\r\n\r\nbody\r\n".encode())


def health(server: MailServer) -> dict:
    with urllib.request.urlopen(f"{server.api_url}/health", timeout=30) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def strict() -> MailServer:
    # blocked after 3 failures, without the growing delays of the defaults (slow to test)
    with MailServer(strict=True, config={"auth.free_failures": 3, "auth.max_failures": 3}) as server:
        server.add_user("erin@example.test", "s3cret-pass")
        yield server


class TestStrictMode:
    def test_fail_next_and_purge_work(self, strict: MailServer) -> None:
        """fail_next and purge answered HTTP 500 in strict mode (no fault plan, no capture directory)."""
        strict.fail_next("RCPT", 451, "try later")
        with smtplib.SMTP(strict.host, strict.smtp_port) as client:
            with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
                client.sendmail("a@b.example", ["erin@example.test"], b"Subject: x\r\n\r\nx\r\n")
            assert caught.value.recipients["erin@example.test"][0] == 451
        send(strict, ["erin@example.test"], "kept")
        assert [m.subject for m in strict.expect_messages(1, timeout=10)] == ["kept"]
        strict.purge()
        assert strict.messages() == []

    def test_add_user_errors_carry_their_reason(self, strict: MailServer) -> None:
        """A duplicate user is 409, a domain that is not local 422, both with the directory's words."""
        with pytest.raises(MailServerError) as caught:
            strict.add_user("erin@example.test", "other")
        assert caught.value.status == 409 and "exists already" in caught.value.reason
        with pytest.raises(MailServerError) as caught:
            strict.add_user("frank@elsewhere.test", "pw")
        assert caught.value.status == 422 and "elsewhere.test is not a local domain" in str(caught.value)
        strict.add_domain("elsewhere.test")
        strict.add_user("frank@elsewhere.test", "pw")
        with pytest.raises(MailServerError) as caught:
            strict.add_domain("elsewhere.test")
        assert caught.value.status == 409

    def test_reset_throttle_lets_a_blocked_client_in(self, strict: MailServer) -> None:
        """After enough wrong passwords the IP is blocked; reset_throttle() forgets it."""
        strict.add_user("gina@example.test", "right-pass")
        ssl_context = strict.ssl_context()
        for _ in range(3):
            imap = imaplib.IMAP4_SSL(strict.host, strict.imaps_port, ssl_context=ssl_context)
            try:
                with pytest.raises(imaplib.IMAP4.error):
                    imap.login("nobody@example.test", "wrong")
            finally:
                imap.shutdown()
        imap = imaplib.IMAP4_SSL(strict.host, strict.imaps_port, ssl_context=ssl_context)
        with pytest.raises(imaplib.IMAP4.error):
            imap.login("gina@example.test", "right-pass")  # blocked, right password or not
        imap.shutdown()
        strict.reset_throttle()
        imap = imaplib.IMAP4_SSL(strict.host, strict.imaps_port, ssl_context=ssl_context)
        assert imap.login("gina@example.test", "right-pass")[0] == "OK"
        imap.logout()


def test_strict_marker_applies_to_the_session_fixture(pytester: pytest.Pytester) -> None:
    """@pytest.mark.mailsuite(strict=True) was ignored by mail_server_session."""
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.mailsuite(strict=True)
        def test_marked(mail_server_session):
            assert mail_server_session.strict
            mail_server_session.add_user("u@example.test", "pw")

        def test_unmarked(mail_server_session):
            assert not mail_server_session.strict

        @pytest.mark.mailsuite(strict=True)
        def test_marked_again_shares_the_strict_server(mail_server_session):
            assert mail_server_session.strict
            with pytest.raises(Exception, match="409"):
                mail_server_session.add_user("u@example.test", "pw")
        """
    )
    pytester.runpytest_subprocess("-p", "no:randomly", "-q").assert_outcomes(passed=3)


def test_messages_of_200_over_50_mailboxes_in_one_request() -> None:
    """messages() took 24 s here (one request per message, every mailbox re-read each time)."""
    with MailServer() as server:
        with smtplib.SMTP(server.host, server.smtp_port) as client:
            for i in range(200):
                client.sendmail("bulk@sender.example", [f"user{i % 50}@example.test"], f"Subject: bulk {i}\r\n\r\nbody {i}\r\n".encode())
        started = time.monotonic()
        found = server.messages()
        elapsed = time.monotonic() - started
        assert len(found) == 200 and len({m.mailbox for m in found}) == 50
        assert [m.subject for m in found] == [f"bulk {i}" for i in range(200)]  # arrival order
        assert elapsed < 0.5, f"messages() took {elapsed:.2f}s"


def test_purge_forgets_capture_addresses() -> None:
    """purge() kept every address ever seen, so an empty purge grew with them (755 ms after 300)."""
    with MailServer() as server:
        send(server, [f"r{i}@example.test" for i in range(20)], "to many")
        assert len(server.wait_for_messages(20, timeout=30)) == 20
        assert health(server)["mailboxes"] == 20
        server.purge()
        assert health(server)["mailboxes"] == 0
        assert server.messages() == []
        send(server, ["back@example.test"], "after purge")  # a forgotten mailbox comes back with mail
        assert [m.mailbox for m in server.expect_messages(1, timeout=10)] == ["back@example.test"]


ORPHAN_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from mailsuite.testing import MailServer
    server = MailServer().start()
    print(server._child.process.pid, server.data_root.parent, flush=True)
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead too (its parent is gone, init reaps it)
        return f.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="uses /proc to see zombies")
def test_child_server_dies_with_a_killed_test_process(tmp_path: Path) -> None:
    """After kill -9 of the test process, the server and its temp dir lived on."""
    test_process = subprocess.Popen([sys.executable, "-c", ORPHAN_SCRIPT], stdout=subprocess.PIPE, text=True)
    try:
        line = test_process.stdout.readline() if test_process.stdout else ""
        child_pid, temp_dir = int(line.split()[0]), Path(line.split()[1])
        assert _alive(child_pid) and temp_dir.is_dir()
        test_process.send_signal(signal.SIGKILL)
        test_process.wait(10)
        deadline = time.monotonic() + 10
        while (_alive(child_pid) or temp_dir.exists()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child_pid), "the server outlived the test process"
        assert not temp_dir.exists(), "the server's temp dir outlived the test process"
    finally:
        if test_process.poll() is None:
            test_process.kill()
        try:
            os.kill(child_pid, signal.SIGKILL)
        except (ProcessLookupError, NameError, UnboundLocalError):
            pass
