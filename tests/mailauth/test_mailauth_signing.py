"""DKIM signing: what mailsuite signs verifies with dkimpy's own verifier, over real DNS."""

from __future__ import annotations

import dkim
import dns.resolver
import pytest
import pytest_twisted

from mailsuite.mailauth.signing import header_list
from tests.mailauth.helpers import key_records, message


def dkimpy_dnsfunc(server):
    """dkimpy's TXT lookup through dnspython, asking the loopback DNS server (independent of mailsuite's DNS code)."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server.host]
    resolver.port = server.port

    def get_txt(name, timeout=5):
        try:
            answer = resolver.resolve(name.decode() if isinstance(name, bytes) else name, "TXT", lifetime=timeout)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        return b"".join(answer[0].strings)

    return get_txt


def signatures(data: bytes) -> list[dict[bytes, bytes]]:
    d = dkim.DKIM(data)
    return [dkim.util.parse_tag_value(v) for k, v in d.headers if k.lower() == b"dkim-signature"]


@pytest.mark.parametrize("algorithm, a_tag", [("rsa", b"rsa-sha256"), ("ed25519", b"ed25519-sha256")])
def test_signature_verifies_with_dkimpy(make_auth, dns, algorithm, a_tag):
    """One key per algorithm: the header we return, prepended, verifies with dkimpy against the published record."""
    h = make_auth()
    key = h.make_key("a.test", "s1", algorithm)
    dns.set_records(key_records(key))
    msg = message()
    header = h.auth.sign(msg, "a.test")
    assert header.startswith(b"DKIM-Signature: ") and header.endswith(b"\r\n")
    (sig,) = signatures(header + msg)
    assert sig[b"a"] == a_tag and sig[b"c"] == b"relaxed/relaxed" and sig[b"d"] == b"a.test" and sig[b"s"] == b"s1"
    if algorithm == "rsa":
        assert key.public and len(key.private) > 1600  # 2048-bit key
    assert dkim.verify(header + msg, dnsfunc=dkimpy_dnsfunc(dns))


def test_both_keys_sign_and_relaxed_canonicalisation_survives_refolding(make_auth, dns):
    """RSA + Ed25519 keys give two signatures; both still verify after a relay refolds a header and pads whitespace."""
    h = make_auth()
    keys = [h.make_key("a.test", "rsa1", "rsa"), h.make_key("a.test", "ed1", "ed25519")]
    dns.set_records(key_records(*keys))
    msg = message(subject="a subject long enough")
    signed = h.auth.sign(msg, "a.test") + msg
    assert len(signatures(signed)) == 2
    mangled = signed.replace(b"Subject: a subject long enough", b"Subject: a subject\r\n  long   enough")
    mangled = mangled.replace(b"Hi Bob,\r\n", b"Hi Bob,   \r\n")
    verify = dkimpy_dnsfunc(dns)
    d = dkim.DKIM(mangled)
    assert d.verify(0, dnsfunc=verify) and d.verify(1, dnsfunc=verify)


def test_changed_body_or_added_from_breaks_the_signature(make_auth, dns):
    """The signature protects the body and (oversigned) From: changing either fails dkimpy's verification."""
    h = make_auth()
    key = h.make_key("a.test", "s1")
    dns.set_records(key_records(key))
    msg = message()
    header = h.auth.sign(msg, "a.test")
    verify = dkimpy_dnsfunc(dns)
    assert dkim.verify(header + msg, dnsfunc=verify)
    assert not dkim.verify(header + msg.replace(b"see you", b"pay this"), dnsfunc=verify)
    assert not dkim.verify(header + b"From: mallory@evil.test\r\n" + msg, dnsfunc=verify)


def test_no_key_no_signature_and_signing_can_be_switched_off(make_auth, dns):
    """A domain without a key is sent unsigned; sign = false never signs."""
    h = make_auth()
    assert h.auth.sign(message(), "a.test") == b""
    h.make_key("a.test", "s1")
    assert h.auth.sign(message(), "a.test") != b""
    off = make_auth(sign=False)
    off.make_key("a.test", "s1")
    assert off.auth.sign(message(), "a.test") == b""


