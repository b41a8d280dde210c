"""TLS for every listener and for outbound SMTP.

Implementation notes:

- One :class:`TLSProvider` per server holds the *current* server
  ``OpenSSL.SSL.Context``.  :meth:`TLSProvider.server_creator` hands out a
  connection creator that asks the provider for the context at each new
  handshake, so a SIGHUP reload (:meth:`TLSProvider.reload`) changes the
  certificate for new handshakes while open connections keep the context they
  started with (a pyOpenSSL Connection holds a reference to its Context).
- The same creator serves implicit-TLS listeners (``TLSMemoryBIOFactory``
  in :mod:`mailsuite.service`) and STARTTLS / STLS
  (``transport.startTLS(creator)``: Twisted builds a ``TLSMemoryBIOFactory``
  from it too).
- Protocol floor TLS 1.2 (RFC 8996 deprecates 1.0 and 1.1); TLS 1.2 cipher
  suites limited to ECDHE with AEAD (forward secrecy, no CBC, no RSA key
  exchange); TLS 1.3 suites are OpenSSL's defaults (all AEAD).  Compression
  and renegotiation are off.
- When no certificate is configured, a self-signed one (P-256 key, SAN with
  the host name, ``localhost``, ``127.0.0.1`` and ``::1``) is made under
  ``<data_root>/tls/`` on first start and kept.  A configured certificate or
  key that is missing, unreadable or not matching stops start-up with a
  :class:`~mailsuite.errors.ConfigError` naming the key, never a traceback.
- Outbound (the relay queue) uses :meth:`TLSProvider.client_options`:
  verified (platform trust store, host name checked per RFC 6125) or
  opportunistic (encrypt but accept any certificate, RFC 7435).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.application import service
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IOpenSSLServerConnectionCreator
from twisted.internet.ssl import TLSVersion, optionsForClientTLS, platformTrust
from twisted.logger import Logger
from zope.interface import implementer

from mailsuite.config import Config
from mailsuite.errors import ConfigError
from mailsuite.store.durable import write_atomic

#: TLS 1.2 suites: ECDHE key exchange (forward secrecy) with AEAD ciphers only.
TLS12_CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"

#: Lifetime of a generated self-signed certificate.
SELF_SIGNED_DAYS = 825


def default_paths(config: Config) -> tuple[Path, Path]:
    """Where the self-signed certificate and key live: ``<data_root>/tls/{cert,key}.pem``."""
    folder = config.data_path / "tls"
    return folder / "cert.pem", folder / "key.pem"


def generate_self_signed(cert_path: Path, key_path: Path, hostname: str, *, days: int = SELF_SIGNED_DAYS) -> None:
    """Write a new self-signed certificate and its key (key file mode 0600).

    Used on first start without a configured certificate, and by
    ``mailsuite gen-cert``.  Both files are written to temporary names and
    renamed, so a crash never leaves half a key.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for dns in dict.fromkeys([hostname, "localhost"]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(dns)))
        except ValueError:
            names.append(x509.DNSName(dns))
    names += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, crl_sign=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_atomic(key_path, key_pem, mode=0o600)
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def load_server_context(cert_path: Path, key_path: Path, file: str = "<config>") -> SSL.Context:
    """A server context for a PEM certificate chain and key; ConfigError names what is wrong."""
    for key_name, path in (("tls.certificate", cert_path), ("tls.key", key_path)):
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise ConfigError(file, key_name, f"cannot read {path}: {e.strerror or e}") from None
    context = SSL.Context(SSL.TLS_METHOD)
    # RFC 8996: TLS 1.0 and 1.1 are deprecated.
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_RENEGOTIATION)
    context.set_cipher_list(TLS12_CIPHERS)
    context.set_session_id(b"mailsuite")
    try:
        context.use_certificate_chain_file(os.fspath(cert_path))
    except SSL.Error:
        raise ConfigError(file, "tls.certificate", f"{cert_path} holds no usable PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(file, "tls.key", f"{key_path} holds no usable PEM private key (encrypted keys are not supported)") from None
    try:
        context.use_privatekey(key)
        context.check_privatekey()
    except SSL.Error:
        raise ConfigError(file, "tls.key", f"{key_path} does not match the certificate {cert_path}") from None
    return context


@implementer(IOpenSSLServerConnectionCreator)
class _CurrentContextCreator:
    """Builds each server-side TLS connection from the provider's context *at handshake time*."""

    def __init__(self, provider: "TLSProvider") -> None:
        self._provider = provider

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self._provider.context, None)


