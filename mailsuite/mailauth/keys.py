"""DKIM private keys on disk and the DNS TXT records that publish them.

Layout (the only place that knows it)::

    <key_dir>/<domain>/<selector>.key    private key, PEM (PKCS#8), mode 0600
    <key_dir>/<domain>/<selector>.txt    the DNS record to publish, for reference

``key_dir`` is ``mailauth.key_dir`` or ``<data_root>/dkim``.  The algorithm is
read from the key itself: RSA keys sign with rsa-sha256 (RFC 6376 3.3,
2048 bits by default, RFC 8301 3.2), Ed25519 keys with ed25519-sha256
(RFC 8463).

Implementation notes:

* Keys are written atomically (temporary file, fsync, rename) with mode 0600
  in a 0700 folder; an existing key is never replaced without ``force``.
* :class:`KeyStore` reloads a domain's keys only when its folder changes
  (one ``stat`` per signing), so ``mailsuite dkim keygen`` takes effect in a
  running server without a restart.
"""

from __future__ import annotations

import base64
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from twisted.logger import Logger

from mailsuite.errors import InvalidName
from mailsuite.store.durable import write_atomic

#: RFC 6376 3.1: a selector is one or more DNS labels.
_SELECTOR = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$")
#: Longest character-string in a TXT record (RFC 1035 3.3.14).
TXT_CHUNK = 255
ALGORITHMS = ("rsa", "ed25519")


@dataclass(frozen=True)
class SigningKey:
    """One DKIM key: what dkimpy needs to sign, and what DNS must publish."""

    domain: str
    selector: str
    #: "rsa-sha256" or "ed25519-sha256" (the a= tag).
    algorithm: str
    #: The private key in the form dkimpy takes: PKCS#1 PEM (RSA) or base64 seed (Ed25519).
    private: bytes
    #: Base64 public key for the p= tag (RFC 6376 3.6.1; RFC 8463 4 for Ed25519).
    public: str

    @property
    def dns_name(self) -> str:
        """Where the record lives: ``<selector>._domainkey.<domain>`` (RFC 6376 3.6.2.1)."""
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def record(self) -> str:
        """The TXT record value, unsplit."""
        k = "ed25519" if self.algorithm.startswith("ed25519") else "rsa"
        return f"v=DKIM1; k={k}; p={self.public}"

    def txt_strings(self) -> list[str]:
        """The record cut into character-strings of at most 255 characters (RFC 1035 3.3.14)."""
        value = self.record
        return [value[i:i + TXT_CHUNK] for i in range(0, len(value), TXT_CHUNK)]

    def zone_line(self) -> str:
        """The record as a zone-file line, split into strings of at most 255 characters."""
        quoted = " ".join(f'"{c}"' for c in self.txt_strings())
        return f"{self.dns_name}. IN TXT ( {quoted} )"


def check_domain(domain: str) -> str:
    """The lower-cased domain, or InvalidName for anything that is not a plain DNS name."""
    domain = domain.strip().rstrip(".").lower()
    if not _DOMAIN.match(domain):
        raise InvalidName(f"not a domain name: {domain!r}")
    return domain


def check_selector(selector: str) -> str:
    """The lower-cased selector, or InvalidName (RFC 6376 3.1: DNS labels only)."""
    selector = selector.strip().lower()
    if not _SELECTOR.match(selector) or len(selector) > 63 * 4:
        raise InvalidName(f"not a DKIM selector (letters, digits, hyphens, dots): {selector!r}")
    return selector


def key_path(key_dir: Path, domain: str, selector: str) -> Path:
    """The private key file of ``selector`` for ``domain``."""
    return key_dir / check_domain(domain) / f"{check_selector(selector)}.key"


def _from_private(domain: str, selector: str, private_key: object) -> SigningKey:
    if isinstance(private_key, rsa.RSAPrivateKey):
        pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                        serialization.NoEncryption())
        spki = private_key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return SigningKey(domain, selector, "rsa-sha256", pem, base64.b64encode(spki).decode("ascii"))
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        seed = private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return SigningKey(domain, selector, "ed25519-sha256", base64.b64encode(seed), base64.b64encode(raw).decode("ascii"))
    raise ValueError(f"unsupported key type {type(private_key).__name__} (RSA or Ed25519 only)")


def load_key(path: Path, domain: str, selector: str) -> SigningKey:
    """Read one PEM private key file."""
    private_key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    return _from_private(domain, selector, private_key)


def generate_key(key_dir: Path, domain: str, selector: str, algorithm: str = "rsa", *, bits: int = 2048,
                 force: bool = False) -> tuple[SigningKey, Path]:
    """Make a new key, write it (0600, atomically) and its record file; return it and its path."""
    domain, selector = check_domain(domain), check_selector(selector)
    if algorithm == "rsa":
        if bits < 2048:
            raise ValueError("RSA keys for DKIM must have at least 2048 bits here (RFC 8301 3.2 allows 1024 only for verifying)")
        private_key: object = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    elif algorithm == "ed25519":
        private_key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"unknown algorithm {algorithm!r} (rsa or ed25519)")
    path = key_path(key_dir, domain, selector)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists already")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # type: ignore[attr-defined]
                                    serialization.NoEncryption())
    key = _from_private(domain, selector, private_key)
    write_atomic(path, pem, mode=0o600)
    write_atomic(path.with_suffix(".txt"), (key.zone_line() + "\n").encode("ascii"), mode=0o644)
    return key, path


class KeyStore:
    """The signing keys per domain, read from ``key_dir`` and narrowed by ``mailauth.selectors``."""

    log = Logger()

    def __init__(self, key_dir: Path, selectors: list[str] | tuple[str, ...] = ()) -> None:
        self.key_dir = key_dir
        self._chosen: dict[str, list[str]] = {}
        for entry in selectors:
            domain, _, selector = entry.partition(":")
            self._chosen.setdefault(domain.strip().lower(), []).append(selector.strip().lower())
        self._cache: dict[str, tuple[int, list[SigningKey]]] = {}
        self._lock = threading.Lock()

    def keys_for(self, domain: str) -> list[SigningKey]:
        """The keys to sign mail of ``domain`` with ([] when it has none); unreadable files are skipped."""
        try:
            domain = check_domain(domain)
        except InvalidName:
            return []
        folder = self.key_dir / domain
        try:
            stamp = folder.stat().st_mtime_ns
        except OSError:
            return []
        with self._lock:
            cached = self._cache.get(domain)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        keys = []
        wanted = self._chosen.get(domain)
        for path in sorted(folder.glob("*.key")):
            selector = path.stem
            if wanted is not None and selector not in wanted:
                continue
            try:
                keys.append(load_key(path, domain, selector))
            except (OSError, ValueError, TypeError) as e:
                self.log.warn("DKIM key {path} skipped: {error}", path=str(path), error=str(e))
                continue
        with self._lock:
            self._cache[domain] = (stamp, keys)
        return keys
