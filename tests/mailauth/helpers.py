"""Mail-auth test helpers: a loopback DNS server, an in-process MailAuth on the real reactor, sample messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted

from mailsuite import config as config_module
from mailsuite.mailauth.keys import SigningKey, generate_key, key_path, load_key
from mailsuite.mailauth.service import MailAuth, key_dir
from mailsuite.resolver import CachingResolver
from tests.support.dnsserver import DNSServer, dns  # noqa: F401 - the dns fixture

HOSTNAME = "mail.b.test"
GOOD_IP = "127.0.0.1"
_RSA_PEM: list[bytes] = []  # one RSA key's PEM, reused by every test's make_key
BAD_IP = "192.0.2.66"


def message(from_: str = "Alice <alice@a.test>", subject: str = "hello", body: str = "Hi Bob,\r\nsee you.\r\n",
            extra: str = "") -> bytes:
    """A small RFC 5322 message with CRLF line ends."""
    return (
        f"From: {from_}\r\nTo: Bob <bob@b.test>\r\nSubject: {subject}\r\n"
        f"Date: Mon, 23 Nov 2026 09:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '.')}@a.test>\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n{extra}\r\n{body}"
    ).encode()


def key_records(*keys: SigningKey) -> dict[str, dict[str, Any]]:
    """DNS entries publishing these keys' TXT records."""
    return {k.dns_name: {"TXT": [k.txt_strings()]} for k in keys}


def sender_records(domain: str = "a.test", spf: str = f"v=spf1 ip4:{GOOD_IP} -all", dmarc: str | None = "v=DMARC1; p=reject") -> dict[str, dict[str, Any]]:
    """SPF and DMARC records of a sending domain."""
    records: dict[str, dict[str, Any]] = {domain: {"TXT": [spf], "A": [GOOD_IP]}}
    if dmarc is not None:
        records[f"_dmarc.{domain}"] = {"TXT": [dmarc]}
    return records


class AuthHarness:
    """A started MailAuth with its own data root; ``keys`` made on demand."""

    def __init__(self, tmp_path: Path, dns: DNSServer, overrides: dict[str, Any], hostname: str = HOSTNAME) -> None:
        lines = [f'hostname = "{hostname}"', f'data_root = "{tmp_path / "data"}"', "[queue]", f'resolver = "{dns.address}"', "[mailauth]"]
        settings = {"dns_timeout": 1.0}
        settings.update(overrides)
        lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
        self.config = config_module.parse("\n".join(lines) + "\n")
        from twisted.internet import reactor

        self.auth = MailAuth(self.config, reactor, CachingResolver(reactor, dns.address, self.config.mailauth.dns_timeout))
        self.auth.start()

    def make_key(self, domain: str, selector: str, algorithm: str = "rsa") -> SigningKey:
        """A key in this server's key folder; RSA key material is made once per test run (keygen is slow)."""
        if algorithm != "rsa":
            key, _ = generate_key(key_dir(self.config), domain, selector, algorithm)
            return key
        path = key_path(key_dir(self.config), domain, selector)
        if not _RSA_PEM:
            generate_key(key_dir(self.config), domain, selector, "rsa")
            _RSA_PEM.append(path.read_bytes())
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_RSA_PEM[0])
        return load_key(path, domain, selector)

    def stop(self) -> None:
        pytest_twisted.blockon(self.auth.stop())


@pytest.fixture
def make_auth(tmp_path: Path, dns: DNSServer) -> Iterator[Any]:
    """Factory: ``make_auth(dmarc_enforce=False)`` -> AuthHarness (stopped after the test)."""
    made: list[AuthHarness] = []

    def make(hostname: str = HOSTNAME, **overrides: Any) -> AuthHarness:
        h = AuthHarness(tmp_path / f"auth{len(made)}", dns, overrides, hostname)
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop()
