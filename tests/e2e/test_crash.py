"""Crash safety: SIGKILL the server under load; every message that got 250 survives exactly once.

Twenty SMTP clients deliver to local users while the server is killed with
SIGKILL at random moments and restarted.  Afterwards every message the server
acknowledged with 250 must be in each of its recipients' INBOX exactly once,
complete (no half-written temporary file became a message), the UID state of
every folder must be consistent, and IMAP and POP3 must serve all of it.

The normal suite runs a reduced load (``CRASH_ROUNDS`` kills); ``pytest -m slow``
runs the long variant.
"""

from __future__ import annotations

import imaplib
import poplib
import random
import re
import signal
import smtplib
import threading
import time
from collections import Counter
from typing import Any

import pytest

from mailsuite.store.service import SPARE_FILES

USERS = {f"crash{i}@example.test": f"pw-crash-{i}-secret" for i in range(4)}
CLIENTS = 20
BODY_LINES = 200  # about 10 KiB per message
TOKEN = re.compile(rb"X-Crash-Token: (c\d+-\d+)")


class Load:
    """Twenty senders that keep going across restarts and remember every 250."""

    def __init__(self, server: Any, seed: int) -> None:
        self.server = server
        self.random = random.Random(seed)
        self.accepted: dict[str, tuple[str, ...]] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.client, args=(n,), daemon=True) for n in range(CLIENTS)]

    def message(self, token: str, recipients: tuple[str, ...]) -> bytes:
        lines = [f"Line {i} of {token} " + "x" * 40 for i in range(BODY_LINES)]
        head = f"From: load@sender.example\r\nTo: {', '.join(recipients)}\r\nSubject: crash {token}\r\nX-Crash-Token: {token}\r\n\r\n"
        return (head + "\r\n".join(lines) + f"\r\nEND {token}\r\n").encode()

    def client(self, number: int) -> None:
        users = sorted(USERS)
        sequence = 0
        rng = random.Random(number)
        while not self.stop.is_set():
            port = self.server.ports.get("smtp")
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
                    while not self.stop.is_set():
                        sequence += 1
                        token = f"c{number}-{sequence}"
                        recipients = tuple(rng.sample(users, rng.choice((1, 1, 1, 2))))
                        refused = smtp.sendmail("load@sender.example", list(recipients), self.message(token, recipients))
                        if not refused:
                            with self.lock:
                                self.accepted[token] = recipients
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)  # the server is down or went down mid-transaction: no 250, no claim

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


def imap_tokens(server: Any, address: str) -> tuple[Counter[str], list[int], int]:
    """Tokens in the user's INBOX over IMAP, the UIDs in order, and UIDNEXT."""
    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    imap.starttls(ssl_context=server.client_tls())
    imap.login(address, USERS[address])
    imap.select("INBOX", readonly=True)
    _, [uidnext_line] = imap.status("INBOX", "(UIDNEXT)")
    uidnext = int(re.search(rb"UIDNEXT (\d+)", uidnext_line).group(1))
    tokens: Counter[str] = Counter()
    uids: list[int] = []
    _, data = imap.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
    for item in data:
        if isinstance(item, tuple):
            uids.append(int(re.search(rb"UID (\d+)", item[0]).group(1)))
            body = item[1]
            match = TOKEN.search(body)
            assert match is not None, "a stored message lost its header"
            token = match.group(1).decode()
            assert body.endswith(f"END {token}\r\n".encode()), f"message {token} is truncated"
            tokens[token] += 1
    imap.logout()
    return tokens, uids, uidnext


def pop3_count(server: Any, address: str) -> int:
    pop = poplib.POP3("127.0.0.1", server.ports["pop3"])
    pop.stls(context=server.client_tls())
    pop.user(address)
    pop.pass_(USERS[address])
    count, _ = pop.stat()
    uidls = pop.uidl()[1]
    pop.quit()
    assert len(uidls) == count and len(set(uidls)) == count
    return count


def crash_and_check(mailsuite_server: Any, rounds: int, seed: int) -> None:
    server = mailsuite_server(users=USERS)
    rng = random.Random(seed)
    with Load(server, seed) as load:
        for _ in range(rounds):
            time.sleep(rng.uniform(0.3, 1.5))
            server.stop(signal.SIGKILL)
            server.start()
        time.sleep(1.0)
    assert len(load.accepted) > rounds * 5, "the load barely ran: the test would prove nothing"
    print(f"accepted {len(load.accepted)} messages across {rounds} SIGKILLs")
    server.stop()
    spares = server.data_root / "mail" / ".spare"
    assert not list(spares.iterdir()), "a clean stop removes the unused spare files"
    server.start()  # a clean start over whatever the last kill left behind
    expected: dict[str, Counter[str]] = {address: Counter() for address in USERS}
    for token, recipients in load.accepted.items():
        for address in recipients:
            expected[address][token] += 1
    for address in USERS:
        tokens, uids, uidnext = imap_tokens(server, address)
        missing = set(expected[address]) - set(tokens)
        assert not missing, f"{len(missing)} acknowledged messages lost for {address}, e.g. {sorted(missing)[:3]}"
        duplicated = {t: n for t, n in tokens.items() if n > 1}
        assert not duplicated, f"delivered twice: {duplicated}"
        assert uids == sorted(set(uids)), "UIDs must be unique and ascending"
        assert not uids or uidnext > uids[-1], "UIDNEXT must be above every UID"
        assert pop3_count(server, address) == len(uids)
    ready = list(spares.iterdir())
    assert 0 < len(ready) <= SPARE_FILES and all(p.stat().st_size == 0 for p in ready), "spares: only empty files, at most a pool's worth"


def test_sigkill_under_load_loses_nothing(mailsuite_server: Any) -> None:
    """Five SIGKILLs during a 20-client load: every 250 is stored exactly once, served by IMAP and POP3."""
    crash_and_check(mailsuite_server, rounds=5, seed=20261123)


@pytest.mark.slow
def test_sigkill_under_load_long(mailsuite_server: Any) -> None:
    """The long variant: twenty kills."""
    crash_and_check(mailsuite_server, rounds=20, seed=4242)