@implementer(IOpenSSLClientConnectionCreator)
class _OpportunisticCreator:
    """Client side without certificate checks (RFC 7435 opportunistic TLS), still with SNI."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.set_options(SSL.OP_NO_COMPRESSION)
        context.set_verify(SSL.VERIFY_NONE, lambda *a: True)
        self._context = context

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        try:
            connection.set_tlsext_host_name(self.hostname.encode("idna"))
        except (UnicodeError, ValueError):
            pass
        connection.set_connect_state()
        return connection


class TLSProvider:
    """The server's TLS identity and policy, reloadable without dropping connections."""

    log = Logger()

    def __init__(self, cert_path: Path, key_path: Path, file: str = "<config>") -> None:
        self.cert_path = cert_path
        self.key_path = key_path
        self.file = file
        self.context = load_server_context(cert_path, key_path, file)

    @classmethod
    def from_config(cls, config: Config, reactor: Any = None) -> "TLSProvider":
        """The configured certificate, or the self-signed one (made now if missing)."""
        if config.tls.certificate:
            return cls(config.path(config.tls.certificate), config.path(config.tls.key), config.source)
        cert_path, key_path = default_paths(config)
        if not cert_path.exists() or not key_path.exists():
            try:
                generate_self_signed(cert_path, key_path, config.hostname)
            except OSError as e:
                raise ConfigError(config.source, "data_root", f"cannot write a self-signed certificate to {cert_path.parent}: {e.strerror or e}") from None
            cls.log.info("generated a self-signed certificate for {hostname} in {path}", hostname=config.hostname, path=str(cert_path))
        return cls(cert_path, key_path, config.source)

    def server_creator(self) -> _CurrentContextCreator:
        """For TLSMemoryBIOFactory and transport.startTLS: always the current certificate."""
        return _CurrentContextCreator(self)

    def client_options(self, hostname: str, verify: bool) -> Any:
        """Client TLS for outbound SMTP to ``hostname``: verified (trust store + name) or opportunistic."""
        if verify:
            return optionsForClientTLS(hostname, trustRoot=platformTrust(), extraCertificateOptions={"raiseMinimumTo": TLSVersion.TLSv1_2})
        return _OpportunisticCreator(hostname)

    def reload(self) -> bool:
        """Re-read certificate and key; on error keep the old ones and log why.  True if reloaded."""
        try:
            context = load_server_context(self.cert_path, self.key_path, self.file)
        except ConfigError as e:
            self.log.error("TLS reload failed, keeping the previous certificate: {error}", error=str(e))
            return False
        self.context = context
        self.log.info("TLS certificate reloaded from {path}", path=str(self.cert_path))
        return True


class TLSReloadService(service.Service):
    """Reloads the certificate on SIGHUP while the server runs; warns about plaintext AUTH."""

    name = "tls"
    log = Logger()

    def __init__(self, provider: TLSProvider, reactor: Any, allow_plaintext_auth: bool = False) -> None:
        self.provider = provider
        self.reactor = reactor
        self.allow_plaintext_auth = allow_plaintext_auth
        self._previous: Any = None

    def startService(self) -> None:
        super().startService()
        if self.allow_plaintext_auth:
            self.log.warn("tls.allow_plaintext_auth is true: passwords may cross the network unencrypted (testing only)")
        try:
            self._previous = signal.signal(signal.SIGHUP, self._on_sighup)
        except ValueError:  # not the main thread (embedded use): no signal reload
            self._previous = None

    def _on_sighup(self, signum: int, frame: Any) -> None:
        # Signal handlers run between bytecodes of the main thread; defer the
        # work to the reactor loop.
        self.reactor.callFromThread(self.provider.reload)

    def stopService(self) -> Any:
        super().stopService()
        if self._previous is not None:
            try:
                signal.signal(signal.SIGHUP, self._previous)
            except ValueError:
                pass
            self._previous = None
        return None


def open_tls(context: Any) -> TLSReloadService:
    """A PARTS opener: set ``context.tls`` and return the SIGHUP reload service."""
    provider = TLSProvider.from_config(context.config, context.reactor)
    context.tls = provider
    return TLSReloadService(provider, context.reactor, context.config.tls.allow_plaintext_auth)
