"""A real mutt (Debian's package), driven under tmux, against our IMAP server.

What a user does: open INBOX over imaps:// (and imap:// with STARTTLS), read a
message, flag one, delete one and sync, copy one to a folder mutt creates,
change folder and back, browse the folder list, see new mail delivered by
SMTP appear while the mailbox is open, and send a message (our submission
port, STARTTLS and AUTH) whose copy mutt APPENDs to Sent.  The server's state is checked with imaplib; mutt's own IMAP
debug log (``-d 2``) records every command it sent and every tagged answer,
and the test requires a tagged OK for each one except the few NO answers
that are part of the normal flow (a missing folder before mutt creates it).
mutt missing is a failure, not a skip: CI installs it (.ci/run).
"""

from __future__ import annotations

import concurrent.futures
import imaplib
import re
import shutil
import smtplib
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.support.tmux import TmuxScreen

USER = "mutt@example.test"
USER2 = "mutt-idle@example.test"  # the second test's own account, so the tests may run in any order
PASSWORD = "mutt pass 1"

#: mutt's debug log: one entry per line that starts with a timestamp.
_ENTRY = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] ", re.M)
#: Words on mutt's message line that mean something went wrong.
_ERROR_LINE = re.compile(r"error|fail|unable|could not|couldn't|doesn't exist|not exist|\bNO\b|\bBAD\b|SERVERBUG|denied|abort", re.I)


@pytest.fixture(scope="module")
def server(mailsuite_module_server: Any) -> Any:
    if shutil.which("mutt") is None or shutil.which("tmux") is None:
        pytest.fail("mutt and tmux must be installed (Debian packages mutt, tmux; .ci/run installs them)")
    server = mailsuite_module_server({"log.level": "debug"})  # the debug log names each command: mutt's are checked against it
    # the admin CLI, one process per user, side by side (each takes a couple of seconds to start)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda user: server.add_user(user, PASSWORD), (USER, USER2)))
    return server


def deliver(server: Any, to: str, subject: str, body: str) -> None:
    """Send one message through our SMTP listener, as the internet would."""
    data = (
        f"From: Sender <sender@example.org>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@example.org>\r\n\r\n{body}\r\n"
    )
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as smtp:
        smtp.sendmail("sender@example.org", [to], data)


def imap(server: Any, user: str) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=server.client_tls(), timeout=10)
    client.login(user, PASSWORD)
    return client


def server_view(server: Any, user: str, folder: str) -> dict[str, set[str]] | None:
    """Subject -> flags of every message in ``folder`` (read-only look), or None if it doesn't exist."""
    client = imap(server, user)
    try:
        typ, _ = client.select(f'"{folder}"', readonly=True)
        if typ != "OK":
            return None
        typ, data = client.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        view: dict[str, set[str]] = {}
        if data == [None]:
            return view
        for item in data:
            if not isinstance(item, tuple):
                continue
            flags = re.search(rb"FLAGS \(([^)]*)\)", item[0])
            assert flags, item
            subject = item[1].decode().split(":", 1)[1].strip()
            view[subject] = set(flags.group(1).decode().split())
        return view
    finally:
        client.logout()


def index_flags(screen: str, subject: str) -> str:
    """The status-flag column (%Z) of the index row showing ``subject`` ("" if no such row)."""
    m = re.search(rf"^\s*\d+ (.{{3}}) .*{re.escape(subject)}\s*$", screen, re.M)
    return m.group(1) if m else ""


def eventually(probe: Callable[[], Any], check: Callable[[Any], bool], timeout: float = 5.0) -> Any:
    """Poll the server until ``check(probe())`` holds; the last value is in the failure message."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"server state never matched: {value!r}")
        time.sleep(0.1)


def muttrc(home: Path, user: str, url: str, *, starttls: bool, idle: bool, certificate: Path, submission: int) -> Path:
    """A user's muttrc: trust exactly the test server's certificate, no caches, quick mail checks."""
    trusted = home / "trusted.pem"
    trusted.write_bytes(certificate.read_bytes())
    rc = home / "muttrc"
    rc.write_text(f"""
