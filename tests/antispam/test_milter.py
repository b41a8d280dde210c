"""The milter client against Debian's rspamd (proxy worker in milter mode) and a scripted milter, over real TCP."""

from __future__ import annotations

import re
import smtplib
import struct
from typing import Any, Iterator

import pytest

from mailsuite.antispam.milter import Modifications, apply_modifications, parse_reply, split_message
from tests.support import rspamd as rspamd_support
from tests.support.dnsserver import DNSServer, dns  # noqa: F401 - the dns fixture
from tests.support.fakemilter import FakeMilter, cstr, pkt
from tests.support.needs import unavailable

BOB, CAROL, PASSWORD = "bob@example.test", "carol@example.test", "correct horse battery"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def message(body: str, subject: str = "lunch") -> bytes:
    return (f"From: a@remote.test\r\nTo: {BOB}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@remote.test>\r\n"
            f"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\n\r\n{body}\r\n").encode()


def settings(dns_server: DNSServer, milters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "queue.resolver": dns_server.address,
        "antispam.enabled": True,
        "antispam.pregreet.enabled": False,
        "antispam.milters": milters,
        "antispam.junk_score": 6.0,
    }


def stored(server: Any, address: str, folder: str = "") -> list[bytes]:
    root = server.mail_dir(address)
    new = (root / f".{folder}" / "new") if folder else (root / "new")
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.exists() else []


def send(server: Any, raw: bytes, recipients: tuple[str, ...] = (BOB,), ip: str = "127.0.0.110") -> Any:
    with smtplib.SMTP(timeout=30, source_address=(ip, 0), local_hostname="client.example.org") as c:
        c.connect("127.0.0.1", server.ports["smtp"])
        return c.sendmail("a@remote.test", list(recipients), raw)


@pytest.fixture(scope="module")
def rspamd(dns: DNSServer) -> Iterator[rspamd_support.Rspamd]:  # noqa: F811
    if not rspamd_support.available():
        unavailable("rspamd is not installed (.ci/run installs it)")
    with rspamd_support.Rspamd(dns.address) as r:
        yield r


@pytest.fixture(scope="module")
def scripted() -> Iterator[FakeMilter]:
    with FakeMilter() as milter:
        yield milter


@pytest.fixture
def script(scripted: FakeMilter) -> Iterator[FakeMilter]:
    """The scripted milter (last in the chain), back to "continue, no changes" after each test."""
    yield scripted
    scripted.script, scripted.final, scripted.silent, scripted.answers, scripted.reply_text = [], b"c", False, {}, ""


@pytest.fixture(scope="module")
def server(mailsuite_module_server: Any, dns: DNSServer, rspamd: rspamd_support.Rspamd, scripted: FakeMilter) -> Any:  # noqa: F811
    # Three milters in order: one that is down (nothing listens) with default_action "accept", which the chain
    # goes on without; rspamd; the scripted one, "tempfail" when it does not answer within 1 s.
    down = {"address": "inet:127.0.0.1:1", "timeout": 2.0, "default_action": "accept"}
    milters = [down, {"address": rspamd.address, "timeout": 30.0}, {"address": scripted.address, "timeout": 1.0}]
    return mailsuite_module_server(settings(dns, milters), users={BOB: PASSWORD, CAROL: PASSWORD})


def test_rspamd_rejects_gtube(server: Any) -> None:
    """rspamd's answer to GTUBE (a reply code) becomes the SMTP reply at the end of DATA, logged as one refusal."""
    with pytest.raises(smtplib.SMTPDataError) as info:
        send(server, message(GTUBE, "gtube"))
    assert info.value.smtp_code == 554 and b"Gtube pattern" in info.value.smtp_error
    assert not any(b"gtube@remote.test" in m for m in stored(server, BOB))
    lines = [line for line in server.log().splitlines() if "antispam refused" in line and "check=milter" in line]
    assert lines and "sender=<a@remote.test>" in lines[-1] and f"recipient=<{BOB}>" in lines[-1]


