"""Spam defence at the door, over real TCP against a real server and a real loopback DNS server.

Each test speaks from its own client address (127.0.0.91...) so the per-IP
state of one test (pregreet memory, rate windows, greylist) is not another's.
"""

from __future__ import annotations

import imaplib
import smtplib
import socket
import time
from typing import Any

import pytest

from tests.support.dnsserver import DNSServer, dns  # noqa: F401 - the dns fixture

ALICE, BOB, PASSWORD = "alice@example.test", "bob@example.test", "correct horse battery"
MESSAGE = b"From: a@remote.test\r\nTo: bob@example.test\r\nSubject: hi\r\n\r\nhello\r\n"

RECORDS = {
    # .91 is on the block list, with a reason
    "91.0.0.127.bl.test": {"A": ["127.0.0.2"], "TXT": ["Listed for spam, see https://bl.test/127.0.0.91"]},
    # .92 is on the block list and on the allow list
    "92.0.0.127.bl.test": {"A": ["127.0.0.2"], "TXT": ["Listed"]},
    "92.0.0.127.wl.test": {"A": ["127.0.0.5"]},
    # .99 and .100 are on a scoring list (weight 3); .100 also has forward-confirmed reverse DNS
    "99.0.0.127.score.test": {"A": ["127.0.0.3"]},
    "100.0.0.127.score.test": {"A": ["127.0.0.3"]},
    "100.0.0.127.in-addr.arpa": {"PTR": ["mx.good.test"]},
    "mx.good.test": {"A": ["127.0.0.100"]},
    # an answer outside the codes of bl.test does not count
    "98.0.0.127.bl.test": {"A": ["127.255.255.254"]},
}


def from_user(address: str) -> bytes:
    """The test message as a user submits it (the From header is theirs)."""
    return MESSAGE.replace(b"From: a@remote.test", f"From: {address}".encode())


def settings(dns_server: DNSServer, **more: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "queue.resolver": dns_server.address,
        "tls.allow_plaintext_auth": True,
        "antispam.enabled": True,
        "antispam.allow_domains": ["allowed.test"],
        "antispam.dns_timeout": 2.0,
        "antispam.dnsbl.zones": [
            {"zone": "bl.test", "action": "reject"},
            {"zone": "score.test", "weight": 3.0},
            {"zone": "wl.test", "action": "allow"},
        ],
        "antispam.pregreet.delay": 0.3,
        "antispam.greylist.enabled": True,
        "antispam.greylist.delay": 1.0,
        "antispam.greylist.ipv4_prefix": 32,
        "antispam.ratelimit.ip_connections_per_minute": 5,
        "antispam.ratelimit.ip_messages_per_minute": 3,
        "antispam.ratelimit.user_messages_per_hour": 2,
        "antispam.junk_score": 3.0,
    }
    base.update(more)
    return base


@pytest.fixture(scope="module")
def server(mailsuite_module_server: Any, dns: DNSServer) -> Any:  # noqa: F811
    dns.set_records(RECORDS)
    return mailsuite_module_server(settings(dns), users={ALICE: PASSWORD, BOB: PASSWORD})


def connect(server: Any, ip: str, *, port: str = "smtp", helo: str = "client.example.org") -> smtplib.SMTP:
    client = smtplib.SMTP(timeout=10, source_address=(ip, 0), local_hostname=helo)
    client.connect("127.0.0.1", server.ports[port])
    return client


def refusals(server: Any, ip: str) -> list[str]:
    return [line for line in server.log().splitlines() if "antispam refused" in line and f"client=[{ip}]" in line]


def wait_for_refusal(server: Any, ip: str, check: str) -> str:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [line for line in refusals(server, ip) if f"check={check}" in line]
        if lines:
            return lines[-1]
        time.sleep(0.05)
    raise AssertionError(f"no {check} refusal logged for {ip}:\n{server.log()[-3000:]}")


def inbox(server: Any, address: str) -> list[bytes]:
    new = server.mail_dir(address) / "new"
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.exists() else []