set folder="{url}"
set spoolfile="+INBOX"
set imap_pass="{PASSWORD}"
set certificate_file="{trusted}"
set ssl_force_tls=yes
set ssl_starttls={'yes' if starttls else 'no'}
set ssl_verify_host=no
set ssl_verify_dates=yes
set header_cache=""
set message_cachedir=""
set imap_idle={'yes' if idle else 'no'}
set imap_check_subscribed=no
set mail_check=1
set timeout=1
set sort=mailbox-order
set confirmcreate=no
set confirmappend=no
set delete=yes
set move=no
set record="+Sent"
set postponed="+Drafts"
set from="{user}"
set realname="Mutt User"
set smtp_url="smtp://{user.replace('@', '%40')}@127.0.0.1:{submission}/"
set smtp_pass="{PASSWORD}"
set editor="true"
set abort_unmodified=no
set beep=no
set wait_key=no
set sleep_time=0
""")
    return rc


class Mutt:
    """A mutt process in tmux plus what a test reads from it."""

    def __init__(self, home: Path, rc: Path) -> None:
        self.home = home
        env = {"HOME": str(home), "TERM": "xterm", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        self.term = TmuxScreen(["mutt", "-n", "-F", str(rc), "-d", "2"], env=env, cwd=str(home))

    def wait(self, condition: Any, what: str | None = None, timeout: float = 8.0) -> str:
        screen = self.term.wait_for(condition, timeout=timeout, what=what)
        self.assert_no_error(screen)
        return screen

    def assert_no_error(self, screen: str) -> None:
        """The last row is mutt's message line: errors show up there."""
        rows = screen.rstrip("\n").splitlines()
        last = rows[-1] if rows else ""
        assert not _ERROR_LINE.search(last), f"mutt shows an error: {last!r}\n{screen}"

    def index_wait(self, mailbox: str, count: int) -> str:
        """Wait for the index of ``mailbox`` with ``count`` messages (and nothing pending to delete)."""
        pattern = re.compile(rf"Mutt: ={re.escape(mailbox)} \[Msgs:{count}(?![0-9])(?:(?!Del:)[^\]])*\]")
        return self.wait(pattern, f"index of {mailbox} with {count} messages")

    def jump(self, number: int) -> None:
        """Move the index cursor to message ``number`` (mutt's jump prompt)."""
        self.term.type(str(number))
        self.term.wait_for("Jump to message:", what="jump prompt")
        self.term.send("Enter")

    def prompt(self, key: str, question: str, answer: str) -> None:
        if key:
            self.term.send(key)
        self.term.wait_for(question, what=question)
        self.term.send("C-u")  # clear mutt's suggestion
        self.term.type(answer)
        self.term.send("Enter")

    def quit(self) -> None:
        self.term.send("q")
        self.term.wait_for(lambda s: self.term.exit_status() is not None, what="mutt to exit")
        assert self.term.exit_status() == 0, self.term.screen()

    def close(self) -> None:
        self.term.close()

    def exchanges(self) -> list[tuple[str, str, str | None, str]]:
        """(tag, command, status, text) of every IMAP command mutt sent, from its debug log."""
        log = (self.home / ".muttdebug0").read_text(errors="replace")
        commands: dict[str, str] = {}
        answers: dict[str, tuple[str, str]] = {}
        starts = [m.start() for m in _ENTRY.finditer(log)] + [len(log)]
        for begin, end in zip(starts, starts[1:]):
            entry = log[begin:end]
            body = _ENTRY.sub("", entry, count=1)
            sent = re.match(r"\d+> ", body)
            if sent:
                for line in body[sent.end():].splitlines():
                    m = re.match(r"(a\d{4}) (.+)", line)
                    if m:
                        commands[m.group(1)] = m.group(2).strip()
                continue
            got = re.match(r"\d+< (a\d{4}) (OK|NO|BAD)\b ?(.*)", body)
            if got:
                answers[got.group(1)] = (got.group(2), got.group(3).strip())
        return [(tag, cmd, *(answers.get(tag) or (None, ""))) for tag, cmd in sorted(commands.items())]


