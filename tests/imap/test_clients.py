"""Real clients against a real server process: imaplib, imapclient, curl, raw sockets."""

from __future__ import annotations

import imaplib
import socket
import subprocess
import time

import pytest

from tests.imap.conftest import sample


def login(server, user: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=10)
    client.login(user, "any")
    return client


def test_imaplib_session(imap_server):
    """A whole imaplib session: folders, APPEND, FETCH, STORE, COPY, EXPUNGE."""
    c = login(imap_server, "imaplib@example.test")
    try:
        typ, data = c.create("Projects/2024")
        assert typ == "OK"
        typ, data = c.list()
        assert any(b'"Projects/2024"' in line for line in data)
        typ, data = c.append("INBOX", "(\\Flagged)", imaplib.Time2Internaldate(time.time()), sample(1))
        assert typ == "OK" and data[0].startswith(b"[APPENDUID ")
        c.append("INBOX", None, None, sample(2))
        typ, data = c.select("INBOX")
        assert data == [b"2"]
        typ, data = c.fetch("1:2", "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        # appended before this session selected INBOX: \Recent here (RFC 3501 2.3.2)
        assert data[0][0].startswith(b"1 (UID 1 FLAGS (\\Flagged \\Recent) RFC822.SIZE ")
        assert data[0][1] == b"Subject: message 1\r\n\r\n"
        assert c.search(None, "SUBJECT", '"message 2"') == ("OK", [b"2"])
        assert c.uid("SEARCH", "FLAGGED") == ("OK", [b"1"])
        typ, data = c.store("2", "+FLAGS", "(\\Deleted)")
        assert typ == "OK" and b"\\Deleted" in data[0]
        typ, data = c.copy("1", "Projects/2024")
        assert typ == "OK"
        typ, data = c.expunge()
        assert data == [b"2"]
        typ, data = c.status("Projects/2024", "(MESSAGES UIDNEXT)")
        assert data == [b'"Projects/2024" (MESSAGES 1 UIDNEXT 2)']
        typ, data = c.uid("FETCH", "1", "(BODY[])")
        assert data[0][1] == sample(1)
        c.close()
    finally:
        c.logout()


def test_imapclient_session(imap_server):
    """The imapclient package: capabilities, folder flags, MOVE, UIDPLUS, CONDSTORE."""
    from imapclient import IMAPClient

    with IMAPClient("127.0.0.1", port=imap_server.ports["imap"], ssl=False, timeout=10) as c:
        c.login("imapclient@example.test", "any")
        caps = c.capabilities()
        for cap in (b"IDLE", b"UIDPLUS", b"MOVE", b"CONDSTORE", b"SPECIAL-USE", b"NAMESPACE", b"ENABLE", b"ID", b"UNSELECT"):
            assert cap in caps
        assert c.find_special_folder(b"\\Sent") == "Sent"
        ns = c.namespace()
        assert ns.personal == (("", "/"),)
        for n in range(3):
            c.append("INBOX", sample(n))
        assert c.enable("CONDSTORE") == [b"CONDSTORE"]
        info = c.select_folder("INBOX")
        assert info[b"EXISTS"] == 3 and b"HIGHESTMODSEQ" in info
        fetched = c.fetch([1, 2, 3], ["FLAGS", "MODSEQ", "RFC822.SIZE", "INTERNALDATE"])
        assert sorted(fetched) == [1, 2, 3] and all(b"MODSEQ" in v for v in fetched.values())
        c.add_flags([1], ["$Important"])
        assert b"$Important" in c.get_flags([1])[1]
        c.move([2], "Trash")
        assert c.select_folder("INBOX")[b"EXISTS"] == 2
        assert c.folder_status("Trash", ["MESSAGES"])[b"MESSAGES"] == 1
        c.unselect_folder()
        c.id_({"name": "pytest"})


def test_idle_push_from_another_process(imap_server):
    """A delivery by another process shows up in an IDLE session within a second (RFC 2177)."""
    from imapclient import IMAPClient

    with IMAPClient("127.0.0.1", port=imap_server.ports["imap"], ssl=False, timeout=10) as c:
        c.login("idler@example.test", "any")
        c.select_folder("INBOX")
        c.idle()
        started = time.monotonic()
        imap_server.writer.deliver("idler@example.test", sample(1))
        responses = c.idle_check(timeout=5)
        elapsed = time.monotonic() - started
        c.idle_done()
        assert (1, b"EXISTS") in responses
        assert elapsed < 1.5


def test_two_sessions_see_each_others_changes(imap_server):
    """Flag changes and expunges by one session reach the other at NOOP, never during FETCH."""
    a = login(imap_server, "pair@example.test")
    b = login(imap_server, "pair@example.test")
    try:
        for n in range(3):
            a.append("INBOX", None, None, sample(n))
        a.select("INBOX")
        b.select("INBOX")
        a.store("1", "+FLAGS", "(\\Flagged)")
        a.store("2", "+FLAGS", "(\\Deleted)")
        a.expunge()
        typ, data = b.fetch("2", "(UID)")
        assert b"2 (UID 2)" in data  # still addressable in b's view (a FLAGS update may come along)
        assert "EXPUNGE" not in b.untagged_responses
        typ, data = b.noop()
        assert b.untagged_responses.get("EXPUNGE") == [b"2"]
        typ, data = b.fetch("1", "(FLAGS)")
        assert b"\\Flagged" in data[0]
    finally:
        a.logout()
        b.logout()


def test_curl_lists_and_fetches(imap_server):
    """curl's imap:// support: list folders and fetch one message by UID."""
    c = login(imap_server, "curl@example.test")
    c.append("INBOX", None, None, sample(7))
    c.logout()
    base = f"imap://127.0.0.1:{imap_server.ports['imap']}"
    listing = subprocess.run(["curl", "-sS", "--max-time", "10", "-u", "curl@example.test:any", base + "/"], capture_output=True, check=True)
    assert b'"INBOX"' in listing.stdout and b"\\Sent" in listing.stdout
    fetched = subprocess.run(["curl", "-sS", "--max-time", "10", "-u", "curl@example.test:any", base + "/INBOX;UID=1"], capture_output=True, check=True)
    assert fetched.stdout.replace(b"\r\n", b"\n") == sample(7).replace(b"\r\n", b"\n")


def raw(server) -> tuple[socket.socket, "Reader"]:
    sock = socket.create_connection(("127.0.0.1", server.ports["imap"]), timeout=10)
    reader = Reader(sock)
    assert reader.line().startswith(b"* OK [CAPABILITY")
    return sock, reader


class Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def until(self, tag: bytes) -> list[bytes]:
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines


def test_malformed_and_oversized_commands_over_tcp(imap_server):
    """Garbage, bad syntax, an over-long line and a huge literal: answered, and the connection survives."""
    sock, r = raw(imap_server)
    try:
        sock.sendall(b"a1 LOGIN x@example.test pw\r\n")
        assert r.until(b"a1")[-1].startswith(b"a1 OK")
        sock.sendall(b"\x16\x03\x01\x02\x00garbage\r\n")
        assert r.line().startswith(b"* BAD")
        sock.sendall(b"a2 FETCH\r\n")
        assert r.line().startswith(b"a2 BAD")
        sock.sendall(b"a3 SELECT {99999999999}\r\n")
        assert r.line().startswith(b"a3 NO [TOOBIG]")
        sock.sendall(b"a4 NOOP " + b"x" * 70000 + b"\r\n")
        assert r.line() == b"a4 BAD Command line too long"
        sock.sendall(b"a5 LIST \"\" (\r\n")
        assert r.line().startswith(b"a5 BAD")
        sock.sendall(b"a6 NOOP\r\n")
        assert r.line() == b"a6 OK NOOP completed."
        sock.sendall(b"a7 APPEND INBOX {99999999999+}\r\n")
        assert r.line().startswith(b"* BYE [TOOBIG]")
        with pytest.raises(EOFError):
            r.line()
    finally:
        sock.close()


def test_fetch_streams_with_slow_reader(imap_server):
    """A client that stops reading stalls the FETCH (flow control) without stalling others."""
    c = login(imap_server, "slow@example.test")
    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 2000
    for _ in range(3):
        c.append("INBOX", None, None, big)
    c.logout()
    sock, r = raw(imap_server)
    try:
        sock.sendall(b"a LOGIN slow@example.test x\r\nb SELECT INBOX\r\nc FETCH 1:* BODY.PEEK[]\r\n")
        time.sleep(0.3)  # the server fills the socket buffers and waits
        other = login(imap_server, "slow@example.test")
        assert other.noop()[0] == "OK"
        other.logout()
        lines = r.until(b"c")
        assert lines[-1] == b"c OK FETCH completed."
    finally:
        sock.close()


def test_big_append_and_streamed_fetch(imap_server):
    """A 5 MB APPEND (spilled to disk by the store) comes back byte for byte through the streamed BODY[]."""
    big = b"Subject: big\r\n\r\n" + b"".join(b"%08d " % i + b"y" * 90 + b"\r\n" for i in range(50000))
    c = login(imap_server, "big@example.test")
    try:
        assert c.append("INBOX", None, None, big)[0] == "OK"
        c.select("INBOX")
        typ, data = c.fetch("1", "(RFC822.SIZE BODY.PEEK[])")
        assert data[0][0] == b"1 (RFC822.SIZE %d BODY[] {%d}" % (len(big), len(big))
        assert data[0][1] == big
    finally:
        c.logout()


def test_idle_push_of_a_real_smtp_delivery(imap_server):
    """Mail accepted by the SMTP listener shows up in an IDLE session within a second."""
    import smtplib

    from imapclient import IMAPClient

    with IMAPClient("127.0.0.1", port=imap_server.ports["imap"], ssl=False, timeout=10) as c:
        c.login("smtpidle@example.test", "any")
        c.select_folder("INBOX")
        c.idle()
        started = time.monotonic()
        with smtplib.SMTP("127.0.0.1", imap_server.ports["smtp"], timeout=10) as smtp:
            smtp.sendmail("sender@example.test", ["smtpidle@example.test"], sample(1, "via smtp"))
        delivered = time.monotonic()
        responses = c.idle_check(timeout=5)
        pushed = time.monotonic()
        c.idle_done()
        assert (1, b"EXISTS") in responses
        assert pushed - delivered < 1.0, (pushed - delivered, delivered - started)
        typ = c.fetch([1], ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        assert typ[1][b"BODY[HEADER.FIELDS (SUBJECT)]"] == b"Subject: via smtp 1\r\n\r\n"
