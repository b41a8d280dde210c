"""TLS: certificates, policy and reload, in memory and against the real server."""

from __future__ import annotations

import dataclasses
import imaplib
import signal
import socket
import ssl
import time
import types
import warnings
from pathlib import Path
from typing import Any

import pytest
from OpenSSL import SSL
from cryptography import x509

from mailsuite import config
from mailsuite.errors import ConfigError
from mailsuite.tls import TLSProvider, generate_self_signed

IMPLICIT = ("submissions", "pop3s", "imaps")


def make_config(tmp_path: Path, **tls: str) -> config.Config:
    base = config.parse(f'hostname = "mail.example.test"\ndata_root = "{tmp_path / "data"}"\n', str(tmp_path / "c.toml"))
    return dataclasses.replace(base, tls=dataclasses.replace(base.tls, **tls))


def san_names(pem: bytes) -> list[str]:
    cert = x509.load_pem_x509_certificate(pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n.value) for n in san]


def peer_cn(connection: SSL.Connection) -> str:
    """The common name of the certificate the other side presented."""
    cert = connection.get_peer_certificate(as_cryptography=True)
    return str(cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


def handshake(server: SSL.Connection, client: SSL.Connection) -> None:
    """Drive a handshake between two memory-BIO connections."""
    server.set_accept_state()
    for _ in range(50):
        for a, b in ((client, server), (server, client)):
            try:
                a.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                data = a.bio_read(65536)
            except SSL.WantReadError:
                data = b""
            if data:
                b.bio_write(data)
        if client.get_peer_finished() is not None and server.get_peer_finished() is not None:
            try:
                client.do_handshake()
                return
            except SSL.WantReadError:
                pass
    raise AssertionError("handshake did not finish")


# -- certificates and keys ---------------------------------------------------

def test_self_signed_certificate_is_made_once(tmp_path: Path) -> None:
    """No certificate configured: one is generated under data_root/tls, with the SANs tests rely on, and kept."""
    cfg = make_config(tmp_path)
    TLSProvider.from_config(cfg)
    cert = tmp_path / "data" / "tls" / "cert.pem"
    key = tmp_path / "data" / "tls" / "key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    names = san_names(cert.read_bytes())
    assert {"mail.example.test", "localhost", "127.0.0.1", "::1"} <= set(names)
    before = cert.read_bytes()
    TLSProvider.from_config(cfg)
    assert cert.read_bytes() == before


def test_configured_certificate_is_used(tmp_path: Path) -> None:
    generate_self_signed(tmp_path / "c.pem", tmp_path / "k.pem", "configured.example.test")
    provider = TLSProvider.from_config(make_config(tmp_path, certificate=str(tmp_path / "c.pem"), key=str(tmp_path / "k.pem")))
    assert not (tmp_path / "data" / "tls").exists()
    server = provider.server_creator().serverConnectionForTLS(None)
    client = provider.client_options("configured.example.test", verify=False).clientConnectionForTLS(None)
    handshake(server, client)
    assert peer_cn(client) == "configured.example.test"


@pytest.mark.parametrize(
    ("setup", "key", "reason"),
    [
        ("missing-cert", "tls.certificate", "cannot read"),
        ("missing-key", "tls.key", "cannot read"),
        ("garbage-cert", "tls.certificate", "no usable PEM certificate"),
        ("garbage-key", "tls.key", "no usable PEM private key"),
        ("mismatch", "tls.key", "does not match"),
    ],
)
def test_bad_certificate_or_key_is_a_config_error(tmp_path: Path, setup: str, key: str, reason: str) -> None:
    """Each broken set-up names the key and the problem (start-up turns it into exit 2)."""
    generate_self_signed(tmp_path / "c.pem", tmp_path / "k.pem", "a.example.test")
    generate_self_signed(tmp_path / "c2.pem", tmp_path / "k2.pem", "b.example.test")
    cert, keyfile = tmp_path / "c.pem", tmp_path / "k.pem"
    if setup == "missing-cert":
        cert = tmp_path / "nope.pem"
    elif setup == "missing-key":
        keyfile = tmp_path / "nope.key"
    elif setup == "garbage-cert":
        cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    elif setup == "garbage-key":
        keyfile.write_text("hello\n")
    elif setup == "mismatch":
        keyfile = tmp_path / "k2.pem"
    with pytest.raises(ConfigError) as info:
        TLSProvider.from_config(make_config(tmp_path, certificate=str(cert), key=str(keyfile)))
    assert info.value.key == key and reason in info.value.reason


def test_reload_swaps_certificate_for_new_connections_only(tmp_path: Path) -> None:
    """After reload() new handshakes see the new certificate; a bad file keeps the old one."""
    cfg = make_config(tmp_path)
    provider = TLSProvider.from_config(cfg)
    creator = provider.server_creator()
    old_server = creator.serverConnectionForTLS(None)
    generate_self_signed(tmp_path / "data" / "tls" / "cert.pem", tmp_path / "data" / "tls" / "key.pem", "renewed.example.test")
    assert provider.reload() is True
    new_server = creator.serverConnectionForTLS(None)
    c1 = provider.client_options("x", verify=False).clientConnectionForTLS(None)
    c2 = provider.client_options("x", verify=False).clientConnectionForTLS(None)
    handshake(old_server, c1)
    handshake(new_server, c2)
    assert peer_cn(c1) == "mail.example.test"
    assert peer_cn(c2) == "renewed.example.test"
    (tmp_path / "data" / "tls" / "key.pem").write_text("broken\n")
    assert provider.reload() is False
    c3 = provider.client_options("x", verify=False).clientConnectionForTLS(None)
    handshake(creator.serverConnectionForTLS(None), c3)
    assert peer_cn(c3) == "renewed.example.test"


def test_verified_client_refuses_an_untrusted_certificate(tmp_path: Path) -> None:
    """client_options(verify=True) checks the chain: a self-signed server is refused."""
    provider = TLSProvider.from_config(make_config(tmp_path))
    server = provider.server_creator().serverConnectionForTLS(None)
    fake_protocol = types.SimpleNamespace(factory=types.SimpleNamespace(wrappedFactory=None))
    client = provider.client_options("mail.example.test", verify=True).clientConnectionForTLS(fake_protocol)
    client.set_connect_state()  # TLSMemoryBIOProtocol does this for Twisted's creators
    with pytest.raises(SSL.Error, match="certificate verify failed"):
        handshake(server, client)


# -- the real server ------------------------------------------------------------

def tls_client(version: ssl.TLSVersion | None = None, cafile: Path | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    if cafile is None:
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cafile=str(cafile))
    if version is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.set_ciphers("ALL:@SECLEVEL=0")  # let the client offer old versions: the server must refuse
            context.minimum_version = version
            context.maximum_version = version
    return context


@pytest.fixture(scope="module")
def server(mailsuite_module_server: Any) -> Any:
    return mailsuite_module_server()


@pytest.mark.parametrize("listener", IMPLICIT)
def test_implicit_tls_ports_handshake_with_the_generated_certificate(server: Any, listener: str) -> None:
    """Python's ssl module, trusting data_root/tls/cert.pem and checking the name, completes a handshake."""
    context = ssl.create_default_context(cafile=str(server.certificate))
    with socket.create_connection(("127.0.0.1", server.ports[listener]), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            assert tls.recv(1)  # the protocol greets over TLS


@pytest.mark.parametrize("listener", IMPLICIT)
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_12_and_13_accepted(server: Any, listener: str, version: ssl.TLSVersion) -> None:
    with socket.create_connection(("127.0.0.1", server.ports[listener]), timeout=10) as raw:
        with tls_client(version, server.certificate).wrap_socket(raw) as tls:
            assert tls.version() == version.name.replace("v1_", "v1.")


@pytest.mark.parametrize("listener", IMPLICIT)
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_10_and_11_refused(server: Any, listener: str, version: ssl.TLSVersion) -> None:
    """A client offering only TLS 1.0 or 1.1 gets a protocol_version alert (RFC 8996)."""
    with socket.create_connection(("127.0.0.1", server.ports[listener]), timeout=10) as raw:
        with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION|protocol version|UNSUPPORTED_PROTOCOL|no protocols"):
            tls_client(version).wrap_socket(raw)


def test_weak_tls12_ciphers_refused(server: Any) -> None:
    """TLS 1.2 with only CBC or RSA key exchange suites is refused: ECDHE + AEAD only."""
    context = tls_client(ssl.TLSVersion.TLSv1_2)
    context.set_ciphers("AES128-SHA:AES256-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", server.ports["imaps"]), timeout=10) as raw:
        with pytest.raises(ssl.SSLError):
            context.wrap_socket(raw)


def _wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_sighup_reloads_certificate_and_keeps_open_connections(mailsuite_server: Any) -> None:
    """New handshakes get the renewed certificate; a connection opened before keeps working."""
    server = mailsuite_server()
    port = server.ports["imaps"]
    old_der = ssl.PEM_cert_to_DER_cert(server.certificate.read_text())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        before = tls_client().wrap_socket(raw)
        assert before.getpeercert(binary_form=True) == old_der
        greeting = before.recv(4096)
        assert greeting.startswith(b"* OK")
        generate_self_signed(server.certificate, server.data_root / "tls" / "key.pem", "renewed.example.test")
        new_der = ssl.PEM_cert_to_DER_cert(server.certificate.read_text())
        assert new_der != old_der
        server.process.send_signal(signal.SIGHUP)
        _wait_for(lambda: "TLS certificate reloaded" in server.log())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw2:
            with tls_client(cafile=server.certificate).wrap_socket(raw2) as after:
                assert after.getpeercert(binary_form=True) == new_der
        # STARTTLS uses the same provider: it sees the new certificate too.
        with imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=10) as imap:
            imap.starttls(tls_client(cafile=server.certificate))
            assert imap.sock.getpeercert(binary_form=True) == new_der
        before.sendall(b"a1 CAPABILITY\r\n")
        reply = b""
        while b"a1 " not in reply:
            chunk = before.recv(4096)
            assert chunk, "the old connection was dropped"
            reply += chunk
        assert b"a1 OK" in reply
        before.close()
    assert server.process.poll() is None
    assert server.stop() == 0