def expected_no(created: tuple[str, ...]) -> list[tuple[re.Pattern[str], str]]:
    """NO answers that belong to a normal session: looking at, and copying into, a folder before mutt creates it."""
    out = []
    for name in created:
        quoted = re.escape(f'"{name}"')
        out.append((re.compile(rf"STATUS {quoted} "), "[NONEXISTENT]"))
        out.append((re.compile(rf"(UID )?COPY \S+ {quoted}$"), "[TRYCREATE]"))
    return out


def check_exchanges(mutt: Mutt, server: Any, created: tuple[str, ...] = ()) -> list[str]:
    """Every command mutt sent got a tagged answer, OK unless an expected NO; none was BAD."""
    allowed = expected_no(created)
    exchanges = mutt.exchanges()
    assert exchanges, "mutt's debug log recorded no IMAP commands"
    problems = []
    for tag, command, status, text in exchanges:
        if status is None:
            if not command.startswith("LOGOUT"):
                problems.append(f"{tag} {command}: no tagged answer")
        elif status == "OK":
            continue
        elif status == "NO" and any(p.match(command) and text.startswith(code) for p, code in allowed):
            continue
        else:
            problems.append(f"{tag} {command} -> {status} {text}")
    assert not problems, "\n".join(problems)
    log = server.log()
    assert "Traceback" not in log and "SERVERBUG" not in log, log[-4000:]
    # our server's debug log names each command it ran, by tag: it saw everything mutt sent
    for tag, command, _status, _ in exchanges:
        name = command.split()[0].upper()
        if command.upper().startswith("UID "):
            name = "UID " + command.split()[1].upper()
        assert re.search(rf": {tag} {re.escape(name)}\b", log), f"server log lacks {tag} {name}"
    return [command for _, command, _, _ in exchanges]


@pytest.fixture
def mutt_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


def test_mutt_imaps_reads_flags_deletes_copies_and_sees_new_mail(server: Any, mutt_home: Path) -> None:
    """A whole mutt session over implicit TLS leaves the server in the state the user asked for, with no error."""
    for n in (1, 2, 3):
        deliver(server, USER, f"mutt {n}", f"body of message {n}")
    url = f"imaps://{USER.replace('@', '%40')}@127.0.0.1:{server.ports['imaps']}/"
    mutt = Mutt(mutt_home, muttrc(mutt_home, USER, url, starttls=False, idle=False, certificate=server.certificate, submission=server.ports["submission"]))
    try:
        screen = mutt.index_wait("INBOX", 3)
        assert all(f"mutt {n}" in screen for n in (1, 2, 3)), screen

        # read message 1 in the pager, back to the index
        mutt.jump(1)
        mutt.term.send("Enter")
        mutt.wait("body of message 1", "the pager")
        mutt.term.send("i")
        mutt.index_wait("INBOX", 3)

        # flag message 2, delete message 3
        mutt.jump(2)
        mutt.term.send("F")
        mutt.wait("Flag:1", "the flag in the status line")
        mutt.jump(3)
        mutt.term.send("d")
        mutt.wait("Del:1", "the deletion in the status line")

        # copy message 1 to a folder that doesn't exist yet (mutt creates it)
        mutt.jump(1)
        mutt.prompt("C", "Copy to mailbox", "=Saved/2026")
        saved = eventually(lambda: server_view(server, USER, "Saved/2026"), lambda v: v is not None and "mutt 1" in v)
        assert list(saved) == ["mutt 1"]

        # sync: flags go to the server and the deleted message is expunged
        mutt.term.send("$")
        mutt.index_wait("INBOX", 2)
        inbox = eventually(lambda: server_view(server, USER, "INBOX"), lambda v: v is not None and "mutt 3" not in v)
        assert set(inbox) == {"mutt 1", "mutt 2"}
        assert "\\Seen" in inbox["mutt 1"], inbox
        assert "\\Flagged" in inbox["mutt 2"] and "\\Seen" not in inbox["mutt 2"], inbox
        assert not any("\\Deleted" in flags for flags in inbox.values()), inbox

        # change folder and back
        mutt.prompt("c", "Open mailbox", "=Saved/2026")
        screen = mutt.index_wait("Saved/2026", 1)
        assert "mutt 1" in screen
        mutt.prompt("c", "Open mailbox", "=INBOX")
        mutt.index_wait("INBOX", 2)

        # the folder browser lists the folders (LIST), including the one mutt created
        mutt.term.send("c")
        mutt.term.wait_for("Open mailbox", what="the mailbox prompt")
        mutt.term.send("?")
        screen = mutt.wait(lambda s: "Trash" in s and "Saved" in s and "Sent" in s, "the folder browser")
        mutt.term.send("q")
        mutt.index_wait("INBOX", 2)

        # new mail arrives by SMTP while INBOX is open
        deliver(server, USER, "mutt 4", "body of message 4")
        screen = mutt.index_wait("INBOX", 3)
        assert "mutt 4" in screen

        # write a message to ourselves: mutt submits it over SMTP (STARTTLS, AUTH) and APPENDs a copy to Sent
        mutt.prompt("m", "To:", USER)
        mutt.prompt("", "Subject:", "mutt 5")
        mutt.wait("y:Send", "the compose menu")
        mutt.term.send("y")
        screen = mutt.index_wait("INBOX", 4)
        assert "mutt 5" in screen
        sent = eventually(lambda: server_view(server, USER, "Sent"), lambda v: v is not None and "mutt 5" in v)
        assert "\\Seen" in sent["mutt 5"], sent

        mutt.quit()
    finally:
        mutt.close()
    commands = check_exchanges(mutt, server, created=("Saved/2026",))
    sent = " | ".join(commands)
    for expected in ("AUTHENTICATE", "SELECT \"INBOX\"", "UID FETCH", "UID STORE", "EXPUNGE", "CREATE \"Saved/2026\"", "UID COPY", "SELECT \"Saved/2026\"", "LIST ", "APPEND \"Sent\""):
        assert expected in sent, f"mutt never sent {expected}: {sent}"


