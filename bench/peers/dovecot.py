"""A private Dovecot on a loopback port, serving the benchmark's own Maildirs.

The IMAP and POP3 benchmarks run the same load against it to print a ratio.
It uses its own config, run, state and index directories under the work
directory, a static passdb (every user's password is "bench"), no TLS, and
never touches the system's Dovecot.  As root, Dovecot refuses to run mail
processes as root, so the Maildirs are handed to its "dovecot" account for
the run.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class DovecotUnavailable(Exception):
    """Dovecot cannot serve here; the message says why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accounts(base: Path, mail: Path) -> tuple[str, str, str, int, int]:
    """(login user, internal user, internal group, uid, gid) for the mail processes."""
    uid, gid = os.getuid(), os.getgid()
    if uid != 0:
        user, group = pwd.getpwuid(uid).pw_name, grp.getgrgid(gid).gr_name
        return user, user, group, uid, gid
    try:
        login = pwd.getpwnam("dovenull").pw_name
        account = pwd.getpwnam("dovecot")
    except KeyError:
        raise DovecotUnavailable("running as root needs the dovenull and dovecot accounts") from None
    uid, gid = account.pw_uid, account.pw_gid
    for root, dirs, files in os.walk(mail):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid)
    os.chown(mail, uid, gid)
    for parent in (base, *mail.relative_to(base).parents):
        os.chmod(base / parent, 0o755)  # let the dovecot user through the temporary root
    return login, account.pw_name, grp.getgrgid(gid).gr_name, uid, gid


@contextmanager
def dovecot_peer(binary: str, base: Path, mail: Path, protocol: str, extra: str = "") -> Iterator[int]:
    """Run Dovecot for ``protocol`` ("imap" or "pop3") over ``mail``; yields its port, stops it after."""
    conf_dir = base / "dovecot"
    conf_dir.mkdir()
    port = _free_port()
    login_user, internal_user, internal_group, uid, gid = _accounts(base, mail)
    other = "pop3" if protocol == "imap" else "imap"
    (conf_dir / "dovecot.conf").write_text(
        f"""
base_dir = {conf_dir}/run
state_dir = {conf_dir}/state
log_path = {conf_dir}/dovecot.log
protocols = {protocol}
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal_user}
default_login_user = {login_user}
default_internal_group = {internal_group}
first_valid_uid = {uid}
mail_location = maildir:{mail}/%n:INDEX={conf_dir}/index/%n
{extra}
service {protocol}-login {{
  inet_listener {protocol} {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener {protocol}s {{
    port = 0
  }}
}}
service {other}-login {{
  inet_listener {other} {{
    port = 0
  }}
}}
passdb {{
  driver = static
  args = password=bench
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={conf_dir}/home/%n
}}
"""
    )
    for sub in ("run", "state", "index", "home"):
        (conf_dir / sub).mkdir()
    for sub in ("index", "home"):
        os.chown(conf_dir / sub, uid, gid)
    config = str(conf_dir / "dovecot.conf")
    # The daemon keeps inherited descriptors open: give it a file, not a pipe we would wait on.
    with open(conf_dir / "start.log", "wb") as out:
        started = subprocess.run([binary, "-c", config], stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    if started.returncode != 0:
        raise DovecotUnavailable(f"did not start: {(conf_dir / 'start.log').read_text().strip()}")
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        subprocess.run([binary, "-c", config, "stop"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