def test_rspamd_adds_its_headers_to_a_clean_message(server: Any) -> None:
    """A clean message is delivered with X-Spamd-Result and X-Spam-Status added by rspamd."""
    assert send(server, message("Hi Bob, lunch at noon?", "clean")) == {}
    [copy] = [m for m in stored(server, BOB) if b"clean@remote.test" in m]
    head = copy.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nX-Spamd-Result: default: False [" in head and b"\r\nX-Spam-Status: No, score=" in head
    assert b"\n\t" in head.split(b"X-Spamd-Result:", 1)[1]  # folded lines keep CRLF + tab
    assert "milter inet:127.0.0.1:1 down" in server.log()


def test_scripted_actions_change_headers_body_recipients(server: Any, script: FakeMilter) -> None:
    """Change, insert and add header, replace body, add and delete recipients: all applied to what is stored."""
    script.script = [
        pkt(b"m", struct.pack("!I", 1) + cstr("Subject", "[tagged] edits")),
        pkt(b"i", struct.pack("!I", 0) + cstr("X-First", "top")),
        pkt(b"h", cstr("X-Filter", "seen")),
        pkt(b"b", b"replaced body\r\n"),
        pkt(b"+", cstr(f"<{CAROL}>")),
        pkt(b"-", cstr(f"<{BOB}>")),
    ]
    assert send(server, message("original body", "edits")) == {}
    assert re.fullmatch(rb"OCHMRTL+NBEQ?", script.commands())  # negotiate, connect, HELO, MAIL, RCPT, DATA, headers, EOH, body, EOM
    assert not any(b"edits@remote.test" in m for m in stored(server, BOB))
    [copy] = [m for m in stored(server, CAROL) if b"edits@remote.test" in m]
    head, body = copy.split(b"\r\n\r\n", 1)
    assert body == b"replaced body\r\n"
    fields = head.split(b"\r\n")
    assert b"Subject: [tagged] edits" in fields and b"X-Filter: seen" in fields
    assert fields.index(b"X-First: top") < fields.index(b"From: a@remote.test") < fields.index(b"X-Filter: seen")


def test_quarantine_goes_to_junk_and_discard_drops(server: Any, script: FakeMilter) -> None:
    """'q' delivers to the Junk folder; 'd' answers 250 and stores nothing."""
    script.script = [pkt(b"q", cstr("looks like spam"))]
    assert send(server, message("buy now", "junk")) == {}
    assert any(b"junk@remote.test" in m for m in stored(server, BOB, "Junk"))
    assert not any(b"junk@remote.test" in m for m in stored(server, BOB))
    script.script, script.final = [], b"d"
    assert send(server, message("gone", "discarded")) == {}
    assert not any(b"discarded@remote.test" in m for folder in ("", "Junk") for m in stored(server, BOB, folder))


def test_a_milter_spam_score_over_junk_score_goes_to_junk(server: Any, script: FakeMilter) -> None:
    """junk_score 6: no reverse DNS (+1) and a milter's X-Spam-Score 7.5 deliver to Junk, flagged; a clean message stays in INBOX."""
    script.script = [pkt(b"h", cstr("X-Spam-Score", "7.5"))]
    assert send(server, message("cheap pills", "scored")) == {}
    [copy] = [m for m in stored(server, BOB, "Junk") if b"scored@remote.test" in m]
    assert copy.startswith(b"Return-Path: <a@remote.test>\r\nDelivered-To: bob@example.test\r\nX-Spam-Flag: YES\r\nX-Spam-Score: 8.5\r\n")
    assert "to Junk: score 8.5 >= junk_score 6 (fcrdns +1, milter +7.5)" in server.log()
    assert not any(b"clean@remote.test" in m for m in stored(server, BOB, "Junk"))


def test_a_milter_that_is_down_tempfails_by_default(server: Any, script: FakeMilter) -> None:
    """default_action "tempfail": a milter that does not answer in time gets 451 4.7.1 at RCPT."""
    script.silent = True
    with smtplib.SMTP(timeout=30, source_address=("127.0.0.111", 0), local_hostname="client.example.org") as c:
        c.connect("127.0.0.1", server.ports["smtp"])
        c.ehlo()
        c.mail("a@remote.test")
        code, text = c.rcpt(BOB)
    assert code == 451 and b"4.7.1" in text


def test_accept_at_connect_leaves_the_milter_out_of_the_session(server: Any, script: FakeMilter) -> None:
    """A milter answering "accept" at connect hears nothing more of that session (and the mail is taken)."""
    script.answers = {b"C": b"a"}
    with smtplib.SMTP(timeout=30, source_address=("127.0.0.113", 0), local_hostname="client.example.org") as c:
        c.connect("127.0.0.1", server.ports["smtp"])
        assert c.sendmail("a@remote.test", [BOB], message("one", "accepted1")) == {}
        assert c.sendmail("a@remote.test", [BOB], message("two", "accepted2")) == {}
    assert re.fullmatch(rb"OCQ?", script.commands())


def test_unknown_commands_reach_the_milters(server: Any, script: FakeMilter) -> None:
    """An unknown command is reported with SMFIC_UNKNOWN; the milter's own refusal replaces the 500."""
    with smtplib.SMTP(timeout=30, source_address=("127.0.0.114", 0), local_hostname="client.example.org") as c:
        c.connect("127.0.0.1", server.ports["smtp"])
        c.ehlo()
        assert c.docmd("XFROB", "now")[0] == 500
        script.answers = {b"U": b"y"}
        script.reply_text = "421 4.7.0 Go away"
        code, text = c.docmd("XFROB", "again")
    assert (code, text) == (421, b"4.7.0 Go away")
    assert [p for c_, p in script.sessions[-1] if c_ == b"U"] == [b"XFROB now\0", b"XFROB again\0"]


def test_reply_parsing_and_header_edits() -> None:
    """Milter reply texts become (code, enhanced, text); header edits keep CRLF and folding."""
    assert parse_reply("554 5.7.1 Gtube pattern") == (554, "5.7.1", "Gtube pattern")
    assert parse_reply("451 try later") == (451, "4.7.1", "try later")
    assert parse_reply("bogus") == (550, "5.7.1", "bogus")
    raw = b"Subject: a\r\nX-Long: one\r\n two\r\nX-Old: x\r\n\r\nbody\r\n"
    fields, body = split_message(raw)
    assert fields == [("Subject", " a"), ("X-Long", " one\n two"), ("X-Old", " x")] and body == b"body\r\n"
    mods = Modifications(change_headers=[(1, "X-Old", "")], add_headers=[("X-New", "a\n\tb")])
    assert apply_modifications(raw, mods) == b"Subject: a\r\nX-Long: one\r\n two\r\nX-New: a\r\n\tb\r\n\r\nbody\r\n"


def test_opendkim_signs_submitted_mail(mailsuite_server: Any, dns: DNSServer, tmp_path: Any) -> None:  # noqa: F811
    """A milter with submission = true sees authenticated mail: opendkim signs it, and the signature verifies."""
    import dkim

    from mailsuite.mailauth.keys import generate_key
    from tests.support import opendkim as opendkim_support

    if not opendkim_support.available():
        unavailable("opendkim is not installed (.ci/run installs it)")
    key, path = generate_key(tmp_path / "keys", "example.test", "od")
    path.chmod(0o600)
    with opendkim_support.OpenDKIM("example.test", "od", path) as opendkim:
        server = mailsuite_server({**settings(dns, [{"address": opendkim.address, "timeout": 10.0, "submission": True}]),
                                   "tls.allow_plaintext_auth": True, "mailauth.sign": False}, users={BOB: PASSWORD, CAROL: PASSWORD})
        with smtplib.SMTP(timeout=30, source_address=("127.0.0.112", 0), local_hostname="laptop.example.test") as c:
            c.connect("127.0.0.1", server.ports["submission"])
            c.login(CAROL, PASSWORD)
            raw = message("signed by opendkim", "dkim").replace(b"From: a@remote.test", f"From: {CAROL}".encode())
            assert c.sendmail(CAROL, [BOB], raw) == {}
    [copy] = [m for m in stored(server, BOB) if b"dkim@remote.test" in m]
    assert b"\r\nDKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; d=example.test; s=od;" in copy
    txt = "".join(key.txt_strings()).encode()
    assert dkim.verify(copy, dnsfunc=lambda name, timeout=5: txt if name == b"od._domainkey.example.test." else None)