def test_mutt_starttls_with_idle_follows_other_clients(server: Any, mutt_home: Path) -> None:
    """imap:// with STARTTLS required; IDLE pushes a new delivery, a flag change and an expunge to mutt's open INBOX."""
    before = len(server_view(server, USER2, "INBOX") or {})
    deliver(server, USER2, "starttls 1", "first")
    url = f"imap://{USER2.replace('@', '%40')}@127.0.0.1:{server.ports['imap']}/"
    mutt = Mutt(mutt_home, muttrc(mutt_home, USER2, url, starttls=True, idle=True, certificate=server.certificate, submission=server.ports["submission"]))
    try:
        screen = mutt.index_wait("INBOX", before + 1)
        assert "starttls 1" in screen
        # let mutt settle into IDLE before the delivery
        deadline = time.monotonic() + 8
        while not any(cmd.startswith("IDLE") for _, cmd, _, _ in mutt.exchanges()):
            assert time.monotonic() < deadline, "mutt never entered IDLE"
            time.sleep(0.1)
        deliver(server, USER2, "starttls 2", "second")
        screen = mutt.index_wait("INBOX", before + 2)
        assert "starttls 2" in screen

        # another client flags one message and expunges another: mutt's open index follows
        other = imap(server, USER2)
        try:
            other.select("INBOX")
            one = other.search(None, "SUBJECT", '"starttls 1"')[1][0].decode()
            two = other.search(None, "SUBJECT", '"starttls 2"')[1][0].decode()
            assert other.store(one, "+FLAGS", "(\\Flagged)")[0] == "OK"
            mutt.wait(lambda s: "!" in index_flags(s, "starttls 1"), "the flag set elsewhere")
            assert other.store(two, "+FLAGS", "(\\Deleted)")[0] == "OK"
            assert other.expunge()[0] == "OK"
        finally:
            other.logout()
        screen = mutt.index_wait("INBOX", before + 1)
        assert "starttls 2" not in screen and "!" in index_flags(screen, "starttls 1")
        mutt.quit()
    finally:
        mutt.close()
    commands = check_exchanges(mutt, server)
    assert commands[0] == "STARTTLS" or "STARTTLS" in commands, commands
    assert commands.index("STARTTLS") < min(i for i, c in enumerate(commands) if c.startswith(("AUTHENTICATE", "LOGIN")))
