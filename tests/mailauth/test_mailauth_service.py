"""The mailauth PART: opened by the real server, stopped cleanly even with checks waiting on DNS."""

from __future__ import annotations

import smtplib
import time

import pytest_twisted

from tests.mailauth.helpers import GOOD_IP, message


@pytest_twisted.ensureDeferred
async def test_stop_waits_for_running_checks_without_deadlock(make_auth, dns):
    """stop() during a check stuck on an unanswering DNS server: the check ends as tempfail, then the threads stop."""
    dns.set_records({"silent.test": {"DROP": True}})
    h = make_auth(dns_timeout=1.0)
    pending = h.auth.check_inbound(GOOD_IP, "mx.other.test", "x@silent.test", message(from_="x@silent.test"))
    started = time.monotonic()
    await h.auth.stop()
    assert time.monotonic() - started < 10
    assert pending.called
    verdict = pending.result
    assert verdict.action == "tempfail"


def test_server_opens_mailauth_and_stops_cleanly(mailsuite_server, dns):
    """twistd with the mailauth PART: starts, signs nothing by itself, exits 0 on SIGTERM without tracebacks."""
    server = mailsuite_server({"queue.resolver": dns.address, "mailauth.verify_inbound": True})
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as client:
        assert client.noop()[0] == 250
    assert server.stop() == 0
    log = server.log()
    assert "mail authentication: DKIM signing on, inbound checks on" in log
    assert "Traceback" not in log
