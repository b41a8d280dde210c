"""Issue 15 item 6: an authenticated user may write only their own addresses in From and Sender.

A real server (twistd subprocess) with example.test and other.test, an Ed25519
DKIM key for each, and its relay queue pointed at an SMTP sink as smarthost;
smtplib submits over 587 with STARTTLS and AUTH.  A refused message must get
``553 5.7.1`` after the data and be neither stored, queued nor signed; an
accepted one is signed for its From domain.  Port 25 without AUTH is not
concerned (other hosts' mail is SPF/DKIM/DMARC's business).
"""

from __future__ import annotations

import smtplib
import time
from typing import Any, Iterator

import dkim
import pytest

from mailsuite.auth.directory import SQLiteDirectory
from mailsuite.mailauth.keys import generate_key
from tests.support.smtpsink import SMTPSink

ALICE, BOB, PASSWORD = "alice@example.test", "bob@example.test", "from-test-pw-1"


@pytest.fixture(scope="module")
def sink() -> Iterator[SMTPSink]:
    with SMTPSink() as s:
        yield s


@pytest.fixture(scope="module")
def server(mailsuite_module_server: Any, sink: SMTPSink) -> Any:
    s = mailsuite_module_server({"domains": ["example.test", "other.test"], "queue.smarthost.enabled": True,
                                 "queue.smarthost.host": sink.host, "queue.smarthost.port": sink.port, "queue.smarthost.tls": "none"},
                                users={ALICE: PASSWORD, BOB: PASSWORD})
    # Set up in this process (each CLI run costs seconds on a busy machine); `user senders` itself goes through the CLI below.
    directory = SQLiteDirectory(s.data_root / "users.sqlite3", extra_domains=["example.test", "other.test"])
    directory.add_alias("alice.smith@example.test", [ALICE])
    directory.add_alias("team@example.test", [ALICE, BOB])
    directory.close()
    for domain in ("example.test", "other.test"):
        generate_key(s.data_root / "dkim", domain, "s1", "ed25519")
    return s


def message(subject: str, head: str) -> bytes:
    return f"{head}To: bob@example.test\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n".encode()


def submit(server: Any, raw: bytes, *, mail_from: str = ALICE, to: tuple[str, ...] = (BOB,)) -> None:
    """One message over 587 (STARTTLS, AUTH as Alice); SMTPDataError when refused after the data."""
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=20) as client:
        client.starttls(context=server.client_tls())
        client.login(ALICE, PASSWORD)
        client.sendmail(mail_from, list(to), raw)


def refused(server: Any, raw: bytes, **kw: Any) -> str:
    """Submit expecting 553 5.7.1 after the data; the reply text."""
    with pytest.raises(smtplib.SMTPDataError) as info:
        submit(server, raw, **kw)
    assert info.value.smtp_code == 553, info.value
    text = info.value.smtp_error.decode()
    assert text.startswith("5.7.1 "), text
    return text


def stored(server: Any, subject: str, address: str = BOB) -> list[bytes]:
    """Every stored copy with this Subject in the user's INBOX."""
    new = server.mail_dir(address) / "new"
    found = [p.read_bytes() for p in sorted(new.iterdir())] if new.is_dir() else []
    return [data for data in found if f"\r\nSubject: {subject}\r\n".encode() in data]


def signing_domains(data: bytes) -> list[str]:
    """The d= of every DKIM-Signature field (read with dkimpy's own parser)."""
    return [dkim.util.parse_tag_value(value)[b"d"].decode() for name, value in dkim.DKIM(data).headers if name.lower() == b"dkim-signature"]


def test_own_alias_mixed_case_and_missing_from_accepted_and_signed_for_the_from_domain(server: Any) -> None:
    """Own address, alias, any case, MAIL FROM:<>, and no From at all: stored, DKIM-signed for the From's domain."""
    submit(server, message("own", "From: Alice <alice@example.test>\r\n"))
    submit(server, message("alias", "From: alice.smith@example.test\r\nSender: alice@example.test\r\n"))
    submit(server, message("case", 'From: "Alice" <ALICE@Example.TEST>\r\nSender: Alice.Smith@EXAMPLE.test\r\n'))
    submit(server, message("null path", "From: alice@example.test\r\n"), mail_from="")
    submit(server, message("no from", "Date: Mon, 7 Dec 2026 12:00:00 +0000\r\n"))
    for subject in ("own", "alias", "case", "null path", "no from"):
        (data,) = stored(server, subject)
        assert signing_domains(data) == ["example.test"], (subject, data[:800])
    (data,) = stored(server, "no from")
    assert b"\r\nFrom: <alice@example.test>\r\n" in data


