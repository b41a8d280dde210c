"""Real POP3 clients against the real server: curl (pop3://, pop3s://, SASL PLAIN) and fetchmail.

Both are Debian packages that .ci/run installs; they are required, not optional.

curl and fetchmail verify the server certificate against the server's own
self-signed certificate, connecting by a name the certificate holds (curl
--resolve, fetchmail "via").
"""

from __future__ import annotations

import os
import poplib
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .support import AccountPool, deliver

PASSWORD = "client test password"
MSG = b"From: a@example.test\r\nSubject: curl\r\n\r\nfirst\r\n.dotted\r\n..double\r\n"
MSG2 = b"From: b@example.test\r\nSubject: second\r\n\r\nsecond body\r\n"

@pytest.fixture(scope="module")
def server(mailsuite_module_server: Any) -> Any:
    return mailsuite_module_server({"auth.free_failures": 1000, "auth.max_failures": 1000})


@pytest.fixture(scope="module")
def accounts(server: Any) -> AccountPool:
    return AccountPool(server, 6, PASSWORD)


@pytest.fixture
def account(accounts: AccountPool) -> str:
    """A user of its own for each test, so tests never see each other's mail."""
    return accounts.take()


def cert_names(server: Any) -> list[str]:
    """The DNS names the server certificate is valid for."""
    decoded = ssl._ssl._test_decode_cert(str(server.certificate))  # type: ignore[attr-defined]
    names = [value for kind, value in decoded.get("subjectAltName", ()) if kind == "DNS"]
    return names or [value for rdn in decoded["subject"] for key, value in rdn if key == "commonName"]


def cert_name(server: Any) -> str:
    return cert_names(server)[0]


def curl(server: Any, url_path: str, *extra: str, user: str, password: str = PASSWORD, scheme: str = "pop3", listener: str = "pop3") -> subprocess.CompletedProcess[bytes]:
    name, port = cert_name(server), server.ports[listener]
    tls = ["--ssl-reqd"] if scheme == "pop3" else []
    command = ["curl", "-sS", "--max-time", "20", *tls, "--cacert", str(server.certificate), "--resolve", f"{name}:{port}:127.0.0.1", "-u", f"{user}:{password}", *extra, f"{scheme}://{name}:{port}/{url_path}"]
    return subprocess.run(command, capture_output=True, timeout=30)


def remaining(server: Any, address: str) -> int:
    client = poplib.POP3_SSL("127.0.0.1", server.ports["pop3s"], context=server.client_tls(), timeout=10)
    client.user(address)
    client.pass_(PASSWORD)
    count = client.stat()[0]
    client.quit()
    return count


def test_curl_list_and_retr_with_stls(server: Any, account: str) -> None:
    deliver(server, account, MSG, MSG2)
    listing = curl(server, "", user=account)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout == b"1 %d\r\n2 %d\r\n" % (len(MSG), len(MSG2))
    message = curl(server, "1", user=account)
    assert message.returncode == 0, message.stderr
    assert message.stdout == MSG  # curl undoes the dot-stuffing


def test_curl_pop3s_with_sasl_plain(server: Any, account: str) -> None:
    deliver(server, account, MSG2)
    result = curl(server, "1", "-v", "--login-options", "AUTH=PLAIN", user=account, scheme="pop3s", listener="pop3s")
    assert result.returncode == 0, result.stderr
    assert result.stdout == MSG2
    assert b"> AUTH PLAIN" in result.stderr


def test_curl_wrong_password_is_login_denied(server: Any, account: str) -> None:
    result = curl(server, "", user=account, password="wrong")
    assert result.returncode == 67, result.stderr  # CURLE_LOGIN_DENIED
    assert b"[AUTH]" in curl(server, "", "-v", user=account, password="wrong").stderr


def test_curl_dele(server: Any, account: str) -> None:
    deliver(server, account, MSG, MSG2)
    result = curl(server, "1", "-X", "DELE", "-I", user=account)
    assert result.returncode == 0, result.stderr
    assert remaining(server, account) == 1


def fetchmail(server: Any, tmp_path: Path, address: str, *, implicit: bool, keep: bool) -> tuple[subprocess.CompletedProcess[str], list[bytes]]:
    out = tmp_path / "delivered"
    out.mkdir(exist_ok=True)
    listener = "pop3s" if implicit else "pop3"
    # fetchmail checks the certificate against the name it connects to (not the "via" address).
    host = "localhost" if "localhost" in cert_names(server) else f"{cert_name(server)} via 127.0.0.1"
    extra = "" if host == "localhost" else f" sslcommonname {cert_name(server)}"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"poll {host} service {server.ports[listener]} protocol POP3 uidl timeout 20\n"
        f'  user "{address}" there with password "{PASSWORD}" is "tester" here\n'
        f'  {"ssl" if implicit else ""} sslproto "TLS1.2+" sslcertck sslcertfile "{server.certificate}"{extra}\n'
        f'  mda "/bin/sh -c \'cat > $(mktemp -p {out})\'"\n'
        f'  {"keep" if keep else "nokeep"} {"" if keep else "fetchall"}\n'
    )
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(tmp_path), FETCHMAILHOME=str(tmp_path))
    before = set(out.iterdir())
    result = subprocess.run(["fetchmail", "-f", str(rc), "--nosyslog", "--idfile", str(tmp_path / "fetchids"), "-v"], capture_output=True, text=True, env=env, timeout=60)
    new = sorted(set(out.iterdir()) - before)
    return result, [path.read_bytes() for path in new]


def test_fetchmail_stls_downloads_and_deletes(server: Any, account: str, tmp_path: Path) -> None:
    deliver(server, account, MSG, MSG2)
    result, messages = fetchmail(server, tmp_path, account, implicit=False, keep=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "STLS" in result.stdout + result.stderr
    bodies = sorted(m.replace(b"\r\n", b"\n").split(b"\n\n", 1)[1] for m in messages)
    assert bodies == sorted([b"first\n.dotted\n..double\n", b"second body\n"])
    assert remaining(server, account) == 0


def test_fetchmail_implicit_tls_uidl_keeps_track(server: Any, account: str, tmp_path: Path) -> None:
    """fetchmail in keep mode remembers UIDLs: a second run fetches only what is new."""
    deliver(server, account, MSG, MSG2)
    result, messages = fetchmail(server, tmp_path, account, implicit=True, keep=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(messages) == 2
    deliver(server, account, MSG)
    result, messages = fetchmail(server, tmp_path, account, implicit=True, keep=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(messages) == 1
    result, messages = fetchmail(server, tmp_path, account, implicit=True, keep=True)
    assert result.returncode == 1 and messages == []  # 1: no new mail
    assert remaining(server, account) == 3
