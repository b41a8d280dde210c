"""Inbound checks over a real loopback DNS server: SPF, DKIM, DMARC, Authentication-Results and the verdict."""

from __future__ import annotations

import re
import time

import pytest_twisted

from tests.mailauth.helpers import BAD_IP, GOOD_IP, HOSTNAME, key_records, message, sender_records


def results(verdict, hostname: str = HOSTNAME) -> dict[str, list[str]]:
    """method -> list of 'result props' from our Authentication-Results header."""
    text = verdict.header.decode()
    assert text.startswith(f"Authentication-Results: {hostname};")
    assert text.endswith("\r\n") and "\n\r" not in text.replace("\r\n", "")
    out: dict[str, list[str]] = {}
    for part in re.sub(r"\r\n\t", " ", text).split(";")[1:]:
        part = part.strip()
        method, _, rest = part.partition("=")
        out.setdefault(method, []).append(rest)
    return out


def result_of(verdict, method: str, index: int = 0) -> str:
    return results(verdict)[method][index].split()[0]


@pytest_twisted.ensureDeferred
async def test_signed_message_from_permitted_ip_passes_everything(make_auth, dns):
    """The A -> B case in one process: dkim=pass (both keys) spf=pass dmarc=pass, accepted into INBOX."""
    sender = make_auth()
    keys = [sender.make_key("a.test", "rsa1"), sender.make_key("a.test", "ed1", "ed25519")]
    dns.set_records({**sender_records(), **key_records(*keys), "mx.a.test": {"A": [GOOD_IP], "TXT": ["v=spf1 a -all"]}})
    msg = message()
    signed = sender.auth.sign(msg, "a.test") + msg
    receiver = make_auth()
    verdict = await receiver.auth.check_inbound(GOOD_IP, "mx.a.test", "alice@a.test", signed)
    r = results(verdict)
    assert r["spf"][0].startswith("pass") and "smtp.mailfrom=alice@a.test" in r["spf"][0]
    assert r["spf"][1] == "pass smtp.helo=mx.a.test"
    assert [d.split()[0] for d in r["dkim"]] == ["pass", "pass"]
    assert any("header.d=a.test" in d and "header.s=rsa1" in d for d in r["dkim"])
    assert r["dmarc"][0].startswith("pass") and "header.from=a.test" in r["dmarc"][0]
    assert verdict.action == "accept" and verdict.folder == "INBOX" and verdict.error() is None


@pytest_twisted.ensureDeferred
async def test_forged_sender_is_rejected_under_p_reject(make_auth, dns):
    """Unsigned mail claiming a.test from an IP its SPF does not list: spf=fail dmarc=fail, 550 5.7.1."""
    dns.set_records(sender_records())
    h = make_auth()
    verdict = await h.auth.check_inbound(BAD_IP, "evil.test", "ceo@a.test", message(from_="CEO <ceo@a.test>"))
    assert result_of(verdict, "spf") == "fail"
    assert result_of(verdict, "dmarc") == "fail"
    assert "dkim" not in results(verdict)
    assert verdict.action == "reject"
    error = verdict.error()
    assert (error.code, error.enhanced) == (550, "5.7.1") and "a.test" in error.text


@pytest_twisted.ensureDeferred
async def test_forged_sender_options_quarantine_or_accept(make_auth, dns):
    """dmarc_reject_action = quarantine -> Junk; dmarc_enforce = false -> accepted with dmarc=fail recorded."""
    dns.set_records(sender_records())
    forged = message(from_="ceo@a.test")
    soft = await make_auth(dmarc_reject_action="quarantine").auth.check_inbound(BAD_IP, "evil.test", "ceo@a.test", forged)
    assert (soft.action, soft.folder, soft.error()) == ("quarantine", "Junk", None)
    off = await make_auth(dmarc_enforce=False).auth.check_inbound(BAD_IP, "evil.test", "ceo@a.test", forged)
    assert off.action == "accept" and result_of(off, "dmarc") == "fail"


