"""ARC (RFC 8617): B forwards a checked message to another domain with an ARC set; C validates the chain."""

from __future__ import annotations

import dkim
import pytest_twisted

from mailsuite.mailauth import smtp_hook
from tests.mailauth.helpers import BAD_IP, GOOD_IP, key_records, message, sender_records
from tests.mailauth.test_mailauth_inbound import results
from tests.mailauth.test_mailauth_signing import dkimpy_dnsfunc

B_TRACE = b"Received: from mx.a.test ([127.0.0.1]) by mail.b.test with ESMTPS id 1\r\n"


async def forwarded_by_b(make_auth, dns, *, arc_domain="b.test"):
    """A signs, B checks and forwards to a remote address (on_message with remote=...): the bytes B sends on."""
    a = make_auth(hostname="mail.a.test")
    a_key = a.make_key("a.test", "s1")
    b = make_auth(arc_domain=arc_domain)
    b_key = b.make_key("b.test", "arc1")
    dns.set_records({**sender_records(), **key_records(a_key, b_key)})
    msg = message()
    signed = a.auth.sign(msg, "a.test") + msg
    outcome = await smtp_hook.on_message(b.auth, None, authenticated=False, ip=GOOD_IP, helo="mx.a.test",
                                         sender="alice@a.test", local=[], message=signed, trace=B_TRACE,
                                         remote=["carol@c.test"])
    return outcome.header + B_TRACE + signed


@pytest_twisted.ensureDeferred
async def test_forwarded_message_carries_a_valid_arc_set(make_auth, dns):
    """B's ARC set verifies with dkimpy (cv pass) and C reports arc=pass for mail arriving from B's address."""
    forwarded = await forwarded_by_b(make_auth, dns)
    assert forwarded.startswith(b"ARC-Seal: i=1; cv=none;")
    assert b"ARC-Authentication-Results: i=1; mail.b.test;" in forwarded
    cv, _, _ = dkim.arc_verify(forwarded, dnsfunc=dkimpy_dnsfunc(dns))
    assert cv == dkim.CV_Pass
    c = make_auth(hostname="mail.c.test")
    verdict = await c.auth.check_inbound(BAD_IP, "mail.b.test", "alice@a.test", forwarded)
    r = results(verdict, "mail.c.test")
    assert r["arc"] == ["pass"] and r["spf"][0].startswith("fail") and r["dkim"][0].startswith("pass")
    assert verdict.arc == "pass"


@pytest_twisted.ensureDeferred
async def test_changed_after_sealing_fails_the_chain(make_auth, dns):
    """A body changed after B sealed it: C reports arc=fail."""
    forwarded = await forwarded_by_b(make_auth, dns)
    c = make_auth(hostname="mail.c.test")
    verdict = await c.auth.check_inbound(BAD_IP, "mail.b.test", "alice@a.test", forwarded.replace(b"see you", b"pay me"))
    assert verdict.arc == "fail" and b"arc=fail" in verdict.header


@pytest_twisted.ensureDeferred
async def test_no_arc_domain_no_seal_and_local_mail_unsealed(make_auth, dns):
    """Without mailauth.arc_domain nothing is sealed; with it, mail for local recipients only is not sealed."""
    unsealed = await forwarded_by_b(make_auth, dns, arc_domain="")
    assert unsealed.startswith(b"Authentication-Results: mail.b.test;") and b"ARC-Seal" not in unsealed
    b = make_auth(arc_domain="b.test")
    b.make_key("b.test", "arc1")
    outcome = await smtp_hook.on_message(b.auth, None, authenticated=False, ip=GOOD_IP, helo="mx.a.test",
                                         sender="alice@a.test", local=["bob@b.test"], message=message(), trace=B_TRACE)
    assert b"ARC-Seal" not in outcome.header
