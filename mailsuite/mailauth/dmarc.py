"""DMARC (RFC 7489): policy discovery, identifier alignment and the disposition.

Implementation notes:

* The organizational domain (RFC 7489 3.2) comes from the Public Suffix
  List snapshot bundled with the ``publicsuffixlist`` package (no network);
  a domain that is itself a public suffix is its own organizational domain.
* Policy discovery (6.6.3): ``_dmarc.<From domain>``, then
  ``_dmarc.<organizational domain>``; only records whose first tag is
  ``v=DMARC1`` count, and more than one such record means no policy.
  A DNS failure is a ``temperror``, never "no policy".
* A record with a missing or unknown ``p=`` is used as ``p=none`` when it
  has a ``rua=`` tag, and ignored otherwise (6.6.3 step 6).
* ``sp=`` applies when the record came from the organizational domain and
  the From domain is a subdomain of it (6.3).  ``pct=`` sampling downgrades
  an unselected message one step: reject -> quarantine -> none (6.6.4).
* From: no domain -> ``none`` (nothing to evaluate); more than one From
  domain -> ``permerror`` (RFC 5322 3.6 allows one From field; several
  authors would let a forger hide behind the one that passes).
"""

from __future__ import annotations

import email.utils
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Sequence

from mailsuite.mailauth.dkimcheck import DKIMResult
from mailsuite.resolver import CachingResolver, txt_strings
from mailsuite.mailauth.spfcheck import SPFResult

POLICIES = ("none", "quarantine", "reject")
_DOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?)*$")


@dataclass(frozen=True)
class DMARCRecord:
    """The tags of a DMARC record that decide a disposition."""

    policy: str
    subdomain_policy: str | None = None
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100


@dataclass(frozen=True)
class DMARCOutcome:
    """The result for the Authentication-Results header and the policy to apply.

    ``result`` is pass / fail / none / temperror / permerror (RFC 8601 2.7.4
    plus RFC 7489 11.2); ``policy`` is the published one (p= or sp=) and
    ``disposition`` what should be done after pct= sampling: none,
    quarantine or reject.
    """

    result: str
    from_domain: str = ""
    policy: str = "none"
    disposition: str = "none"
    reason: str = ""


@lru_cache(maxsize=1)
def _psl() -> Any:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


@lru_cache(maxsize=4096)
def organizational_domain(domain: str) -> str:
    """The registered domain under its public suffix (RFC 7489 3.2), e.g. mail.example.co.uk -> example.co.uk."""
    domain = domain.rstrip(".").lower()
    private = _psl().privatesuffix(domain)
    return str(private) if private else domain


def aligned(domain: str, from_domain: str, mode: str) -> bool:
    """Identifier alignment (RFC 7489 3.1): strict = equal; relaxed = same organizational domain."""
    domain, from_domain = domain.rstrip(".").lower(), from_domain.rstrip(".").lower()
    if not domain or not from_domain:
        return False
    if domain == from_domain:
        return True
    return mode != "s" and organizational_domain(domain) == organizational_domain(from_domain)


def parse_record(text: bytes | str) -> DMARCRecord | None:
    """A DMARC record's policy tags; None when it is not a usable DMARC record."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    tags: dict[str, str] = {}
    for i, part in enumerate(text.split(";")):
        part = part.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not eq:
            if i == 0:
                return None
            continue  # a malformed later tag is ignored
        if i == 0 and (name != "v" or value != "DMARC1"):
            return None  # 6.4: v=DMARC1 must come first
        tags.setdefault(name, value)
    if "v" not in tags:
        return None
    policy = tags.get("p", "").lower()
    if policy not in POLICIES:
        if "rua" in tags:
            policy = "none"
        else:
            return None
    sp = tags.get("sp", "").lower()
    try:
        pct = int(tags.get("pct", "100"))
    except ValueError:
        pct = 100
    return DMARCRecord(
        policy=policy,
        subdomain_policy=sp if sp in POLICIES else None,
        adkim="s" if tags.get("adkim", "r").lower() == "s" else "r",
        aspf="s" if tags.get("aspf", "r").lower() == "s" else "r",
        pct=min(100, max(0, pct)),
    )


def from_domains(from_values: Iterable[bytes | str]) -> list[str]:
    """The distinct author domains of the From header field(s), lower-cased."""
    found: list[str] = []
    for value in from_values:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        for _name, address in email.utils.getaddresses([value]):
            _, at, domain = address.rpartition("@")
            domain = domain.strip().rstrip(".").lower()
            if at and domain:
                try:
                    domain = domain.encode("idna").decode("ascii")
                except UnicodeError:
                    pass
                if domain not in found:
                    found.append(domain)
    return found


async def discover(resolver: CachingResolver, from_domain: str) -> tuple[DMARCRecord | None, bool]:
    """The policy record for ``from_domain`` and whether it came from the organizational domain.

    DNSFailure propagates (the caller reports temperror).
    """

    async def fetch(domain: str) -> DMARCRecord | None:
        answer = await resolver.lookup(f"_dmarc.{domain}", "TXT")
        records = [r for r in txt_strings(answer) if re.match(rb"^\s*v\s*=\s*DMARC1\s*(;|$)", r)]
        if len(records) != 1:
            return None
        return parse_record(records[0])

    record = await fetch(from_domain)
    if record is not None:
        return record, False
    org = organizational_domain(from_domain)
    if org != from_domain:
        return await fetch(org), True
    return None, False


def evaluate(from_domain: str, record: DMARCRecord | None, from_org: bool, spf: SPFResult,
             dkim_results: Sequence[DKIMResult], rng: random.Random | None = None) -> DMARCOutcome:
    """The DMARC result for a From domain, given its record and the SPF and DKIM results (6.6.2, 6.6.4)."""
    if record is None:
        return DMARCOutcome("none", from_domain, reason="no DMARC record")
    dkim_ok = any(r.result == "pass" and aligned(r.domain, from_domain, record.adkim) for r in dkim_results)
    spf_ok = spf.result == "pass" and aligned(spf.domain, from_domain, record.aspf)
    policy = record.policy
    if from_org and record.subdomain_policy is not None:
        policy = record.subdomain_policy
    if dkim_ok or spf_ok:
        return DMARCOutcome("pass", from_domain, policy, "none", "aligned DKIM" if dkim_ok else "aligned SPF")
    disposition = policy
    if record.pct < 100 and (rng or random).random() * 100 >= record.pct:
        disposition = {"reject": "quarantine", "quarantine": "none", "none": "none"}[policy]
    return DMARCOutcome("fail", from_domain, policy, disposition, "no aligned pass")


def valid_domain(domain: str) -> bool:
    """True for a name we will query (no spaces, sane labels)."""
    return bool(_DOMAIN.match(domain))