def test_selectors_option_picks_the_keys(make_auth, dns):
    """mailauth.selectors = ["a.test:new"] signs with that key only, although "old" exists too."""
    h = make_auth(selectors=["a.test:new"])
    h.make_key("a.test", "old")
    h.make_key("a.test", "new")
    (sig,) = signatures(h.auth.sign(message(), "a.test") + message())
    assert sig[b"s"] == b"new"


@pytest_twisted.ensureDeferred
async def test_sign_message_reads_an_incoming_message_off_the_reactor_thread(make_auth, dns):
    """sign_message takes an IIncomingMessage-like object and a header prefix; the signature covers prefix + message."""
    h = make_auth()
    key = h.make_key("a.test", "s1")
    dns.set_records(key_records(key))
    prefix = b"Message-ID: <added-by-server@a.test>\r\n"
    body = message().replace(b"Message-ID: <hello@a.test>\r\n", b"")

    class Incoming:
        def open(self):
            import io

            return io.BytesIO(body)

    header = await h.auth.sign_message(Incoming(), "a.test", header_prefix=prefix)
    assert dkim.verify(header + prefix + body, dnsfunc=dkimpy_dnsfunc(dns))
    assert not dkim.verify(header + body, dnsfunc=dkimpy_dnsfunc(dns))


def test_header_list_oversigns_from_and_skips_trace_fields():
    """h= lists present fields once per occurrence, oversigns From/Subject/..., never Received or Bcc."""
    names = header_list([b"Received", b"From", b"To", b"Subject", b"Received", b"Bcc", b"X-Custom"])
    assert names.count(b"from") == 2 and names.count(b"to") == 2 and names.count(b"subject") == 2
    assert b"reply-to" in names and b"cc" in names  # absent but oversigned: cannot be added later
    assert b"received" not in names and b"bcc" not in names and b"x-custom" not in names


@pytest_twisted.ensureDeferred
async def test_the_server_path_signs_only_a_from_of_the_signing_domain(make_auth, dns):
    """sign_message (what the SMTP server calls) signs nothing when the From names another domain, or two domains."""
    h = make_auth()
    h.make_key("a.test", "s1", "ed25519")
    assert await h.auth.sign_message(message(from_="Alice <alice@A.test>"), "a.test") != b""
    assert await h.auth.sign_message(message(from_="ceo@bank.test"), "a.test") == b""
    assert await h.auth.sign_message(message(from_="alice@a.test, ceo@bank.test"), "a.test") == b""
    two_froms = message(extra="From: ceo@bank.test\r\n")
    assert await h.auth.sign_message(two_froms, "a.test") == b""
    assert h.auth.sign(message(from_="ceo@bank.test"), "a.test") != b"", "the test helper still signs anything"


@pytest_twisted.ensureDeferred
async def test_hook_signs_for_the_checked_from_domain_only(make_auth, dns):
    """smtp_hook.on_message signs an authenticated user's message for sign_domain, never for the MAIL FROM domain."""
    from mailsuite.mailauth import smtp_hook

    h = make_auth()
    h.make_key("a.test", "s1", "ed25519")
    h.make_key("b.test", "s1", "ed25519")
    common = dict(authenticated=True, ip="127.0.0.1", helo="client.test", sender="alice@a.test", local=[], trace=b"")
    unchecked = await smtp_hook.on_message(h.auth, None, message=message(from_="bob@b.test"), **common)
    assert unchecked.header == b""
    checked = await smtp_hook.on_message(h.auth, None, message=message(from_="bob@b.test"), sign_domain="b.test", **common)
    (sig,) = signatures(checked.header + message(from_="bob@b.test"))
    assert sig[b"d"] == b"b.test"
