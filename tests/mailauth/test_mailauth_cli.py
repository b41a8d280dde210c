"""`mailsuite dkim keygen`: the printed TXT record, published as printed, verifies the server's signatures."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import dkim
import pytest

from mailsuite import config as config_module
from mailsuite.mailauth.keys import KeyStore
from mailsuite.mailauth.service import key_dir
from mailsuite.mailauth.signing import Signer
from tests.mailauth.helpers import message
from tests.mailauth.test_mailauth_signing import dkimpy_dnsfunc

ROOT = Path(__file__).resolve().parent.parent.parent


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "mailsuite.cli", "--config", str(config), *args],
                          capture_output=True, text=True, env=env, cwd=str(config.parent))


def printed_record(stdout: str) -> tuple[str, list[str]]:
    """(owner name, character-strings) from the zone-file line the command printed."""
    (line,) = [ln for ln in stdout.splitlines() if "._domainkey." in ln and " IN TXT " in ln]
    owner = line.split()[0].rstrip(".")
    return owner, re.findall(r'"([^"]*)"', line)


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_keygen_record_verifies_a_signature(tmp_path, dns, algorithm):
    """keygen writes a 0600 key and prints a record; served from DNS, it verifies what the server signs."""
    config_path = tmp_path / "mailsuite.toml"
    config_path.write_text(f'hostname = "mail.a.test"\ndata_root = "{tmp_path / "data"}"\n')
    done = run_cli(config_path, "dkim", "keygen", "a.test", "--selector", "sel1", "--algorithm", algorithm)
    assert done.returncode == 0, done.stderr
    owner, strings = printed_record(done.stdout)
    assert owner == "sel1._domainkey.a.test"
    assert all(len(s) <= 255 for s in strings)
    value = "".join(strings)
    assert value.startswith(f"v=DKIM1; k={algorithm}; p=")
    config = config_module.load(config_path)
    key_file = key_dir(config) / "a.test" / "sel1.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    dns.set_records({owner: {"TXT": [strings]}})
    msg = message()
    header = Signer(KeyStore(key_dir(config))).sign(msg, "a.test")
    assert header
    assert dkim.verify(header + msg, dnsfunc=dkimpy_dnsfunc(dns))


def test_keygen_refuses_to_overwrite_and_rejects_bad_names(tmp_path, capsys):
    """A second keygen of the same selector fails (exit 1) without --force; a bad domain is a usage error (2)."""
    from mailsuite.cli import main

    config_path = tmp_path / "mailsuite.toml"
    config_path.write_text(f'data_root = "{tmp_path / "data"}"\n')
    base = ["--config", str(config_path), "dkim"]
    assert main([*base, "keygen", "a.test", "-s", "x", "-a", "ed25519"]) == 0
    capsys.readouterr()
    assert main([*base, "keygen", "a.test", "-s", "x", "-a", "ed25519"]) == 1
    assert "exists already" in capsys.readouterr().err
    assert main([*base, "keygen", "a.test", "-s", "x", "-a", "ed25519", "--force"]) == 0
    assert main([*base, "keygen", "../etc", "-s", "x"]) == 2
    capsys.readouterr()
    assert main([*base, "show"]) == 0
    assert capsys.readouterr().out.startswith("x._domainkey.a.test. IN TXT")
