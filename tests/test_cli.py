"""The `mailsuite` admin command, run as a real subprocess against a temp config."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mailsuite import cli

ROOT = Path(__file__).resolve().parent.parent
DOVECOT_SHA512 = "{SHA512-CRYPT}$6$5tFz0EvPjwiddK5Z$hJNVi.O8njfubCZP/qbsxxk2/5IM.QrI92I9AIXKuvVoOzIya.1TNldyv/n6Q5lW15pHqboYQ65YO7IcF7njN."


class CLI:
    """Runs `mailsuite --config <temp config> ...` as a subprocess, or in this process (same parser and code)."""

    def __init__(self, tmp_path: Path, in_process: bool = False) -> None:
        self.in_process = in_process
        self.tmp_path = tmp_path
        self.data = tmp_path / "data"
        self.config = tmp_path / "mailsuite.toml"
        self.config.write_text(f'hostname = "mail.example.test"\ndomains = ["example.test"]\ndata_root = "{self.data}"\n')

    def __call__(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        if self.in_process:
            return self._in_process(list(args), input)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        return subprocess.run([sys.executable, "-m", "mailsuite.cli", "--config", str(self.config), *args],
                              input=input, capture_output=True, text=True, cwd=self.tmp_path, env=env, timeout=60)

    def _in_process(self, args: list[str], input: str | None) -> subprocess.CompletedProcess[str]:
        out, err = io.StringIO(), io.StringIO()
        saved = sys.stdin, sys.stdout, sys.stderr
        sys.stdin, sys.stdout, sys.stderr = io.StringIO(input or ""), out, err
        try:
            try:
                status = cli.main(["--config", str(self.config), *args])
            except SystemExit as e:
                status = int(e.code or 0)
        finally:
            sys.stdin, sys.stdout, sys.stderr = saved
        return subprocess.CompletedProcess(args, status, out.getvalue(), err.getvalue())

    def ok(self, *args: str, input: str | None = None) -> str:
        done = self(*args, input=input)
        assert done.returncode == 0, (done.stdout, done.stderr)
        return done.stdout

    def fails(self, status: int, *args: str, input: str | None = None) -> str:
        done = self(*args, input=input)
        assert done.returncode == status, (done.returncode, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        return done.stderr


@pytest.fixture
def run(tmp_path: Path) -> CLI:
    """The real command in a subprocess."""
    return CLI(tmp_path)


@pytest.fixture
def run_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CLI:
    """The same command in-process with cheap argon2 parameters, for the long error matrices."""
    import argon2

    from mailsuite.auth import hashing

    monkeypatch.setattr(hashing, "_hasher", argon2.PasswordHasher(time_cost=1, memory_cost=64, parallelism=1))
    return CLI(tmp_path, in_process=True)


def verify(run: CLI, address: str, password: str) -> bool:
    from mailsuite.auth.directory import SQLiteDirectory

    directory = SQLiteDirectory(run.data / "users.sqlite3", extra_domains=["example.test"])
    try:
        return directory.authenticate_sync(address, password) is not None
    finally:
        directory.close()


def test_user_lifecycle(run: CLI) -> None:
    """add (password on stdin), list, passwd, quota, remove, with the password checked each time."""
    assert "user alice@example.test added" in run.ok("user", "add", "alice@example.test", "--password-stdin", input="first pw\n")
    assert verify(run, "alice@example.test", "first pw")
    run.ok("user", "add", "bob@example.test", "--password-stdin", "--quota", "2M", "--quota-messages", "10", input="pw\n")
    assert run.ok("user", "list").split() == ["alice@example.test", "bob@example.test"]
    assert "quota=2097152\tmessages=10" in run.ok("user", "list", "-v")
    run.ok("user", "passwd", "alice@example.test", "--password-stdin", input="second pw\n")
    assert verify(run, "alice@example.test", "second pw") and not verify(run, "alice@example.test", "first pw")
    run.ok("user", "quota", "alice@example.test", "--quota", "0")
    assert "alice@example.test\tquota=unlimited\tmessages=default" in run.ok("user", "list", "-v")
    run.ok("user", "remove", "alice@example.test")
    assert run.ok("user", "list").split() == ["bob@example.test"]
    raw = sqlite3.connect(run.data / "users.sqlite3").execute("SELECT password FROM users").fetchone()[0]
    assert raw.startswith("$argon2id$")


def test_user_errors_subprocess(run: CLI) -> None:
    """Through the real entry point: a duplicate and an unknown user exit 1 with one message."""
    run.ok("user", "add", "alice@example.test", "--password-stdin", input="pw\n")
    assert "exists already" in run.fails(1, "user", "add", "ALICE@example.test", "--password-stdin", input="pw\n")
    assert "no such user" in run.fails(1, "user", "remove", "nobody@example.test")


def test_user_errors(run_here: CLI) -> None:
    """Duplicates, unknown users, bad addresses, foreign domains, empty passwords: exit 1, one message."""
    run_here.ok("user", "add", "alice@example.test", "--password-stdin", input="pw\n")
    assert "exists already" in run_here.fails(1, "user", "add", "ALICE@example.test", "--password-stdin", input="pw\n")
    assert "no such user" in run_here.fails(1, "user", "remove", "nobody@example.test")
    assert "no such user" in run_here.fails(1, "user", "passwd", "nobody@example.test", "--password-stdin", input="pw\n")
    assert "not allowed" in run_here.fails(1, "user", "add", "bad address@example.test", "--password-stdin", input="pw\n")
    assert "no @domain" in run_here.fails(1, "user", "add", "alice", "--password-stdin", input="pw\n")
    assert "not a local domain" in run_here.fails(1, "user", "add", "bob@elsewhere.test", "--password-stdin", input="pw\n")
    assert "empty" in run_here.fails(1, "user", "add", "carol@example.test", "--password-stdin", input="\n")
    assert "not a size" in run_here.fails(2, "user", "add", "carol@example.test", "--password-stdin", "--quota", "lots", input="pw\n")


def test_password_is_never_taken_from_argv(run: CLI) -> None:
    """Without a terminal and without --password-stdin the command refuses; argv has no password option."""
    assert "--password-stdin" in run.fails(2, "user", "add", "alice@example.test", input="")
    assert "unrecognized arguments" in run.fails(2, "user", "add", "alice@example.test", "secret")
    assert "--password " not in run.ok("user", "add", "--help")


def test_hash_import_from_dovecot(run: CLI) -> None:
    """A Dovecot {SHA512-CRYPT} hash is imported with --hash-stdin and the old password works."""
    run.ok("user", "add", "old@example.test", "--hash-stdin", input=DOVECOT_SHA512 + "\n")
    assert verify(run, "old@example.test", "correct horse")
    assert "unsupported" in run.fails(1, "user", "add", "x@example.test", "--hash-stdin", input="{PLAIN}secret\n")


def test_domains_and_aliases(run_here: CLI) -> None:
    """In-process: domain add/list/remove and alias add/list/remove, including a catch-all."""
    run_here.ok("domain", "add", "Other.TEST")
    assert run_here.ok("domain", "list").split() == ["example.test", "other.test"]
    assert "exists already" in run_here.fails(1, "domain", "add", "other.test")
    assert "not a valid domain" in run_here.fails(1, "domain", "add", "bad_domain")
    run_here.ok("user", "add", "u@other.test", "--password-stdin", input="pw\n")
    run_here.ok("alias", "add", "team@other.test", "u@other.test", "friend@remote.test")
    run_here.ok("alias", "add", "@other.test", "u@other.test")
    assert run_here.ok("alias", "list").splitlines() == ["@other.test\tu@other.test", "team@other.test\tfriend@remote.test, u@other.test"]
    assert "not a local domain" in run_here.fails(1, "alias", "add", "x@remote.test", "u@other.test")
    assert "no such alias" in run_here.fails(1, "alias", "remove", "nobody@other.test")
    run_here.ok("alias", "remove", "team@other.test", "friend@remote.test")
    assert "team@other.test\tu@other.test" in run_here.ok("alias", "list", "--domain", "other.test")
    assert "1 user(s)" in run_here.fails(1, "domain", "remove", "other.test")
    run_here.ok("domain", "remove", "other.test", "--force")
    assert run_here.ok("domain", "list").split() == ["example.test"]
    assert run_here.ok("alias", "list") == ""


def test_user_senders(run_here: CLI) -> None:
    """In-process: `user senders add|list|remove`, what a user may send as, and the errors (exit 1, 2 for usage).

    The real entry point runs them in tests/e2e/test_hostile_from.py."""
    run_here.ok("user", "add", "alice@example.test", "--password-stdin", input="pw\n")
    run_here.ok("alias", "add", "alice.smith@example.test", "alice@example.test")
    added = run_here.ok("user", "senders", "add", "alice@example.test", "office@example.test", "@partner.test")
    assert "alice@example.test may now also send as office@example.test, @partner.test" in added
    assert run_here.ok("user", "senders", "list", "alice@example.test").splitlines() == [
        "alice@example.test\town", "alice.smith@example.test\talias", "@partner.test\textra", "office@example.test\textra"]
    assert run_here.ok("user", "senders", "list").splitlines() == ["alice@example.test\t@partner.test, office@example.test"]
    assert "may already send as" in run_here.fails(1, "user", "senders", "add", "alice@example.test", "Office@example.test")
    assert "no such user" in run_here.fails(1, "user", "senders", "add", "bob@example.test", "office@example.test")
    assert "no such user" in run_here.fails(1, "user", "senders", "list", "bob@example.test")
    assert "no @domain" in run_here.fails(1, "user", "senders", "add", "alice@example.test", "office")
    assert "has no extra sender address nope@example.test" in run_here.fails(1, "user", "senders", "remove", "alice@example.test", "nope@example.test")
    assert "may no longer send as office@example.test" in run_here.ok("user", "senders", "remove", "alice@example.test", "office@example.test")
    assert "1 extra sender address(es) removed" in run_here.ok("user", "senders", "remove", "alice@example.test")
    assert run_here.ok("user", "senders", "list") == ""
    assert "SENDER" in run_here.fails(2, "user", "senders", "add", "alice@example.test")


@pytest.mark.parametrize("command", [[], ["user"], ["user", "add"], ["user", "passwd"], ["user", "remove"], ["user", "list"], ["user", "quota"],
                                     ["user", "senders"], ["user", "senders", "add"], ["user", "senders", "remove"], ["user", "senders", "list"],
                                     ["alias"], ["alias", "add"], ["alias", "remove"], ["alias", "list"],
                                     ["domain"], ["domain", "add"], ["domain", "remove"], ["domain", "list"],
                                     ["check-config"], ["gen-cert"]])
def test_help_everywhere(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Every command answers --help with a usage line and exit status 0 (in-process: same parser)."""
    with pytest.raises(SystemExit) as info:
        cli.main([*command, "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: mailsuite")


def test_help_through_the_console_entry_point(run: CLI) -> None:
    done = run("--help")
    assert done.returncode == 0 and "user" in done.stdout and "check-config" in done.stdout


def test_missing_command_and_bad_config(run: CLI, tmp_path: Path) -> None:
    """No command: usage error 2.  A broken config: exit 2 naming the key."""
    assert "required" in run.fails(2)
    run.config.write_text("[smtp]\nprot = 1\n")
    assert "smtp.prot: unknown key" in run.fails(2, "user", "list")


def test_gen_cert(run: CLI) -> None:
    """gen-cert writes a certificate for the hostname where the server looks; refuses to overwrite."""
    out = run.ok("gen-cert")
    cert = run.data / "tls" / "cert.pem"
    key = run.data / "tls" / "key.pem"
    assert str(cert) in out
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    from cryptography import x509

    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert "mail.example.test" in names and "localhost" in names
    assert "--force" in run.fails(1, "gen-cert")
    run.ok("gen-cert", "--force", "--hostname", "other.example.test")
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    assert "other.example.test" in parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def test_command_modules_are_pluggable(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A module in COMMAND_MODULES adds commands via register(subparsers); missing ones are skipped."""
    import types

    module = types.ModuleType("mailsuite_test_commands")

    def register(subparsers: object) -> None:
        parser = subparsers.add_parser("hello")  # type: ignore[attr-defined]
        parser.set_defaults(func=lambda args: print("hello from a plug-in") or 3)

    module.register = register  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mailsuite_test_commands", module)
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("mailsuite_test_commands", "mailsuite.no_such_package.cli"))
    assert cli.main(["hello"]) == 3
    assert "hello from a plug-in" in capsys.readouterr().out