def test_dnsbl_listed_client_refused_with_the_lists_reason(server: Any) -> None:
    """A client in a "reject" zone gets 554 5.7.1 at RCPT naming the zone and its TXT reason; one log line says all."""
    with connect(server, "127.0.0.91") as c:
        c.ehlo()
        c.mail("spammer@remote.test")
        code, text = c.rcpt(BOB)
    assert code == 554
    assert b"5.7.1" in text and b"blocked using bl.test (127.0.0.2): Listed for spam, see https://bl.test/127.0.0.91" in text
    line = wait_for_refusal(server, "127.0.0.91", "dnsbl")
    assert "sender=<spammer@remote.test>" in line and f"recipient=<{BOB}>" in line and "helo=client.example.org" in line
    assert "Listed for spam" in line


def test_allowlist_overrides_the_blocklist_and_greylisting(server: Any) -> None:
    """A client on the block list and an "allow" zone is accepted at once (no DNSBL refusal, no greylisting)."""
    with connect(server, "127.0.0.92") as c:
        assert c.sendmail("friend@remote.test", [BOB], MESSAGE) == {}
    assert refusals(server, "127.0.0.92") == []


def test_answers_outside_the_codes_and_authenticated_users_are_not_refused(server: Any) -> None:
    """127.255.255.x (a list's error answer) is not a listing; AUTH on submission skips the port-25 checks."""
    with connect(server, "127.0.0.98") as c:
        c.ehlo()
        c.mail("someone@allowed.test")
        assert c.rcpt(BOB)[0] == 250
    with connect(server, "127.0.0.91", port="submission") as c:  # the listed client, now a logged-in user
        c.login(ALICE, PASSWORD)
        assert c.sendmail(ALICE, [BOB], from_user(ALICE)) == {}


def test_scores_add_up_dnsbl_fcrdns_and_helo(server: Any) -> None:
    """Weight 3 on a list + no reverse DNS + a bad HELO reaches reject_score 5; with FCrDNS and a good HELO it does not, but junk_score 3."""
    with connect(server, "127.0.0.99", helo="localhost") as c:
        c.ehlo()
        c.mail("someone@allowed.test")
        code, text = c.rcpt(BOB)
    assert code == 554 and b"5.7.1" in text
    line = wait_for_refusal(server, "127.0.0.99", "score")
    assert "score 5 >= 5" in line and "dnsbl score.test" in line and "fcrdns" in line and "helo" in line
    with connect(server, "127.0.0.100", helo="mx.good.test") as c:
        assert c.sendmail("someone@allowed.test", [BOB], MESSAGE.replace(b"hi", b"scored")) == {}
    # below reject_score but at junk_score (3): delivered to Junk, flagged
    junk = server.mail_dir(BOB) / ".Junk" / "new"
    [copy] = [p.read_bytes() for p in junk.iterdir() if b"scored" in p.read_bytes()]
    assert b"\r\nX-Spam-Flag: YES\r\nX-Spam-Score: 3\r\n" in copy


def test_greylisting_refuses_a_new_triplet_then_accepts_the_retry(server: Any) -> None:
    """451 4.7.1 on the first attempt and on a too-early retry; accepted after the delay, and delivered."""
    sender = "news@remote.test"
    with connect(server, "127.0.0.93") as c:
        c.ehlo()
        c.mail(sender)
        code, text = c.rcpt(BOB)
        assert code == 451 and b"4.7.1" in text and b"Greylisted" in text
        c.rset()
        c.mail(sender)
        assert c.rcpt(BOB)[0] == 451
    line = wait_for_refusal(server, "127.0.0.93", "greylist")
    assert f"sender=<{sender}>" in line and f"recipient=<{BOB}>" in line
    before = len(inbox(server, BOB))
    time.sleep(1.1)
    with connect(server, "127.0.0.93") as c:
        assert c.sendmail(sender, [BOB], MESSAGE.replace(b"hi", b"greylisted")) == {}
    assert len(inbox(server, BOB)) == before + 1