def test_someone_elses_local_address_refused_on_587_not_on_25(server: Any) -> None:
    """From: Bob (or a list alias Alice shares) while logged in as Alice: 553 5.7.1, nothing stored; port 25 without AUTH takes it."""
    text = refused(server, message("as bob", "From: Bob <bob@example.test>\r\n"))
    assert "<bob@example.test> is not owned by alice@example.test" in text
    refused(server, message("as team", "From: team@example.test\r\n"))
    refused(server, message("as bob folded", "From: Alice\r\n <bob@example.test>\r\n"))
    refused(server, message("two froms", "From: alice@example.test\r\nFrom: bob@example.test\r\n"))
    for subject in ("as bob", "as team", "as bob folded", "two froms"):
        assert stored(server, subject) == []
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=20) as client:
        client.sendmail("bob@remote.test", [BOB], message("inbound", "From: Bob <bob@example.test>\r\n"))
    (data,) = stored(server, "inbound")
    assert signing_domains(data) == []


def test_external_address_refused_and_not_relayed(server: Any, sink: SMTPSink) -> None:
    """From a bank's address to a remote recipient: 553 5.7.1, never queued; the session goes on and relays a clean message."""
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=20) as client:
        client.starttls(context=server.client_tls())
        client.login(ALICE, PASSWORD)
        with pytest.raises(smtplib.SMTPDataError) as info:
            client.sendmail(ALICE, ["someone@remote.test"], message("wire it", "From: CEO <ceo@bank.test>\r\n"))
        assert info.value.smtp_code == 553 and info.value.smtp_error.startswith(b"5.7.1 ")
        with pytest.raises(smtplib.SMTPDataError):  # an encoded word where the address belongs is no address
            client.sendmail(ALICE, ["someone@remote.test"], message("encoded", "From: =?utf-8?q?ceo=40bank.test?=\r\n"))
        client.sendmail(ALICE, ["someone@remote.test"], message("clean", "From: alice@example.test\r\n"))
    (relayed,) = sink.wait_for(1)
    time.sleep(0.5)  # anything queued before the clean message would have reached the sink by now
    assert len(sink.messages) == 1 and b"Subject: clean" in relayed.data
    assert signing_domains(relayed.data) == ["example.test"]
    spool = [p.read_bytes() for p in (server.data_root / "queue").rglob("*") if p.is_file()]
    assert not any(b"Subject: wire it" in data or b"Subject: encoded" in data for data in spool)


def test_sender_spoof_and_mixed_lists_refused(server: Any) -> None:
    """Sender: Bob under Alice's From, a From list or group with an outsider, an ambiguous value: 553 5.7.1, unsigned, unstored."""
    assert "Sender header address <bob@example.test>" in refused(server, message("sender", "From: alice@example.test\r\nSender: bob@example.test\r\n"))
    refused(server, message("list", "From: alice@example.test, ceo@bank.test\r\nSender: alice@example.test\r\n"))
    refused(server, message("group", "From: team: alice@example.test, ceo@bank.test;\r\n"))
    refused(server, message("ambiguous", "From: alice@example.test <ceo@bank.test>\r\n"))
    for subject in ("sender", "list", "group", "ambiguous"):
        assert stored(server, subject) == []


def test_extra_allowed_addresses_from_the_cli(server: Any) -> None:
    """`user senders add` lets Alice use office@ and all of @other.test (signed d=other.test); `remove` takes it back at once."""
    refused(server, message("office before", "From: office@example.test\r\n"))
    added = server.cli("user", "senders", "add", ALICE, "office@example.test", "@other.test")
    assert "may now also send as office@example.test, @other.test" in added.stdout
    submit(server, message("office", "From: Office <office@example.test>\r\n"))
    submit(server, message("other domain", "From: Anyone <anyone@Other.test>\r\n"))
    submit(server, message("other envelope", "From: alice@example.test\r\n"), mail_from="bounces@other.test")
    assert signing_domains(stored(server, "office")[0]) == ["example.test"]
    assert signing_domains(stored(server, "other domain")[0]) == ["other.test"]  # the From's domain, not MAIL FROM's example.test
    assert signing_domains(stored(server, "other envelope")[0]) == ["example.test"]
    listed = server.cli("user", "senders", "list", ALICE).stdout.splitlines()
    assert listed == [f"{ALICE}\town", "alice.smith@example.test\talias", "@other.test\textra", "office@example.test\textra"]
    server.cli("user", "senders", "remove", ALICE, "office@example.test")
    refused(server, message("office after", "From: office@example.test\r\n"))
    assert stored(server, "office before") == [] and stored(server, "office after") == []
