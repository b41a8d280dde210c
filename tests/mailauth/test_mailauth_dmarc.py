"""DMARC record parsing, organizational domains, alignment and dispositions (RFC 7489)."""

from __future__ import annotations

import random

from mailsuite.mailauth.dkimcheck import DKIMResult
from mailsuite.mailauth.dmarc import DMARCRecord, aligned, evaluate, from_domains, organizational_domain, parse_record
from mailsuite.mailauth.spfcheck import SPFResult

SPF_FAIL = SPFResult("mailfrom", "fail", "x@evil.test", "evil.test")


def test_organizational_domain_uses_the_public_suffix_list():
    """Multi-label public suffixes are respected; unknown TLDs fall back to the last two labels."""
    assert organizational_domain("mail.example.co.uk") == "example.co.uk"
    assert organizational_domain("a.b.example.com") == "example.com"
    assert organizational_domain("news.a.test") == "a.test"
    assert organizational_domain("co.uk") == "co.uk"


def test_alignment_relaxed_and_strict():
    """Relaxed: same organizational domain; strict: identical; different suffix owners never align."""
    assert aligned("news.example.com", "example.com", "r")
    assert not aligned("news.example.com", "example.com", "s")
    assert aligned("Example.COM", "example.com.", "s")
    assert not aligned("a.co.uk", "b.co.uk", "r")


def test_record_parsing():
    """v=DMARC1 must come first; p is required unless rua is given; sp/adkim/aspf/pct are read."""
    assert parse_record(b"v=DMARC1; p=reject; sp=none; adkim=s; pct=50") == DMARCRecord("reject", "none", "s", "r", 50)
    assert parse_record("p=reject; v=DMARC1") is None
    assert parse_record("v=DMARC1; rua=mailto:d@a.test") == DMARCRecord("none")
    assert parse_record("v=DMARC1; p=bogus") is None
    assert parse_record("v=spf1 -all") is None


def test_from_domains():
    """Every distinct author domain, lower-cased; no address, no domain."""
    assert from_domains([b"Alice <alice@A.Test>"]) == ["a.test"]
    assert from_domains([b"a@a.test, b@evil.test"]) == ["a.test", "evil.test"]
    assert from_domains([b"undisclosed-recipients:;"]) == []


def test_evaluate_dispositions_with_sp_and_pct():
    """sp= applies to subdomains found through the organizational record; pct sampling downgrades one step."""
    record = DMARCRecord("reject", subdomain_policy="quarantine", pct=100)
    assert evaluate("a.test", record, False, SPF_FAIL, []).disposition == "reject"
    assert evaluate("news.a.test", record, True, SPF_FAIL, []).disposition == "quarantine"
    sampled = DMARCRecord("reject", pct=0)
    outcome = evaluate("a.test", sampled, False, SPF_FAIL, [], random.Random(1))
    assert (outcome.result, outcome.policy, outcome.disposition) == ("fail", "reject", "quarantine")
    passing = [DKIMResult("pass", "mail.a.test", "s1")]
    assert evaluate("a.test", record, False, SPF_FAIL, passing).result == "pass"
    assert evaluate("a.test", DMARCRecord("reject", adkim="s"), False, SPF_FAIL, passing).result == "fail"
    assert evaluate("a.test", None, False, SPF_FAIL, []).result == "none"