def test_pregreet_client_is_refused(server: Any) -> None:
    """A client that talks before the 220 gets 554 5.5.1 in place of the greeting and is disconnected."""
    s = socket.socket()
    s.bind(("127.0.0.94", 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", server.ports["smtp"]))
    s.sendall(b"EHLO bot.example\r\nMAIL FROM:<bot@spam.test>\r\n")
    received = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        received += chunk
    s.close()
    assert received.startswith(b"554 5.5.1 ") and b"220" not in received
    assert "reason=client sent data before the greeting" in wait_for_refusal(server, "127.0.0.94", "pregreet")


def test_polite_client_waits_once_and_passes(server: Any) -> None:
    """A client that waits for the greeting is greeted and remembered; nothing is refused."""
    for _ in range(2):
        with connect(server, "127.0.0.95") as c:
            assert c.noop()[0] == 250
    assert refusals(server, "127.0.0.95") == []


def test_ip_message_rate_limit(server: Any) -> None:
    """ip_messages_per_minute = 3: the fourth message's RCPT gets 450 4.7.1, logged."""
    with connect(server, "127.0.0.96") as c:
        for _ in range(3):
            assert c.sendmail("bulk@allowed.test", [BOB], MESSAGE) == {}
        c.mail("bulk@allowed.test")
        code, text = c.rcpt(BOB)
    assert code == 450 and b"4.7.1" in text and b"messages per minute" in text
    assert "messages per minute from 127.0.0.96" in wait_for_refusal(server, "127.0.0.96", "ratelimit")


def test_ip_connection_rate_limit(server: Any) -> None:
    """ip_connections_per_minute = 5: the sixth connection in a minute is answered 421 4.7.0 and closed."""
    for _ in range(5):
        with connect(server, "127.0.0.97") as c:
            assert c.noop()[0] == 250
    client = smtplib.SMTP(timeout=10, source_address=("127.0.0.97", 0))
    code, text = client.connect("127.0.0.1", server.ports["smtp"])
    client.close()
    assert code == 421 and b"4.7.0" in text
    assert "connections per minute" in wait_for_refusal(server, "127.0.0.97", "ratelimit")


def test_user_message_rate_limit_on_submission(server: Any) -> None:
    """user_messages_per_hour = 2: an authenticated user's third message is refused 450 4.7.1, whatever the IP."""
    with connect(server, "127.0.0.102", port="submission") as c:
        c.login(BOB, PASSWORD)
        assert c.sendmail(BOB, [ALICE], from_user(BOB)) == {}
        assert c.sendmail(BOB, [ALICE], from_user(BOB)) == {}
    with connect(server, "127.0.0.103", port="submission") as c:
        c.login(BOB, PASSWORD)
        c.mail(BOB)
        code, text = c.rcpt(ALICE)
    assert code == 450 and b"messages per hour from bob@example.test" in text
    line = wait_for_refusal(server, "127.0.0.103", "ratelimit")
    assert f"sender=<{BOB}>" in line and f"recipient=<{ALICE}>" in line


def test_greylist_state_survives_a_restart(mailsuite_server: Any, dns: DNSServer) -> None:  # noqa: F811
    """A triplet first seen before a restart is accepted after the delay (a new one would get 451 again)."""
    dns.set_records(RECORDS)
    server = mailsuite_server(settings(dns, **{"antispam.pregreet.enabled": False}), users={BOB: PASSWORD})
    with connect(server, "127.0.0.101") as c:
        c.ehlo()
        c.mail("late@remote.test")
        assert c.rcpt(BOB)[0] == 451
    first = time.monotonic()
    assert server.stop() == 0
    server.start()
    time.sleep(max(0.0, 1.1 - (time.monotonic() - first)))
    with connect(server, "127.0.0.101") as c:
        assert c.sendmail("late@remote.test", [BOB], MESSAGE) == {}


def test_moves_into_and_out_of_junk_are_logged_for_training(server: Any) -> None:
    """An IMAP MOVE to Junk logs "training spam", and back to INBOX "training ham", with the user and UIDs."""
    with connect(server, "127.0.0.104") as c:
        assert c.sendmail("someone@allowed.test", [ALICE], MESSAGE.replace(b"hi", b"train me")) == {}
    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    try:
        imap.login(ALICE, PASSWORD)
        imap.create("Junk")
        imap.select("INBOX")
        assert imap.uid("MOVE", "1", "Junk")[0] == "OK"
        imap.select("Junk")
        assert imap.uid("MOVE", "1", "INBOX")[0] == "OK"
    finally:
        imap.logout()
    log = server.log()
    assert f"training spam: user={ALICE} moved 1 message(s) INBOX -> Junk uids=1" in log
    assert f"training ham: user={ALICE} moved 1 message(s) Junk -> INBOX uids=1" in log