@pytest_twisted.ensureDeferred
async def test_p_quarantine_goes_to_junk(make_auth, dns):
    """A domain publishing p=quarantine: a failing message is delivered to the Junk folder."""
    dns.set_records(sender_records(dmarc="v=DMARC1; p=quarantine"))
    verdict = await make_auth().auth.check_inbound(BAD_IP, "evil.test", "x@a.test", message(from_="x@a.test"))
    assert verdict.action == "quarantine" and verdict.folder == "Junk"
    assert "(p=quarantine dis=quarantine)" in results(verdict)["dmarc"][0]


@pytest_twisted.ensureDeferred
async def test_tampered_body_fails_dkim_and_dmarc(make_auth, dns):
    """A validly signed message changed in transit, relayed from a non-SPF IP: dkim=fail, dmarc=fail, rejected."""
    h = make_auth()
    key = h.make_key("a.test", "s1")
    dns.set_records({**sender_records(), **key_records(key)})
    msg = message()
    tampered = h.auth.sign(msg, "a.test") + msg.replace(b"see you", b"wire the money")
    verdict = await h.auth.check_inbound(BAD_IP, "relay.test", "alice@a.test", tampered)
    assert result_of(verdict, "dkim") == "fail" and result_of(verdict, "dmarc") == "fail"
    assert verdict.action == "reject"


@pytest_twisted.ensureDeferred
async def test_valid_signature_of_another_domain_does_not_align(make_auth, dns):
    """The forger signs with his own domain's valid key: dkim=pass header.d=evil.test but dmarc=fail for a.test."""
    h = make_auth()
    key = h.make_key("evil.test", "s1")
    dns.set_records({**sender_records(), **sender_records("evil.test", f"v=spf1 ip4:{BAD_IP} -all", None), **key_records(key)})
    msg = message(from_="ceo@a.test")
    signed = h.auth.sign(msg, "evil.test") + msg
    verdict = await h.auth.check_inbound(BAD_IP, "evil.test", "bounce@evil.test", signed)
    r = results(verdict)
    assert r["dkim"][0].startswith("pass") and "header.d=evil.test" in r["dkim"][0]
    assert r["spf"][0].startswith("pass") and "smtp.mailfrom=bounce@evil.test" in r["spf"][0]
    assert r["dmarc"][0].startswith("fail") and verdict.action == "reject"


@pytest_twisted.ensureDeferred
async def test_subdomain_envelope_aligns_relaxed_but_not_strict(make_auth, dns):
    """MAIL FROM bounces@news.a.test with SPF pass, From a.test: relaxed alignment passes, aspf=s fails."""
    records = {**sender_records(), **sender_records("news.a.test", dmarc=None)}
    dns.set_records(records)
    h = make_auth()
    relaxed = await h.auth.check_inbound(GOOD_IP, "mx.a.test", "bounces@news.a.test", message())
    assert result_of(relaxed, "dmarc") == "pass" and relaxed.action == "accept"
    records["_dmarc.a.test"] = {"TXT": ["v=DMARC1; p=reject; aspf=s"]}
    dns.set_records(records)
    strict = await make_auth().auth.check_inbound(GOOD_IP, "mx.a.test", "bounces@news.a.test", message())
    assert result_of(strict, "dmarc") == "fail" and strict.action == "reject"


@pytest_twisted.ensureDeferred
async def test_spf_fail_rejected_only_when_configured(make_auth, dns):
    """No DMARC record: SPF fail is recorded and accepted by default; spf_reject_fail = true answers 550 5.7.1."""
    dns.set_records(sender_records(dmarc=None))
    default = await make_auth().auth.check_inbound(BAD_IP, "evil.test", "x@a.test", message(from_="x@a.test"))
    assert result_of(default, "spf") == "fail" and result_of(default, "dmarc") == "none" and default.action == "accept"
    strict = await make_auth(spf_reject_fail=True).auth.check_inbound(BAD_IP, "evil.test", "x@a.test", message(from_="x@a.test"))
    assert strict.action == "reject" and strict.error().code == 550 and "SPF" in strict.error().text


