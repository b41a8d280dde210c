"""The pytest plugin as a user's test suite meets it (run in a separate pytest process)."""

from __future__ import annotations

import pytest



def test_function_and_session_fixtures(pytester: pytest.Pytester) -> None:
    """mail_server works per test; mail_server_session is shared but emptied between tests."""
    pytester.makepyfile(
        """
        import smtplib

        def send(server, subject):
            with smtplib.SMTP(server.host, server.smtp_port) as client:
                client.sendmail("a@b.example", ["u@example.test"], f"Subject: {subject}\\r\\n\\r\\nbody\\r\\n")

        def test_function_scope(mail_server):
            send(mail_server, "fn")
            assert [m.subject for m in mail_server.wait_for_messages(1, timeout=10)] == ["fn"]

        def test_session_first(mail_server_session):
            send(mail_server_session, "first")
            assert len(mail_server_session.wait_for_messages(1, timeout=10)) == 1

        def test_session_second_sees_nothing_from_first(mail_server_session):
            assert mail_server_session.messages() == []
            send(mail_server_session, "second")
            assert [m.subject for m in mail_server_session.wait_for_messages(1, timeout=10)] == ["second"]
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-q")
    result.assert_outcomes(passed=3)


def test_strict_marker_and_option(pytester: pytest.Pytester) -> None:
    """@pytest.mark.mailsuite(strict=True) and --mailsuite-strict select the production policies."""
    pytester.makepyfile(
        """
        import smtplib
        import pytest

        def refused(server):
            with smtplib.SMTP(server.host, server.smtp_port) as client:
                try:
                    client.sendmail("a@b.example", ["ghost@example.test"], b"Subject: x\\r\\n\\r\\nx\\r\\n")
                except smtplib.SMTPRecipientsRefused:
                    return True
            return False

        @pytest.mark.mailsuite(strict=True)
        def test_marked(mail_server):
            assert mail_server.strict and refused(mail_server)

        def test_unmarked(mail_server, request):
            assert mail_server.strict == request.config.getoption("--mailsuite-strict")
            assert refused(mail_server) == mail_server.strict
        """
    )
    pytester.runpytest_subprocess("-q").assert_outcomes(passed=2)
    pytester.runpytest_subprocess("-q", "--mailsuite-strict").assert_outcomes(passed=2)
