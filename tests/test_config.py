"""The configuration loader: every kind of mistake stops start-up with one clear message."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mailsuite import config
from mailsuite.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def error_for(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config.parse(text, "/etc/mailsuite/mailsuite.toml")
    assert str(info.value).startswith("/etc/mailsuite/mailsuite.toml: ")
    return info.value


def test_defaults_and_example_config_load() -> None:
    """The embedded default (etc/mailsuite.toml) is valid and enables all seven listeners."""
    assert (ROOT / "etc" / "mailsuite.toml").resolve() == config.default_config_path()
    loaded = config.load(ROOT / "etc" / "mailsuite.toml")
    assert [n for n in config.LISTENER_NAMES if loaded.listener(n).enabled] == list(config.LISTENER_NAMES)
    assert all(loaded.listener(n).port >= 1024 for n in config.LISTENER_NAMES)
    assert loaded.data_root == "./var" and loaded.tls.certificate == ""
    assert config.parse("").smtp.port == 25


def test_values_are_read() -> None:
    loaded = config.parse('hostname = "mx.example.org"\ndomains = ["Example.ORG"]\n[limits]\nrecipients = 5\n[imap]\nenabled = false\n[queue]\nretry_schedule = [1, 2.5]\n')
    assert loaded.hostname == "mx.example.org"
    assert loaded.domains == ["example.org"]
    assert loaded.limits.recipients == 5
    assert loaded.imap.enabled is False
    assert loaded.queue.retry_schedule == [1.0, 2.5]


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ('hostnme = "x"', "hostnme", "unknown key"),
        ("[smtp]\nprot = 25", "smtp.prot", "unknown key"),
        ("[limit]\nrecipients = 5", "limit", "unknown key"),
        ("[queue.smarthost]\nhots = 'x'", "queue.smarthost.hots", "unknown key"),
    ],
)
def test_unknown_keys_and_typos(text: str, key: str, reason: str) -> None:
    """A misspelt key is named, with the keys that would be valid there."""
    error = error_for(text)
    assert error.key == key and reason in error.reason
    assert "known keys here:" in error.reason


def test_typo_lists_the_intended_key() -> None:
    error = error_for("[smtp]\nprot = 25")
    assert "port" in error.reason


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ('[smtp]\nport = "25"', "smtp.port", "an integer"),
        ('[smtp]\nenabled = "yes"', "smtp.enabled", "true or false"),
        ("hostname = 5", "hostname", "a string"),
        ('domains = "example.org"', "domains", "a list"),
        ("domains = [1]", "domains[0]", "a string"),
        ("smtp = 5", "smtp", "a table"),
        ("[limits]\nmessage_size = 1.5", "limits.message_size", "an integer"),
        ("[limits]\nsmtp_timeout = true", "limits.smtp_timeout", "a number"),
        ("[queue]\nretry_schedule = [60, 'x']", "queue.retry_schedule[1]", "a number"),
    ],
)
def test_wrong_types(text: str, key: str, expected: str) -> None:
    error = error_for(text)
    assert error.key == key
    assert expected in error.reason


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[smtp]\nport = 70000", "smtp.port"),
        ("[imaps]\nport = -1", "imaps.port"),
        ("[limits]\nrecipients = 0", "limits.recipients"),
        ("[limits]\nsmtp_line_length = 100", "limits.smtp_line_length"),
        ("[limits]\npop3_timeout = 0", "limits.pop3_timeout"),
        ("[limits]\nimap_login_timeout = 0", "limits.imap_login_timeout"),
        ("[auth]\nmax_delay = -1", "auth.max_delay"),
        ('[smtp]\naddress = "localhost"', "smtp.address"),
        ('[queue.smarthost]\ntls = "maybe"', "queue.smarthost.tls"),
        ('[log]\nlevel = "verbose"', "log.level"),
    ],
)
def test_out_of_range_values(text: str, key: str) -> None:
    error = error_for(text)
    assert error.key == key
    assert "got" in error.reason


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ('[tls]\ncertificate = "/etc/ssl/mail.pem"', "tls", "together"),
        ('[tls]\nkey = "/etc/ssl/mail.key"', "tls", "together"),
        ("[queue.smarthost]\nenabled = true", "queue.smarthost.host", "must be set"),
        ("[smtp]\nport = 2525\naddress = '127.0.0.1'\n[imap]\nport = 2525\naddress = '127.0.0.1'", "imap.port", "already used by [smtp]"),
        ('domains = ["alice@example.org"]', "domains", "bare domain"),
        ('hostname = "mail example"', "hostname", "without spaces"),
    ],
)
def test_cross_key_rules(text: str, key: str, reason: str) -> None:
    error = error_for(text)
    assert error.key == key and reason in error.reason


def test_invalid_toml_names_the_line() -> None:
    error = error_for("hostname = 'x'\n[smtp\nport = 1")
    assert error.key is None and "not valid TOML" in error.reason and "line 2" in error.reason


def test_unreadable_files(tmp_path: Path) -> None:
    """Missing file, a directory, and bytes that are not UTF-8."""
    with pytest.raises(ConfigError, match="cannot read the file: No such file"):
        config.load(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="cannot read the file"):
        config.load(tmp_path)
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'hostname = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        config.load(bad)


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        default = getattr(cls(), f.name)
        if dataclasses.is_dataclass(default):
            keys += _all_keys(type(default), f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def test_every_key_is_in_the_readme_reference() -> None:
    """README's configuration reference lists every key the loader knows, and the ports table every listener."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Za-z0-9_.]+)` \|", section, re.M))
    keys = set()
    for key in _all_keys(config.Config):
        head, _, leaf = key.partition(".")
        keys.add(f"LISTENER.{leaf}" if head in config.LISTENER_NAMES else key)
    assert sorted(keys - documented) == [], "keys missing from README's configuration reference"
    assert sorted(documented - keys) == [], "README documents keys that do not exist"
    ports = readme.split("## Ports", 1)[1].split("\n## ", 1)[0]
    for name in config.LISTENER_NAMES:
        default = config.Config().listener(name).port
        assert re.search(rf"^\| `{name}` \| {default} \|", ports, re.M), name


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "mailsuite.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60)


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    done = run_cli("check-config", str(ROOT / "etc" / "mailsuite.toml"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout and "7 listener(s)" in done.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[smtp]\nprot = 25\n", "smtp.prot: unknown key"),
        ('[smtp]\nport = "25"\n', "smtp.port: must be an integer"),
        ("[smtp]\nport = 99999\n", "smtp.port: must be a port number"),
        ('[tls]\ncertificate = "c.pem"\n', "tls: certificate and key must be given together"),
    ],
)
def test_check_config_rejects_a_bad_file(tmp_path: Path, text: str, expected: str) -> None:
    """Exit status 2 and one line naming file, key and reason; no traceback."""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    done = run_cli("check-config", str(path), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mailsuite: configuration error: {path}: {expected}"), done.stderr
    assert "Traceback" not in done.stderr


def test_check_config_missing_file_and_bad_certificate(tmp_path: Path) -> None:
    done = run_cli("check-config", str(tmp_path / "nope.toml"), cwd=tmp_path)
    assert done.returncode == 2 and "cannot read the file" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "c.pem").write_text("not a certificate\n")
    (tmp_path / "k.pem").write_text("not a key\n")
    path = tmp_path / "tls.toml"
    path.write_text(f'[tls]\ncertificate = "{tmp_path / "c.pem"}"\nkey = "{tmp_path / "k.pem"}"\n')
    done = run_cli("check-config", str(path), cwd=tmp_path)
    assert done.returncode == 2, done.stdout
    assert "tls.certificate" in done.stderr and "no usable PEM certificate" in done.stderr
    assert "Traceback" not in done.stderr


def run_twistd(config_path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "mailsuite", "--config", str(config_path)],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=60,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[imap]\nprot = 143\n", "imap.prot: unknown key"),
        ("[limits]\nrecipients = 0\n", "limits.recipients: must be greater than 0"),
    ],
)
def test_twistd_refuses_a_bad_config_without_traceback(tmp_path: Path, text: str, expected: str) -> None:
    """`twistd -n mailsuite` with a broken config: exit 2, one clear line, nothing started."""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    done = run_twistd(path, tmp_path)
    assert done.returncode == 2
    output = done.stdout + done.stderr
    assert f"mailsuite: configuration error: {path}: {expected}" in output
    assert "Traceback" not in output


def test_twistd_refuses_a_missing_config_file(tmp_path: Path) -> None:
    done = run_twistd(tmp_path / "missing.toml", tmp_path)
    assert done.returncode == 2
    assert "cannot read the file" in done.stderr and "Traceback" not in done.stdout + done.stderr