@pytest_twisted.ensureDeferred
async def test_dns_timeout_is_a_tempfail_451(make_auth, dns):
    """The sender domain's DNS never answers: spf=temperror and 451 4.4.3, within the configured timeout."""
    dns.set_records({"silent.test": {"DROP": True}})
    h = make_auth(dns_timeout=1.0)
    started = time.monotonic()
    verdict = await h.auth.check_inbound(GOOD_IP, "mx.other.test", "x@silent.test", message(from_="x@silent.test"))
    assert time.monotonic() - started < 8
    assert result_of(verdict, "spf") == "temperror"
    assert verdict.action == "tempfail"
    error = verdict.error()
    assert (error.code, error.enhanced) == (451, "4.4.3")


@pytest_twisted.ensureDeferred
async def test_servfail_on_dmarc_and_dkim_key_are_temperrors(make_auth, dns):
    """SERVFAIL for _dmarc -> dmarc=temperror, 451; SERVFAIL for the DKIM key -> dkim=temperror, 451 (SPF fails)."""
    h = make_auth()
    key = h.make_key("a.test", "s1")
    records = {**sender_records(), "_dmarc.a.test": {"SERVFAIL": True}}
    dns.set_records(records)
    verdict = await h.auth.check_inbound(GOOD_IP, "mx.a.test", "alice@a.test", message())
    assert result_of(verdict, "dmarc") == "temperror" and verdict.action == "tempfail" and verdict.error().code == 451
    records = {**sender_records(), key.dns_name: {"SERVFAIL": True}}
    dns.set_records(records)
    msg = message()
    signed = h.auth.sign(msg, "a.test") + msg
    verdict = await make_auth().auth.check_inbound(BAD_IP, "relay.test", "alice@a.test", signed)
    assert result_of(verdict, "dkim") == "temperror" and verdict.action == "tempfail"
    assert verdict.error().enhanced == "4.4.3"


@pytest_twisted.ensureDeferred
async def test_missing_key_is_permerror_and_unsigned_mail_has_no_dkim_result(make_auth, dns):
    """A signature whose selector is not in DNS: dkim=permerror (no key)."""
    h = make_auth()
    h.make_key("a.test", "gone")
    dns.set_records(sender_records(dmarc=None))
    msg = message()
    verdict = await h.auth.check_inbound(GOOD_IP, "mx.a.test", "alice@a.test", h.auth.sign(msg, "a.test") + msg)
    assert results(verdict)["dkim"][0].startswith("permerror (no key)")
    assert verdict.action == "accept"


@pytest_twisted.ensureDeferred
async def test_spf_lookup_limit_gives_permerror(make_auth, dns):
    """An SPF record needing more than 10 DNS-querying terms: spf=permerror (RFC 7208 4.6.4), no endless lookups."""
    records = sender_records(spf="v=spf1 " + " ".join(f"include:i{n}.a.test" for n in range(12)) + " -all", dmarc=None)
    for n in range(12):
        records[f"i{n}.a.test"] = {"TXT": ["v=spf1 ?all"] if n else ["v=spf1 -ip4:10.0.0.1"]}
    dns.set_records(records)
    h = make_auth()
    verdict = await h.auth.check_inbound(GOOD_IP, "localhost", "x@a.test", message(from_="x@a.test"))
    assert result_of(verdict, "spf") == "permerror"
    assert h.auth.resolver.queries_sent <= 15


@pytest_twisted.ensureDeferred
async def test_answers_are_cached_for_their_ttl(make_auth, dns):
    """The second check of the same sender asks the DNS server nothing new."""
    dns.set_records(sender_records())
    h = make_auth()
    await h.auth.check_inbound(GOOD_IP, "mx.a.test", "alice@a.test", message())
    sent = h.auth.resolver.queries_sent
    assert sent > 0
    again = await h.auth.check_inbound(GOOD_IP, "mx.a.test", "alice@a.test", message())
    assert result_of(again, "spf") == "pass"
    assert h.auth.resolver.queries_sent == sent


@pytest_twisted.ensureDeferred
async def test_two_from_domains_are_a_permerror_and_quarantined(make_auth, dns):
    """From naming two domains (one of them passing) cannot pass DMARC: dmarc=permerror, quarantined."""
    dns.set_records({**sender_records(), **sender_records("evil.test", f"v=spf1 ip4:{BAD_IP} -all", None)})
    verdict = await make_auth().auth.check_inbound(BAD_IP, "evil.test", "x@evil.test", message(from_="x@evil.test, boss@a.test"))
    assert result_of(verdict, "dmarc") == "permerror" and verdict.action == "quarantine"


@pytest_twisted.ensureDeferred
async def test_checks_off_accept_without_header(make_auth, dns):
    """verify_inbound = false: accept, no header, no DNS traffic."""
    h = make_auth(verify_inbound=False)
    verdict = await h.auth.check_inbound(BAD_IP, "evil.test", "ceo@a.test", message(from_="ceo@a.test"))
    assert verdict.action == "accept" and verdict.header == b"" and h.auth.resolver.queries_sent == 0


@pytest_twisted.ensureDeferred
async def test_incoming_message_object_is_read_in_the_worker(make_auth, dns):
    """check_inbound accepts an IIncomingMessage-like object (read through open())."""
    import io

    dns.set_records(sender_records())
    data = message()

    class Incoming:
        def open(self):
            return io.BytesIO(data)

    verdict = await make_auth().auth.check_inbound(GOOD_IP, "mx.a.test", "alice@a.test", Incoming())
    assert result_of(verdict, "dmarc") == "pass"


@pytest_twisted.ensureDeferred
async def test_garbage_signature_names_are_errors_not_tempfails(make_auth, dns):
    """A DKIM-Signature whose s= cannot be a DNS name is a permerror for that signature; the message is still judged."""
    dns.set_records(sender_records(dmarc=None))
    h = make_auth()
    h.make_key("a.test", "s1")
    msg = message()
    header = h.auth.sign(msg, "a.test").replace(b"s=s1;", b"s=" + b"x" * 70 + b";")
    verdict = await h.auth.check_inbound(GOOD_IP, "mx.a.test", "alice@a.test", header + msg)
    assert result_of(verdict, "dkim") == "permerror" and verdict.action == "accept"


@pytest_twisted.ensureDeferred
async def test_spf_mx_a_and_ip6_mechanisms_resolve_through_our_dns(make_auth, dns):
    """SPF 'mx', 'a:host' and 'ip6' terms: MX and A answers from the loopback server reach pyspf in its formats."""
    records = sender_records(spf="v=spf1 mx a:relay.a.test ip6:2001:db8::/32 -all", dmarc=None)
    records["a.test"]["MX"] = [[10, "mx1.a.test"]]
    records["mx1.a.test"] = {"A": ["198.51.100.7"]}
    records["relay.a.test"] = {"A": ["203.0.113.9"]}
    dns.set_records(records)
    h = make_auth()
    for ip, expected in (("198.51.100.7", "pass"), ("203.0.113.9", "pass"), ("2001:db8::25", "pass"), (BAD_IP, "fail")):
        verdict = await h.auth.check_inbound(ip, "mx1.a.test", "x@a.test", message(from_="x@a.test"))
        assert result_of(verdict, "spf") == expected, (ip, verdict.header)


@pytest_twisted.ensureDeferred
async def test_null_sender_is_checked_as_postmaster_at_helo(make_auth, dns):
    """MAIL FROM:<> (a bounce): the SPF identity is postmaster@HELO (RFC 7208 2.4), reported as such."""
    dns.set_records({"mx.a.test": {"TXT": [f"v=spf1 ip4:{GOOD_IP} -all"], "A": [GOOD_IP]}})
    verdict = await make_auth().auth.check_inbound(GOOD_IP, "mx.a.test", "", message(from_="MAILER-DAEMON@mx.a.test"))
    r = results(verdict)
    assert r["spf"][0].startswith("pass") and "smtp.mailfrom=postmaster@mx.a.test" in r["spf"][0]
    assert r["spf"][1] == "pass smtp.helo=mx.a.test"
